#!/usr/bin/env bash
# End-to-end test of Weft on a local kind cluster. Needs docker, kind, kubectl,
# openssl and curl; CI cannot run it (no Docker there).
#
#   tests/kind/run.sh              create the cluster, test, delete the cluster
#   KEEP_CLUSTER=1 tests/kind/run.sh   leave the cluster up for a look afterwards
#
# Steps: build the four images and load them into the nodes; make the webhook's
# serving certificate and the mesh CA; install deploy/k8s and set the webhook's
# caBundle; install a Prometheus with Weft's scrape jobs; install the checkout
# example (namespace labelled weft.io/inject=enabled); check every pod got the
# proxy; send traffic to web; check the proxies count it as mTLS
# (weft_requests_total{tls="true"}) and that Prometheus scrapes every sidecar.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${KIND_CLUSTER:-weft}
tag=${WEFT_TAG:-0.1.0}
requests=${REQUESTS:-50}
web_path=${WEB_PATH:-/}
local_port=${LOCAL_PORT:-18080}

log() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

for tool in docker kind kubectl openssl curl; do
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

log "certificates"
# Webhook: a CA the API server trusts through caBundle, and a serving certificate
# for the Service's DNS name.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=weft-injector-ca" \
    -keyout "$work/webhook-ca.key" -out "$work/webhook-ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=weft-injector.weft-system.svc" \
    -keyout "$work/webhook.key" -out "$work/webhook.csr" 2>/dev/null
printf 'subjectAltName=DNS:weft-injector.weft-system.svc,DNS:weft-injector.weft-system.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >"$work/webhook.ext"
openssl x509 -req -in "$work/webhook.csr" -CA "$work/webhook-ca.crt" -CAkey "$work/webhook-ca.key" \
    -CAcreateserial -days 2 -extfile "$work/webhook.ext" -out "$work/webhook.crt" 2>/dev/null
# The mesh's CA (identity), shared by the control plane replicas, shaped as
# cert-manager makes it: a root (ca.crt) and an issuing intermediate below it
# (tls.crt, with its PKCS#8 key in tls.key). Proxies trust the root.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/O=weft/CN=weft mesh root CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/mesh-root.key" -out "$work/mesh-root.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/O=weft/CN=weft mesh issuing CA" \
    -keyout "$work/mesh-ca.key" -out "$work/mesh-ca.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$work/mesh-ca.ext"
openssl x509 -req -in "$work/mesh-ca.csr" -CA "$work/mesh-root.crt" -CAkey "$work/mesh-root.key" \
    -CAcreateserial -days 2 -extfile "$work/mesh-ca.ext" -out "$work/mesh-ca.crt" 2>/dev/null

kubectl apply -f "$repo/deploy/k8s/namespace.yaml"
kubectl -n weft-system create secret tls weft-injector-tls \
    --cert "$work/webhook.crt" --key "$work/webhook.key" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n weft-system create secret generic weft-identity-ca --type=kubernetes.io/tls \
    --from-file=tls.crt="$work/mesh-ca.crt" --from-file=tls.key="$work/mesh-ca.key" \
    --from-file=ca.crt="$work/mesh-root.crt" --dry-run=client -o yaml | kubectl apply -f -

log "control plane and injector"
kubectl apply -k "$repo/deploy/k8s"
ca_bundle=$(base64 <"$work/webhook-ca.crt" | tr -d '\n')
kubectl patch mutatingwebhookconfiguration weft-injector --type=json -p "[
  {\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$ca_bundle\"},
  {\"op\": \"add\", \"path\": \"/webhooks/1/clientConfig/caBundle\", \"value\": \"$ca_bundle\"}
]"
kubectl -n weft-system rollout status deployment/weft-injector --timeout=180s
kubectl -n weft-system rollout status deployment/weft-control --timeout=180s

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
# Sums weft_requests_total samples with tls="true" in one proxy's /metrics, read
# through the API server's pod proxy (no port-forward, no tools in the image).
tls_requests() {
    kubectl get --raw "/api/v1/namespaces/checkout/pods/$1:7191/proxy/metrics" |
        awk '/^weft_requests_total\{/ && /tls="true"/ { sum += $NF } END { printf "%d\n", sum }'
}
for svc in web orders; do
    total=0
    for pod in $(kubectl -n checkout get pods -l "app.kubernetes.io/name=$svc" -o jsonpath='{.items[*].metadata.name}'); do
        count=$(tls_requests "$pod") || fail "cannot read $pod's proxy metrics"
        total=$((total + count))
    done
    echo "$svc: $total requests over mTLS"
    ((total > 0)) || fail "$svc's proxies counted no mTLS requests"
done

log "prometheus scrapes every sidecar"
scraped() {
    local up
    up=$(prom_query 'count(up{job="weft-proxies",namespace="checkout"} == 1)')
    echo "  sidecars up in Prometheus: ${up:-0}/$pod_count"
    [[ -n "$up" ]] && ((up >= pod_count))
}
wait_for 120 scraped || fail "Prometheus does not scrape every sidecar"
mtls=$(prom_query 'sum(weft_requests_total{tls="true"})')
echo "  weft_requests_total{tls=\"true\"} in Prometheus: ${mtls:-none}"
[[ -n "$mtls" && "$mtls" != 0 ]] || fail "Prometheus has no mTLS request counts"

log "PASS"
