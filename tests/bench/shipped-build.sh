# shellcheck shell=bash
# Sourced by proxy.sh and instructions.sh: builds weft-proxy as the Dockerfile ships it.
#
# The shipped sidecar is a static musl binary, and that is what the benchmarks
# measure by default: it maps no libc.so, libm or ld.so, which a glibc build adds to
# its resident set (about 1.7 MB at idle), and its allocator is mimalloc either way.
# TARGET=host measures the glibc build instead. Without the musl target (rustup
# target add x86_64-unknown-linux-musl) or musl-gcc (apt-get install -y musl-tools,
# for ring's C), the host build is measured, with a warning.
#
# It is also built with profile-guided optimisation (proxy/pgo.sh, a few minutes more
# the first time); PGO=0 measures the build without it, as does a machine without
# llvm-tools (with a warning).
#
# shipped_target prints the target triple to build for, or nothing for the host.
shipped_target() {
    local want="${TARGET:-$(uname -m)-unknown-linux-musl}"
    if [[ $want == host ]]; then
        return
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx "$want"; then
        echo "warning: target $want not installed (rustup target add $want);" \
            "measuring the host build, not the shipped one" >&2
        return
    fi
    if [[ $want == *musl ]] && ! command -v musl-gcc >/dev/null 2>&1; then
        echo "warning: musl-gcc missing (apt-get install -y musl-tools);" \
            "measuring the host build, not the shipped one" >&2
        return
    fi
    echo "$want"
}

# build_shipped_proxy REPO PROFILE: builds weft-proxy and prints the binary's path.
build_shipped_proxy() {
    local repo=$1 profile=$2 target
    target=$(shipped_target)
    local pgo=${PGO:-1} host
    host=$(rustc -vV | sed -n 's/^host: //p')
    if [[ $pgo != 0 && ! -x $(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata ]]; then
        echo "warning: llvm-tools not installed (rustup component add llvm-tools);" \
            "measuring the build without PGO, not the shipped one" >&2
        pgo=0
    fi
    echo "building weft-proxy ($profile, ${target:-host}, PGO $pgo)..." >&2
    if [[ $pgo != 0 ]]; then
        "$repo/proxy/pgo.sh" --profile "$profile" ${target:+--target "$target"} | tail -n 1
    else
        # The flags pgo.sh builds the proxy with (see there), so that PGO=0
        # differs from the shipped build by the profile alone.
        local flags="${RUSTFLAGS:-} -Cllvm-args=--max-store-memcpy=32"
        if [[ $target == *musl ]]; then
            flags="$flags -Clink-arg=-Wl,-z,pack-relative-relocs"
        fi
        (cd "$repo" && RUSTFLAGS=$flags \
            cargo build --profile "$profile" ${target:+--target "$target"} --quiet -p weft-proxy)
        echo "${CARGO_TARGET_DIR:-$repo/target}/${target:+$target/}$profile/weft-proxy"
    fi
}
