#!/usr/bin/env bash
# What the policy layer costs: one weft-proxy, two services on the same local
# upstreams (nginx), one with every policy off, one with every policy on, measured
# with wrk in the same run, alternating so drift hits both alike.
#
#   tests/bench/policy.sh            # builds weft-proxy --release first
#   WEFT_PROXY=/path/to/weft-proxy tests/bench/policy.sh
#
# Knobs: DURATION (10s), CONNECTIONS (32), ROUNDS (2), WORKERS (1, proxy threads).
# Needs: wrk and nginx (Debian: apt-get install -y wrk nginx), curl.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
WORKERS=${WORKERS:-1}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "policy.sh: $tool is not installed" >&2; exit 1; }
done

if [[ -z "${WEFT_PROXY:-}" ]]; then
    (cd "$repo" && cargo build --release -q -p weft-proxy)
    WEFT_PROXY="${CARGO_TARGET_DIR:-$repo/target}/release/weft-proxy"
fi

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
make_workdir weft-policy-bench

# A free port each: the kernel picks, we read it back.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

up1=$(free_port)
up2=$(free_port)
outbound=$(free_port)
admin=$(free_port)

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work;
    proxy_temp_path $work;
    fastcgi_temp_path $work;
    uwsgi_temp_path $work;
    scgi_temp_path $work;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$up1;
        listen 127.0.0.1:$up2;
        location / { return 200 "ok\n"; }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

endpoints="[{address: \"127.0.0.1:$up1\"}, {address: \"127.0.0.1:$up2\"}]"
cat >"$work/proxy.yaml" <<CONF
workers: $WORKERS
outbound: {listen: "127.0.0.1:$outbound"}
admin: {listen: "127.0.0.1:$admin"}
services:
  - name: plain
    endpoints: $endpoints
    policy: {load_balancer: round-robin}
  - name: guarded
    endpoints: $endpoints
$(grep -v '^#' "$here/guarded-policy.yaml")
CONF
RUST_LOG=warn "$WEFT_PROXY" run --config "$work/proxy.yaml" &
pids+=($!)

ready=0
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 &&
        curl -fsS "http://127.0.0.1:$up1/" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ $ready == 1 ]] || { echo "policy.sh: proxy or nginx not ready" >&2; exit 1; }

# Runs wrk against one service; prints "rps p99_ms non2xx".
measure() {
    local host=$1 duration=$2 out
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$duration" --latency -H "Host: $host" \
        "http://127.0.0.1:$outbound/")
    local rps p99 bad
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    echo "$rps ${p99:-?} ${bad:-0}"
}

measure plain 2s >/dev/null
measure guarded 2s >/dev/null

declare -A rps_sum=([plain]=0 [guarded]=0)
declare -A p99_max=([plain]=0 [guarded]=0)
printf '%-8s %-6s %12s %10s %8s\n' round policy rps p99_ms non2xx
for round in $(seq 1 "$ROUNDS"); do
    for svc in plain guarded; do
        read -r rps p99 bad < <(measure "$svc" "$DURATION")
        label=off
        [[ $svc == guarded ]] && label=on
        printf '%-8s %-6s %12s %10s %8s\n' "$round" "$label" "$rps" "$p99" "$bad"
        rps_sum[$svc]=$(awk -v a="${rps_sum[$svc]}" -v b="$rps" 'BEGIN {print a + b}')
        p99_max[$svc]=$(awk -v a="${p99_max[$svc]}" -v b="$p99" 'BEGIN {print (b > a ? b : a)}')
    done
done

awk -v off="${rps_sum[plain]}" -v on="${rps_sum[guarded]}" -v n="$ROUNDS" \
    -v p_off="${p99_max[plain]}" -v p_on="${p99_max[guarded]}" 'BEGIN {
    printf "\npolicies off: %.0f rps (mean), p99 %.3f ms (worst)\n", off / n, p_off
    printf "policies on:  %.0f rps (mean), p99 %.3f ms (worst)\n", on / n, p_on
    printf "on/off throughput ratio: %.3f (cost %.1f%%)\n", on / off, (1 - on / off) * 100
}'
