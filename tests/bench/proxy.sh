#!/usr/bin/env bash
# Benchmark: weft-proxy against HAProxy on loopback, HTTP/1.1 and HTTP/2 (h2c).
#
# Prints numbers; asserts nothing about time (exit status is non-zero only when the
# benchmark could not run: a missing tool, a build failure, a process that never
# became ready).
#
# Paths, all measured in the same run against the same upstream (bench-upstream, a
# small hyper server in crate weft-tests answering a fixed 64-byte body):
#   direct        client -> upstream
#   weft          client -> weft-proxy upstream listener -> upstream
#   weft-pair     client -> weft-proxy A upstream listener -> weft-proxy B inbound -> upstream
#   haproxy       client -> HAProxy -> upstream
#   haproxy-pair  client -> HAProxy A -> HAProxy B -> upstream
# weft-proxy runs with `workers: 1`, HAProxy with `nbthread 1`, both keeping
# connections to the next hop alive (configs: *.in next to this script).
#
# Load: wrk (HTTP/1.1, -t1, $H1_CONNS connections) and h2load (h2c, $H2_CONNS
# connections x $H2_STREAMS streams), pinned with taskset: the load generator on
# $LOAD_CPU, proxies and upstream on $SERVER_CPU. Then a fixed-rate run with h2load
# --rps ($FIXED_RATE requests/s in total; --h1 for HTTP/1.1) for p99 at equal load.
#
# Per path it prints: requests/s, p50, p99 (wrk --latency; for h2load computed from
# its --log-file), CPU time per request of the proxy processes ((utime+stime) from
# /proc/PID/stat over the run, both proxies added for a pair) and of the upstream,
# proxy RSS (VmRSS) idle before the first run and the peak while serving the load,
# and failed requests. It ends with Weft/HAProxy ratios next to the targets in
# README.md here.
#
# Usage:  tests/bench/proxy.sh
#         QUICK=1 tests/bench/proxy.sh    (shorter runs, a smoke test)
# plus the PGO build of weft-proxy (slow the first time).
# Environment:
#   DURATION=10        seconds per load run (QUICK=1: 3)
#   FIXED_DURATION=5   seconds per fixed-rate run (QUICK=1: 2)
#   FIXED_RATE=2000    total requests/s of the fixed-rate runs
#   ROUNDS=1           repeats of the load matrix and of the fixed-rate runs; the
#                      summary takes the median of the per-round ratios
#                      (ROUNDS=3 DURATION=5 on a busy machine)
#   H1_CONNS=50 H2_CONNS=10 H2_STREAMS=10
#   LOAD_CPU=0 SERVER_CPU=1
#   BASE_PORT=18300    uses BASE_PORT..BASE_PORT+29 on 127.0.0.1
#   CARGO_TARGET_DIR   where the binaries are built (default: <repo>/target)
#   PROFILE=sidecar    cargo profile of weft-proxy: sidecar (fat LTO, as shipped) or release
#   TARGET             target of weft-proxy: by default the shipped static musl build
#                      (see shipped-build.sh); TARGET=host for the glibc build
#   PGO=1              build weft-proxy with profile-guided optimisation, as shipped
#                      (proxy/pgo.sh); PGO=0 without
#   KEEP_LOGS=1        keep the work directory (configs, logs, h2load logs)
# Debian packages: wrk, nghttp2-client (h2load), haproxy, util-linux (taskset), curl.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION=${DURATION:-3}
    FIXED_DURATION=${FIXED_DURATION:-2}
fi
DURATION=${DURATION:-10}
FIXED_DURATION=${FIXED_DURATION:-5}
FIXED_RATE=${FIXED_RATE:-2000}
ROUNDS=${ROUNDS:-1}
H1_CONNS=${H1_CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18300}
WARMUP=1
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# --- tools -----------------------------------------------------------------------

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
need wrk wrk
need h2load nghttp2-client
need haproxy haproxy
need taskset util-linux
need curl curl
need cargo "rustup (https://rustup.rs)"
if [[ $missing == 1 ]]; then
    exit 1
fi

