#!/bin/bash
# Runs conntrack-tools' own CLI test suite (tests/conntrack: testsuite/* and test-conntrack.c)
# against ctsync, and against the real conntrack beside it, each in a network namespace of its
# own, and prints both results ("OK: 286 BAD: 0" for conntrack 1.4.7's suite).
#
#   scripts/conntrack-testsuite.sh CONNTRACK_TOOLS_DIR [CTSYNC]
#
# CONNTRACK_TOOLS_DIR is a checkout of conntrack-tools (e.g. the conntrack-tools-1.4.7 tag);
# CTSYNC defaults to .build/debug/ctsync. Needs root, gcc, conntrack (Debian package) for the
# comparison. The suite's addresses (1.1.1.1, 2.2.2.2, 3.3.3.3, ...) are rewritten into
# 198.18.0.0/15 first; the namespaces (ctt_suite_*) are deleted on exit.
set -euo pipefail
source_dir=${1:?usage: scripts/conntrack-testsuite.sh CONNTRACK_TOOLS_DIR [CTSYNC]}
ctsync=$(realpath "${2:-.build/debug/ctsync}")
[ "$(id -u)" -eq 0 ] || { echo "conntrack-testsuite: needs root (network namespaces, the conntrack table)" >&2; exit 1; }
[ -f "$source_dir/tests/conntrack/test-conntrack.c" ] || { echo "conntrack-testsuite: no tests/conntrack/test-conntrack.c in $source_dir" >&2; exit 1; }
[ -x "$ctsync" ] || { echo "conntrack-testsuite: $ctsync is not an executable (swift build first)" >&2; exit 1; }

work=$(mktemp -d /tmp/ctt-suite.XXXXXX)
cleanup() {
    for ns in ctt_suite_conntrack ctt_suite_ctsync; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cp -r "$source_dir/tests/conntrack" "$work/"
cd "$work/conntrack"
# The program under test comes from the environment instead of ../../src/conntrack.
sed -i 's|#define CT_PROG "../../src/conntrack"|#define CT_PROG getenv("CT_PROG")|' test-conntrack.c
gcc -o test test-conntrack.c
for f in testsuite/*; do
    sed -i -e 's/2\.3\.4\.5\/8/198.3.4.5\/8/g' -e 's/-d 2\.0\.0\.0 --mask-dst/-d 198.0.0.0 --mask-dst/g' \
        -e 's/1\.1\.2\.0\/24/198.18.9.0\/24/g' -e 's/1\.1\.1\./198.18.1./g' -e 's/2\.2\.2\./198.18.2./g' \
        -e 's/3\.3\.3\./198.18.3./g' "$f"
done

run() {  # run NAME PROGRAM
    local ns="ctt_suite_$1"
    ip netns add "$ns"
    CT_PROG="$2" timeout 600 ip netns exec "$ns" ./test > "$work/$1.log" 2>&1 || true
    ip netns del "$ns"
    printf '%-10s %s\n' "$1" "$(tail -1 "$work/$1.log")"
}
if command -v conntrack >/dev/null; then run conntrack "$(command -v conntrack)"; fi
run ctsync "$ctsync"
if grep -q "BAD$" "$work/ctsync.log"; then
    echo "ctsync failed these steps:"
    grep -B3 "BAD$" "$work/ctsync.log" | grep "Executing" || true
    exit 1
fi
