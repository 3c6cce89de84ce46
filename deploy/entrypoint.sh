#!/bin/sh
# Writes the FoundationDB cluster file, then runs the given command (the Cairn node).
#
# FDB_CLUSTER_FILE_CONTENTS, if set, is written as-is. Otherwise FDB_COORDINATOR names the
# coordinator's host (resolved to an address here, as cluster files want addresses) and
# FDB_DESCRIPTION_ID the cluster's `description:id` (default `docker:docker`, the official
# FoundationDB image's).
set -eu
file=/etc/foundationdb/fdb.cluster
if [ -n "${FDB_CLUSTER_FILE_CONTENTS:-}" ]; then
    printf '%s\n' "$FDB_CLUSTER_FILE_CONTENTS" > "$file"
elif [ -n "${FDB_COORDINATOR:-}" ]; then
    ip=$(getent hosts "$FDB_COORDINATOR" | awk '{ print $1; exit }')
    if [ -z "$ip" ]; then
        echo "cannot resolve FDB_COORDINATOR=$FDB_COORDINATOR" >&2
        exit 1
    fi
    printf '%s@%s:%s\n' "${FDB_DESCRIPTION_ID:-docker:docker}" "$ip" "${FDB_PORT:-4500}" > "$file"
fi
if [ ! -s "$file" ]; then
    echo "no cluster file: set FDB_COORDINATOR or FDB_CLUSTER_FILE_CONTENTS, or mount $file" >&2
    exit 1
fi
exec "$@"
