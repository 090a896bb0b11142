#!/usr/bin/env bash
# End-to-end test of Weft on a local kind cluster: what the test crate checks
# against its own apiserver (tests/tests/bootstrap.rs, tests/tests/kubernetes.rs),
# with real nodes, images and pods. Needs docker (a running engine), kind, kubectl
# and curl; CI cannot run it (no Docker there).
#
#   tests/kind/run.sh                  create the cluster, test, delete the cluster
#   KEEP_CLUSTER=1 tests/kind/run.sh   leave the cluster up for a look afterwards
#
# Steps: build the four images and load them into the nodes; `kubectl apply -k
# deploy/k8s` with nothing made by hand before it; check that weft-control created
# the mesh CA (a development CA) and the webhook's certificate and set the caBundle;
# install a Prometheus with Weft's scrape jobs; install the checkout example
# (namespace labelled weft.io/inject=enabled); check every pod got the proxy; send
# traffic to web; check that orders' and users' proxies took web's requests over
# mTLS with web's identity (weft_inbound_requests_by_peer_total{tls="true",
# peer_identity=".../sa/web"}) and that Prometheus scrapes every sidecar.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${KIND_CLUSTER:-weft}
tag=${WEFT_TAG:-0.1.0}
requests=${REQUESTS:-50}
# GET /profile/{user} makes web call users and orders.
web_path=${WEB_PATH:-/profile/1}
local_port=${LOCAL_PORT:-18080}

log() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

for tool in docker kind kubectl curl; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

work=$(mktemp -d)
port_forward_pid=""
cleanup() {
    if [[ -n "$port_forward_pid" ]]; then
        kill "$port_forward_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    else
        echo "cluster $cluster kept (kind delete cluster --name $cluster)"
    fi
}
trap cleanup EXIT

# Polls `$@` every 2 s until it succeeds, at most $1 seconds.
wait_for() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 2
    done
}

# Percent-encodes a PromQL query for a URL.
urlencode() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
            [a-zA-Z0-9.~_-]) out+="$c" ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# Prints the first sample value of an instant query (empty when no result).
prom_query() {
    local q
    q=$(urlencode "$1")
    kubectl get --raw "/api/v1/namespaces/weft-monitoring/services/prometheus:9090/proxy/api/v1/query?query=$q" |
        sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}

log "cluster $cluster"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config "$repo/tests/kind/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

log "images"
for target in control proxy proxy-init examples; do
    case "$target" in
        control) image=weft/weft-control:$tag ;;
        proxy) image=weft/weft-proxy:$tag ;;
        proxy-init) image=weft/weft-proxy-init:$tag ;;
        examples) image=weft/weft-examples:$tag ;;
    esac
    docker build --target "$target" -t "$image" "$repo"
    kind load docker-image --name "$cluster" "$image"
done

log "control plane and injector: kubectl apply -k deploy/k8s, nothing before it"
kubectl apply -k "$repo/deploy/k8s"
kubectl -n weft-system rollout status deployment/weft-control --timeout=180s

log "weft-control's bootstrap"
# Both Secrets exist, made by weft-control (no operator CA was given, so the mesh
# CA is a development CA), and both webhooks carry the injector Secret's ca.crt.
for secret in weft-identity-ca weft-injector-tls; do
    maker=$(kubectl -n weft-system get secret "$secret" -o jsonpath='{.metadata.labels.weft\.io/generated-by}') ||
        fail "Secret weft-system/$secret was not created"
    [[ "$maker" == weft-control ]] || fail "Secret $secret is labelled generated-by='$maker'"
    echo "Secret $secret created by $maker"
