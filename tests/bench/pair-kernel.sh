#!/usr/bin/env bash
# Where an mTLS pair's CPU goes besides its own code (pair-setup.sh: Weft's, or
# HAProxy's with PAIR=haproxy): per HTTP/1.1 request, each proxy's user and system
# time (/proc), its syscalls by kind and context switches (perf stat, software events
# and syscall tracepoints, which need no hardware counters), and the TCP segments the
# whole machine sent (/proc/net/snmp: the pair, the client and the upstream). Prints
# numbers; asserts nothing.
#
# Load: wrk -t1 -c$CONNS for $SECONDS_RUN s on $LOAD_CPU, after a warm-up; the pair and
# the upstream share $SERVER_CPU, as in mtls.sh.
#
# Env: SECONDS_RUN (8), CONNS (50), LOAD_CPU (0), SERVER_CPU (1), BASE_PORT (18600),
#      and pair-setup.sh's PAIR, H1_OVER_H2, WEFT_BIN, PROFILE, TOOLS.
# Needs: perf (linux-perf), wrk, h2load (nghttp2-client), curl; haproxy and openssl
#        for PAIR=haproxy. Run as root (tracepoints).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SECONDS_RUN=${SECONDS_RUN:-8}
CONNS=${CONNS:-50}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
BASE_PORT=${BASE_PORT:-18600}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
# shellcheck source=SCRIPTDIR/pair-setup.sh
source "$here/pair-setup.sh"
need perf linux-perf
need wrk wrk
pair_needs
[[ $missing == 0 ]] || exit 1

pair_start start
h2load --h1 -n 2000 -c "$CONNS" "$pair_url" >/dev/null 2>&1

calls=(sendto recvfrom writev readv write read epoll_wait epoll_pwait epoll_ctl)
events=task-clock,context-switches,raw_syscalls:sys_enter
for call in "${calls[@]}"; do events+=,syscalls:sys_enter_$call; done
segments() { awk '/^Tcp:/ { if (seen) print $11, $12; else seen = 1 }' /proc/net/snmp; }

declare -A user0 sys0
stats=()
for name in weft-a weft-b; do
    read -r "user0[$name]" "sys0[$name]" < <(cpu_ticks_split "${pid_of[$name]}")
    perf stat -x, -e "$events" -p "${pid_of[$name]}" -o "$work/$name.perf" -- sleep "$SECONDS_RUN" &
    stats+=($!)
done
read -r in0 out0 < <(segments)
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" "$pair_url" >"$work/wrk.out"
wait "${stats[@]}"
read -r in1 out1 < <(segments)
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
    END { print n + 0 }' "$work/wrk.out")

per() { awk -v a="$1" -v n="$requests" 'BEGIN { printf "%.3f", a / n }'; }
printf '%s: %s requests in %ss (%s req/s), %s failed; TCP segments per request: in %s, out %s\n' \
    "$(pair_label)" "$requests" "$SECONDS_RUN" "$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.out")" \
    "$errors" "$(per $((in1 - in0)))" "$(per $((out1 - out0)))"
printf '%-7s %8s %8s %9s %9s' proxy user_us sys_us syscalls ctx_sw
for call in "${calls[@]}"; do printf ' %11s' "$call"; done
printf '\n'
for name in weft-a weft-b; do
    read -r user1 sys1 < <(cpu_ticks_split "${pid_of[$name]}")
    count() { awk -F, -v e="$1" '$3 == e { print $1 }' "$work/$name.perf"; }
    printf '%-7s %8s %8s %9s %9s' "${name#weft-}" "$(per_us $((user1 - user0[$name])) "$requests")" \
        "$(per_us $((sys1 - sys0[$name])) "$requests")" "$(per "$(count raw_syscalls:sys_enter)")" \
        "$(per "$(count context-switches)")"
    for call in "${calls[@]}"; do printf ' %11s' "$(per "$(count "syscalls:sys_enter_$call")")"; done
    printf '\n'
done
echo "(user and system time from /proc in clock ticks; the rest per request over the same ${SECONDS_RUN}s)"
