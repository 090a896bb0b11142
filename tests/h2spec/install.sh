#!/usr/bin/env bash
# Builds h2spec, the HTTP/2 conformance checker, at the versions pinned in this
# folder's go.mod, into a cache outside the clone keyed by go.sum, and prints the
# binary's path. A no-op once built. Needs Go and the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
key=$(sha256sum "$here/go.sum" | cut -c1-12)
cache=${WEFT_TOOLS_CACHE:-/var/cache/weft/tools}
bin="$cache/h2spec-$key/h2spec"

if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null 2>&1 || {
        echo "h2spec: Go is not installed" >&2
        exit 1
    }
    mkdir -p "$(dirname "$bin")"
    (cd "$here" && go build -trimpath -o "$bin.tmp" github.com/summerwind/h2spec/cmd/h2spec)
    mv "$bin.tmp" "$bin"
fi
echo "$bin"
