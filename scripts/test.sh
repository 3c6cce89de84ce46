#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), then runs every test of
# the workspace, doctests (the README's snippets among them) included. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace "$@"
