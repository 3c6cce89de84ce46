#!/usr/bin/env bash
# A Cairn cluster of separate processes on FoundationDB, under faults, driven by Temporal's own
# SDK: a three-process FoundationDB cluster (`double`, scripts/fdb.sh), three `cairn server
# start --store fdb:…` processes, Temporal's Python guide suite against one node and its client
# suite against another, and meanwhile a kill -9 of the third node (restarted under its id) and
# of one fdbserver process, while tests/temporal/cluster_load.py starts, updates and signals
# workflows at all three nodes over HTTP and gRPC; once the killed node is back and holds
# shards again, it is drained with SIGTERM in the middle of that load and restarted. The suites
# must pass in full, every acknowledged call take effect exactly once and no activity attempt
# run past its retry policy; then another node is drained and the survivors must hold every
# shard within the lease timeout.
# Usage: scripts/fdb-cluster-test.sh   (needs FoundationDB: FDB_HOME, see scripts/fdb.sh; the
#        Temporal venv scripts/temporal-suite.sh makes)
set -euo pipefail
cd "$(dirname "$0")/.."

# The production default. With 3 s, a FoundationDB recovery after the fdbserver kill (several
# seconds without commits) lapsed every node's leases at once, and after that cluster-wide
# loss the guide suite's 1 s interval schedule stopped firing (twice in about 15 runs): an
# open bug, recorded in docs/BENCHMARKS.md, not something this test should hide by accident.
LEASE_TIMEOUT_MS=${LEASE_TIMEOUT_MS:-10000}
SHARDS=8
# How long the load keeps starting runs (approval: start, update, signal, each at another
# node; a hello for every fourth; a flaky_payment each second): past the kills, the takeover,
# node a's restart and its drain.
LOAD_SECONDS=${LOAD_SECONDS:-40}
# Longest the survivors may take to hold every shard after a drain (the drain hands shards
# off at once; a lease timeout and a placement round are the bound).
SETTLE_WAIT_S=30

eval "$(bash scripts/fdb.sh env)"
py=target/temporal-venv/bin/python
[ -x "$py" ] || bash scripts/temporal-suite.sh --venv-only
cargo build -q -p cairn-cli --features fdb
cairn=target/debug/cairn

data=$(mktemp -d)
cluster=""
declare -A pid http grpc
cleanup() {
    for n in "${!pid[@]}"; do kill -9 "${pid[$n]}" 2>/dev/null || true; done
    [ -n "${guide:-}" ] && kill "$guide" 2>/dev/null || true
    [ -n "${client:-}" ] && kill "$client" 2>/dev/null || true
    [ -n "${load:-}" ] && kill "$load" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "$cluster" ] && bash scripts/fdb.sh stop "$(dirname "$cluster")"
    rm -rf "$data"
}
trap cleanup EXIT

