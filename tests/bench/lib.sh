# shellcheck shell=bash
# Shared by the benchmark scripts in this directory (sourced, not run): tool checks, a
# work directory whose processes are stopped on exit, config templates, and starting
# and waiting for the processes under test. The caller sets $here (this directory),
# $SERVER_CPU and $BASE_PORT.

# need COMMAND PACKAGE: reports a missing tool and sets $missing; check it after.
# shellcheck disable=SC2034 # read by the scripts that source this
missing=0
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing tool '$1': apt-get install -y $2" >&2
        # shellcheck disable=SC2034
        missing=1
    fi
}

# make_workdir PREFIX: sets $work to a fresh directory. On exit every process in $pids
# is stopped and $work removed (kept with KEEP_LOGS=1).
work=
pids=()
make_workdir() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap stop_all EXIT
}

stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
        echo "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}

port() { echo $((BASE_PORT + $1)); }

# render TEMPLATE OUT NAME=VALUE...: replaces each @NAME@ in TEMPLATE.
render() {
    local template=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    # shellcheck disable=SC2154 # $here is set by the sourcing script
    sed "${args[@]}" "$here/$template" >"$out"
    # A placeholder left over is a caller that missed a new one: say which, rather
    # than let the proxy fail on a config it cannot parse.
    if grep -v '^[[:space:]]*#' "$out" | grep -o '@[A-Z0-9_]*@' | sort -u | grep .; then
        echo "render: $template: the placeholders above were given no value" >&2
        return 1
    fi
}

# start NAME COMMAND...: runs COMMAND on the server CPU, its output in
# $work/NAME.log; sets $started to its pid.
started=
start() {
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$work/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
}

# wait_ready NAME URL [curl options]: polls until URL answers 200 (about 10 s at most).
wait_ready() {
    local name=$1 url=$2 i
    shift 2
    for ((i = 0; i < 200; i++)); do
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "$name did not become ready at $url" >&2
    if [[ -f $work/$name.log ]]; then
        cat "$work/$name.log" >&2
    fi
    exit 1
}

# cpu_ticks PID...: utime+stime of the processes, summed, in clock ticks (CLK_TCK).
cpu_ticks() {
    local user sys
    read -r user sys < <(cpu_ticks_split "$@")
    echo $((user + sys))
}

# cpu_ticks_split PID...: "UTIME STIME" of the processes, each summed, in clock ticks.
cpu_ticks_split() {
    local pid stat user=0 sys=0 fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        # Fields after the ")" that ends the command name: state is 1st, utime 12th.
        read -ra fields <<<"${stat##*) }"
        user=$((user + fields[11]))
        sys=$((sys + fields[12]))
    done
    echo "$user $sys"
}

# start_upstream_and_control UPSTREAM_BIN CONTROL_BIN UPSTREAM_PORT GRPC_PORT ADMIN_PORT:
# starts bench-upstream and weft-control (an empty mesh, its state and CA in $work/cp)
# and waits for both; `token SERVICE_ACCOUNT` then prints a bootstrap token from it.
control_bin_for_tokens=
start_upstream_and_control() {
    start upstream "$1" "127.0.0.1:$3"
    wait_ready upstream "http://127.0.0.1:$3/"
    printf 'services: []\n' >"$work/mesh.yaml"
    RUST_LOG=warn start control "$2" serve --mesh "$work/mesh.yaml" \
        --grpc "127.0.0.1:$4" --admin "127.0.0.1:$5" --state-dir "$work/cp"
    wait_ready control "http://127.0.0.1:$5/ready"
    control_bin_for_tokens=$2
}
token() { "$control_bin_for_tokens" token --state-dir "$work/cp" --service-account "$1"; }

# haproxy_cert NAME SERVICE_ACCOUNT: $work/NAME.pem, a key and certificate for HAProxy
# from weft-control's development CA ($work/cp), with the SPIFFE ID of SERVICE_ACCOUNT.
haproxy_cert() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Weft bench" \
        -addext "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/$2" \
        -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
    openssl x509 -req -in "$work/$1.csr" -CA "$work/cp/ca.pem" -CAkey "$work/cp/ca-key.pem" \
        -CAcreateserial -days 1 -copy_extensions copy -out "$work/$1.crt" 2>/dev/null
    cat "$work/$1.crt" "$work/$1.key" >"$work/$1.pem"
}

# per_us TICKS COUNT: CPU microseconds per item, from clock ticks.
per_us() {
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan" }'
}
