#!/usr/bin/env bash
# Memory per cached flow and CPU per 100k events: ctsyncd beside conntrackd, same namespace,
# same burst, one run. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/daemon-cache.sh [FLOWS]      (default 100000)
#
# Each daemon starts on an empty table; FLOWS flows are inserted in one batched burst and then
# flushed (FLOWS NEW + FLOWS DESTROY events). Figures: RSS growth divided by the flows held,
# CPU seconds (user+system from /proc) per 100k events, and the time until the daemon's cache
# holds every flow and then none. conntrackd runs in Stats mode (an event-fed cache, no
# replication), the closest equivalent of ctsyncd's internal cache today.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-100000}
[ "$(id -u)" -eq 0 ] || { echo "daemon-cache: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "daemon-cache: needs conntrackd (apt-get install conntrackd)" >&2; exit 1; }

swift build -c release >/dev/null
bin="$PWD/.build/release"
ns="ctb_cache_$$"
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
ip netns add "$ns"

# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_flows "$flows" > "$work/flows.jsonl"
general() { bench_general "$1" "NetlinkOverrunResync on"; }
general ctsyncd > "$work/ctsyncd.conf"
{ general conntrackd; printf 'Stats {\n    LogFile off\n}\n'; } > "$work/conntrackd.conf"

active() {  # daemon binary, config -> active flows in its cache
    ip netns exec "$ns" "$1" -C "$2" -s 2>/dev/null | awk -F'\t' '/current active connections/ {gsub(/ /, "", $2); print $2; exit}'
}
wait_active() {  # binary config expected
    local deadline=$(( $(date +%s) + 120 ))
    local t0; t0=$(date +%s.%N)
    while [ "$(active "$1" "$2")" != "$3" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout waiting for $3 flows (has $(active "$1" "$2"))" >&2; return 1; }
        sleep 0.05
    done
    python3 -c "import time; print('%.2f' % (time.time() - $t0))"
}

measure() {  # name binary
    local name=$1 binary=$2 conf="$work/$1.conf"
    ip netns exec "$ns" "$bin/ctsync" kernel flush >/dev/null 2>&1
    ip netns exec "$ns" "$binary" -C "$conf" >"$work/$name.out" 2>&1 &
    pid=$!
    local deadline=$(( $(date +%s) + 20 ))
    until ip netns exec "$ns" "$binary" -C "$conf" -s >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { cp "$work/$name.out" /tmp/daemon-cache-failed.out; echo "$name did not start: $(head -c 2000 "$work/$name.out")" >&2; exit 1; }
        sleep 0.05
    done
    local rss0 cpu0 rss1 cpu1 cpu2 fill drain
    rss0=$(rss "$pid"); cpu0=$(cpu "$pid")
    ip netns exec "$ns" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" >/dev/null 2>&1
    fill=$(wait_active "$binary" "$conf" "$flows")
    rss1=$(rss "$pid"); cpu1=$(cpu "$pid")
    ip netns exec "$ns" "$bin/ctsync" kernel flush >/dev/null 2>&1
    drain=$(wait_active "$binary" "$conf" 0)
    cpu2=$(cpu "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    python3 - "$name" "$flows" "$rss0" "$rss1" "$cpu0" "$cpu2" "$fill" "$drain" <<'PY'
import sys
name, flows, rss0, rss1, cpu0, cpu2, fill, drain = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
per_flow = (rss1 - rss0) * 1024 / flows
cpu_per_100k = (cpu2 - cpu0) / (2 * flows) * 100000
print(f"{name:12s} {per_flow:10.0f} {cpu_per_100k:14.3f} {fill:10.2f} {drain:10.2f}")
open(f"/tmp/daemon-cache-{name}.txt", "w").write(f"{per_flow} {cpu_per_100k} {fill} {drain}\n")
PY
}

echo "kernel $(uname -r), $flows flows (NEW then DESTROY: $((2 * flows)) events), $(nproc) cores"
printf '%-12s %10s %14s %10s %10s\n' daemon "B/flow" "CPU s/100k ev" "fill s" "drain s"
measure conntrackd "$(command -v conntrackd)"
measure ctsyncd "$bin/ctsyncd"
python3 - <<'PY'
c = list(map(float, open("/tmp/daemon-cache-conntrackd.txt").read().split()))
s = list(map(float, open("/tmp/daemon-cache-ctsyncd.txt").read().split()))
print("ratios ctsyncd/conntrackd: memory per flow %.2f, CPU per event %.2f, fill time %.2f, drain time %.2f"
      % (s[0] / c[0], s[1] / c[1], s[2] / max(c[2], 0.01), s[3] / max(c[3], 0.01)))
PY
