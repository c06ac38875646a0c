#!/usr/bin/env bash
# Replication lag kernel to kernel in hot standby, beside conntrackd: a pair of each with
# `DisableExternalCache On` (the peer's flows go straight into the kernel), same namespaces,
# one run. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/lag.sh [FLOWS-PER-RATE] [RATES]     (default 10000, "2000 5000 10000 20000")
#   sudo LAG_BURST=100 scripts/bench/lag.sh 5000 "2000 20000"    (bursts of 100 instead of 1000)
#
# For each rate, FLOWS-PER-RATE new flows are written into a's kernel in bursts of 1000 (LAG_BURST) paced to
# that many flows a second (`ctsync kernel insert --generate ... --rate R --burst 1000`); once b's
# kernel holds them all, each flow's lag is its creation time in b's kernel minus in a's, both
# from the kernels' own conntrack timestamps (nf_conntrack_timestamp=1, read by
# scripts/bench/ct_timestamps.py). Prints p50, p90, p99 and the maximum per rate and pair, the
# median burst's "write" (its first to its last flow in a's kernel) and "done" (its first flow
# in a's kernel to its last in b's), and the ratios ctsyncd/conntrackd.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
per_rate=${1:-10000}
rates=${2:-2000 5000 10000 20000}
[ "$(id -u)" -eq 0 ] || { echo "lag: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "lag: needs conntrackd" >&2; exit 1; }

# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_pair_setup lag
for ns in "$a" "$b"; do ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/netfilter/nf_conntrack_timestamp'; done

hot_config() {  # NAME LOCAL PEER INTERFACE
    config "$@" | sed 's/ResendQueueSize 262144/ResendQueueSize 262144\n        DisableExternalCache On/'
}
kernel_count() { ip netns exec "$1" "$bin/ctsync" kernel count 2>/dev/null || echo 0; }
wait_count() {  # netns target seconds
    local deadline=$(( $(date +%s) + $3 ))
    until [ "$(kernel_count "$1")" -ge "$2" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "lag: $1 reached $(kernel_count "$1") of $2 flows" >&2; return 1; }
        sleep 0.05
    done
}

measure() {  # name binary
    local name=$1 binary=$2
    hot_config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" > "$work/${name}a.conf"
    hot_config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" > "$work/${name}b.conf"
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1; ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
    local pa pb
    bench_start_pair "$name" "$binary"
    local first=0 total=0 rate
    : > "$work/$name.seen"
    for rate in $rates; do
        ip netns exec "$a" "$bin/ctsync" kernel insert --generate "$per_rate" --generate-first "$first" --rate "$rate" --burst "${LAG_BURST:-1000}" >/dev/null 2>&1
        total=$((total + per_rate))
        wait_count "$b" "$total" 60
        ip netns exec "$a" python3 scripts/bench/ct_timestamps.py > "$work/a.ts"
        ip netns exec "$b" python3 scripts/bench/ct_timestamps.py > "$work/b.ts"
        python3 - "$name" "$rate" "$work/a.ts" "$work/b.ts" "$work/$name.seen" "${LAG_BURST:-1000}" <<'PY'
import sys, json
name, rate, a_path, b_path, seen_path, burst = sys.argv[1:]
seen = set(open(seen_path).read().split("\n"))
def load(path):
    return {" ".join(l.split()[:4]): int(l.split()[4]) for l in open(path) if l.strip()}
a, b = load(a_path), load(b_path)
new = sorted((k for k in a if k in b and k not in seen), key=lambda k: a[k])
lags = sorted((b[k] - a[k]) / 1e6 for k in new)
with open(seen_path, "a") as f:
    f.write("\n".join(k for k in a if k not in seen) + "\n")
def pct(values, p): return values[min(len(values) - 1, int(p / 100 * len(values)))]
# Per burst (the flows in a's creation order, LAG_BURST at a time): how long a's kernel took to
# take the burst ("write"), and how long from its first flow in a's kernel until its last flow
# was in b's ("done"); medians over the bursts.
size = int(burst)
writes, dones = [], []
for i in range(0, len(new), size):
    chunk = new[i:i + size]
    writes.append((a[chunk[-1]] - a[chunk[0]]) / 1e6)
    dones.append((max(b[k] for k in chunk) - a[chunk[0]]) / 1e6)
writes.sort(); dones.sort()
r = {"n": len(lags), "p50": pct(lags, 50), "p90": pct(lags, 90), "p99": pct(lags, 99), "max": lags[-1],
     "write": pct(writes, 50), "done": pct(dones, 50)}
print(f"{name:11s} {int(rate):7d} {r['n']:7d} {r['p50']:8.2f} {r['p90']:8.2f} {r['p99']:8.2f} {r['max']:8.2f} {r['write']:8.2f} {r['done']:8.2f}")
results = {}
try: results = json.load(open(f"/tmp/lag-{name}.json"))
except Exception: pass
results[rate] = r
json.dump(results, open(f"/tmp/lag-{name}.json", "w"))
PY
        first=$((first + per_rate))
    done
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
}

rm -f /tmp/lag-conntrackd.json /tmp/lag-ctsyncd.json
echo "kernel $(uname -r), $(nproc) cores, FTFW over UDP, DisableExternalCache On; $per_rate flows per rate in bursts of ${LAG_BURST:-1000}"
printf '%-11s %7s %7s %8s %8s %8s %8s %8s %8s\n' pair "flows/s" flows "p50 ms" "p90 ms" "p99 ms" "max ms" "write ms" "done ms"
measure conntrackd "$(command -v conntrackd)"
measure ctsyncd "$bin/ctsyncd"
python3 - <<'PY'
import json
c = json.load(open("/tmp/lag-conntrackd.json")); s = json.load(open("/tmp/lag-ctsyncd.json"))
for rate in c:
    print("%s flows/s: ratios ctsyncd/conntrackd p50 %.2f, p99 %.2f, burst done %.2f" % (rate, s[rate]["p50"] / c[rate]["p50"], s[rate]["p99"] / c[rate]["p99"], s[rate]["done"] / c[rate]["done"]))
PY
