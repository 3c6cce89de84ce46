#!/usr/bin/env bash
# A FoundationDB cluster on loopback, for Cairn's tests and benchmarks.
#
#   scripts/fdb.sh start [--processes 1|3] [--knob NAME=VALUE]... [DIR]
#                                                   start one (`single ssd`) or three
#                                                   (`double ssd`) fdbserver processes in DIR
#                                                   (default: a new temporary directory), each
#                                                   with the server knobs given (e.g.
#                                                   max_read_transaction_life_versions=1000000),
#                                                   wait until the database is available, and
#                                                   print DIR/fdb.cluster
#   scripts/fdb.sh stop DIR                         stop exactly the processes `start` started
#                                                   there, and remove DIR
#   scripts/fdb.sh env                              print the variables to build and run
#                                                   against this FoundationDB (for `eval`)
#
# FoundationDB is found through FDB_HOME (a folder with bin/fdbserver, bin/fdbcli and
# lib/libfdb_c.so); by default the build beside this repository, ../shared/fdb/7.3.79. Real
# deployments install FoundationDB's own packages and point FDB_HOME at them (or leave the
# binaries on PATH and libfdb_c in the linker's path).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
default_home="$here/../shared/fdb/7.3.79"
FDB_HOME="${FDB_HOME:-$default_home}"

# The longest `start` waits for the database to become available.
AVAILABLE_WAIT_S=120

die() {
    echo "scripts/fdb.sh: $*" >&2
    exit 1
}

fdb_bin() {
    if [ -x "$FDB_HOME/bin/$1" ]; then
        echo "$FDB_HOME/bin/$1"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        return 1
    fi
}

# Whether FoundationDB is here at all (exit status), for callers that skip without it.
available() {
    fdb_bin fdbserver >/dev/null && fdb_bin fdbcli >/dev/null
}

# A TCP port on loopback nobody listens on, from `first` up.
free_port() {
    local port=$1
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# Reads `status json` on stdin; succeeds once the database is available, fully recovered, and
# its data distribution healthy. (Until then, half a minute after a fresh `configure`, commits
# of a three-process cluster meet recoveries and answer `commit_unknown_result`.)
healthy() {
    python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)["cluster"]
except Exception:
    sys.exit(1)
ok = (c.get("database_available")
      and c.get("recovery_state", {}).get("name") == "fully_recovered"
      and c.get("data", {}).get("state", {}).get("healthy"))
sys.exit(0 if ok else 1)
'
}

start() {
    local processes=1 dir=""
    local knobs=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --processes) processes="$2"; shift 2 ;;
            --knob)
                [[ "${2:-}" =~ ^[a-z_0-9]+=[^[:space:]]+$ ]] || die "--knob takes NAME=VALUE, not '${2:-}'"
                knobs+=("--knob_$2")
                shift 2
                ;;
            *) dir="$1"; shift ;;
        esac
    done
    case "$processes" in
        1) mode="single" ;;
        3) mode="double" ;;
        *) die "--processes takes 1 or 3, not $processes" ;;
    esac
    available || die "no FoundationDB at FDB_HOME=$FDB_HOME (bin/fdbserver, bin/fdbcli) nor on PATH"
    local server cli
    server="$(fdb_bin fdbserver)"
    cli="$(fdb_bin fdbcli)"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/cairn-fdb.XXXXXX")"
    fi
    mkdir -p "$dir"
    [ -e "$dir/pids" ] && die "$dir already holds a cluster (stop it first)"
    local port
    port="$(free_port 4500)"
    local addresses=""
    local ports=()
    for i in $(seq 0 $((processes - 1))); do
        local p
        p="$(free_port $((port + i)))"
        ports+=("$p")
        addresses="$addresses,127.0.0.1:$p"
    done
    # Coordinators: the first process (one coordinator is enough on one machine).
    echo "cairn:$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')@127.0.0.1:${ports[0]}" >"$dir/fdb.cluster"
    : >"$dir/pids"
    for p in "${ports[@]}"; do
        mkdir -p "$dir/data-$p" "$dir/logs-$p"
        # Each process its own zone and machine: `double` keeps two copies in two zones,
        # which one machine's processes would otherwise share.
        "$server" -p "127.0.0.1:$p" -C "$dir/fdb.cluster" -d "$dir/data-$p" -L "$dir/logs-$p" \
            --locality-zoneid "zone-$p" --locality-machineid "machine-$p" ${knobs[@]+"${knobs[@]}"} \
            >"$dir/logs-$p/stdout" 2>&1 &
        echo $! >>"$dir/pids"
    done
    if ! "$cli" -C "$dir/fdb.cluster" --exec "configure new $mode ssd" --timeout 30 >"$dir/configure.log" 2>&1; then
        cat "$dir/configure.log" >&2
        stop "$dir"
        die "configure new $mode ssd failed"
    fi
    local waited=0
    until "$cli" -C "$dir/fdb.cluster" --exec "status json" --timeout 5 2>/dev/null | healthy; do
        waited=$((waited + 1))
        if [ "$waited" -ge "$AVAILABLE_WAIT_S" ]; then
            "$cli" -C "$dir/fdb.cluster" --exec status --timeout 5 >&2 || true
            stop "$dir"
            die "the database did not become available within ${AVAILABLE_WAIT_S} s"
        fi
        sleep 1
    done
    echo "$dir/fdb.cluster"
}

stop() {
    local dir="${1:-}"
    [ -n "$dir" ] || die "stop takes the cluster's directory"
    [ -f "$dir/pids" ] || die "$dir holds no cluster started by this script"
    local pid
    while read -r pid; do
        # Only our own fdbserver: a pid reused by another program is left alone.
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "fdbserver.*$dir"; then
            kill "$pid" 2>/dev/null || true
        fi
    done <"$dir/pids"
    while read -r pid; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done <"$dir/pids"
    rm -rf "$dir"
}

print_env() {
    available || die "no FoundationDB at FDB_HOME=$FDB_HOME nor on PATH"
    if [ -d "$FDB_HOME/lib" ]; then
        local lib
        lib="$(cd "$FDB_HOME/lib" && pwd)"
        echo "export FDB_HOME=$(cd "$FDB_HOME" && pwd)"
        echo "export LIBRARY_PATH=$lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
        echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    env) print_env ;;
    available) available ;;
    *) die "usage: scripts/fdb.sh start [--processes 1|3] [--knob NAME=VALUE]... [DIR] | stop DIR | env | available" ;;
esac
