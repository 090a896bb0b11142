#!/usr/bin/env bash
# Benchmark: two builds of weft-proxy against each other, each as an outbound ->
# inbound pair (or one proxy), with HAProxy's pair in the same run.
#
# For judging one change: a single proxy.sh run moves with the machine by more than
# most changes do. Here both builds serve the same load in the same minute, in
# alternating order (old first on odd rounds, new first on even ones), and the
# figure is the per-round ratio of CPU time per request, new/old, next to each
# build's ratio to HAProxy. Prints numbers; asserts nothing about time.
#
# Usage:  tests/bench/compare.sh OLD_BINARY NEW_BINARY
#   e.g. build each side with proxy/pgo.sh --out FILE (PGO builds: without the profile
#   the spread between rounds is as large as most changes).
# Environment:
#   ROUNDS=8 DURATION=4   rounds, and seconds per load run
#   PROTOS="h1 h2"        HTTP/1.1 (wrk) and/or h2c (h2load)
#   SHAPE=pair            pair (client -> A -> B -> upstream) or single (one proxy)
#   H1_CONNS=50 H2_CONNS=10 H2_STREAMS=10 LOAD_CPU=0 SERVER_CPU=1
#   BASE_PORT=18400       uses BASE_PORT..BASE_PORT+29 on 127.0.0.1
#   CARGO_TARGET_DIR      where bench-upstream is built (default: <repo>/target)
# Debian packages: wrk, nghttp2-client (h2load), haproxy, util-linux (taskset), curl.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ $# -ne 2 || ! -x $1 || ! -x $2 ]]; then
    echo "usage: $0 OLD_WEFT_PROXY NEW_WEFT_PROXY (two executable files)" >&2
    exit 2
fi
old_bin=$1
new_bin=$2
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-4}
PROTOS=${PROTOS:-h1 h2}
SHAPE=${SHAPE:-pair}
H1_CONNS=${H1_CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [[ $SHAPE != pair && $SHAPE != single ]]; then
    echo "SHAPE must be pair or single, not '$SHAPE'" >&2
    exit 2
fi

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
need wrk wrk
need h2load nghttp2-client
need haproxy haproxy
need taskset util-linux
need curl curl
if [[ $missing == 1 ]]; then
    exit 1
fi

echo "building bench-upstream (release)..."
(cd "$repo" && cargo build --release --quiet -p weft-tests --bin bench-upstream)

make_workdir weft-compare

UPSTREAM=$(port 0)
start upstream "$target_dir/release/bench-upstream" "127.0.0.1:$UPSTREAM"
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"

# Per build (old at offset 1, new at 11): the entry port and the pids whose CPU counts.
declare -A entry procs
for side in old new; do
    if [[ $side == old ]]; then base=1 bin=$old_bin; else base=11 bin=$new_bin; fi
    listen=$(port "$base")
    if [[ $SHAPE == pair ]]; then
        inbound=$(port $((base + 1)))
        render weft-client.yaml.in "$work/$side-a.yaml" ID="$side-a" \
            OUTBOUND_PORT="$(port $((base + 2)))" ADMIN_PORT="$(port $((base + 3)))" \
            LISTEN_PORT="$listen" ENDPOINT="127.0.0.1:$inbound"
        render weft-server.yaml.in "$work/$side-b.yaml" ID="$side-b" \
            OUTBOUND_PORT="$(port $((base + 4)))" ADMIN_PORT="$(port $((base + 5)))" \
            LISTEN_PORT="$inbound" ENDPOINT="127.0.0.1:$UPSTREAM"
        RUST_LOG=warn start "$side-a" "$bin" run --config "$work/$side-a.yaml"
        procs[$side]=$started
        RUST_LOG=warn start "$side-b" "$bin" run --config "$work/$side-b.yaml"
        procs[$side]+=" $started"
        wait_ready "$side-b" "http://127.0.0.1:$(port $((base + 5)))/ready"
    else
        render weft-client.yaml.in "$work/$side-a.yaml" ID="$side" \
            OUTBOUND_PORT="$(port $((base + 2)))" ADMIN_PORT="$(port $((base + 3)))" \
            LISTEN_PORT="$listen" ENDPOINT="127.0.0.1:$UPSTREAM"
        RUST_LOG=warn start "$side-a" "$bin" run --config "$work/$side-a.yaml"
        procs[$side]=$started
    fi
    wait_ready "$side-a" "http://127.0.0.1:$(port $((base + 3)))/ready"
    entry[$side]=$listen
done

# HAProxy: h1 and h2 entry ports at 21 and 22; the pair's B at 23 and 24.
if [[ $SHAPE == pair ]]; then
    render haproxy.cfg.in "$work/haproxy-a.cfg" H1_PORT="$(port 21)" H2_PORT="$(port 22)" \
        H1_NEXT="127.0.0.1:$(port 23)" H2_NEXT="127.0.0.1:$(port 24)"
    render haproxy.cfg.in "$work/haproxy-b.cfg" H1_PORT="$(port 23)" H2_PORT="$(port 24)" \
        H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM"
    start haproxy-a haproxy -db -f "$work/haproxy-a.cfg"
    procs[haproxy]=$started
    start haproxy-b haproxy -db -f "$work/haproxy-b.cfg"
    procs[haproxy]+=" $started"
else
    render haproxy.cfg.in "$work/haproxy-a.cfg" H1_PORT="$(port 21)" H2_PORT="$(port 22)" \
        H1_NEXT="127.0.0.1:$UPSTREAM" H2_NEXT="127.0.0.1:$UPSTREAM"
    start haproxy-a haproxy -db -f "$work/haproxy-a.cfg"
    procs[haproxy]=$started
fi
wait_ready haproxy-a "http://127.0.0.1:$(port 21)/"

ticks() { # PID...: utime+stime in clock ticks, summed
    local pid total=0 fields
    for pid in "$@"; do
        read -ra fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}

hz=$(getconf CLK_TCK)
# measure NAME PROTO: one load run; sets us[NAME] (CPU µs per request) and rps[NAME].
declare -A us rps
measure() {
    local name=$1 proto=$2 url n before after
    # shellcheck disable=SC2086 # procs holds a space-separated pid list
    before=$(ticks ${procs[$name]})
    if [[ $name == haproxy ]]; then
        if [[ $proto == h1 ]]; then url=http://127.0.0.1:$(port 21)/; else url=http://127.0.0.1:$(port 22)/; fi
    else
        url=http://127.0.0.1:${entry[$name]}/
    fi
    if [[ $proto == h1 ]]; then
        n=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$H1_CONNS" -d"${DURATION}s" "$url" |
            awk '/requests in/ {print $1}')
    else
        n=$(taskset -c "$LOAD_CPU" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" "$url" 2>/dev/null |
            awk '/^requests:/ {print $8}')
    fi
    # shellcheck disable=SC2086
    after=$(ticks ${procs[$name]})
    if [[ -z $n || $n == 0 ]]; then
        echo "$name ($proto) served no requests" >&2
        exit 1
    fi
    us[$name]=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
    rps[$name]=$((n / DURATION))
}

