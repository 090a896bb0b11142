#!/usr/bin/env bash
# What routes cost, and the gateway beside HAProxy. Prints numbers; asserts nothing
# about time (non-zero exit only when the benchmark could not run).
#
# 1. Route matching: one weft-proxy (workers: 1), two services on the same upstream
#    (bench-upstream): `plain` without routes, and `routed` with 100 routes where
#    the request matches only the last (each of the 99 before it names a path
#    prefix, a method and a header the request does not have). wrk HTTP/1.1 through
#    the outbound listener, alternating the two services each round, the proxy's
#    CPU time per request (/proc/PID/stat) for each, and their ratio.
# 2. The gateway: TLS from the client (wrk over https, keep-alive), host and path
#    routing (/api/orders to one service, the rest to another, both on the
#    upstream), weft-proxy in gateway mode beside HAProxy with the same certificate
#    and the same routing (one thread each). Requests/s and CPU per request of each,
#    and weft/HAProxy ratios.
#
# Load on $LOAD_CPU, proxies and upstream on $SERVER_CPU (taskset).
# Usage:  tests/bench/routes.sh        WEFT_PROXY=/path/to/weft-proxy tests/bench/routes.sh
# Environment: DURATION=10 (seconds per run), ROUNDS=3, CONNS=32, LOAD_CPU=0
#   SERVER_CPU=1, BASE_PORT=18500 (uses BASE_PORT..+9), KEEP_LOGS=1, CARGO_TARGET_DIR.
# Without WEFT_PROXY it builds weft-proxy and bench-upstream with --release.
# Debian packages: wrk, haproxy, openssl, util-linux (taskset), curl.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18500}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
need wrk wrk
need haproxy haproxy
need openssl openssl
need taskset util-linux
need curl curl
if [[ $missing == 1 ]]; then
    exit 1
fi

if [[ -z "${WEFT_PROXY:-}" ]]; then
    (cd "$repo" && cargo build --release -q -p weft-proxy -p weft-tests --bin weft-proxy --bin bench-upstream)
    WEFT_PROXY=$target_dir/release/weft-proxy
fi
upstream_bin=${BENCH_UPSTREAM:-$target_dir/release/bench-upstream}

make_workdir weft-routes-bench

UPSTREAM=$(port 0)
OUTBOUND=$(port 1)
ADMIN=$(port 2)
GW_TLS=$(port 3)
GW_ADMIN=$(port 4)
GW_OUTBOUND=$(port 5)
HAP_TLS=$(port 6)

start upstream "$upstream_bin" "127.0.0.1:$UPSTREAM"
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"

# --- 1. route matching ------------------------------------------------------------

{
    echo "workers: 1"
    echo "outbound: {listen: \"127.0.0.1:$OUTBOUND\"}"
    echo "admin: {listen: \"127.0.0.1:$ADMIN\"}"
    echo "services:"
    echo "  - name: plain"
    echo "    endpoints: [{address: \"127.0.0.1:$UPSTREAM\"}]"
    echo "  - name: routed"
    echo "    endpoints: [{address: \"127.0.0.1:$UPSTREAM\"}]"
    echo "    routes:"
    for i in $(seq 0 98); do
        echo "      - {name: r$i, match: [{path: {prefix: /svc$i}, method: POST, headers: [{name: x-tenant, exact: t$i}]}]}"
    done
    echo "      - {name: last, match: [{path: {exact: /}}]}"
} >"$work/routes.yaml"
RUST_LOG=warn start weft "$WEFT_PROXY" run --config "$work/routes.yaml"
weft_pid=$started
wait_ready weft "http://127.0.0.1:$ADMIN/ready"

# run_wrk PID URL [wrk options]: "rps us_per_request non2xx" for one wrk run,
# counting PID's CPU time.
run_wrk() {
    local pid=$1 url=$2 before out requests rps bad
    shift 2
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$url")
    local ticks=$(($(cpu_ticks "$pid") - before))
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    echo "$rps $(per_us "$ticks" "${requests:-0}") ${bad:-0}"
}

sum_plain=0
sum_routed=0
printf '\nroute matching: wrk -t1 -c%s, %ss per run, proxy on CPU %s\n' "$CONNS" "$DURATION" "$SERVER_CPU"
printf '%-6s %-8s %10s %12s %7s\n' round service rps cpu_us/req non2xx
for round in $(seq 1 "$ROUNDS"); do
    for svc in plain routed; do
        read -r rps us bad < <(run_wrk "$weft_pid" "http://127.0.0.1:$OUTBOUND/" -H "Host: $svc")
        printf '%-6s %-8s %10s %12s %7s\n' "$round" "$svc" "$rps" "$us" "$bad"
        if [[ $svc == plain ]]; then
            sum_plain=$(awk -v a="$sum_plain" -v b="$us" 'BEGIN {print a + b}')
        else
            sum_routed=$(awk -v a="$sum_routed" -v b="$us" 'BEGIN {print a + b}')
        fi
    done
