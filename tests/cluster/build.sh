#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) from the Go modules pinned in k8s/ and etcd/
# beside this script, once, into a cache outside the clone keyed by their versions.
# When the cache is complete it does nothing. Prints the cache's bin directory on stdout
# (and only that); progress goes to stderr.
#
#   WEFT_CLUSTER_CACHE  cache root (default /var/cache/weft/cluster)
#
# Modules come only through the Go module proxy (GOPROXY as the machine has it); the Go
# toolchain is the one installed, never a downloaded one. Exits 3 when the cache is
# incomplete and Go is not installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# The version a module requires, read from its go.mod.
required_version() {
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m { print $2 }' "$1" | head -n 1
}
k8s_version="$(required_version "$here/k8s/go.mod" k8s.io/kubernetes)"
etcd_version="$(required_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
if [ -z "$k8s_version" ] || [ -z "$etcd_version" ]; then
  echo "build.sh: cannot read the pinned versions from $here/{k8s,etcd}/go.mod" >&2
  exit 1
fi

cache="${WEFT_CLUSTER_CACHE:-/var/cache/weft/cluster}/k8s-${k8s_version}-etcd-${etcd_version}"
bin="$cache/bin"
programs=(etcd kube-apiserver kube-controller-manager kube-scheduler)

complete() {
  [ -f "$cache/complete" ] || return 1
  local p
  for p in "${programs[@]}"; do
    [ -x "$bin/$p" ] || return 1
  done
}

if complete; then
  echo "$bin"
  exit 0
fi

# Needed only to build: a complete cache runs without Go.
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: go is not installed; the Kubernetes tests need it to build $cache" >&2
  exit 3
fi
export GOTOOLCHAIN=local
export GOFLAGS=-mod=readonly

mkdir -p "$cache"
# Tests of several binaries may ask at once: one builds, the others wait for it.
exec 9>"$cache/lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

started=$(date +%s)
echo "build.sh: building Kubernetes $k8s_version and etcd $etcd_version into $cache (once; takes a while)" >&2
staging="$cache/bin.partial"
rm -rf "$staging"
mkdir -p "$staging"

# What `kube-apiserver --version` and the /version endpoint report.
version_pkg=k8s.io/component-base/version
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
major="${k8s_version#v}"
major="${major%%.*}"
ldflags="-s -w -X $version_pkg.gitVersion=$k8s_version -X $version_pkg.gitMajor=$major -X $version_pkg.gitMinor=$minor -X $version_pkg.gitTreeState=clean"

(
  cd "$here/etcd"
  nice go build -trimpath -ldflags="-s -w" -o "$staging/etcd" .
)
(
  cd "$here/k8s"
  nice go build -trimpath -ldflags="$ldflags" -o "$staging/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
)

rm -rf "$bin"
mv "$staging" "$bin"
echo "k8s $k8s_version etcd $etcd_version go $(go env GOVERSION)" >"$cache/complete"
echo "build.sh: built in $(($(date +%s) - started)) s" >&2
echo "$bin"
