#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), then runs every test of
# the workspace, doctests (the README's snippets among them) included, and Temporal's own
# Python SDK and CLI against a dev server (scripts/temporal-suite.sh, which makes its venv).
# CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/temporal-suite.sh
cargo test --workspace "$@"
