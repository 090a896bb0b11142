#!/usr/bin/env bash
# Benchmark: the mTLS proxy pair, weft-proxy against HAProxy, on loopback.
#
# Prints numbers; asserts nothing about time (non-zero exit only when the benchmark
# could not run).
#
# Paths, same run, same upstream (bench-upstream, a fixed 64-byte body):
#   weft-mtls      client -> weft-proxy A -> (mTLS, SPIFFE IDs) -> weft-proxy B -> upstream
#   haproxy-mtls   client -> HAProxy A -> (TLS 1.3 + client cert) -> HAProxy B -> upstream
# The client hop and the app hop are plaintext, as for sidecars. Both proxies run one
# thread and keep pooled connections to the next hop. An HTTP/2 client's requests
# cross as h2. An HTTP/1.1 client's cross as HTTP/2 streams on weft-mtls (Weft's
# upgrade, ALPN weft.h2-orig/1) and haproxy-mtls-h2hop (HAProxy converting, alpn h2
# on the hop), and as HTTP/1.1 on weft-mtls-h1hop (A with the upgrade off, as Weft was
# before it) and haproxy-mtls (alpn http/1.1 on the hop). Certificates all come from one
# CA: weft-control's development CA (weft-proxy gets its own through Identity.Certify;
# HAProxy's are signed from the same CA files with openssl).
#
# Load as in proxy.sh: wrk (HTTP/1.1, -t1, $H1_CONNS connections) and h2load (h2c,
# $H2_CONNS x $H2_STREAMS streams), pinned with taskset: load on $LOAD_CPU, proxies,
# control plane and upstream on $SERVER_CPU. Per path: requests/s, p50, p99, CPU time
# per request of both proxies together (/proc/PID/stat), failed requests. Then new
# TLS connections per second that proxy B accepts (openssl s_time -new, TLS 1.3 with
# a client certificate, $TLS_SECONDS seconds), with B's CPU per handshake.
#
# Then latency at fixed rates (h2load --h1 --rps, HTTP/1.1 from the client): p50, p90
# and p99 of each HTTP/1.1 path at $FIXED_RPS requests/s, and the latency each pair
# adds over calling the upstream directly at $ADDED_RPS requests/s, printed beside
# Istio's published sidecar pair (+0.228 ms p90, +0.298 ms p99 at 1,000 rps) and
# ztunnel's (+0.17 / +0.20 ms). Those were measured on other machines: a guide, not a
# same-run comparison.
#
# Each load and latency run is repeated $ROUNDS times, paths in turn (reversed on even
# rounds); the summary's figures are medians over the rounds, since one run's p99 (and
# HAProxy's above all) swings from run to run on a shared machine.
#
# Usage:  tests/bench/mtls.sh          QUICK=1 tests/bench/mtls.sh
# Environment: DURATION=10 H1_CONNS=50 H2_CONNS=10 H2_STREAMS=10 LOAD_CPU=0
#   FIXED_RPS=2000 ADDED_RPS=1000 RATE_CONNS=20 ROUNDS=3
#   SERVER_CPU=1 BASE_PORT=18400 TLS_SECONDS=5 CARGO_TARGET_DIR KEEP_LOGS=1
#   PROFILE TARGET PGO (how weft-proxy is built: as shipped by default, see proxy.sh)
#   WEFT_PROXY_BIN (a weft-proxy binary to measure instead of building one)
# Debian packages: wrk, nghttp2-client (h2load), haproxy, openssl, util-linux, curl.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION=${DURATION:-3}
    TLS_SECONDS=${TLS_SECONDS:-2}
    ROUNDS=${ROUNDS:-1}
