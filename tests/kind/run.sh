#!/usr/bin/env bash
# End-to-end test of Weft on a local kind cluster, with real nodes, images and
# pods. The checks are the checkout scenario the test crate runs on its own
# cluster (tests/tests/k8s_checkout.rs), the same code (tests/src/checkout.rs)
# built as the `checkout-scenario` program; this script only makes the cluster,
# the images and the in-cluster Prometheus. Needs docker (a running engine),
# kind, kubectl and cargo; CI cannot run it (no Docker engine there).
#
#   tests/kind/run.sh                  create the cluster, test, delete the cluster
#   KEEP_CLUSTER=1 tests/kind/run.sh   leave the cluster up for a look afterwards
#
# Steps: build the four images and load them into the nodes; `kubectl apply -k
# deploy/k8s` with nothing made by hand before it; install a Prometheus with
# Weft's scrape jobs; then checkout-scenario: weft-control's bootstrap (the
# development CA and the webhook certificate it made, the caBundle), the checkout
# example installed and every pod injected and Ready, a load generator pod's
# requests through web all succeed, orders' and users' sidecars took web's calls
# over mTLS with web's identity, Prometheus scrapes every sidecar, and orders
# scaled 1 -> 3 -> 1 and restarted under load loses no request.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${KIND_CLUSTER:-weft}
tag=${WEFT_TAG:-0.1.0}

log() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

for tool in docker kind kubectl cargo; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    else
        echo "cluster $cluster kept (kind delete cluster --name $cluster)"
    fi
}
trap cleanup EXIT

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

# The injector waits for the kubelet to deliver the Secrets weft-control made
# (up to a minute after they were created).
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

log "checkout scenario (tests/src/checkout.rs)"
(cd "$repo" && cargo run --locked -q -p weft-tests --bin checkout-scenario -- \
    --prometheus weft-monitoring/prometheus:9090)