done
injector_ca=$(kubectl -n weft-system get secret weft-injector-tls -o jsonpath='{.data.ca\.crt}')
[[ -n "$injector_ca" ]] || fail "Secret weft-injector-tls has no ca.crt"
ca_bundles_set() {
    local bundles
    bundles=$(kubectl get mutatingwebhookconfiguration weft-injector \
        -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{"\n"}{end}')
    [[ $(grep -cxF -- "$injector_ca" <<<"$bundles") -eq 2 ]]
}
wait_for 60 ca_bundles_set || fail "the webhooks' caBundle is not the injector Secret's ca.crt"
echo "caBundle set on both webhooks"
kubectl -n weft-system logs deployment/weft-control | grep -q 'DEVELOPMENT CA' ||
    fail "weft-control did not warn about the development CA"
# The injector waits for the kubelet to deliver the Secrets it mounts (up to a
# minute after they were created).
kubectl -n weft-system rollout status deployment/weft-injector --timeout=300s

log "prometheus"
kubectl apply -f "$repo/tests/kind/prometheus.yaml"
{
    printf 'global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n'
    kubectl -n weft-system get configmap weft-prometheus-scrape -o jsonpath='{.data.weft-scrape\.yml}'
} >"$work/prometheus.yml"
kubectl -n weft-monitoring create configmap prometheus-config \
    --from-file=prometheus.yml="$work/prometheus.yml" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n weft-monitoring rollout status deployment/prometheus --timeout=180s

log "checkout example"
kubectl apply -k "$repo/deploy/k8s/examples/checkout"
services=(web orders payments notifications users)
for svc in "${services[@]}"; do
    kubectl -n checkout rollout status "deployment/$svc" --timeout=300s
done

log "every pod has the proxy"
pods=$(kubectl -n checkout get pods -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
pod_count=0
for pod in $pods; do
    inits=$(kubectl -n checkout get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')
    [[ " $inits " == *" weft-init "* && " $inits " == *" weft-proxy "* ]] ||
        fail "$pod was not injected (init containers: $inits)"
    pod_count=$((pod_count + 1))
done
((pod_count >= ${#services[@]})) || fail "only $pod_count pods in checkout"
echo "$pod_count pods injected"

log "traffic: $requests requests to web$web_path"
kubectl -n checkout port-forward service/web "$local_port:8080" >"$work/port-forward.log" 2>&1 &
port_forward_pid=$!
wait_for 30 curl -fsS -o /dev/null "http://127.0.0.1:$local_port$web_path" ||
    fail "web is not answering through the port-forward: $(cat "$work/port-forward.log")"
ok=0
for ((i = 0; i < requests; i++)); do
    if curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$local_port$web_path"; then
        ok=$((ok + 1))
    fi
done
echo "$ok/$requests requests succeeded"
((ok == requests)) || fail "$((requests - ok)) requests failed"

log "mTLS between the proxies"
# Sums, in one proxy's /metrics (read through the API server's pod proxy: no
# port-forward, no tools in the image), the inbound requests that came over mTLS
# from web's identity.
web_id="spiffe://cluster.local/ns/checkout/sa/web"
mtls_from_web() {
    kubectl get --raw "/api/v1/namespaces/checkout/pods/$1:7191/proxy/metrics" |
        awk -v id="peer_identity=\"$web_id\"" \
            '/^weft_inbound_requests_by_peer_total\{/ && /tls="true"/ && index($0, id) { sum += $NF }
             END { printf "%d\n", sum }'
}
for svc in orders users; do
    total=0
    for pod in $(kubectl -n checkout get pods -l "app.kubernetes.io/name=$svc" -o jsonpath='{.items[*].metadata.name}'); do
        count=$(mtls_from_web "$pod") || fail "cannot read $pod's proxy metrics"
        total=$((total + count))
    done
    echo "$svc: $total requests from web over mTLS"
    ((total > 0)) || fail "$svc's proxies counted no mTLS requests from $web_id"
done

log "prometheus scrapes every sidecar"
scraped() {
    local up
    up=$(prom_query 'count(up{job="weft-proxies",namespace="checkout"} == 1)')
    echo "  sidecars up in Prometheus: ${up:-0}/$pod_count"
    [[ -n "$up" ]] && ((up >= pod_count))
}
wait_for 120 scraped || fail "Prometheus does not scrape every sidecar"
mtls=$(prom_query 'sum(weft_inbound_requests_by_peer_total{tls="true"})')
echo "  weft_inbound_requests_by_peer_total{tls=\"true\"} in Prometheus: ${mtls:-none}"
[[ -n "$mtls" && "$mtls" != 0 ]] || fail "Prometheus has no mTLS request counts"

log "PASS"
