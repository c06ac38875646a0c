#!/usr/bin/env bash
# The tests, as the README runs them and CI too:
#   1. unit tests (every target but IntegrationTests): no root, no namespace, nothing skipped;
#      run as the unprivileged user `nobody` when started as root, so none of them can lean on it;
#   2. integration tests (the real kernel in namespaces, conntrackd, keepalived), as root, one
#      test at a time: their latency windows and the failover bound are not shared with other load.
# Without root only stage 1 runs, and stage 2 is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
stage() { echo "== $* ($(date +%T))"; }

stage "build (debug, with tests)"
swift build --build-tests
bin=$(swift build --show-bin-path)

if [ "$(id -u)" -eq 0 ]; then
    stage "unit tests as an unprivileged user (nobody)"
    # The test binary and the sources it reads (#filePath) must be reachable by that user.
    dir=$PWD
    while [ "$dir" != / ]; do
        runuser -u nobody -- test -x "$dir" || chmod o+x "$dir"
        dir=$(dirname "$dir")
    done
    chmod -R o+rX .
    runuser -u nobody -- env CI="${CI:-}" HOME=/tmp "$bin/ctsyncPackageTests.xctest" --testing-library swift-testing \
        --skip IntegrationTests

    stage "integration tests as root, one at a time"
    swift test --skip-build --no-parallel --filter IntegrationTests
else
    stage "unit tests"
    swift test --skip-build --skip IntegrationTests
    echo "== integration tests skipped: they need root (network namespaces, the kernel table)"
fi