done
awk -v p="$sum_plain" -v r="$sum_routed" -v n="$ROUNDS" 'BEGIN {
    printf "mean CPU per request: no routes %.2f us, 100 routes (last matches) %.2f us, ratio %.3f\n",
        p / n, r / n, r / p }'
routed_hits=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^weft_requests_total/ && /route="last"/ {s += $2} END {print s + 0}')
echo "requests counted under route=\"last\": $routed_hits"

# --- 2. gateway TLS termination and routing beside HAProxy -------------------------

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=shop.example" -addext "subjectAltName=DNS:shop.example" \
    -keyout "$work/shop.key" -out "$work/shop.crt" 2>/dev/null
cat "$work/shop.crt" "$work/shop.key" >"$work/shop.pem"

cat >"$work/gateway.yaml" <<CONF
workers: 1
outbound: {listen: "127.0.0.1:$GW_OUTBOUND"}
admin: {listen: "127.0.0.1:$GW_ADMIN"}
services:
  - name: web
    endpoints: [{address: "127.0.0.1:$UPSTREAM"}]
    routes: [{name: orders, match: [{path: {prefix: /api/orders}}], backends: [{service: orders}]}]
  - name: orders
    endpoints: [{address: "127.0.0.1:$UPSTREAM"}]
gateway:
  listeners:
    - listen: "127.0.0.1:$GW_TLS"
      tls: [{cert: "$work/shop.crt", key: "$work/shop.key"}]
  hosts: [{host: shop.example, service: web}]
CONF
RUST_LOG=warn start gateway "$WEFT_PROXY" run --config "$work/gateway.yaml"
gateway_pid=$started

cat >"$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 3s
    timeout client 90s
    timeout server 90s
    timeout http-keep-alive 90s
    timeout http-request 10s
frontend tls_in
    bind 127.0.0.1:$HAP_TLS ssl crt $work/shop.pem alpn h2,http/1.1
    http-request return status 404 unless { req.hdr(host),field(1,:) -i shop.example }
    use_backend orders if { path_beg /api/orders }
    default_backend web
backend web
    server upstream 127.0.0.1:$UPSTREAM
backend orders
    server upstream 127.0.0.1:$UPSTREAM
CONF
start haproxy haproxy -db -f "$work/haproxy.cfg"
haproxy_pid=$started

resolve=(--resolve "shop.example:$GW_TLS:127.0.0.1" --resolve "shop.example:$HAP_TLS:127.0.0.1" --cacert "$work/shop.crt")
wait_ready gateway "https://shop.example:$GW_TLS/api/orders/1" "${resolve[@]}"
wait_ready haproxy "https://shop.example:$HAP_TLS/api/orders/1" "${resolve[@]}"

declare -A g_rps=([weft]=0 [haproxy]=0) g_us=([weft]=0 [haproxy]=0)
printf '\ngateway: TLS from the client (wrk https keep-alive, -c%s), /api/orders/1 routed; %ss per run\n' "$CONNS" "$DURATION"
printf '%-6s %-8s %10s %12s %7s\n' round proxy rps cpu_us/req non2xx
for round in $(seq 1 "$ROUNDS"); do
    for name in weft haproxy; do
        if [[ $name == weft ]]; then
            pid=$gateway_pid port=$GW_TLS
        else
            pid=$haproxy_pid port=$HAP_TLS
        fi
        read -r rps us bad < <(run_wrk "$pid" "https://127.0.0.1:$port/api/orders/1" -H "Host: shop.example")
        printf '%-6s %-8s %10s %12s %7s\n' "$round" "$name" "$rps" "$us" "$bad"
        g_rps[$name]=$(awk -v a="${g_rps[$name]}" -v b="$rps" 'BEGIN {print a + b}')
        g_us[$name]=$(awk -v a="${g_us[$name]}" -v b="$us" 'BEGIN {print a + b}')
    done
done
awk -v wr="${g_rps[weft]}" -v hr="${g_rps[haproxy]}" -v wu="${g_us[weft]}" -v hu="${g_us[haproxy]}" -v n="$ROUNDS" 'BEGIN {
    printf "mean: weft %.0f rps %.2f us/req, haproxy %.0f rps %.2f us/req\n", wr / n, wu / n, hr / n, hu / n
    printf "weft/haproxy: rps %.3f, CPU per request %.3f\n", wr / hr, wu / hu }'