fi
DURATION=${DURATION:-10}
TLS_SECONDS=${TLS_SECONDS:-5}
H1_CONNS=${H1_CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
FIXED_RPS=${FIXED_RPS:-2000}
ADDED_RPS=${ADDED_RPS:-1000}
RATE_CONNS=${RATE_CONNS:-20}
ROUNDS=${ROUNDS:-3}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

missing=0
for tool in wrk h2load haproxy openssl taskset curl cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing tool '$tool'" >&2
        missing=1
    fi
done
[[ $missing == 0 ]] || exit 1

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

# weft-proxy as shipped (see shipped-build.sh; PROFILE, TARGET and PGO as in proxy.sh).
# shellcheck source=SCRIPTDIR/shipped-build.sh
source "$here/shipped-build.sh"
# WEFT_PROXY_BIN measures a binary built elsewhere instead (e.g. README's
# `cargo build --release`, target/release/weft-proxy).
weft_bin=${WEFT_PROXY_BIN:-$(build_shipped_proxy "$repo" "${PROFILE:-sidecar}")}
echo "building weft-control and bench-upstream (release)..."
(cd "$repo" && cargo build --release --quiet -p weft-control)
(cd "$repo" && cargo build --release --quiet -p weft-tests --bin bench-upstream)
control_bin=$target_dir/release/weft-control
upstream_bin=$target_dir/release/bench-upstream

make_workdir weft-mtls-bench

UPSTREAM=$(port 0)
CP_GRPC=$(port 1)
CP_ADMIN=$(port 2)
WEFT_A=$(port 3)
WEFT_B=$(port 4)
HAPA_H1=$(port 5)
HAPA_H2=$(port 6)
HAPB_H1=$(port 7)
HAPB_H2=$(port 8)
HAPA_H1H2=$(port 14)
HAPB_H1H2=$(port 15)
WEFT_A_H1=$(port 16)

start_upstream_and_control "$upstream_bin" "$control_bin" "$UPSTREAM" "$CP_GRPC" "$CP_ADMIN"

# HAProxy's certificates, from the same CA, with the same SPIFFE IDs.
haproxy_cert hap-a bench-client
haproxy_cert hap-b bench-server

render weft-mtls-client.yaml.in "$work/weft-a.yaml" OUTBOUND_PORT="$(port 10)" ADMIN_PORT="$(port 11)" \
    LISTEN_PORT="$WEFT_A" ENDPOINT="127.0.0.1:$WEFT_B" TOKEN="$(token bench-client)" CP_PORT="$CP_GRPC" \
    H1_OVER_H2=true
render weft-mtls-client.yaml.in "$work/weft-a-h1.yaml" OUTBOUND_PORT="$(port 17)" ADMIN_PORT="$(port 18)" \
    LISTEN_PORT="$WEFT_A_H1" ENDPOINT="127.0.0.1:$WEFT_B" TOKEN="$(token bench-client)" CP_PORT="$CP_GRPC" \
    H1_OVER_H2=false
render weft-mtls-server.yaml.in "$work/weft-b.yaml" OUTBOUND_PORT="$(port 12)" ADMIN_PORT="$(port 13)" \
    LISTEN_PORT="$WEFT_B" ENDPOINT="127.0.0.1:$UPSTREAM" TOKEN="$(token bench-server)" CP_PORT="$CP_GRPC"
render haproxy-mtls-a.cfg.in "$work/haproxy-a.cfg" H1_PORT="$HAPA_H1" H2_PORT="$HAPA_H2" \
    H1_NEXT="127.0.0.1:$HAPB_H1" H2_NEXT="127.0.0.1:$HAPB_H2" CERT="$work/hap-a.pem" CA="$work/cp/ca.pem" \
    H1H2_PORT="$HAPA_H1H2" H1H2_NEXT="127.0.0.1:$HAPB_H1H2"
render haproxy-mtls-b.cfg.in "$work/haproxy-b.cfg" H1_PORT="$HAPB_H1" H2_PORT="$HAPB_H2" \
    H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM" CERT="$work/hap-b.pem" CA="$work/cp/ca.pem" \
    H1H2_PORT="$HAPB_H1H2"

declare -A pid_of
for name in weft-a weft-a-h1 weft-b; do
    RUST_LOG=warn start "$name" "$weft_bin" run --config "$work/$name.yaml"
    pid_of[$name]=$started
done
for name in haproxy-a haproxy-b; do
    start "$name" haproxy -db -f "$work/$name.cfg"
    pid_of[$name]=$started
done
wait_ready weft-a "http://127.0.0.1:$(port 11)/ready"
wait_ready weft-a-h1 "http://127.0.0.1:$(port 18)/ready"
wait_ready weft-b "http://127.0.0.1:$(port 13)/ready"

declare -A url_h1 url_h2 procs
url_h1[weft-mtls]=http://127.0.0.1:$WEFT_A/
url_h2[weft-mtls]=http://127.0.0.1:$WEFT_A/
url_h1[haproxy-mtls]=http://127.0.0.1:$HAPA_H1/
url_h2[haproxy-mtls]=http://127.0.0.1:$HAPA_H2/
url_h1[weft-mtls-h1hop]=http://127.0.0.1:$WEFT_A_H1/
url_h1[haproxy-mtls-h2hop]=http://127.0.0.1:$HAPA_H1H2/
url_h1[direct]=http://127.0.0.1:$UPSTREAM/
procs[weft-mtls]="${pid_of[weft-a]} ${pid_of[weft-b]}"
procs[haproxy-mtls]="${pid_of[haproxy-a]} ${pid_of[haproxy-b]}"
procs[weft-mtls-h1hop]="${pid_of[weft-a-h1]} ${pid_of[weft-b]}"
procs[haproxy-mtls-h2hop]="${pid_of[haproxy-a]} ${pid_of[haproxy-b]}"
paths=(weft-mtls haproxy-mtls)
h1_paths=(weft-mtls weft-mtls-h1hop haproxy-mtls haproxy-mtls-h2hop)
for path in "${paths[@]}"; do
    wait_ready "$path (h2)" "${url_h2[$path]}" --http2-prior-knowledge
done
for path in "${h1_paths[@]}"; do
    wait_ready "$path (h1)" "${url_h1[$path]}"
done

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
# p50 p99 (and with a second argument p50 p90 p99), in ms, of an h2load log (µs).
percentiles() {
    sort -n -k3,3 "$1" | awk -v three="${2:-}" '{ v[NR] = $3 }
        function at(q) { i = int(NR * q); if (i < 1) i = 1; return v[i] / 1000 }
        END { if (NR == 0) { print (three ? "nan nan nan" : "nan nan"); exit }
        if (three) printf "%.3f %.3f %.3f\n", at(0.50), at(0.90), at(0.99)
        else printf "%.3f %.3f\n", at(0.50), at(0.99) }'
}
run_load() {
    local proto=$1 url=$2 secs=$3
    if [[ $proto == h1 ]]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$H1_CONNS" -d"${secs}s" --latency "$url" >"$work/load.out" 2>&1
    else
        rm -f "$work/h2load.log"
        taskset -c "$LOAD_CPU" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$secs" \
            --log-file="$work/h2load.log" "$url" >"$work/load.out" 2>&1
    fi
}
parse_load() {
    local out=$work/load.out
    if [[ $1 == h1 ]]; then
        requests=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        failed=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
            END { print n + 0 }' "$out")
    else
        requests=$(awk '/^requests:/ { print $6 }' "$out")
        rps=$(awk '/^finished in/ { gsub(/,/, ""); printf "%.0f", $4 }' "$out")
        failed=$(awk '/^requests:/ { n += $10 + $12 + $14 } /^status codes:/ { n += $5 + $7 + $9 }
            END { print n + 0 }' "$out")
        read -r p50 p99 < <(percentiles "$work/h2load.log")
    fi
}

# In path order on odd rounds and reversed on even ones, so drift over the run (heat,
# other work) falls on both sides alike; every figure is then the median of its rounds.
in_order() { # ROUND PATH... -> the paths, reversed on even rounds
    local round=$1 i
    shift
    local list=("$@")
    if ((round % 2)); then
        printf '%s\n' "${list[@]}"
    else
        for ((i = ${#list[@]} - 1; i >= 0; i--)); do printf '%s\n' "${list[i]}"; done
    fi
}
median() { # VALUE... -> their median ("nan" if none is a number)
    printf '%s\n' "$@" | grep -E '^[-+]?[0-9]*\.?[0-9]+$' | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# keeps result[KEY/ROUND] and sets result[KEY] to the median over the rounds so far
record() { # KEY ROUND VALUE
    local key=$1 r values=()
    result[$key/$2]=$3
    for ((r = 1; r <= $2; r++)); do values+=("${result[$key/$r]}"); done
    result[$key]=$(median "${values[@]}")
}

printf '\nload: HTTP/1.1 wrk -t1 -c%s, h2c h2load -c%s -m%s; %ss per run, %s rounds; load on CPU %s, servers on CPU %s\n' \
    "$H1_CONNS" "$H2_CONNS" "$H2_STREAMS" "$DURATION" "$ROUNDS" "$LOAD_CPU" "$SERVER_CPU"
printf '%-5s %5s %-18s %9s %8s %8s %14s %8s %8s %7s\n' proto round path rps p50_ms p99_ms pair_us/req user_us sys_us failed
declare -A result
for ((round = 1; round <= ROUNDS; round++)); do
    for proto in h1 h2; do
        if [[ $proto == h1 ]]; then proto_paths=("${h1_paths[@]}"); else proto_paths=("${paths[@]}"); fi
        while read -r path; do
            if [[ $proto == h1 ]]; then url=${url_h1[$path]}; else url=${url_h2[$path]}; fi
            read -ra ps <<<"${procs[$path]}"
            run_load "$proto" "$url" 1
            read -r user_before sys_before < <(cpu_ticks_split "${ps[@]}")
            run_load "$proto" "$url" "$DURATION"
            parse_load "$proto"
            read -r user_after sys_after < <(cpu_ticks_split "${ps[@]}")
            user=$(per_us $((user_after - user_before)) "$requests")
            sys=$(per_us $((sys_after - sys_before)) "$requests")
            cpu=$(per_us $((user_after - user_before + sys_after - sys_before)) "$requests")
            record "$proto/$path/rps" "$round" "$rps"
            record "$proto/$path/cpu" "$round" "$cpu"
            record "$proto/$path/user" "$round" "$user"
            record "$proto/$path/sys" "$round" "$sys"
            printf '%-5s %5s %-18s %9s %8s %8s %14s %8s %8s %7s\n' "$proto" "$round" "$path" "$rps" "$p50" "$p99" \
                "$cpu" "$user" "$sys" "$failed"
        done < <(in_order "$round" "${proto_paths[@]}")
    done
done
printf '\nmedian of %s rounds\n' "$ROUNDS"
printf '%-5s %-18s %9s %14s %8s %8s\n' proto path rps pair_us/req user_us sys_us
for proto in h1 h2; do
    if [[ $proto == h1 ]]; then proto_paths=("${h1_paths[@]}"); else proto_paths=("${paths[@]}"); fi
    for path in "${proto_paths[@]}"; do
        printf '%-5s %-18s %9s %14s %8s %8s\n' "$proto" "$path" "${result[$proto/$path/rps]}" \
            "${result[$proto/$path/cpu]}" "${result[$proto/$path/user]}" "${result[$proto/$path/sys]}"
    done
done

# Failed requests of the last fixed-rate run; latencies of failures are no figure.
rate_failures() {
    awk '/^requests:/ { n += $10 + $12 + $14 } /^status codes:/ { n += $5 + $7 + $9 }
        END { print n + 0 }' "$work/load.out"
}
show_statuses() {
    if [[ $1 != 0 ]]; then
        grep -E '^(requests|status codes):' "$work/load.out" | sed 's/^/    /'
    fi
}
# HTTP/1.1 at a fixed total rate: $RATE_CONNS connections of rate/RATE_CONNS each.
fixed_rate() { # URL RPS -> p50 p90 p99 (ms) and failures in $work/load.out
    rm -f "$work/h2load.log"
    taskset -c "$LOAD_CPU" h2load --h1 -c"$RATE_CONNS" --rps=$(($2 / RATE_CONNS)) -D"$DURATION" \
        --log-file="$work/h2load.log" "$1" >"$work/load.out" 2>&1
    percentiles "$work/h2load.log" 3
}
printf '\nHTTP/1.1 at a fixed %s requests/s (h2load --h1 -c%s, %ss, %s rounds)\n' \
    "$FIXED_RPS" "$RATE_CONNS" "$DURATION" "$ROUNDS"
printf '%5s %-18s %8s %8s %8s %7s\n' round path p50_ms p90_ms p99_ms failed
for ((round = 1; round <= ROUNDS; round++)); do
    while read -r path; do
        read -r p50 p90 p99 < <(fixed_rate "${url_h1[$path]}" "$FIXED_RPS")
        failed=$(rate_failures)
        record "fixed/$path/p99" "$round" "$p99"
        printf '%5s %-18s %8s %8s %8s %7s\n' "$round" "$path" "$p50" "$p90" "$p99" "$failed"
        show_statuses "$failed"
    done < <(in_order "$round" "${h1_paths[@]}")
done
printf 'median p99 of %s rounds:' "$ROUNDS"
for path in "${h1_paths[@]}"; do printf ' %s %s' "$path" "${result[fixed/$path/p99]}"; done
printf '\n'

printf '\nadded latency over a direct call, HTTP/1.1 at %s requests/s (%ss each, %s rounds)\n' \
    "$ADDED_RPS" "$DURATION" "$ROUNDS"
printf '%5s %-18s %8s %8s %8s %7s   %s\n' round path +p50_ms +p90_ms +p99_ms failed "(absolute p50/p90/p99)"
added_paths=(direct "${h1_paths[@]}")
for ((round = 1; round <= ROUNDS; round++)); do
    declare -A lat=()
    while read -r path; do
        read -r p50 p90 p99 < <(fixed_rate "${url_h1[$path]}" "$ADDED_RPS")
        lat[$path]="$p50 $p90 $p99"
        lat[$path/failed]=$(rate_failures)
        show_statuses "${lat[$path/failed]}"
    done < <(in_order "$round" "${added_paths[@]}")
    read -r d50 d90 d99 <<<"${lat[direct]}"
    printf '%5s %-18s %8s %8s %8s %7s   %s\n' "$round" direct - - - "${lat[direct/failed]}" "$d50/$d90/$d99"
    for path in "${h1_paths[@]}"; do
        read -r p50 p90 p99 <<<"${lat[$path]}"
        read -r a50 a90 a99 < <(awk -v a="$p50" -v b="$p90" -v c="$p99" -v x="$d50" -v y="$d90" -v z="$d99" \
            'BEGIN { printf "%+.3f %+.3f %+.3f\n", a - x, b - y, c - z }')
        record "added/$path/p50" "$round" "$a50"
        record "added/$path/p90" "$round" "$a90"
        record "added/$path/p99" "$round" "$a99"
        printf '%5s %-18s %8s %8s %8s %7s   %s\n' "$round" "$path" "$a50" "$a90" "$a99" "${lat[$path/failed]}" "$p50/$p90/$p99"
    done
done
printf 'median of %s rounds\n' "$ROUNDS"
printf '%-18s %8s %8s %8s\n' path +p50_ms +p90_ms +p99_ms
for path in "${h1_paths[@]}"; do
    printf '%-18s %+8.3f %+8.3f %+8.3f\n' "$path" "${result[added/$path/p50]}" "${result[added/$path/p90]}" \
        "${result[added/$path/p99]}"
done
printf '%-18s %8s %8s %8s   %s\n' "istio sidecars" - +0.228 +0.298 "published, 1,000 rps, other hardware"
printf '%-18s %8s %8s %8s   %s\n' "ztunnel" - +0.170 +0.200 "published, 1,000 rps, other hardware"

# New TLS 1.3 connections per second accepted by proxy B (full handshakes with a
# client certificate; the client is openssl on the load CPU).
printf '\nnew mTLS connections/s into proxy B (openssl s_time -new, %ss)\n' "$TLS_SECONDS"
printf '%-13s %10s %16s\n' server conns/s B_us/handshake
for target in weft-b:$WEFT_B haproxy-b:$HAPB_H1; do
    name=${target%%:*}
    p=${target##*:}
    before=$(cpu_ticks "${pid_of[$name]}")
    taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$p" -new -time "$TLS_SECONDS" \
        -cert "$work/hap-a.crt" -key "$work/hap-a.key" -CAfile "$work/cp/ca.pem" >"$work/s_time.out" 2>&1 || true
    conns=$(awk '/connections in .* real seconds/ { print $1 }' "$work/s_time.out" | tail -1)
    secs=$(awk '/connections in .* real seconds/ { print $4 }' "$work/s_time.out" | tail -1)
    rate=$(awk -v c="${conns:-0}" -v s="${secs:-0}" 'BEGIN { if (s > 0) printf "%.0f", c / s; else print "nan" }')
    cpu=$(per_us $(($(cpu_ticks "${pid_of[$name]}") - before)) "${conns:-0}")
    printf '%-13s %10s %16s\n' "$name" "$rate" "$cpu"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
printf '\nsummary: weft-mtls / haproxy-mtls, same run, medians of %s rounds\n' "$ROUNDS"
for proto in h1 h2; do
    printf '%-5s rps %s   cpu/request %s\n' "$proto" \
        "$(ratio "${result[$proto/weft-mtls/rps]}" "${result[$proto/haproxy-mtls/rps]}")" \
        "$(ratio "${result[$proto/weft-mtls/cpu]}" "${result[$proto/haproxy-mtls/cpu]}")"
done
printf 'target (issue 4): weft pair CPU/request <= HAProxy h2 pair (%s us), rps >= HAProxy\n' \
    "${result[h2/haproxy-mtls/cpu]}"
printf '\nHTTP/1.1 clients, HTTP/2 between the hops: weft-mtls / haproxy-mtls-h2hop\n'
printf 'cpu/request %s (target <= 0.8)   rps %s (target >= 1.1)   p99 at %s rps %s (target <= 1)\n' \
    "$(ratio "${result[h1/weft-mtls/cpu]}" "${result[h1/haproxy-mtls-h2hop/cpu]}")" \
    "$(ratio "${result[h1/weft-mtls/rps]}" "${result[h1/haproxy-mtls-h2hop/rps]}")" \
    "$FIXED_RPS" "$(ratio "${result[fixed/weft-mtls/p99]}" "${result[fixed/haproxy-mtls-h2hop/p99]}")"
# CPU splits into user time (the proxies' own code) and system time (the kernel's
# socket work, about alike for both pairs): the user time 0.8x would leave Weft.
printf 'user / system time per request: weft-mtls %s / %s us, haproxy-mtls-h2hop %s / %s us; ' \
    "${result[h1/weft-mtls/user]}" "${result[h1/weft-mtls/sys]}" \
    "${result[h1/haproxy-mtls-h2hop/user]}" "${result[h1/haproxy-mtls-h2hop/sys]}"
awk -v hu="${result[h1/haproxy-mtls-h2hop/user]}" -v hs="${result[h1/haproxy-mtls-h2hop/sys]}" \
    -v ws="${result[h1/weft-mtls/sys]}" 'BEGIN { u = 0.8 * (hu + hs) - ws
        printf "0.8x at this system time leaves %.1f us of user time (%.2fx HAProxy'"'"'s)\n", u, u / hu }'
printf 'weft-mtls / weft-mtls-h1hop (the upgrade on / off): cpu/request %s   rps %s\n' \
    "$(ratio "${result[h1/weft-mtls/cpu]}" "${result[h1/weft-mtls-h1hop/cpu]}")" \
    "$(ratio "${result[h1/weft-mtls/rps]}" "${result[h1/weft-mtls-h1hop/rps]}")"
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'load average at the end: %s on %s CPUs (other work on the machine skews every figure)\n' \
    "$loadavg" "$(nproc)"
