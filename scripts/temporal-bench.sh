#!/usr/bin/env bash
# Temporal's Python client and worker (benches/temporal/load.py), unchanged, against
# `cairn server start-dev` and against `temporal server start-dev` (SQLite file), alternated
# ROUNDS times per scenario on fresh data each run. Prints one JSON line per run.
# Usage: scripts/temporal-bench.sh [ROUNDS] [W1_WORKFLOWS] [W2_WORKFLOWS] [CONCURRENCY]
# SCENARIOS="updates updates-latency" (default "w1 w2 w2-latency") picks the scenarios; the
# update scenarios send W2_WORKFLOWS updates (updates-latency: 200, one at a time).
# With PYTHON_WORKFLOWS=1 both servers run the same Python workflows in the script's worker
# (like for like); otherwise Cairn runs its Rust twins in process.
# Build the server first: cargo build --release -p cairn-cli (this uses target/release/cairn).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; w1="${2:-2000}"; w2="${3:-500}"; conc="${4:-100}"
cairn=target/release/cairn
[ -x "$cairn" ] || { echo "build it first: cargo build --release -p cairn-cli" >&2; exit 1; }
bash scripts/temporal-suite.sh --venv-only
py=target/temporal-venv/bin/python
temporal=target/temporal-venv/bin/temporal
data=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # start cairn|temporal; sets $address and $host_flag
    rm -rf "$data/run"; mkdir -p "$data/run"
    local port; port=$(free_port)
    address="127.0.0.1:$port"
    if [ "$1" = cairn ]; then
        "$cairn" server start-dev --db "$data/run/db" --port 0 --temporal-port "$port" >"$data/run/log" 2>&1 &
        host_flag=""
        [ -n "${PYTHON_WORKFLOWS:-}" ] && host_flag="--python-workflows"
    else
        "$temporal" server start-dev --headless --ip 127.0.0.1 --port "$port" --http-port 0 \
            --metrics-port 0 --db-filename "$data/run/temporal.sqlite" --log-level error >"$data/run/log" 2>&1 &
        host_flag="--host-workflows"
        [ -n "${PYTHON_WORKFLOWS:-}" ] && host_flag="--python-workflows"
    fi
    server=$!
    for _ in $(seq 1 300); do
        "$temporal" operator cluster health --address "$address" >/dev/null 2>&1 && return
        "$temporal" workflow count --address "$address" >/dev/null 2>&1 && return
        sleep 0.1
    done
    cat "$data/run/log"; echo "$1 did not start" >&2; exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

for round in $(seq 1 "$rounds"); do
    for name in cairn temporal; do
        for scenario in ${SCENARIOS:-w1 w2 w2-latency}; do
            case $scenario in
                w1) n=$w1 ;; w2 | updates) n=$w2 ;; w2-latency) n=100 ;; updates-latency) n=200 ;;
                *) echo "unknown scenario $scenario" >&2; exit 1 ;;
            esac
            start "$name"
            # shellcheck disable=SC2086
            result=$("$py" benches/temporal/load.py --address "$address" --scenario "$scenario" \
                --workflows "$n" --concurrency "$conc" $host_flag)
            stop
            echo "{\"server\": \"$name\", \"round\": $round, \"result\": $result}"
        done
    done
done