PROFILE=${PROFILE:-sidecar}
# shellcheck source=SCRIPTDIR/shipped-build.sh
source "$here/shipped-build.sh"
weft_bin=$(build_shipped_proxy "$repo" "$PROFILE")
echo "building bench-upstream (release)..."
(cd "$repo" && cargo build --release --quiet -p weft-tests --bin bench-upstream)
upstream_bin=$target_dir/release/bench-upstream

# --- processes -------------------------------------------------------------------

make_workdir weft-bench

UPSTREAM=$(port 0)
WEFT=$(port 1)         # weft single: upstream listener
WEFT_A=$(port 2)       # weft pair: A's upstream listener
WEFT_B=$(port 3)       # weft pair: B's inbound
HAP_H1=$(port 4)       # haproxy single
HAP_H2=$(port 5)
HAPA_H1=$(port 6)      # haproxy pair A
HAPA_H2=$(port 7)
HAPB_H1=$(port 8)      # haproxy pair B
HAPB_H2=$(port 9)

start upstream "$upstream_bin" "127.0.0.1:$UPSTREAM"
upstream_pid=$started
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"

render weft-client.yaml.in "$work/weft.yaml" ID=bench-single OUTBOUND_PORT="$(port 10)" \
    ADMIN_PORT="$(port 11)" LISTEN_PORT="$WEFT" ENDPOINT="127.0.0.1:$UPSTREAM"
render weft-client.yaml.in "$work/weft-a.yaml" ID=bench-a OUTBOUND_PORT="$(port 12)" \
    ADMIN_PORT="$(port 13)" LISTEN_PORT="$WEFT_A" ENDPOINT="127.0.0.1:$WEFT_B"
render weft-server.yaml.in "$work/weft-b.yaml" ID=bench-b OUTBOUND_PORT="$(port 14)" \
    ADMIN_PORT="$(port 15)" LISTEN_PORT="$WEFT_B" ENDPOINT="127.0.0.1:$UPSTREAM"
render haproxy.cfg.in "$work/haproxy.cfg" H1_PORT="$HAP_H1" H2_PORT="$HAP_H2" \
    H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM"
render haproxy.cfg.in "$work/haproxy-a.cfg" H1_PORT="$HAPA_H1" H2_PORT="$HAPA_H2" \
    H1_NEXT="127.0.0.1:$HAPB_H1" H2_NEXT="127.0.0.1:$HAPB_H2"
render haproxy.cfg.in "$work/haproxy-b.cfg" H1_PORT="$HAPB_H1" H2_PORT="$HAPB_H2" \
    H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM"

declare -A pid_of
for name in weft weft-a weft-b; do
    RUST_LOG=warn start "$name" "$weft_bin" run --config "$work/$name.yaml"
    pid_of[$name]=$started
done
for name in haproxy haproxy-a haproxy-b; do
    start "$name" haproxy -db -f "$work/$name.cfg"
    pid_of[$name]=$started
done

wait_ready weft "http://127.0.0.1:$(port 11)/ready"
wait_ready weft-a "http://127.0.0.1:$(port 13)/ready"
wait_ready weft-b "http://127.0.0.1:$(port 15)/ready"
wait_ready haproxy "http://127.0.0.1:$HAP_H1/"
wait_ready haproxy-a "http://127.0.0.1:$HAPA_H1/"
wait_ready haproxy-b "http://127.0.0.1:$HAPB_H1/"
# The readiness probes above went through no proxy for weft (admin port only);
# check each forwarding path once, in both protocols, before measuring anything.
declare -A url_h1 url_h2 procs
url_h1[direct]=http://127.0.0.1:$UPSTREAM/
url_h2[direct]=http://127.0.0.1:$UPSTREAM/
url_h1[weft]=http://127.0.0.1:$WEFT/
url_h2[weft]=http://127.0.0.1:$WEFT/
url_h1[weft-pair]=http://127.0.0.1:$WEFT_A/
url_h2[weft-pair]=http://127.0.0.1:$WEFT_A/
url_h1[haproxy]=http://127.0.0.1:$HAP_H1/
url_h2[haproxy]=http://127.0.0.1:$HAP_H2/
url_h1[haproxy-pair]=http://127.0.0.1:$HAPA_H1/
url_h2[haproxy-pair]=http://127.0.0.1:$HAPA_H2/
procs[direct]=""
procs[weft]="${pid_of[weft]}"
procs[weft-pair]="${pid_of[weft-a]} ${pid_of[weft-b]}"
procs[haproxy]="${pid_of[haproxy]}"
procs[haproxy-pair]="${pid_of[haproxy-a]} ${pid_of[haproxy-b]}"
paths=(direct weft weft-pair haproxy haproxy-pair)

