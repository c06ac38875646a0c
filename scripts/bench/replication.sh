#!/usr/bin/env bash
# Replication beside conntrackd: a ctsyncd pair and a conntrackd pair on the same namespaces,
# same burst, one run. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/replication.sh [FLOWS]      (default 100000)
#
# The burst is written into a's kernel at the kernel's batched rate (`ctsync kernel insert
# --generate FLOWS`, libmnl batches of 256: no file to parse), once with conntrackd's usual
# event buffer (NetlinkBufferSize 2 MB, NetlinkBufferSizeMaxGrowth 16 MB) and once with a
# 128 MB one. Per pair and buffer: the time from the first kernel write until b's external cache
# holds every flow (and that time over the kernel writes' own), the exact count (0 loss), event
# overruns on a (`-s runtime`: "netlink overrun"), the wire bytes per flow, CPU µs per flow of
# both daemons, RSS growth per flow of both, the latency of a single new flow (event on a ->
# present on b, median of 5) and the time until a flush of all of them has reached b.
# BENCH_CASES="2M 128M" chooses the buffer cases.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-100000}
[ "$(id -u)" -eq 0 ] || { echo "replication: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "replication: needs conntrackd" >&2; exit 1; }

# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_pair_setup rep

bench_poll_script
measure() {  # name binary case
    local name=$1 binary=$2 case=$3
    config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" > "$work/${name}a.conf"
    config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" > "$work/${name}b.conf"
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1; ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
    local pa pb
    bench_start_pair "$name" "$binary"
    local rssa0 rssb0 cpua0 cpub0 tx0 tx1 cpua1 cpub1 rssa1 rssb1 count
    rssa0=$(rss "$pa"); rssb0=$(rss "$pb"); cpua0=$(cpu "$pa"); cpub0=$(cpu "$pb")
    tx0=$(ip netns exec "$a" cat "/sys/class/net/${link}a/statistics/tx_bytes")
    local sb="$work/${name}b.ctl" overrun0 overrun1
    overrun0=$(runtime_stat "$a" "$binary" "$work/${name}a.conf" "netlink overrun")
    # The burst, timed from its first kernel write (the insert's "started") to the moment b's
    # external cache holds all of it ("done", polled every millisecond meanwhile).
    local report
    report=$(burst_external "$sb" "$flows" 120 -- ip netns exec "$a" "$bin/ctsync" kernel insert --generate "$flows" -o json || true)
    count=$(external "$sb")
    overrun1=$(runtime_stat "$a" "$binary" "$work/${name}a.conf" "netlink overrun")
    sleep 1
    tx1=$(ip netns exec "$a" cat "/sys/class/net/${link}a/statistics/tx_bytes")
    cpua1=$(cpu "$pa"); cpub1=$(cpu "$pb"); rssa1=$(rss "$pa"); rssb1=$(rss "$pb")
    # Single-flow latency, median of 5: from the insert's return (the flow is in a's kernel)
    # to its presence in b's external cache.
    local lat=()
    for i in 1 2 3 4 5; do
        local before; before=$(external "$sb")
        ip netns exec "$a" "$bin/ctsync" kernel insert -p udp -s 198.18.250.$i -d 198.19.0.9 --sport 7 --dport 7 -t 600 >/dev/null 2>&1
        lat+=("$(wait_external "$sb" "!$before" 10)")
        sleep 0.3
    done
    local flushlag t2
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1
    flushlag=$(wait_external "$sb" 0 120 || true)
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
    python3 - "$name $case" "$flows" "$count" "$report" "$((overrun1 - overrun0))" "$tx0" "$tx1" "$cpua0" "$cpua1" "$cpub0" "$cpub1" "$rssa0" "$rssa1" "$rssb0" "$rssb1" "$flushlag" "${lat[@]}" <<'PY'
import sys, statistics, json
name = sys.argv[1]
flows, count = int(sys.argv[2]), int(sys.argv[3] or 0)
report = json.loads(sys.argv[4])
insert = report["seconds"]
total = report["done"] - report["started"] if report.get("done") else float("nan")
overruns = int(sys.argv[5])
tx0, tx1, ca0, ca1, cb0, cb1, ra0, ra1, rb0, rb1, flush = map(float, sys.argv[6:17])
lat = statistics.median(float(x) * 1000 for x in sys.argv[17:])
r = {"time": total, "insert": insert, "count": count, "overruns": overruns, "bytes": (tx1 - tx0) / flows,
     "cpu_a": (ca1 - ca0) / flows * 1e6, "cpu_b": (cb1 - cb0) / flows * 1e6,
     "rss_a": (ra1 - ra0) * 1024 / flows, "rss_b": (rb1 - rb0) * 1024 / flows, "latency": lat, "flush": flush}
print(f"{name:16s} {total:7.3f} {insert:7.3f} {total / insert:6.2f} {count:8d} {overruns:5d} {r['bytes']:7.1f} {r['cpu_a']:7.2f} {r['cpu_b']:7.2f} "
      f"{r['rss_a']:6.0f} {r['rss_b']:6.0f} {lat:7.2f} {flush:7.2f}")
json.dump(r, open(f"/tmp/replication-{name.replace(' ', '-')}.json", "w"))
PY
}

echo "kernel $(uname -r), $flows flows, $(nproc) cores, FTFW over UDP on a veth pair; burst: ctsync kernel insert --generate (batches of 256)"
printf '%-16s %7s %7s %6s %8s %5s %7s %7s %7s %6s %6s %7s %7s\n' "pair buffer" "time s" "kernel" "x kern" "on b" "ovrun" "B/flow" "µs a" "µs b" "RSS a" "RSS b" "lat ms" "flush s"
for case in ${BENCH_CASES:-2M 128M}; do
    case $case in
    2M) export BENCH_BUFFER=2097152 BENCH_BUFFER_MAX=16777216 ;;
    128M) export BENCH_BUFFER=134217728 BENCH_BUFFER_MAX=134217728 ;;
    *) echo "replication: unknown case $case (2M, 128M)" >&2; exit 2 ;;
    esac
    measure conntrackd "$(command -v conntrackd)" "$case"
    measure ctsyncd "$bin/ctsyncd" "$case"
done
python3 - ${BENCH_CASES:-2M 128M} <<'PY'
import json, sys
for case in sys.argv[1:]:
    c = json.load(open(f"/tmp/replication-conntrackd-{case}.json")); s = json.load(open(f"/tmp/replication-ctsyncd-{case}.json"))
    print("%s buffer, ratios ctsyncd/conntrackd: replication time %.2f, CPU a %.2f, CPU b %.2f, RSS a %.2f, RSS b %.2f, wire bytes/flow %.2f, latency %.2f, flush %.2f"
          % (case, s["time"] / c["time"], s["cpu_a"] / c["cpu_a"], s["cpu_b"] / c["cpu_b"], s["rss_a"] / max(c["rss_a"], 1),
             s["rss_b"] / max(c["rss_b"], 1), s["bytes"] / c["bytes"], s["latency"] / c["latency"], s["flush"] / max(c["flush"], 1e-3)))
PY
