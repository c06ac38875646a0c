# shellcheck shell=bash disable=SC2154
# Shared by the daemon benchmarks (daemon-cache.sh, replication.sh, commit.sh): the flow
# burst, the daemons' configuration (valid for ctsyncd and conntrackd alike), and the probes.
# Source it after setting `work` (the run's temporary directory).

# bench_flows N: N distinct established TCP flows from 198.18.0.0/15, one JSON object a line
# (ctsync kernel insert --file).
bench_flows() {
    python3 - "$1" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    a, p = divmod(i, 60000)
    print(json.dumps({"proto": "tcp", "state": "ESTABLISHED", "timeout": 600, "status": ["SEEN_REPLY", "ASSURED"],
                      "original": {"src": "198.18.%d.%d" % (a // 250, a % 250 + 1), "dst": "198.19.0.1",
                                   "sport": 1024 + p, "dport": 443}}))
PY
}

# bench_general NAME [EXTRA-LINE...]: the General section, files under $work named NAME.
bench_general() {
    local name=$1 extra=""
    shift
    [ $# -eq 0 ] || extra=$(printf '    %s\n' "$@")
    cat <<CONF
General {
    HashSize 65536
    HashLimit 524288
    LogFile $work/$name.log
    Syslog off
    LockFile $work/$name.lock
    UNIX {
        Path $work/$name.ctl
    }
    NetlinkBufferSize ${BENCH_BUFFER:-134217728}
    NetlinkBufferSizeMaxGrowth ${BENCH_BUFFER_MAX:-134217728}
${extra:+$extra
}    Filter From Userspace {
        Address Ignore {
            IPv4_address 127.0.0.1
        }
    }
}
CONF
}

# config NAME LOCAL PEER INTERFACE [SYNC-LINES]: FTFW over UDP port 3780 on the link (and the
# given lines in the Sync section, e.g. an Options block), then General.
config() {
    cat <<CONF
Sync {
    Mode FTFW {
        ResendQueueSize 262144
    }
${5:+    $5
}    UDP {
        IPv4_address $2
        IPv4_Destination_Address $3
        Port 3780
        Interface $4
        SndSocketBuffer 8388608
        RcvSocketBuffer 8388608
        Checksum on
    }
}
CONF
    bench_general "$1"
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }                  # KiB
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
now() { python3 -c 'import time; print(time.time())'; }

# Asks a daemon's control socket for its stats (conntrackd's request code 21, which both
# daemons answer) and prints the external cache's active count; with a target, polls every
# 0.5 ms until the count equals it (or differs from "!N") and prints the seconds it took.
bench_poll_script() {
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
if len(sys.argv) > 4 and sys.argv[4] == "--":
    # Burst: runs the command after "--" (a `ctsync kernel insert ... -o json`) while polling,
    # and prints its report with "done": the wall clock when the count reached the target.
    import json, subprocess
    target, limit = int(sys.argv[2]), float(sys.argv[3])
    proc = subprocess.Popen(sys.argv[5:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    start, done = time.time(), None
    while time.time() - start < limit:
        if count(path) == target:
            done = time.time(); break
        time.sleep(0.001)
    report = json.loads(proc.communicate()[0])
    report["done"] = done
    print(json.dumps(report)); sys.exit(0 if done else 1)
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
}
external() { python3 "$work/poll.py" "$1"; }                  # socket -> count
wait_external() { python3 "$work/poll.py" "$1" "$2" "$3"; }   # socket target timeout -> seconds
burst_external() { python3 "$work/poll.py" "$@"; }          # socket target timeout -- command... -> report
# The value of one line of a daemon's `-s runtime` (both daemons print conntrackd's layout).
runtime_stat() {  # netns binary config label
    ip netns exec "$1" "$2" -C "$3" -s runtime 2>/dev/null | awk -v k="$4" -F: 'index($1, k) {gsub(/[ \t]/, "", $2); print $2; exit}'
}

# bench_link_pair A B LINK: namespaces A and B joined by a veth pair (LINKa, LINKb) with
# 198.18.254.1 and .2, loopback up in both.
bench_link_pair() {
    ip netns add "$1"; ip netns add "$2"
    ip link add "${3}a" netns "$1" type veth peer name "${3}b" netns "$2"
    ip -n "$1" addr add 198.18.254.1/24 dev "${3}a"; ip -n "$2" addr add 198.18.254.2/24 dev "${3}b"
    ip -n "$1" link set "${3}a" up; ip -n "$2" link set "${3}b" up
    ip -n "$1" link set lo up; ip -n "$2" link set lo up
}

# bench_start_pair NAME BINARY: starts BINARY in $a with $work/NAMEa.conf and in $b with
# $work/NAMEb.conf, waits until both answer -s, then 2 s for their hellos. Sets pa and pb (and
# adds them to pids, for the caller's cleanup).
bench_start_pair() {
    local name=$1 binary=$2 side ns deadline
    ip netns exec "$a" "$binary" -C "$work/${name}a.conf" >/dev/null 2>&1 & pa=$!; pids+=("$pa")
    ip netns exec "$b" "$binary" -C "$work/${name}b.conf" >/dev/null 2>&1 & pb=$!; pids+=("$pb")
    for side in a b; do
        ns=${!side}; deadline=$(( $(date +%s) + 20 ))
        until ip netns exec "$ns" "$binary" -C "$work/${name}${side}.conf" -s >/dev/null 2>&1; do
            [ "$(date +%s)" -lt "$deadline" ] || { echo "$name $side did not start" >&2; exit 1; }; sleep 0.05
        done
    done
    sleep 2  # let the pair exchange its hellos before timing
}

# bench_pair_setup TAG: the release build ($bin), two namespaces a and b joined by a veth pair
# (names from TAG and the shell's pid), a work directory ($work), and a cleanup on exit that
# kills the daemons in $pids (started by the caller) and removes all of it.
bench_pair_setup() {
    swift build -c release >/dev/null
    bin="$PWD/.build/release"
    a="ctb_${1}a_$$"; b="ctb_${1}b_$$"; link="ctb${1:0:1}$$"
    work=$(mktemp -d)
    pids=()
    trap bench_pair_cleanup EXIT INT TERM
    bench_link_pair "$a" "$b" "$link"
}
bench_pair_cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