# --- measurements ----------------------------------------------------------------

clk_tck=$(getconf CLK_TCK)

# rss_kb PID...: VmRSS of the processes added, in kB.
rss_kb() {
    local pid key value total=0
    for pid in "$@"; do
        while read -r key value _; do
            if [[ $key == VmRSS: ]]; then
                total=$((total + value))
            fi
        done <"/proc/$pid/status"
    done
    echo "$total"
}

# server_cpu_ticks: "busy total" clock ticks of the server CPU, all processes.
server_cpu_ticks() {
    local name user nice system idle iowait irq softirq steal rest
    while read -r name user nice system idle iowait irq softirq steal rest; do
        if [[ $name == "cpu$SERVER_CPU" ]]; then
            local busy=$((user + nice + system + irq + softirq + steal))
            echo "$busy $((busy + idle + iowait))"
            return
        fi
    done </proc/stat
}

# share PART WHOLE: PART as a percentage of WHOLE, no decimals.
share() { awk -v p="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.0f", 100 * p / w; else print "nan" }'; }

# rss_breakdown PID: "anon file" resident MB of one process.
rss_breakdown() {
    local key value anon=0 file=0
    while read -r key value _; do
        case $key in
        RssAnon:) anon=$value ;;
        RssFile:) file=$value ;;
        esac
    done <"/proc/$1/status"
    echo "$(mb "$anon") $(mb "$file")"
}

