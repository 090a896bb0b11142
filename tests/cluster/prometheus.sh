#!/usr/bin/env bash
# Builds Prometheus with its Kubernetes service discovery (Debian's package is built
# without it) from the Go module pinned in prometheus/ beside this script, once, into a
# cache outside the clone keyed by its version. Prints the binary's path on stdout (and
# only that); progress goes to stderr. Exit 3: Go is not installed.
#
#   WEFT_CLUSTER_CACHE  cache root (default /var/cache/weft/cluster)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    PATH="/usr/local/go/bin:$PATH"
  else
    echo "prometheus.sh: go is not installed" >&2
    exit 3
  fi
fi
export GOTOOLCHAIN=local
export GOFLAGS=-mod=readonly

version="$(awk '$1 == "github.com/prometheus/prometheus" { print $2 }' "$here/prometheus/go.mod" | head -n 1)"
if [ -z "$version" ]; then
  echo "prometheus.sh: cannot read the pinned version from $here/prometheus/go.mod" >&2
  exit 1
fi
# Keyed by the build tags too, so a cache of a full build is not taken for this one.
cache="${WEFT_CLUSTER_CACHE:-/var/cache/weft/cluster}/prometheus-${version}-k8s-sd"
binary="$cache/prometheus"
if [ -x "$binary" ] && [ -f "$cache/complete" ]; then
  echo "$binary"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ -x "$binary" ] && [ -f "$cache/complete" ]; then
  echo "$binary"
  exit 0
fi
started=$(date +%s)
echo "prometheus.sh: building Prometheus $version into $cache (once; takes a while)" >&2
(
  cd "$here/prometheus"
  # Prometheus's own build tags leave out every service discovery but Kubernetes'
  # (the only one the tests' scrape rules use) and with them the cloud SDKs, the bulk
  # of a cold build.
  nice go build -trimpath -tags remove_all_sd,enable_kubernetes_sd -ldflags="-s -w" \
    -o "$binary.partial" github.com/prometheus/prometheus/cmd/prometheus
)
mv "$binary.partial" "$binary"
echo "prometheus $version go $(go env GOVERSION)" >"$cache/complete"
echo "prometheus.sh: built in $(($(date +%s) - started)) s" >&2
echo "$binary"
