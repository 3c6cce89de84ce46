#!/usr/bin/env bash
# Installs the system packages Cairn's build, tests and CI need, if they are missing:
# protobuf-compiler (protoc: the temporalio-protos crate compiles Temporal's protos with it),
# libclang-dev (bindgen, for the FoundationDB compile check) and Debian's chromium and
# chromium-driver (the web UI test). Needs apt-get, as root or through sudo; says what to do otherwise.
set -euo pipefail

missing=""
for package in protobuf-compiler libclang-dev chromium chromium-driver; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/setup.sh: missing$missing and no apt-get here; install them by hand" >&2
    exit 1
fi
as_root=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root="sudo"
    else
        echo "scripts/setup.sh: missing$missing; run as root (or install sudo) to install them" >&2
        exit 1
    fi
fi
echo "scripts/setup.sh: installing$missing"
$as_root apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq $missing >/dev/null