# to_ms VALUE: a wrk latency ("812.00us", "1.23ms", "1.01s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# percentiles LOGFILE: "p50 p99" in ms from an h2load --log-file (3rd column: µs).
percentiles() {
    sort -n -k3,3 "$1" | awk '{ v[NR] = $3 } END {
        if (NR == 0) { print "nan nan"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

declare -A result # "$proto/$path/$metric" -> value

# run_load PROTO URL SECONDS: one load run pinned to the load CPU; its output goes to
# $work/load.out (and h2load's per-request log to $work/h2load.log).
run_load() {
    local proto=$1 url=$2 secs=$3
    if [[ $proto == h1 ]]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$H1_CONNS" -d"${secs}s" --latency "$url" \
            >"$work/load.out" 2>&1
    else
        rm -f "$work/h2load.log"
        taskset -c "$LOAD_CPU" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$secs" \
            --log-file="$work/h2load.log" "$url" >"$work/load.out" 2>&1
    fi
}

# parse_load PROTO: sets $requests, $rps, $p50, $p99, $failed from the last run.
parse_load() {
    local out=$work/load.out
    if [[ $1 == h1 ]]; then
        requests=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        failed=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ {
            gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    else
        parse_h2load "$out" "$work/h2load.log"
    fi
}

# parse_h2load OUTPUT LOGFILE: sets $requests, $rps, $p50, $p99, $failed.
parse_h2load() {
    requests=$(awk '/^requests:/ { print $6 }' "$1")
    rps=$(awk '/^finished in/ { gsub(/,/, ""); printf "%.0f", $4 }' "$1")
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
    failed=$(awk '/^requests:/ { n += $10 + $12 + $14 } /^status codes:/ {
        n += $5 + $7 + $9 } END { print n + 0 }' "$1")
    read -r p50 p99 < <(percentiles "$2")
}

# per_request_us TICKS REQUESTS: CPU microseconds per request.
per_request_us() {
    awk -v t="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN {
        if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan" }'
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Idle RSS: every proxy has started and answered readiness probes, nothing more.
for path in "${paths[@]}"; do
    read -ra ps <<<"${procs[$path]}"
    if [[ ${#ps[@]} -gt 0 ]]; then
        result[idle/$path/rss]=$(rss_kb "${ps[@]}")
    fi
done

for path in "${paths[@]}"; do
    wait_ready "$path (h1)" "${url_h1[$path]}"
    wait_ready "$path (h2)" "${url_h2[$path]}" --http2-prior-knowledge
done

printf '\nload: HTTP/1.1 wrk -t1 -c%s, h2c h2load -c%s -m%s; %ss per run, %s cores, load on CPU %s, servers on CPU %s\n' \
    "$H1_CONNS" "$H2_CONNS" "$H2_STREAMS" "$DURATION" "$(nproc)" "$LOAD_CPU" "$SERVER_CPU"
printf '\n%-3s %-5s %-13s %9s %8s %8s %10s %9s %9s %9s %7s %5s %6s\n' '#' proto path rps \
    p50_ms p99_ms proxy_us/req up_us/req rss_idle rss_load failed srv% other%
for ((round = 1; round <= ROUNDS; round++)); do
    for proto in h1 h2; do
        for path in "${paths[@]}"; do
            if [[ $proto == h1 ]]; then url=${url_h1[$path]}; else url=${url_h2[$path]}; fi
            read -ra ps <<<"${procs[$path]}"
            # Warm-up: fills connection pools and page caches so they are not measured.
            run_load "$proto" "$url" "$WARMUP"
            before=0
            if [[ ${#ps[@]} -gt 0 ]]; then
                before=$(cpu_ticks "${ps[@]}")
            fi
            up_before=$(cpu_ticks "$upstream_pid")
            read -r cpu_busy_before cpu_total_before < <(server_cpu_ticks)
            run_load "$proto" "$url" "$DURATION" &
            loader=$!
            peak=0
            # Peak RSS while the connections are open; builtins only, so the sampling
            # costs (almost) nothing.
            while kill -0 "$loader" 2>/dev/null; do
                if [[ ${#ps[@]} -gt 0 ]]; then
                    now=$(rss_kb "${ps[@]}")
                    if ((now > peak)); then
                        peak=$now
                    fi
                fi
                sleep 0.5
            done
            wait "$loader"
            parse_load "$proto"
            proxy_us=-
            if [[ ${#ps[@]} -gt 0 ]]; then
                proxy_us=$(per_request_us $(($(cpu_ticks "${ps[@]}") - before)) "$requests")
            fi
            read -r cpu_busy cpu_total < <(server_cpu_ticks)
            up_ticks=$(($(cpu_ticks "$upstream_pid") - up_before))
            ours=$up_ticks
            if [[ ${#ps[@]} -gt 0 ]]; then
                ours=$((ours + $(cpu_ticks "${ps[@]}") - before))
            fi
            cpu_total=$((cpu_total - cpu_total_before))
            srv=$(share "$ours" "$cpu_total")
            other=$(share $((cpu_busy - cpu_busy_before - ours)) "$cpu_total")
            up_us=$(per_request_us "$up_ticks" "$requests")
            idle_mb=-
            load_mb=-
            if [[ ${#ps[@]} -gt 0 ]]; then
                idle_mb=$(mb "${result[idle/$path/rss]}")
                load_mb=$(mb "$peak")
            fi
            result[$proto/$path/rps/$round]=$rps
            result[$proto/$path/cpu/$round]=$proxy_us
            if ((peak > ${result[$proto/$path/rss]:-0})); then
                result[$proto/$path/rss]=$peak
            fi
            printf '%-3s %-5s %-13s %9s %8s %8s %10s %9s %9s %9s %7s %5s %6s\n' "$round" "$proto" \
                "$path" "$rps" "$p50" "$p99" "$proxy_us" "$up_us" "$idle_mb" "$load_mb" "$failed" \
                "$srv" "$other"
        done
    done
done
cat <<EOF
(RSS in MB, both processes added for a pair; rss_load: the peak during the run.
 srv%: the share of the server CPU used by the proxies and the upstream during the run;
 other%: used by anything else there (other jobs on the machine). rps means little when
 srv% is well under 100 or other% is high; CPU per request holds up better.)
EOF

# --- fixed rate ----------------------------------------------------------------------

per_client=$(((FIXED_RATE + H2_CONNS - 1) / H2_CONNS))
printf '\nfixed rate: h2load -c%s --rps=%s (%s req/s in all), %ss per run\n' \
    "$H2_CONNS" "$per_client" "$((per_client * H2_CONNS))" "$FIXED_DURATION"
printf '%-3s %-5s %-13s %9s %8s %8s %7s\n' '#' proto path rps p50_ms p99_ms failed
# One sample's p99 moves by tens of percent with the machine: the runs repeat for
# every round, Weft or HAProxy going first in turn, and the summary takes the median.
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2)); then order=(weft haproxy weft-pair haproxy-pair); else order=(haproxy weft haproxy-pair weft-pair); fi
  for proto in h1 h2; do
    for path in "${order[@]}"; do
        if [[ $proto == h1 ]]; then
            url=${url_h1[$path]}
            flags=(--h1 -m1)
        else
            url=${url_h2[$path]}
            flags=(-m"$H2_STREAMS")
        fi
        rm -f "$work/h2load.log"
        taskset -c "$LOAD_CPU" h2load "${flags[@]}" -c"$H2_CONNS" --rps="$per_client" \
            -D"$FIXED_DURATION" --log-file="$work/h2load.log" "$url" >"$work/load.out" 2>&1
        parse_h2load "$work/load.out" "$work/h2load.log"
        result[fixed-$proto/$path/p99/$round]=$p99
        printf '%-3s %-5s %-13s %9s %8s %8s %7s\n' "$round" "$proto" "$path" "$rps" "$p50" "$p99" "$failed"
    done
  done
done

# --- summary ---------------------------------------------------------------------

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "nan" }'; }
# round_ratio PROTO METRIC PATH_A PATH_B: the median over the rounds of A/B, each
# ratio taken within one round so that both sides saw the same machine load.
round_ratio() {
    local r ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do
        ratios+=("$(ratio "${result[$1/$3/$2/$r]}" "${result[$1/$4/$2/$r]}")")
    done
    printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# verdict VALUE OP LIMIT: "ok" or "miss" (printed only; never the exit status).
verdict() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (v == "nan") { print "?"; exit }
        ok = (op == "<=") ? (v + 0 <= l + 0) : (v + 0 >= l + 0)
        print ok ? "ok" : "miss" }'
}

printf '\nsummary: Weft / HAProxy, same run%s\n' \
    "$( ((ROUNDS > 1)) && echo ", median of $ROUNDS rounds")"
printf '%-5s %-18s %8s %6s %8s %6s %10s\n' proto metric single "" pair "" target
for proto in h1 h2; do
    s=$(round_ratio "$proto" rps weft haproxy)
    p=$(round_ratio "$proto" rps weft-pair haproxy-pair)
    printf '%-5s %-18s %8s %6s %8s %6s %10s\n' "$proto" "rps" "$s" "$(verdict "$s" '>=' 1.1)" \
        "$p" "$(verdict "$p" '>=' 1.1)" ">= 1.10"
    s=$(round_ratio "$proto" cpu weft haproxy)
    p=$(round_ratio "$proto" cpu weft-pair haproxy-pair)
    printf '%-5s %-18s %8s %6s %8s %6s %10s\n' "$proto" "cpu/request" "$s" "$(verdict "$s" '<=' 0.9)" \
        "$p" "$(verdict "$p" '<=' 0.9)" "<= 0.90"
    s=$(round_ratio "fixed-$proto" p99 weft haproxy)
    p=$(round_ratio "fixed-$proto" p99 weft-pair haproxy-pair)
    printf '%-5s %-18s %8s %6s %8s %6s %10s\n' "$proto" "p99 @${FIXED_RATE}/s" "$s" "$(verdict "$s" '<=' 1)" \
        "$p" "$(verdict "$p" '<=' 1)" "<= 1.00"
done
idle=$(mb "${result[idle/weft/rss]}")
read -r anon file < <(rss_breakdown "${pid_of[weft]}")
busy=$(mb "${result[h1/weft/rss]}")
printf 'weft RSS idle                        %6s MB  %-4s target <= 5 MB   (HAProxy: %s MB)\n' \
    "$idle" "$(verdict "$idle" '<=' 5)" "$(mb "${result[idle/haproxy/rss]}")"
printf 'weft RSS with %3s keep-alive conns   %6s MB  %-4s target <= 15 MB  (HAProxy: %s MB)\n' \
    "$H1_CONNS" "$busy" "$(verdict "$busy" '<=' 15)" "$(mb "${result[h1/haproxy/rss]}")"
printf 'weft RSS now: %s MB anonymous, %s MB file-backed (mapped pages of the binary and libraries)\n' \
    "$anon" "$file"
