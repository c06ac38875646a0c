#!/usr/bin/env bash
# Commit beside conntrackd, in one run: a pair replicates FLOWS flows from a to b, then b commits
# its external cache into its kernel table (`ctsyncd -c` and `conntrackd -c` on the same flows),
# and the rate is compared with the kernel's batched insert (`ctsync kernel insert`, batch 256)
# measured in the same namespace (b, with its daemon listening, as during a commit) and in a
# namespace with no listener. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/commit.sh [FLOWS]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-100000}
rounds=${ROUNDS:-3}
[ "$(id -u)" -eq 0 ] || { echo "commit: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "commit: needs conntrackd" >&2; exit 1; }

swift build -c release >/dev/null
bin="$PWD/.build/release"
a="ctb_cma_$$"; b="ctb_cmb_$$"; plain="ctb_cmp_$$"; link="ctbc$$"
work=$(mktemp -d)
pids=()
cleanup() {
    # KEEP_LOGS=DIR keeps the daemons' logs for a look afterwards.
    [ -n "${KEEP_LOGS:-}" ] && mkdir -p "$KEEP_LOGS" && cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for ns in "$a" "$b" "$plain"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_link_pair "$a" "$b" "$link"
ip netns add "$plain"
bench_flows "$flows" > "$work/flows.jsonl"
bench_poll_script
kcount() { ip netns exec "$1" "$bin/ctsync" kernel count; }
insert_rate() {  # namespace -> flows/s of the kernel part of a batched insert (then flushed)
    local out
    out=$(ip netns exec "$1" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" --batch-size 256 -o json)
    ip netns exec "$1" "$bin/ctsync" kernel flush >/dev/null 2>&1
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print('%.0f' % (r['created'] / r['seconds']))" "$out"
}

commit_rounds() {  # name binary pid-of-b mode -> best of $rounds commits; JSON in /tmp/commit-NAME-MODE.json
    local name=$1 binary=$2 pb=$3 mode=$4
    local round walls=() internals=() cpus=() inserts=() out=""
    for round in $(seq "$rounds"); do
        # The kernel's batched insert under the same host state as the commit (pair: a's
        # daemon and table there too; alone: a gone), in the namespace without a daemon.
        inserts+=("$(insert_rate "$plain")")
        local before after cpu0 cpu1 deadline timed
        before=$(kcount "$b")
        cpu0=$(cpu "$pb")
        # Wall time of the client alone: request sent to answer read.
        timed=$(python3 -c 'import subprocess, sys, time
t = time.monotonic(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True); e = time.monotonic() - t
print("%.6f" % e); print((p.stdout + p.stderr).strip())' ip netns exec "$b" "$binary" -C "$work/${name}b.conf" -c)
        out=$(tail -n +2 <<<"$timed")
        local wall; wall=$(head -1 <<<"$timed")
        # conntrackd answers before its last flows are in: count until all are there.
        deadline=$(( $(date +%s) + 30 ))
        after=$(kcount "$b")
        if [ "$after" -lt $((before + flows)) ]; then
            local t0; t0=$(now)
            while [ "$after" -lt $((before + flows)) ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.01; after=$(kcount "$b"); done
            wall=$(python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[3]) - float(sys.argv[2]))" "$wall" "$t0" "$(now)")
        fi
        [ "$after" -ge $((before + flows)) ] || { echo "$name: commit left $((before + flows - after)) flows out" >&2; exit 1; }
        # Let the daemon digest what the commit caused (its cache follows the kernel) before the next round.
        sleep 1
        cpu1=$(cpu "$pb")
        walls+=("$wall")
        cpus+=("$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$cpu0" "$cpu1")")
        if [ "$name" = ctsyncd ]; then  # "committed N flows: ... in S s (...)"
            internals+=("$(sed -n 's/.* in \([0-9.]*\) s.*/\1/p' <<<"$out" | head -1)")
        else
            internals+=("$(grep -o 'commit has taken [0-9.]*' "$work/${name}b.log" | tail -1 | awk '{print $4}')")
        fi
        ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
        sleep 1
    done
    local insert; insert=$(printf '%s\n' "${inserts[@]}" | sort -n | tail -1)
    python3 - "$name" "$mode" "$flows" "$insert" "$out" "${walls[*]}" "${internals[*]}" "${cpus[*]}" <<'PY'
import sys, json
name, mode, flows, insert, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].strip()
walls = [float(x) for x in sys.argv[6].split()]
internals = [float(x) for x in sys.argv[7].split() if float(x) > 0]
cpus = [float(x) for x in sys.argv[8].split()]
best = min(walls)
r = {"seconds": best, "rate": flows / best, "walls": walls, "internal": min(internals) if internals else 0,
     "insert": insert, "cpu": min(cpus), "output": out}
print(f"{name + ' ' + mode:16s} {best:8.3f} {flows / best:10.0f} {r['internal']:10.3f} {' '.join('%.3f' % w for w in walls):>22s} {insert:12.0f} {flows / best / insert:6.2f} {min(cpus):7.2f}")
json.dump(r, open(f"/tmp/commit-{name}-{mode}.json", "w"))
PY
}

measure() {  # name binary -> best of $rounds commits of the same external cache
    local name=$1 binary=$2
    config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" > "$work/${name}a.conf"
    config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" > "$work/${name}b.conf"
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1; ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
    local pa pb
    bench_start_pair "$name" "$binary"
    ip netns exec "$a" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" -o json >/dev/null
    wait_external "$work/${name}b.ctl" "$flows" 120 >/dev/null || { echo "$name: b did not receive every flow" >&2; exit 1; }
    commit_rounds "$name" "$binary" "$pb" pair
    # The failover case: the peer is gone. Its daemon stops, its table is emptied; b commits
    # with no other listener on the host and only its own flows in the conntrack hash.
    kill "$pa"; wait "$pa" 2>/dev/null || true
    ip netns exec "$a" "$bin/ctsync" kernel flush >/dev/null 2>&1
    commit_rounds "$name" "$binary" "$pb" alone
    kill "$pb"; wait "$pb" 2>/dev/null || true
}

echo "kernel $(uname -r), $flows flows, $(nproc) cores, best of $rounds rounds; commit = request to answer of the -c client"
echo "pair: both daemons running, the peer's table full; alone: the peer stopped and its table emptied (a failover)"
plainrates=()
for round in $(seq "$rounds"); do plainrates+=("$(insert_rate "$plain")"); done
plainrate=$(printf '%s\n' "${plainrates[@]}" | sort -n | tail -1)
echo "kernel batched insert (ctsync kernel insert, batch 256) on the idle host: ${plainrates[*]} flows/s -> best $plainrate"
printf '%-16s %8s %10s %10s %22s %12s %6s %7s\n' "daemon case" "best s" "flows/s" "own s" "rounds s" "insert/s" ratio "cpu s"
measure conntrackd "$(command -v conntrackd)"
measure ctsyncd "$bin/ctsyncd"
python3 - "$plainrate" <<'PY'
import json, sys
idle = float(sys.argv[1])
print("insert/s = ctsync kernel insert (batch 256) in a namespace without a daemon, same host state, best round;")
print("ratio = commit rate / insert/s")
for mode in ("pair", "alone"):
    c = json.load(open(f"/tmp/commit-conntrackd-{mode}.json")); s = json.load(open(f"/tmp/commit-ctsyncd-{mode}.json"))
    own = (s["rate"] * s["seconds"] / s["internal"]) / s["insert"] if s["internal"] else 0
    print(f"{mode:5s}: ctsyncd commit / batched insert {s['rate'] / s['insert']:.2f} (daemon's own timing {own:.2f}); "
          f"conntrackd {c['rate'] / c['insert']:.2f}; ctsyncd / conntrackd commit rate {s['rate'] / c['rate']:.2f}; "
          f"vs the idle host's insert: ctsyncd {s['rate'] / idle:.2f}, conntrackd {c['rate'] / idle:.2f}")
print("ctsyncd says: %s" % json.load(open("/tmp/commit-ctsyncd-alone.json"))["output"])
PY
