#!/usr/bin/env bash
# The kernel CLI beside conntrack, one run: listing a large table, restoring it from a file,
# deleting by filter. Needs root, conntrack (Debian package) and python3.
#
#   sudo scripts/bench/cli.sh [FLOWS]      (default 200000)
#
# FLOWS flows are generated into a throw-away namespace (`ctsync kernel insert --generate`);
# then, each timed as a whole command (wall clock, and the peak RSS from /usr/bin/time -f %M):
# `ctsync kernel list` vs `conntrack -L` (both to /dev/null), `ctsync kernel list -o json` to a
# file, `ctsync kernel insert --file` of that file into the emptied table (its kernel part as
# ctsync reports it, beside the rest: reading and parsing the file), and a delete of half the
# table by filter: every flow (they all go to port 443), by ctsync and by conntrack.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-200000}
[ "$(id -u)" -eq 0 ] || { echo "cli: needs root" >&2; exit 1; }
command -v conntrack >/dev/null || { echo "cli: needs conntrack" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "cli: needs /usr/bin/time (Debian package time)" >&2; exit 1; }

swift build -c release >/dev/null
bin="$PWD/.build/release"
ns="ctb_cli_$$"
work=$(mktemp -d)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
run() { ip netns exec "$ns" "$@"; }
timed() {  # label command... -> "label seconds KiB"
    local label=$1
    shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
    printf '%-34s %8s s %8s KiB\n' "$label" $(cat "$work/time")
}

run "$bin/ctsync" kernel insert --generate "$flows" >/dev/null 2>&1
echo "kernel $(uname -r), $(nproc) cores, $(run "$bin/ctsync" kernel count) flows"
in_ns=(ip netns exec "$ns")
timed "ctsync kernel list" "${in_ns[@]}" "$bin/ctsync" kernel list
timed "conntrack -L" "${in_ns[@]}" conntrack -L
timed "ctsync kernel list -o json" "${in_ns[@]}" sh -c "'$bin/ctsync' kernel list -o json > '$work/flows.jsonl'"
timed "ctsync --version (the runtime alone)" "$bin/ctsync" --version
run "$bin/ctsync" kernel flush >/dev/null 2>&1
timed "ctsync kernel insert --file" "${in_ns[@]}" "$bin/ctsync" kernel insert --file "$work/flows.jsonl"
grep -o 'in [0-9.]* s' "$work/stderr" | sed 's/^/    kernel part: /'
timed "ctsync kernel delete -p tcp --dport 443" "${in_ns[@]}" "$bin/ctsync" kernel delete -p tcp --dport 443
run "$bin/ctsync" kernel insert --generate "$flows" >/dev/null 2>&1
timed "conntrack -D -p tcp --dport 443" "${in_ns[@]}" conntrack -D -p tcp --dport 443