printf '\n%s, %s rounds of %ss; CPU µs per request of the %s; load on CPU %s, servers on CPU %s\n' \
    "$SHAPE" "$ROUNDS" "$DURATION" "$([[ $SHAPE == pair ]] && echo "pair (A + B)" || echo proxy)" \
    "$LOAD_CPU" "$SERVER_CPU"
printf '%-5s %5s %9s %9s %9s %9s %9s %8s %8s %8s\n' proto round old_us new_us haproxy_us \
    old_rps new_rps new/old old/hap new/hap
for proto in $PROTOS; do
    : >"$work/ratios"
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2)); then order=(old new); else order=(new old); fi
        for name in "${order[@]}" haproxy; do
            measure "$name" "$proto"
        done
        line=$(awk -v o="${us[old]}" -v n="${us[new]}" -v h="${us[haproxy]}" \
            'BEGIN {printf "%.3f %.3f %.3f", n / o, o / h, n / h}')
        echo "$line" >>"$work/ratios"
        read -r no oh nh <<<"$line"
        printf '%-5s %5s %9s %9s %9s %9s %9s %8s %8s %8s\n' "$proto" "$round" "${us[old]}" \
            "${us[new]}" "${us[haproxy]}" "${rps[old]}" "${rps[new]}" "$no" "$oh" "$nh"
    done
    for col in 1 2 3; do
        sort -n -k"$col","$col" "$work/ratios" | awk -v c="$col" '{v[NR] = $c; s += $c}
            END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                 printf "%.3f %.3f\n", m, s / NR}' >"$work/stat$col"
    done
    read -r m1 a1 <"$work/stat1"
    read -r m2 a2 <"$work/stat2"
    read -r m3 a3 <"$work/stat3"
    printf '%-5s median new/old %s (mean %s); old/haproxy %s (%s); new/haproxy %s (%s)\n' \
        "$proto" "$m1" "$a1" "$m2" "$a2" "$m3" "$a3"
done
