#!/usr/bin/env bash
# Fetches the Gateway API CRDs (standard channel: Gateway, GatewayClass, HTTPRoute,
# GRPCRoute, ReferenceGrant) from the published Go module sigs.k8s.io/gateway-api at
# the pinned version, once, into a cache outside the clone. The CRDs are not copied
# into the repository. Prints the directory holding the CRD YAML files on stdout (and
# only that); progress goes to stderr.
#
#   WEFT_GATEWAY_API_VERSION  the module version (default below)
#   WEFT_CLUSTER_CACHE        cache root, as tests/cluster/build.sh
#
# The module comes only through the Go module proxy (GOPROXY as the machine has it).
# Exits 3 when the cache is empty and Go is not installed.
set -euo pipefail

version="${WEFT_GATEWAY_API_VERSION:-v1.4.0}"
root="${WEFT_CLUSTER_CACHE:-}"
if [ -z "$root" ]; then
  root=/var/cache/weft/cluster
  if ! mkdir -p "$root" 2>/dev/null || [ ! -w "$root" ]; then
    root="${XDG_CACHE_HOME:-$HOME/.cache}/weft/cluster"
  fi
fi
cache="$root/gateway-api-$version"
crds="$cache/crd/standard"

if [ -f "$cache/complete" ]; then
  echo "$crds"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "gateway-api.sh: go is not installed; it is needed to fetch sigs.k8s.io/gateway-api@$version" >&2
  exit 3
fi
export GOTOOLCHAIN=local
mkdir -p "$cache"
modcache="$cache/modcache"
echo "gateway-api.sh: downloading sigs.k8s.io/gateway-api@$version" >&2
dir="$(GOMODCACHE="$modcache" GOFLAGS=-modcacherw go mod download -json "sigs.k8s.io/gateway-api@$version" |
  awk -F'"' '$2 == "Dir" { print $4 }')"
if [ -z "$dir" ] || [ ! -d "$dir/config/crd/standard" ]; then
  echo "gateway-api.sh: no config/crd/standard in the module at $dir" >&2
  exit 1
fi
rm -rf "$cache/crd"
mkdir -p "$crds"
cp "$dir"/config/crd/standard/*.yaml "$crds/"
rm -rf "$modcache"
touch "$cache/complete"
echo "$crds"
