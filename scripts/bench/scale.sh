#!/usr/bin/env bash
# Scale on one machine: a table close to nf_conntrack_max replicated, bulk-resynced and
# committed; an external cache far larger than a kernel table; a dump of it streamed. ctsyncd
# only (the figures are absolute goals; scripts/bench/commit.sh and replication.sh put
# conntrackd beside it). Needs root and python3.
#
#   sudo scripts/bench/scale.sh [FLOWS] [EXTERNAL]      (default 250000 1000000)
#   sudo scripts/bench/scale.sh 50000 100000            (what CI runs, for the counts)
#
# 1. table:    FLOWS flows written into a's kernel at its batched rate (--generate); the time
#              until b's external cache holds every one, and that it holds exactly them (the
#              same flows, compared tuple by tuple, after the bulk and the commit too).
# 2. bulk:     b restarted; the time from its start until a's bulk resync has refilled it.
# 3. commit:   a stopped and its kernel emptied (nf_conntrack_max is shared by all namespaces);
#              b commits its external cache: the rate, beside the kernel's batched insert
#              rate of step 1, and b's kernel count.
# 4. external: b restarted alone; EXTERNAL flows from a synthetic FTFW peer
#              (scripts/bench/synthetic_peer.py): the count, and b's RSS.
# 5. dump:     b's external cache dumped over the control socket (`-e`): the lines, and b's
#              RSS sampled every 10 ms meanwhile (a streamed dump keeps it flat).
# Every count and set must be exact, or the script exits 1; the times and sizes are printed beside
# their goals (docs/benchmarks.md), not judged: CI's machine is shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-250000}
external_flows=${2:-1000000}
[ "$(id -u)" -eq 0 ] || { echo "scale: needs root" >&2; exit 1; }

# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_pair_setup scl
bench_poll_script
failed=0
check() {  # what got expected
    if [ "$2" = "$3" ]; then echo "  ok: $1 $2"; else echo "  MISMATCH: $1 $2, expected $3"; failed=1; fi
}
# keys FILE: the sorted original tuples (protocol, addresses, ports) of a JSON flow listing.
keys() {
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line); t = o["original"]
    if t["src"].startswith("198.18.254."): continue  # the sync link itself
    print(o.get("proto"), t["src"], t["dst"], t.get("sport"), t.get("dport"))' "$1" | sort
}
same() {  # what FILE1 FILE2: the same flows, not only as many
    local missing extra
    missing=$(comm -23 <(keys "$2") <(keys "$3") | wc -l); extra=$(comm -13 <(keys "$2") <(keys "$3") | wc -l)
    if [ "$missing" = 0 ] && [ "$extra" = 0 ]; then echo "  ok: $1: the same flows"; else echo "  MISMATCH: $1: $missing missing, $extra extra"; failed=1; fi
}
seconds_since() { python3 -c "import time,sys; print('%.3f' % (time.time() - float(sys.argv[1])))" "$1"; }
start_daemon() {  # side -> pid in $started
    local ns=${!1} deadline=$(( $(date +%s) + 20 ))
    ip netns exec "$ns" "$bin/ctsyncd" -C "$work/$1.conf" >/dev/null 2>&1 &
    started=$!; pids+=("$started")
    until ip netns exec "$ns" "$bin/ctsyncd" -C "$work/$1.conf" -s >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "scale: ctsyncd in $1 did not start" >&2; exit 1; }; sleep 0.02
    done
}
stop_daemon() { kill "$1"; wait "$1" 2>/dev/null || true; }
big() { sed 's/HashLimit 524288/HashLimit 4194304/; s/HashSize 65536/HashSize 262144/'; }
config a 198.18.254.1 198.18.254.2 "${link}a" | big > "$work/a.conf"
config b 198.18.254.2 198.18.254.1 "${link}b" | big > "$work/b.conf"
ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1 || true
ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1 || true

echo "kernel $(uname -r), $(nproc) cores, ctsyncd, FTFW over UDP on a veth pair; $flows flows, $external_flows external"
start_daemon a; pa=$started
start_daemon b; pb=$started
sleep 2

echo "1. table"
report=$(ip netns exec "$a" "$bin/ctsync" kernel insert --generate "$flows" -o json)
insert_rate=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print('%.0f' % (r['created'] / r['seconds']))" "$report")
started=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['started'])" "$report")
wait_external "$work/b.ctl" "$flows" 120 >/dev/null || true
echo "  replicated in $(seconds_since "$started") s from the first kernel write (kernel insert: $insert_rate flows/s)"
check "b's external cache" "$(external "$work/b.ctl")" "$flows"
ip netns exec "$a" "$bin/ctsync" kernel list -o json 2>/dev/null > "$work/a-kernel.json"
ip netns exec "$b" "$bin/ctsync" cache external -o json -C "$work/b.conf" 2>/dev/null > "$work/b-external.json"
same "b's external cache against a's kernel" "$work/a-kernel.json" "$work/b-external.json"

echo "2. bulk"
stop_daemon "$pb"
t0=$(python3 -c 'import time; print(time.time())')
start_daemon b; pb=$started
wait_external "$work/b.ctl" "$flows" 60 >/dev/null || true
echo "  b restarted and refilled in $(seconds_since "$t0") s (from the start of its process)"
check "b's external cache after the bulk" "$(external "$work/b.ctl")" "$flows"
ip netns exec "$b" "$bin/ctsync" cache external -o json -C "$work/b.conf" 2>/dev/null > "$work/b-external.json"
same "b's external cache after the bulk against a's kernel" "$work/a-kernel.json" "$work/b-external.json"

echo "3. commit"
stop_daemon "$pa"
ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1
t0=$(python3 -c 'import time; print(time.time())')
ip netns exec "$b" "$bin/ctsyncd" -C "$work/b.conf" -c >/dev/null
commit_seconds=$(seconds_since "$t0")
python3 -c "import sys; f, s, k = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print('  committed in %.3f s: %.0f flows/s, %.2fx the kernel batched insert rate' % (s, f / s, f / s / k))" \
    "$flows" "$commit_seconds" "$insert_rate"
check "b's kernel" "$(ip netns exec "$b" "$bin/ctsync" kernel count)" "$flows"
ip netns exec "$b" "$bin/ctsync" kernel list -o json 2>/dev/null > "$work/b-kernel.json"
same "b's kernel after the commit against a's before" "$work/a-kernel.json" "$work/b-kernel.json"
stop_daemon "$pb"
ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1

echo "4. external"
start_daemon b; pb=$started
rss0=$(rss "$pb")
ip netns exec "$a" python3 scripts/bench/synthetic_peer.py --bind 198.18.254.1:3780 --to 198.18.254.2:3780 --flows "$external_flows" | sed 's/^/  /'
check "b's external cache" "$(external "$work/b.ctl")" "$external_flows"
rss1=$(rss "$pb")
echo "  b's RSS $((rss1 / 1024)) MiB ($(( (rss1 - rss0) * 1024 / external_flows )) bytes per flow over the $((rss0 / 1024)) MiB it started with)"

echo "5. dump"
ip netns exec "$b" "$bin/ctsyncd" -C "$work/b.conf" -e > "$work/dump.txt" &
dumper=$!
peak=$rss1
while kill -0 "$dumper" 2>/dev/null; do
    r=$(rss "$pb"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.01
done
wait "$dumper"
check "dumped lines" "$(grep -c . "$work/dump.txt")" "$external_flows"
echo "  b's RSS during the dump: at most $(( (peak - rss1) / 1024 )) MiB above the $((rss1 / 1024)) MiB before it"
exit "$failed"
