# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034 # $here, $target_dir, lib.sh's $work and $started are
# set by the caller; $pid_of and $pair_url are read by it
# Sourced by pair-instructions.sh and pair-kernel.sh (after lib.sh): starts the upstream,
# weft-control and one mTLS pair, Weft's as mtls.sh's weft-mtls path runs it (HTTP/1.1
# client -> proxy A -> HTTP/2 streams over mTLS -> proxy B -> upstream) or, with
# PAIR=haproxy, HAProxy's as its haproxy-mtls-h2hop path runs it (the same configs:
# HTTP/1.1 in, h2 over TLS 1.3 with client certificates between the two, HTTP/1.1 to
# the upstream). The caller sets $here, $repo, $target_dir, $BASE_PORT, $SERVER_CPU.
#
# Env: PAIR (weft or haproxy), H1_OVER_H2 (true; false: HTTP/1.1 between Weft's
#      proxies), WEFT_BIN (the weft-proxy to run; default: built as shipped, see
#      shipped-build.sh), PROFILE (sidecar), TOOLS (release: the cargo profile
#      weft-control and bench-upstream are built with).

PAIR=${PAIR:-weft}
H1_OVER_H2=${H1_OVER_H2:-true}

# pair_needs: checks the tools PAIR needs (sets $missing, as need does).
pair_needs() {
    need h2load nghttp2-client
    need curl curl
    if [[ $PAIR == haproxy ]]; then
        need haproxy haproxy
        need openssl openssl
    elif [[ $PAIR != weft ]]; then
        echo "PAIR must be weft or haproxy, not $PAIR" >&2
        exit 2
    fi
}

# pair_start LAUNCHER: builds what the pair needs, then starts it in a fresh $work,
# each proxy by `LAUNCHER NAME COMMAND...` (NAME weft-a or weft-b, whichever pair it
# is; LAUNCHER sets $started as lib.sh's start does). Sets $pid_of[NAME] and $pair_url
# (proxy A's HTTP/1.1 listener), and returns once a request crosses the pair.
declare -A pid_of
pair_url=
pair_start() {
    local launcher=$1 weft_bin tools upstream cp_grpc cp_admin a b
    if [[ $PAIR == weft ]]; then
        # shellcheck source=SCRIPTDIR/shipped-build.sh
        source "$here/shipped-build.sh"
        weft_bin=${WEFT_BIN:-$(build_shipped_proxy "$repo" "${PROFILE:-sidecar}")}
    fi
    TOOLS=${TOOLS:-release}
    (cd "$repo" && cargo build --profile "${TOOLS/debug/dev}" --quiet -p weft-control -p weft-tests \
        --bin weft-control --bin bench-upstream)
    tools=$target_dir/$TOOLS

    make_workdir weft-pair
    upstream=$(port 0)
    cp_grpc=$(port 1)
    cp_admin=$(port 2)
    a=$(port 3)
    b=$(port 4)
    pair_url=http://127.0.0.1:$a/

    start_upstream_and_control "$tools/bench-upstream" "$tools/weft-control" "$upstream" \
        "$cp_grpc" "$cp_admin"

    if [[ $PAIR == weft ]]; then
        render weft-mtls-client.yaml.in "$work/weft-a.yaml" OUTBOUND_PORT="$(port 10)" \
            ADMIN_PORT="$(port 11)" LISTEN_PORT="$a" ENDPOINT="127.0.0.1:$b" \
            TOKEN="$(token bench-client)" CP_PORT="$cp_grpc" H1_OVER_H2="$H1_OVER_H2"
        render weft-mtls-server.yaml.in "$work/weft-b.yaml" OUTBOUND_PORT="$(port 12)" \
            ADMIN_PORT="$(port 13)" LISTEN_PORT="$b" ENDPOINT="127.0.0.1:$upstream" \
            TOKEN="$(token bench-server)" CP_PORT="$cp_grpc"
        RUST_LOG=warn "$launcher" weft-a "$weft_bin" run --config "$work/weft-a.yaml"
        pid_of[weft-a]=$started
        RUST_LOG=warn "$launcher" weft-b "$weft_bin" run --config "$work/weft-b.yaml"
        pid_of[weft-b]=$started
        wait_ready weft-a "http://127.0.0.1:$(port 11)/ready"
        wait_ready weft-b "http://127.0.0.1:$(port 13)/ready"
    else
        # Only the h1h2 frontends (HTTP/1.1 in, h2 on the hop) carry load.
        haproxy_cert hap-a bench-client
        haproxy_cert hap-b bench-server
        render haproxy-mtls-a.cfg.in "$work/haproxy-a.cfg" H1_PORT="$(port 10)" \
            H2_PORT="$(port 11)" H1_NEXT="127.0.0.1:$(port 12)" H2_NEXT="127.0.0.1:$(port 13)" \
            CERT="$work/hap-a.pem" CA="$work/cp/ca.pem" H1H2_PORT="$a" H1H2_NEXT="127.0.0.1:$b"
        render haproxy-mtls-b.cfg.in "$work/haproxy-b.cfg" H1_PORT="$(port 12)" \
            H2_PORT="$(port 13)" H1_NEXT="127.0.0.1:$upstream" H2_NEXT="127.0.0.1:$upstream" \
            CERT="$work/hap-b.pem" CA="$work/cp/ca.pem" H1H2_PORT="$b"
        "$launcher" weft-a haproxy -db -f "$work/haproxy-a.cfg"
        pid_of[weft-a]=$started
        "$launcher" weft-b haproxy -db -f "$work/haproxy-b.cfg"
        pid_of[weft-b]=$started
    fi
    wait_ready pair "$pair_url"
}

# pair_label: how the results line names the pair.
pair_label() {
    if [[ $PAIR == haproxy ]]; then echo haproxy-h2hop; else echo "weft h1-over-h2=$H1_OVER_H2"; fi
}