# With KEEP_LOGS=dir, every log is kept there (on success too).
keep_logs() {
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp "$data"/*.log "$KEEP_LOGS"/ && echo "logs kept in $KEEP_LOGS"
    fi
}

# On a failure: what each node logged last, and the logs kept (see keep_logs).
fail() {
    echo "FAILED: $*" >&2
    for log in "$data"/node-*.log; do
        echo "--- last lines of $(basename "$log")"
        grep -v ' INFO ' "$log" | tail -n 30 || true
    done
    keep_logs
    exit 1
}

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cluster=$(bash scripts/fdb.sh start --processes 3)
echo "--- FoundationDB (double, 3 processes): $cluster"

start_node() { # start_node <name>: on its ports (the same ones again on a restart)
    local n=$1 before
    before=$(grep -c "listening on" "$data/node-$n.log" 2>/dev/null || true)
    "$cairn" server start --store "fdb:$cluster" --node-id "fdb-$n" --port "${http[$n]}" \
        --temporal-port "${grpc[$n]}" --shard-count "$SHARDS" \
        --lease-timeout-ms "$LEASE_TIMEOUT_MS" >>"$data/node-$n.log" 2>&1 &
    pid[$n]=$!
    for _ in $(seq 1 100); do
        [ "$(grep -c "listening on" "$data/node-$n.log")" -gt "${before:-0}" ] && return 0
        sleep 0.1
    done
    cat "$data/node-$n.log"
    echo "FAILED: node $n did not start" >&2
    exit 1
}

# Prints how many shards live nodes hold, as node `n` sees the cluster.
held_shards() {
    "$cairn" cluster status --address "http://127.0.0.1:${http[$1]}" --output json |
        "$py" -c '
import json, sys
status = json.load(sys.stdin)
alive = {n["node_id"] for n in status["nodes"] if n["alive"] and not n["draining"]}
print(sum(1 for s in status["shards"] if s["held"] and s["holder"] in alive))'
}

# held_by <n> <node>...: how many shards the named nodes hold, as node `n` sees the cluster.
held_by() {
    local n=$1
    shift
    "$cairn" cluster status --address "http://127.0.0.1:${http[$n]}" --output json |
        "$py" -c '
import json, sys
status = json.load(sys.stdin)
print(sum(1 for s in status["shards"] if s["held"] and s["holder"] in sys.argv[1:]))' "$@"
}

for n in a b c; do
    http[$n]=$(free_port)
    grpc[$n]=$(free_port)
    start_node "$n"
done
echo "--- three nodes: a ${http[a]}/${grpc[a]}, b ${http[b]}/${grpc[b]}, c ${http[c]}/${grpc[c]}"

"$py" tests/temporal/guide_suite.py --address "127.0.0.1:${grpc[b]}" >"$data/guide.log" 2>&1 &
guide=$!
"$py" tests/temporal/client_suite.py --address "127.0.0.1:${grpc[c]}" >"$data/client.log" 2>&1 &
client=$!
# Starts, updates and signals at every node over both APIs, each checked for exactly-once
# effect (tests/temporal/cluster_load.py), through the kills below.
"$py" tests/temporal/cluster_load.py \
    --http "http://127.0.0.1:${http[a]},http://127.0.0.1:${http[b]},http://127.0.0.1:${http[c]}" \
    --grpc "127.0.0.1:${grpc[a]},127.0.0.1:${grpc[b]},127.0.0.1:${grpc[c]}" \
    --seconds "$LOAD_SECONDS" >"$data/load.log" 2>&1 &
load=$!

sleep 6
echo "--- kill -9 of node a (its shards go to b and c after the lease)"
kill -9 "${pid[a]}"
wait "${pid[a]}" 2>/dev/null || true
# For 15 s: when b and c hold every shard (the takeover), and 2 s in, an fdbserver dies too.
killed_at=$(date +%s.%N)
victim=""
took_over=""
while :; do
    now=$(date +%s.%N)
    since=$("$py" -c "print(f'{$now - $killed_at:.1f}')")
    if [ -z "$victim" ] && "$py" -c "exit(0 if $now - $killed_at >= 2 else 1)"; then
        victim=$(tail -n 1 "$(dirname "$cluster")/pids")
        echo "--- kill -9 of fdbserver $victim (one of three; the data has two copies)"
        kill -9 "$victim"
    fi
    if [ -z "$took_over" ] && [ "$(held_by c fdb-b fdb-c 2>/dev/null || echo 0)" -eq "$SHARDS" ]; then
        took_over=$since
        echo "--- b and c hold all $SHARDS shards ${took_over} s after the kill (lease timeout ${LEASE_TIMEOUT_MS} ms)"
    fi
    "$py" -c "exit(0 if $now - $killed_at >= 15 else 1)" && break
    sleep 0.25
done
[ -n "$took_over" ] || echo "--- b and c did not hold every shard within 15 s of the kill"
echo "--- node a restarts under its id"
start_node a
# A drain in the middle of the load: once a holds shards again, SIGTERM hands them to b and c.
for _ in $(seq 1 40); do
    [ "$(held_by c fdb-a 2>/dev/null || echo 0)" -gt 0 ] && break
    sleep 0.25
done
echo "--- SIGTERM drains node a during the load ($(held_by c fdb-a || echo 0) shards); b and c must take them"
drain_at=$(date +%s.%N)
drained=0
kill -TERM "${pid[a]}"
# Measured while node a is still exiting: it hands its shards off at once, then lets requests
# in progress finish (long polls, for up to the server's grace) before it exits.
took_over=""
for _ in $(seq 1 $((SETTLE_WAIT_S * 4))); do
    if [ "$(held_by c fdb-b fdb-c 2>/dev/null || echo 0)" -eq "$SHARDS" ]; then
        took_over=$("$py" -c "print(f'{$(date +%s.%N) - $drain_at:.1f}')")
        break
    fi
    sleep 0.25
done
wait "${pid[a]}" || drained=$?
exited=$("$py" -c "print(f'{$(date +%s.%N) - $drain_at:.1f}')")
[ "$drained" -eq 0 ] || fail "node a did not drain cleanly during the load ($drained)"
[ -n "$took_over" ] || fail "b and c did not hold every shard ${SETTLE_WAIT_S} s after node a's drain"
echo "--- b and c hold all $SHARDS shards ${took_over} s after the SIGTERM (node a exited ${exited} s after it); node a restarts again"
start_node a

status=0
wait "$guide" || status=$?
guide=""
tail -n 1 "$data/guide.log"
[ "$status" -eq 0 ] || { cat "$data/guide.log"; fail "the guide suite against node b"; }
wait "$client" || status=$?
client=""
tail -n 1 "$data/client.log"
[ "$status" -eq 0 ] || { cat "$data/client.log"; fail "the client suite against node c"; }
wait "$load" || status=$?
load=""
cat "$data/load.log"
[ "$status" -eq 0 ] || fail "the load at every node"

echo "--- SIGTERM drains node b; a and c must hold all $SHARDS shards"
kill -TERM "${pid[b]}"
drained=0
wait "${pid[b]}" || drained=$?
unset 'pid[b]'
[ "$drained" -eq 0 ] || fail "node b did not drain cleanly ($drained)"
held=0
for _ in $(seq 1 "$SETTLE_WAIT_S"); do
    held=$(held_shards c || echo 0)
    [ "$held" -eq "$SHARDS" ] && break
    sleep 1
done
"$cairn" cluster status --address "http://127.0.0.1:${http[c]}"
[ "$held" -eq "$SHARDS" ] || fail "$held of $SHARDS shards held ${SETTLE_WAIT_S} s after the drain"
keep_logs
echo "ok: a cluster of processes on FoundationDB survived a node kill, an fdbserver kill and two drains (one under load)"
