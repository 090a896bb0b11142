#!/usr/bin/env bash
# Instructions per request, weft-proxy vs HAProxy, counted by valgrind's callgrind.
#
# CPU time on a shared machine swings from run to run; instruction counts do not
# (callgrind counts, it does not time; see README.md here). This prints, for one proxy in
# front of a local upstream, the proxy's instructions per request over a fixed number
# of requests after a warm-up (HTTP/1.1 via `h2load --h1`, and h2c), for Weft and for HAProxy
# configured like-for-like (see haproxy.cfg.in), and the Weft/HAProxy ratio. It asserts
# nothing. Instructions are a proxy for CPU cost, not the same thing: memory stalls
# and syscalls' kernel time are not counted.
#
# Env: REQUESTS (default 10000), WARMUP (1000), CONNS (50), STREAMS (h2 streams per conn, 10),
#      BASE_PORT (29100), PROFILE (cargo profile of weft-proxy: sidecar, as shipped, or
#      release), TARGET (the shipped musl build by default, see shipped-build.sh;
#      host for glibc), PGO (1, as shipped; 0 without), KEEP (a directory to keep the callgrind files in, for
#      callgrind_annotate), WEFT_BIN (measure this weft-proxy binary instead of building
#      one, e.g. another branch's build), WEFT_EXTRA (YAML appended to weft-proxy's config,
#      e.g. 'access_log: {to: /tmp/access.log}'). Needs: valgrind, h2load (nghttp2-client),
#      haproxy.
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-1000}
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}
BASE_PORT=${BASE_PORT:-29100}

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y $2" >&2; exit 1; }; }
need valgrind valgrind
need h2load nghttp2-client
need haproxy haproxy

PROFILE=${PROFILE:-sidecar}
# shellcheck source=SCRIPTDIR/shipped-build.sh
source tests/bench/shipped-build.sh
if [ -n "${WEFT_BIN:-}" ]; then
    weft_bin=$WEFT_BIN
else
    weft_bin=$(build_shipped_proxy "$PWD" "$PROFILE")
fi
cargo build --release -q -p weft-tests --bin bench-upstream
target=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP"
        cp "$work"/*.callgrind* "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

up=$BASE_PORT
weft_listen=$((BASE_PORT + 1))
weft_admin=$((BASE_PORT + 2))
weft_outbound=$((BASE_PORT + 3))
hap_h1=$((BASE_PORT + 4))
hap_h2=$((BASE_PORT + 5))

"$target/bench-upstream" "127.0.0.1:$up" >"$work/upstream.log" 2>&1 &
pids+=($!)

sed -e "s/@ID@/insn/; s/@OUTBOUND_PORT@/$weft_outbound/; s/@ADMIN_PORT@/$weft_admin/" \
    -e "s/@LISTEN_PORT@/$weft_listen/; s/@ENDPOINT@/127.0.0.1:$up/" \
    tests/bench/weft-client.yaml.in >"$work/weft.yaml"
if [ -n "${WEFT_EXTRA:-}" ]; then
    printf '%s\n' "$WEFT_EXTRA" >>"$work/weft.yaml"
fi
sed -e "s/@H1_PORT@/$hap_h1/; s/@H2_PORT@/$hap_h2/" \
    -e "s/@H1_NEXT@/127.0.0.1:$up/; s/@H2_NEXT@/127.0.0.1:$up/" \
    tests/bench/haproxy.cfg.in >"$work/haproxy.cfg"

wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# count NAME PROTO PORT CMD...: runs CMD under callgrind, drives REQUESTS through PORT,
# stops it, prints instructions per request.
count() {
    local name=$1 proto=$2 port=$3
    shift 3
    local out="$work/$name-$proto.callgrind"
    valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" "$@" >"$work/$name-$proto.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    local flags=(-c "$CONNS")
    if [ "$proto" = h1 ]; then flags+=(--h1); else flags+=(-m "$STREAMS"); fi
    # Warm up (connections, pools, lazy init), then count only the measured window:
    # zero the counters, drive the load, dump.
    h2load -n "$WARMUP" "${flags[@]}" "http://127.0.0.1:$port/" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null
    local completed
    completed=$(h2load -n "$REQUESTS" "${flags[@]}" "http://127.0.0.1:$port/" 2>/dev/null |
        awk '/^requests:/ {print $8}')
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    local total dump
    dump=$(find "$work" -name "$name-$proto.callgrind.*" | sort | head -n 1)
    total=$(awk '/^summary:/ {print $2}' "${dump:-/dev/null}")
    if [ -z "$total" ] || [ -z "$completed" ] || [ "$completed" = 0 ]; then
        echo "$name $proto: no result (see $work)" >&2
        echo 0
        return
    fi
    echo $((total / completed))
}

printf '%-6s %14s %14s %8s\n' proto "weft insn/req" "haproxy" ratio
for proto in h1 h2; do
    wport=$weft_listen
    hport=$hap_h1
    [ "$proto" = h2 ] && hport=$hap_h2
    w=$(count weft "$proto" "$wport" "$weft_bin" run --config "$work/weft.yaml")
    h=$(count haproxy "$proto" "$hport" haproxy -db -f "$work/haproxy.cfg")
    ratio=$(awk -v w="$w" -v h="$h" 'BEGIN { if (h > 0) printf "%.2f", w / h; else print "-" }')
    printf '%-6s %14s %14s %8s\n' "$proto" "$w" "$h" "$ratio"
done
echo "($REQUESTS requests counted after $WARMUP warm-up requests, $CONNS connections)"
