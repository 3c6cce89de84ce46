#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), then runs every test of
# the workspace, doctests (the README's snippets among them) included, and Temporal's own
# Python SDK and CLI against a dev server (scripts/temporal-suite.sh, which makes its venv).
# CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ui-deps.sh
bash scripts/temporal-suite.sh
# The store contract, the engine crash test, and a cluster of node processes, on a real FoundationDB (scripts/fdb.sh
# starts a loopback cluster from FDB_HOME, default ../shared/fdb/7.3.79, and stops it). Without FoundationDB it says so loudly
# and goes on; CI (CI set) never goes on without it.
if bash scripts/fdb.sh available; then
    (
        eval "$(bash scripts/fdb.sh env)"
        cluster="$(bash scripts/fdb.sh start)"
        trap 'bash scripts/fdb.sh stop "$(dirname "$cluster")"' EXIT
        # The long-read tests need a cluster of their own, below.
        FDB_CLUSTER_FILE="$cluster" cargo test -p cairn-store-fdb --features fdb -- --skip past_the_window --skip refused_by_foundationdb
    )
    # FoundationDB's own transaction_too_old: a cluster whose read window is one second (its
    # default is five, the backend's own limit), so reads outliving it are refused by it.
    (
        eval "$(bash scripts/fdb.sh env)"
        cluster="$(bash scripts/fdb.sh start --knob max_read_transaction_life_versions=1000000)"
        trap 'bash scripts/fdb.sh stop "$(dirname "$cluster")"' EXIT
        FDB_CLUSTER_FILE="$cluster" CAIRN_FDB_READ_WINDOW_MS=1000 \
            cargo test -p cairn-store-fdb --features fdb --test long_reads
    )
    # Three `cairn server start --store fdb:` processes under Temporal's SDK, with a node and an
    # fdbserver killed and a node drained (its own FoundationDB cluster, three processes).
    bash scripts/fdb-cluster-test.sh
else
    echo "!!! scripts/test.sh: no FoundationDB (FDB_HOME=${FDB_HOME:-../shared/fdb/7.3.79}): the store contract is NOT tested on FoundationDB" >&2
    if [ -n "${CI:-}" ]; then
        echo "!!! CI never skips FoundationDB; point FDB_HOME at a FoundationDB 7.3 build" >&2
        exit 1
    fi
fi
cargo test --workspace "$@"
