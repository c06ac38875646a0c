#!/usr/bin/env bash
# Replication beside conntrackd: a ctsyncd pair and a conntrackd pair on the same namespaces,
# same burst, one run. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/replication.sh [FLOWS]      (default 100000)
#
# For each pair: FLOWS flows are inserted on a in one batched burst; measured until b's external
# cache holds every one (replication time and flows/s), then the exact count (0 loss), the wire
# bytes per flow on the sync link, CPU seconds and RSS growth per flow of both daemons, the
# latency of a single new flow (event on a -> present on b, median of 5, polled every 2 ms), and
# the time until a flush of all of them has reached b.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-100000}
[ "$(id -u)" -eq 0 ] || { echo "replication: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "replication: needs conntrackd" >&2; exit 1; }

swift build -c release >/dev/null
bin="$PWD/.build/release"
a="ctb_repa_$$"; b="ctb_repb_$$"; link="ctbr$$"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
ip netns add "$a"; ip netns add "$b"
ip link add "${link}a" netns "$a" type veth peer name "${link}b" netns "$b"
ip -n "$a" addr add 198.18.254.1/24 dev "${link}a"; ip -n "$b" addr add 198.18.254.2/24 dev "${link}b"
ip -n "$a" link set "${link}a" up; ip -n "$b" link set "${link}b" up
ip -n "$a" link set lo up; ip -n "$b" link set lo up

# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_flows "$flows" > "$work/flows.jsonl"
bench_poll_script
measure() {  # name binary
    local name=$1 binary=$2
    config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" > "$work/${name}a.conf"
    config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" > "$work/${name}b.conf"
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1; ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
    ip netns exec "$a" "$binary" -C "$work/${name}a.conf" >/dev/null 2>&1 & local pa=$!; pids+=("$pa")
    ip netns exec "$b" "$binary" -C "$work/${name}b.conf" >/dev/null 2>&1 & local pb=$!; pids+=("$pb")
    for side in a b; do
        local ns=${!side} deadline=$(( $(date +%s) + 20 ))
        until ip netns exec "$ns" "$binary" -C "$work/${name}${side}.conf" -s >/dev/null 2>&1; do
            [ "$(date +%s)" -lt "$deadline" ] || { echo "$name $side did not start" >&2; exit 1; }; sleep 0.05
        done
    done
    sleep 2  # let the pair exchange its hellos before timing
    local rssa0 rssb0 cpua0 cpub0 tx0 tx1 cpua1 cpub1 rssa1 rssb1 count
    rssa0=$(rss "$pa"); rssb0=$(rss "$pb"); cpua0=$(cpu "$pa"); cpub0=$(cpu "$pb")
    tx0=$(ip netns exec "$a" cat "/sys/class/net/${link}a/statistics/tx_bytes")
    local sb="$work/${name}b.ctl"
    # The burst: the kernel part of the insert is timed by ctsync itself; the lag after it
    # returns is timed here; replication time = the two added.
    local report lag
    report=$(ip netns exec "$a" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" -o json 2>/dev/null)
    lag=$(wait_external "$sb" "$flows" 120 || true)
    count=$(external "$sb")
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
    python3 - "$name" "$flows" "$count" "$report" "$lag" "$tx0" "$tx1" "$cpua0" "$cpua1" "$cpub0" "$cpub1" "$rssa0" "$rssa1" "$rssb0" "$rssb1" "$flushlag" "${lat[@]}" <<'PY'
import sys, statistics, json
name = sys.argv[1]
flows, count = int(sys.argv[2]), int(sys.argv[3] or 0)
insert = json.loads(sys.argv[4])["seconds"]
lag, tx0, tx1, ca0, ca1, cb0, cb1, ra0, ra1, rb0, rb1, flush = map(float, sys.argv[5:17])
lat = statistics.median(float(x) * 1000 for x in sys.argv[17:])
total = insert + lag
r = {"time": total, "rate": flows / total, "count": count, "bytes": (tx1 - tx0) / flows,
     "cpu_a": (ca1 - ca0) / flows * 1e6, "cpu_b": (cb1 - cb0) / flows * 1e6,
     "rss_a": (ra1 - ra0) * 1024 / flows, "rss_b": (rb1 - rb0) * 1024 / flows, "latency": lat, "flush": flush}
print(f"{name:11s} {total:7.2f} {r['rate']:9.0f} {count:8d} {r['bytes']:8.1f} {r['cpu_a']:8.2f} {r['cpu_b']:8.2f} "
      f"{r['rss_a']:7.0f} {r['rss_b']:7.0f} {lat:8.2f} {flush:7.2f}")
json.dump(r, open(f"/tmp/replication-{name}.json", "w"))
PY
}

echo "kernel $(uname -r), $flows flows, $(nproc) cores, FTFW over UDP on a veth pair"
printf '%-11s %7s %9s %8s %8s %8s %8s %7s %7s %8s %7s\n' pair "time s" "flows/s" "on b" "B/flow" "µs a" "µs b" "RSS a" "RSS b" "lat ms" "flush s"
measure conntrackd "$(command -v conntrackd)"
measure ctsyncd "$bin/ctsyncd"
python3 - <<'PY'
import json
c = json.load(open("/tmp/replication-conntrackd.json")); s = json.load(open("/tmp/replication-ctsyncd.json"))
print("ratios ctsyncd/conntrackd: replication time %.2f, wire bytes/flow %.2f, CPU a %.2f, CPU b %.2f, RSS b %.2f, latency %.2f"
      % (s["time"] / c["time"], s["bytes"] / c["bytes"], s["cpu_a"] / c["cpu_a"], s["cpu_b"] / c["cpu_b"],
         s["rss_b"] / max(c["rss_b"], 1), s["latency"] / c["latency"]))
print("flush reached b %.2f s (ctsyncd) and %.2f s (conntrackd) after `ctsync kernel flush` returned" % (s["flush"], c["flush"]))
PY
