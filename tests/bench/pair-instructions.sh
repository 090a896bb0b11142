#!/usr/bin/env bash
# Instructions per request of the Weft mTLS pair (tests/bench/mtls.sh's weft-mtls path:
# HTTP/1.1 client -> proxy A -> HTTP/2 streams over mTLS -> proxy B -> upstream), each
# proxy counted by valgrind's callgrind, as instructions.sh counts one proxy. Prints A's,
# B's and their sum; asserts nothing. With KEEP=DIR the callgrind files stay there, for
# callgrind_annotate (where the instructions go).
#
# Env: REQUESTS (default 10000), WARMUP (1000), CONNS (50), BASE_PORT (18600),
#      H1_OVER_H2 (true; false: HTTP/1.1 between the proxies), WEFT_BIN (a weft-proxy
#      to measure; default: built as shipped, see shipped-build.sh), PROFILE (sidecar),
#      TOOLS (release: the cargo profile weft-control and bench-upstream are built with;
#      debug does as well, since only the proxies are counted).
# Needs: valgrind, h2load (nghttp2-client), curl.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-1000}
CONNS=${CONNS:-50}
BASE_PORT=${BASE_PORT:-18600}
SERVER_CPU=${SERVER_CPU:-0-63}
H1_OVER_H2=${H1_OVER_H2:-true}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
need valgrind valgrind
need h2load nghttp2-client
need curl curl
[[ $missing == 0 ]] || exit 1

# shellcheck source=SCRIPTDIR/shipped-build.sh
source "$here/shipped-build.sh"
weft_bin=${WEFT_BIN:-$(build_shipped_proxy "$repo" "${PROFILE:-sidecar}")}
TOOLS=${TOOLS:-release}
(cd "$repo" && cargo build --profile "${TOOLS/debug/dev}" --quiet -p weft-control -p weft-tests \
    --bin weft-control --bin bench-upstream)
tools=$target_dir/$TOOLS

make_workdir weft-pair-insn
UPSTREAM=$(port 0)
CP_GRPC=$(port 1)
CP_ADMIN=$(port 2)
WEFT_A=$(port 3)
WEFT_B=$(port 4)

start upstream "$tools/bench-upstream" "127.0.0.1:$UPSTREAM"
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"
printf 'services: []\n' >"$work/mesh.yaml"
RUST_LOG=warn start control "$tools/weft-control" serve --mesh "$work/mesh.yaml" \
    --grpc "127.0.0.1:$CP_GRPC" --admin "127.0.0.1:$CP_ADMIN" --state-dir "$work/cp"
wait_ready control "http://127.0.0.1:$CP_ADMIN/ready"
token() { "$tools/weft-control" token --state-dir "$work/cp" --service-account "$1"; }

render weft-mtls-client.yaml.in "$work/weft-a.yaml" OUTBOUND_PORT="$(port 10)" ADMIN_PORT="$(port 11)" \
    LISTEN_PORT="$WEFT_A" ENDPOINT="127.0.0.1:$WEFT_B" TOKEN="$(token bench-client)" CP_PORT="$CP_GRPC" \
    H1_OVER_H2="$H1_OVER_H2"
render weft-mtls-server.yaml.in "$work/weft-b.yaml" OUTBOUND_PORT="$(port 12)" ADMIN_PORT="$(port 13)" \
    LISTEN_PORT="$WEFT_B" ENDPOINT="127.0.0.1:$UPSTREAM" TOKEN="$(token bench-server)" CP_PORT="$CP_GRPC"

declare -A pid_of
for name in weft-a weft-b; do
    RUST_LOG=warn start "$name" valgrind --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$work/$name.callgrind" "$weft_bin" run --config "$work/$name.yaml"
    pid_of[$name]=$started
done
wait_ready weft-a "http://127.0.0.1:$(port 11)/ready"
wait_ready weft-b "http://127.0.0.1:$(port 13)/ready"
wait_ready pair "http://127.0.0.1:$WEFT_A/"

# Warm up (connections, pools, certificates, lazy init), then count only the measured
# window: zero the counters, drive the load, dump.
h2load --h1 -n "$WARMUP" -c "$CONNS" "http://127.0.0.1:$WEFT_A/" >/dev/null 2>&1
for name in weft-a weft-b; do callgrind_control -z "${pid_of[$name]}" >/dev/null 2>&1; done
completed=$(h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$WEFT_A/" 2>/dev/null |
    awk '/^requests:/ {print $8}')
for name in weft-a weft-b; do callgrind_control -d "${pid_of[$name]}" >/dev/null 2>&1; done

declare -A per
for name in weft-a weft-b; do
    dump=$(find "$work" -name "$name.callgrind.*" | sort | head -n 1)
    total=$(awk '/^summary:/ {print $2}' "${dump:-/dev/null}")
    per[$name]=$(( ${total:-0} / ${completed:-1} ))
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$dump" "$KEEP/$name.callgrind"
    fi
done
printf '%-10s %10s %10s %10s\n' "" "A insn/req" "B insn/req" "pair"
printf '%-10s %10s %10s %10s\n' "h1-over-h2=$H1_OVER_H2" "${per[weft-a]}" "${per[weft-b]}" \
    $(( per[weft-a] + per[weft-b] ))
echo "($completed of $REQUESTS HTTP/1.1 requests counted after $WARMUP warm-up requests, $CONNS connections)"
