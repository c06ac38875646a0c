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
[ "$(id -u)" -eq 0 ] || { echo "commit: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "commit: needs conntrackd" >&2; exit 1; }

swift build -c release >/dev/null
bin="$PWD/.build/release"
a="ctb_cma_$$"; b="ctb_cmb_$$"; plain="ctb_cmp_$$"; link="ctbc$$"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for ns in "$a" "$b" "$plain"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
ip netns add "$a"; ip netns add "$b"; ip netns add "$plain"
ip link add "${link}a" netns "$a" type veth peer name "${link}b" netns "$b"
ip -n "$a" addr add 198.18.254.1/24 dev "${link}a"; ip -n "$b" addr add 198.18.254.2/24 dev "${link}b"
ip -n "$a" link set "${link}a" up; ip -n "$b" link set "${link}b" up
ip -n "$a" link set lo up; ip -n "$b" link set lo up

python3 - "$flows" > "$work/flows.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    a, p = divmod(i, 60000)
    print(json.dumps({"proto": "tcp", "state": "ESTABLISHED", "timeout": 600, "status": ["SEEN_REPLY", "ASSURED"],
                      "original": {"src": "198.18.%d.%d" % (a // 250, a % 250 + 1), "dst": "198.19.0.1",
                                   "sport": 1024 + p, "dport": 443}}))
PY

config() {  # name local peer interface
    cat <<CONF
Sync {
    Mode FTFW {
        ResendQueueSize 262144
    }
    UDP {
        IPv4_address $2
        IPv4_Destination_Address $3
        Port 3780
        Interface $4
        SndSocketBuffer 8388608
        RcvSocketBuffer 8388608
        Checksum on
    }
}
General {
    HashSize 65536
    HashLimit 524288
    LogFile $work/$1.log
    Syslog off
    LockFile $work/$1.lock
    UNIX {
        Path $work/$1.ctl
    }
    NetlinkBufferSize 134217728
    NetlinkBufferSizeMaxGrowth 134217728
    Filter From Userspace {
        Address Ignore {
            IPv4_address 127.0.0.1
        }
    }
}
CONF
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# Asks a daemon's control socket for its stats (conntrackd's request code 21, which both
# daemons answer) and prints the external cache's active count; with a target, polls every
# 0.5 ms until the count equals it (or differs from "!N") and prints the seconds it took.
cat > "$work/poll.py" <<'PY'
import socket, struct, sys, time
def count(path):
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path); s.sendall(struct.pack("=i", 21))
    out = b""
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
    text = out.decode()
    part = text[text.index("cache external:"):]
    line = [l for l in part.splitlines() if l.startswith("current active connections")][0]
    return int(line.split()[-1])
path = sys.argv[1]
if len(sys.argv) == 2:
    print(count(path)); sys.exit(0)
target, limit = sys.argv[2], float(sys.argv[3])
start = time.time()
while time.time() - start < limit:
    n = count(path)
    if (target.startswith("!") and n != int(target[1:])) or (not target.startswith("!") and n == int(target)):
        print("%.6f" % (time.time() - start)); sys.exit(0)
    time.sleep(0.0005)
print("-1"); sys.exit(1)
PY
external() { python3 "$work/poll.py" "$1"; }            # socket -> count
wait_external() { python3 "$work/poll.py" "$1" "$2" "$3"; }  # socket target timeout -> seconds
now() { python3 -c 'import time; print(time.time())'; }
kcount() { ip netns exec "$1" "$bin/ctsync" kernel count; }
insert_rate() {  # namespace -> flows/s of the kernel part of a batched insert (then flushed)
    local out
    out=$(ip netns exec "$1" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" --batch-size 256 -o json)
    ip netns exec "$1" "$bin/ctsync" kernel flush >/dev/null 2>&1
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print('%.0f' % (r['created'] / r['seconds']))" "$out"
}

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
    sleep 2  # let the pair exchange its hellos
    ip netns exec "$a" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" -o json >/dev/null
    wait_external "$work/${name}b.ctl" "$flows" 120 >/dev/null || { echo "$name: b did not receive every flow" >&2; exit 1; }
    local before after t0 t1 out cpu0 cpu1
    before=$(kcount "$b")
    cpu0=$(cpu "$pb")
    t0=$(now)
    out=$(ip netns exec "$b" "$binary" -C "$work/${name}b.conf" -c 2>&1 || true)
    t1=$(now)
    # conntrackd answers -c before its last step's flows are all in: count until stable.
    local deadline=$(( $(date +%s) + 30 ))
    after=$(kcount "$b")
    while [ "$after" -lt $((before + flows)) ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; after=$(kcount "$b"); done
    cpu1=$(cpu "$pb")
    # The kernel's batched insert in the same namespace, with the same daemon listening.
    ip netns exec "$b" "$bin/ctsync" kernel flush >/dev/null 2>&1
    local insert; insert=$(insert_rate "$b")
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
    python3 - "$name" "$flows" "$before" "$after" "$t0" "$t1" "$insert" "$cpu0" "$cpu1" "$out" <<'PY'
import sys, json
name, flows, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0, t1, insert, c0, c1 = map(float, sys.argv[5:10])
seconds = t1 - t0
r = {"seconds": seconds, "rate": flows / seconds, "committed": after - before, "insert": insert, "cpu": c1 - c0,
     "output": sys.argv[10].strip()}
print(f"{name:11s} {seconds:8.3f} {r['rate']:10.0f} {after - before:10d} {insert:12.0f} {r['rate'] / insert:8.2f} {c1 - c0:8.2f}")
json.dump(r, open(f"/tmp/commit-{name}.json", "w"))
PY
}

echo "kernel $(uname -r), $flows flows, $(nproc) cores; commit = wall time of the -c client (request to answer)"
plainrate=$(insert_rate "$plain")
echo "kernel batched insert, namespace without a listener: $plainrate flows/s"
printf '%-11s %8s %10s %10s %12s %8s %8s\n' daemon "commit s" "flows/s" committed "insert/s(b)" "ratio" "cpu s"
measure conntrackd "$(command -v conntrackd)"
measure ctsyncd "$bin/ctsyncd"
python3 - "$plainrate" <<'PY'
import json, sys
plain = float(sys.argv[1])
c = json.load(open("/tmp/commit-conntrackd.json")); s = json.load(open("/tmp/commit-ctsyncd.json"))
print("ctsyncd: %s" % s["output"])
print("ratios: ctsyncd commit / batched insert in the same namespace %.2f (/ insert without a listener %.2f); "
      "ctsyncd / conntrackd commit rate %.2f; conntrackd commit / insert %.2f"
      % (s["rate"] / s["insert"], s["rate"] / plain, s["rate"] / c["rate"], c["rate"] / c["insert"]))
PY
