#!/usr/bin/env bash
# Instructions per request of an mTLS pair (pair-setup.sh: Weft's, or HAProxy's with
# PAIR=haproxy), each proxy counted by valgrind's callgrind, as instructions.sh counts
# one proxy. Prints A's, B's and their sum; asserts nothing. With KEEP=DIR the
# callgrind files stay there, for callgrind_annotate (where the instructions go).
#
# Env: REQUESTS (default 10000), WARMUP (1000), CONNS (50), BASE_PORT (18600), and
#      pair-setup.sh's PAIR, H1_OVER_H2, WEFT_BIN, PROFILE, TOOLS.
# Needs: valgrind, h2load (nghttp2-client), curl; haproxy and openssl for PAIR=haproxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-1000}
CONNS=${CONNS:-50}
BASE_PORT=${BASE_PORT:-18600}
SERVER_CPU=${SERVER_CPU:-0-63}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
# shellcheck source=SCRIPTDIR/pair-setup.sh
source "$here/pair-setup.sh"
need valgrind valgrind
pair_needs
[[ $missing == 0 ]] || exit 1

counted() { # NAME COMMAND...: starts COMMAND under callgrind
    local name=$1
    shift
    start "$name" valgrind --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$work/$name.callgrind" "$@"
}
pair_start counted

# Warm up (connections, pools, certificates, lazy init), then count only the measured
# window: zero the counters, drive the load, dump.
h2load --h1 -n "$WARMUP" -c "$CONNS" "$pair_url" >/dev/null 2>&1
for name in weft-a weft-b; do callgrind_control -z "${pid_of[$name]}" >/dev/null 2>&1; done
completed=$(h2load --h1 -n "$REQUESTS" -c "$CONNS" "$pair_url" 2>/dev/null |
    awk '/^requests:/ {print $8}')
for name in weft-a weft-b; do callgrind_control -d "${pid_of[$name]}" >/dev/null 2>&1; done

declare -A per
for name in weft-a weft-b; do
    dump=$(find "$work" -name "$name.callgrind.*" | sort | head -n 1)
    total=$(awk '/^summary:/ {print $2}' "${dump:-/dev/null}")
    per[$name]=$(( ${total:-0} / ${completed:-1} ))
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$dump" "$KEEP/$name.callgrind"
    fi
done
printf '%-10s %10s %10s %10s\n' "" "A insn/req" "B insn/req" "pair"
printf '%-10s %10s %10s %10s\n' "$(pair_label)" "${per[weft-a]}" "${per[weft-b]}" \
    $(( per[weft-a] + per[weft-b] ))
echo "($completed of $REQUESTS HTTP/1.1 requests counted after $WARMUP warm-up requests, $CONNS connections)"
