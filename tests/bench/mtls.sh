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
# thread and keep pooled connections to the next hop; the hop between them negotiates
# ALPN h2 or http/1.1, keeping the client's protocol. Certificates all come from one
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
# Usage:  tests/bench/mtls.sh          QUICK=1 tests/bench/mtls.sh
# Environment: DURATION=10 H1_CONNS=50 H2_CONNS=10 H2_STREAMS=10 LOAD_CPU=0
#   SERVER_CPU=1 BASE_PORT=18400 TLS_SECONDS=5 CARGO_TARGET_DIR KEEP_LOGS=1
#   PROFILE TARGET PGO (how weft-proxy is built: as shipped by default, see proxy.sh)
# Debian packages: wrk, nghttp2-client (h2load), haproxy, openssl, util-linux, curl.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION=${DURATION:-3}
    TLS_SECONDS=${TLS_SECONDS:-2}
fi
DURATION=${DURATION:-10}
TLS_SECONDS=${TLS_SECONDS:-5}
H1_CONNS=${H1_CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
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
weft_bin=$(build_shipped_proxy "$repo" "${PROFILE:-sidecar}")
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

start upstream "$upstream_bin" "127.0.0.1:$UPSTREAM"
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"

printf 'services: []\n' >"$work/mesh.yaml"
RUST_LOG=warn start control "$control_bin" serve --mesh "$work/mesh.yaml" \
    --grpc "127.0.0.1:$CP_GRPC" --admin "127.0.0.1:$CP_ADMIN" --state-dir "$work/cp"
wait_ready control "http://127.0.0.1:$CP_ADMIN/ready"
token() { "$control_bin" token --state-dir "$work/cp" --service-account "$1"; }

# HAProxy's certificates, from the same CA, with the same SPIFFE IDs.
issue() { # NAME SERVICE_ACCOUNT
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Weft bench" \
        -addext "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/$2" \
        -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
    openssl x509 -req -in "$work/$1.csr" -CA "$work/cp/ca.pem" -CAkey "$work/cp/ca-key.pem" \
        -CAcreateserial -days 1 -copy_extensions copy -out "$work/$1.crt" 2>/dev/null
    cat "$work/$1.crt" "$work/$1.key" >"$work/$1.pem"
}
issue hap-a bench-client
issue hap-b bench-server

render weft-mtls-client.yaml.in "$work/weft-a.yaml" OUTBOUND_PORT="$(port 10)" ADMIN_PORT="$(port 11)" \
    LISTEN_PORT="$WEFT_A" ENDPOINT="127.0.0.1:$WEFT_B" TOKEN="$(token bench-client)" CP_PORT="$CP_GRPC"
render weft-mtls-server.yaml.in "$work/weft-b.yaml" OUTBOUND_PORT="$(port 12)" ADMIN_PORT="$(port 13)" \
    LISTEN_PORT="$WEFT_B" ENDPOINT="127.0.0.1:$UPSTREAM" TOKEN="$(token bench-server)" CP_PORT="$CP_GRPC"
render haproxy-mtls-a.cfg.in "$work/haproxy-a.cfg" H1_PORT="$HAPA_H1" H2_PORT="$HAPA_H2" \
    H1_NEXT="127.0.0.1:$HAPB_H1" H2_NEXT="127.0.0.1:$HAPB_H2" CERT="$work/hap-a.pem" CA="$work/cp/ca.pem"
render haproxy-mtls-b.cfg.in "$work/haproxy-b.cfg" H1_PORT="$HAPB_H1" H2_PORT="$HAPB_H2" \
    H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM" CERT="$work/hap-b.pem" CA="$work/cp/ca.pem"

declare -A pid_of
for name in weft-a weft-b; do
    RUST_LOG=warn start "$name" "$weft_bin" run --config "$work/$name.yaml"
    pid_of[$name]=$started
done
for name in haproxy-a haproxy-b; do
    start "$name" haproxy -db -f "$work/$name.cfg"
    pid_of[$name]=$started
done
wait_ready weft-a "http://127.0.0.1:$(port 11)/ready"
wait_ready weft-b "http://127.0.0.1:$(port 13)/ready"

declare -A url_h1 url_h2 procs
url_h1[weft-mtls]=http://127.0.0.1:$WEFT_A/
url_h2[weft-mtls]=http://127.0.0.1:$WEFT_A/
url_h1[haproxy-mtls]=http://127.0.0.1:$HAPA_H1/
url_h2[haproxy-mtls]=http://127.0.0.1:$HAPA_H2/
procs[weft-mtls]="${pid_of[weft-a]} ${pid_of[weft-b]}"
procs[haproxy-mtls]="${pid_of[haproxy-a]} ${pid_of[haproxy-b]}"
paths=(weft-mtls haproxy-mtls)
for path in "${paths[@]}"; do
    wait_ready "$path (h1)" "${url_h1[$path]}"
    wait_ready "$path (h2)" "${url_h2[$path]}" --http2-prior-knowledge
done

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
percentiles() {
    sort -n -k3,3 "$1" | awk '{ v[NR] = $3 } END { if (NR == 0) { print "nan nan"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
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

printf '\nload: HTTP/1.1 wrk -t1 -c%s, h2c h2load -c%s -m%s; %ss per run; load on CPU %s, servers on CPU %s\n' \
    "$H1_CONNS" "$H2_CONNS" "$H2_STREAMS" "$DURATION" "$LOAD_CPU" "$SERVER_CPU"
printf '%-5s %-13s %9s %8s %8s %14s %7s\n' proto path rps p50_ms p99_ms pair_us/req failed
declare -A result
for proto in h1 h2; do
    for path in "${paths[@]}"; do
        if [[ $proto == h1 ]]; then url=${url_h1[$path]}; else url=${url_h2[$path]}; fi
        read -ra ps <<<"${procs[$path]}"
        run_load "$proto" "$url" 1
        before=$(cpu_ticks "${ps[@]}")
        run_load "$proto" "$url" "$DURATION"
        parse_load "$proto"
        cpu=$(per_us $(($(cpu_ticks "${ps[@]}") - before)) "$requests")
        result[$proto/$path/rps]=$rps
        result[$proto/$path/cpu]=$cpu
        printf '%-5s %-13s %9s %8s %8s %14s %7s\n' "$proto" "$path" "$rps" "$p50" "$p99" "$cpu" "$failed"
    done
done

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
printf '\nsummary: weft-mtls / haproxy-mtls, same run\n'
for proto in h1 h2; do
    printf '%-5s rps %s   cpu/request %s\n' "$proto" \
        "$(ratio "${result[$proto/weft-mtls/rps]}" "${result[$proto/haproxy-mtls/rps]}")" \
        "$(ratio "${result[$proto/weft-mtls/cpu]}" "${result[$proto/haproxy-mtls/cpu]}")"
done
printf 'target (issue 4): weft pair CPU/request <= HAProxy h2 pair (%s us), rps >= HAProxy\n' \
    "${result[h2/haproxy-mtls/cpu]}"
