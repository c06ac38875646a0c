#!/usr/bin/env bash
# Batched insert rate of `ctsync kernel insert` against a one-flow-per-message baseline,
# in one run, on the real kernel table of a throw-away namespace. Needs root.
#
#   sudo scripts/bench/kernel-insert.sh [FLOWS] [BATCH]     (defaults: 100000 256)
#
# Also times `conntrack -I` (one process per flow) on a smaller sample for reference.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-100000}
batch=${2:-256}
sample=${CONNTRACK_SAMPLE:-1000}
[ "$(id -u)" -eq 0 ] || { echo "kernel-insert: needs root (network namespaces, conntrack table)" >&2; exit 1; }

swift build -c release --product ctsync >/dev/null
ctsync="$PWD/.build/release/ctsync"
ns="ctb_insert_$$"
work=$(mktemp -d)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
ip netns add "$ns"

python3 - "$flows" > "$work/flows.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
for i in range(n):
    a, p = divmod(i, 60000)
    print(json.dumps({"proto": "tcp", "state": "ESTABLISHED", "timeout": 600,
                      "status": ["SEEN_REPLY", "ASSURED"],
                      "original": {"src": "198.18.%d.%d" % (a // 250, a % 250 + 1), "dst": "198.19.0.1",
                                   "sport": 1024 + p, "dport": 443}}))
PY

run() {  # batch-size -> prints the JSON report, checks the count, empties the table
    local out
    out=$(ip netns exec "$ns" "$ctsync" kernel insert --file "$work/flows.jsonl" --batch-size "$1" -o json)
    local count
    count=$(ip netns exec "$ns" "$ctsync" kernel count)
    [ "$count" -eq "$flows" ] || { echo "kernel-insert: expected $flows flows, kernel has $count" >&2; exit 1; }
    ip netns exec "$ns" "$ctsync" kernel flush >/dev/null 2>&1
    echo "$out"
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "kernel $(uname -r), $flows flows, $(nproc) cores"
one=$(run 1)
batched=$(run "$batch")
big=$(run 1024)

t0=$(date +%s.%N)
for i in $(seq 1 "$sample"); do
    ip netns exec "$ns" conntrack -I -p tcp -s 198.18.200.1 -d 198.19.0.1 --sport $((1024 + i)) --dport 443 \
        --state ESTABLISHED -t 600 >/dev/null 2>&1
done
t1=$(date +%s.%N)
tool_rate=$(python3 -c "print(int($sample / ($t1 - $t0)))")

r1=$(field "$one" flows_per_second)
rb=$(field "$batched" flows_per_second)
rk=$(field "$big" flows_per_second)
printf '%-44s %12s %10s\n' "method" "flows/s" "sendmsg"
printf '%-44s %12s %10s\n' "ctsync, 1 message per sendmsg (baseline)" "$r1" "$(field "$one" sendmsg_calls)"
printf '%-44s %12s %10s\n' "ctsync, batch $batch" "$rb" "$(field "$batched" sendmsg_calls)"
printf '%-44s %12s %10s\n' "ctsync, batch 1024" "$rk" "$(field "$big" sendmsg_calls)"
printf '%-44s %12s %10s\n' "conntrack -I, 1 process per flow ($sample)" "$tool_rate" "$sample"
python3 -c "print('ratio batch $batch / baseline: %.2fx; batch 1024 / baseline: %.2fx; batch $batch / conntrack -I: %.0fx' % ($rb/$r1, $rk/$r1, $rb/$tool_rate))"
