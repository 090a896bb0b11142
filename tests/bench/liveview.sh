#!/usr/bin/env bash
# What the live view costs a proxy: instructions per request, counted by callgrind,
# for one weft-proxy that learns its mesh from a weft-control and reports to it
# (`limits.report_interval: 1s`, the default) and for the same proxy with reporting
# off (`0s`), and how much of it building the reports takes (report::build,
# callgrind's inclusive count, spread over the requests). It asserts nothing.
#
# Under callgrind the proxy runs ~50x slower, so the counted window spans far more
# reports per request than at full speed: the per-request difference it prints is an
# upper bound of what reporting costs a busy proxy.
#
# Run twice to see the run-to-run spread (connections are scheduled a little
# differently each time); a difference within it is no measurable cost.
#
# Env: REQUESTS (default 10000), WARMUP (1000), CONNS (20), BASE_PORT (29300),
#      WEFT_BIN / CONTROL_BIN (binaries to measure; default: release builds of this
#      tree), UPSTREAM_BIN (the bench-upstream to answer; not measured). Needs: valgrind, h2load (nghttp2-client).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
BASE_PORT=${BASE_PORT:-29300}
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-1000}
CONNS=${CONNS:-20}
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
need valgrind valgrind
need h2load nghttp2-client
need callgrind_annotate valgrind
[[ $missing == 0 ]] || exit 1

target=${CARGO_TARGET_DIR:-target}/release
if [[ -z "${WEFT_BIN:-}" || -z "${CONTROL_BIN:-}" ]]; then
    cargo build --release -q -p weft-proxy -p weft-control --bin weft-proxy --bin weft-control
fi
if [[ -z "${UPSTREAM_BIN:-}" ]]; then
    cargo build --release -q -p weft-tests --bin bench-upstream
fi
upstream_bin=${UPSTREAM_BIN:-$target/bench-upstream}
weft_bin=${WEFT_BIN:-$target/weft-proxy}
control_bin=${CONTROL_BIN:-$target/weft-control}

make_workdir weft-liveview-bench
up=$(port 0)
grpc=$(port 1)
control_admin=$(port 2)
listen=$(port 3)
admin=$(port 4)
outbound=$(port 5)

"$upstream_bin" "127.0.0.1:$up" >"$work/upstream.log" 2>&1 &
pids+=($!)
cat >"$work/mesh.yaml" <<EOF
services:
  - name: bench
    namespace: default
    endpoints:
      - {address: 127.0.0.1:$up, weight: 100, state: ready}
EOF
"$control_bin" serve --mesh "$work/mesh.yaml" --grpc "127.0.0.1:$grpc" \
    --admin "127.0.0.1:$control_admin" --state-dir "$work/control" >"$work/control.log" 2>&1 &
pids+=($!)

wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}
wait_port "$control_admin"

# config INTERVAL: the proxy's config with reports every INTERVAL (0s: none).
config() {
    cat <<EOF
workers: 1
node: {id: bench-$1, namespace: default, workload: bench-client}
control_plane: "http://127.0.0.1:$grpc"
outbound: {listen: 127.0.0.1:$outbound}
admin: {listen: 127.0.0.1:$admin}
upstreams:
  - {service: bench, listen: 127.0.0.1:$listen}
limits: {report_interval: $1}
EOF
}

# count NAME INTERVAL: instructions per request and, if any, per report.
count() {
    local name=$1 interval=$2 out="$work/$1.callgrind"
    config "$interval" >"$work/$name.yaml"
    valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" \
        "$weft_bin" run --config "$work/$name.yaml" >"$work/$name.log" 2>&1 &
    local pid=$!
    wait_port "$listen"
    # The first answers also wait for the control plane's endpoints.
    h2load -n "$WARMUP" -c "$CONNS" --h1 "http://127.0.0.1:$listen/" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null
    local completed
    completed=$(h2load -n "$REQUESTS" -c "$CONNS" --h1 "http://127.0.0.1:$listen/" 2>/dev/null |
        awk '/^requests:/ {print $8}')
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    local dump total
    dump=$(find "$work" -name "$name.callgrind.*" | sort | head -n 1)
    total=$(awk '/^summary:/ {print $2}' "${dump:-/dev/null}")
    if [[ -z "$total" || -z "$completed" || "$completed" == 0 ]]; then
        echo "$name: no result (see $work, KEEP_LOGS=1)" >&2
        return 1
    fi
    # Inclusive instructions of building the reports within the window.
    local build
    build=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null |
        awk '/weft_proxy::report::build/ && !n {gsub(",", "", $1); print $1; n = 1}' || true)
    echo "$name $((total / completed)) $(( ${build:-0} / completed )) $completed"
}

printf '%-10s %14s %26s\n' reporting "insn/request" "of which report::build"
read -r _ on_req on_build on_n < <(count on 1s)
read -r _ off_req off_build off_n < <(count off 0s)
printf '%-10s %14s %26s\n' "every 1s" "$on_req" "$on_build"
printf '%-10s %14s %26s\n' "off" "$off_req" "$off_build"
awk -v a="$on_req" -v b="$off_req" \
    'BEGIN { printf "difference: %d insn/request (%.2f%%)\n", a - b, (b > 0 ? 100 * (a - b) / b : 0) }'
echo "($on_n / $off_n requests counted after $WARMUP warm-up requests, $CONNS connections, HTTP/1.1)"
