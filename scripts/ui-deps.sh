#!/usr/bin/env bash
# Installs what the web UI's browser tests load into the page (axe-core, for the accessibility
# check), pinned by tests/ui/package-lock.json; reinstalled only when the lock changes.
set -euo pipefail
cd "$(dirname "$0")/../tests/ui"
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.cairn-installed-lock; then
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.cairn-installed-lock
fi
