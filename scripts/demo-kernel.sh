#!/usr/bin/env bash
# A guided tour of `ctsync kernel` on a real, live conntrack table: two network namespaces
# (a client and a firewall host), a real TCP connection through the firewall's conntrack,
# then listing, watching, inserting, updating, deleting and flushing flows.
# Needs root. Installs missing Debian packages, builds, runs, cleans up (also on Ctrl-C).
# Bounded: every wait has a time limit; the whole tour takes well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (it creates network namespaces): sudo $0" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
bash scripts/install-deps.sh >/dev/null
say "Building ctsync (release)"
swift build -c release 2>&1 | tail -1
ctsync="$PWD/.build/release/ctsync"
ctsyncd="$PWD/.build/release/ctsyncd"

client="ctdemo_client_$$"
fw="ctdemo_fw_$$"
work=$(mktemp -d)
pids=()
cleanup() {
    [ -f "$work/ctsyncd.conf" ] && ip netns exec "$fw" "$ctsyncd" -C "$work/ctsyncd.conf" -k >/dev/null 2>&1 || true
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    ip netns del "$client" 2>/dev/null || true
    ip netns del "$fw" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_fw() { ip netns exec "$fw" "$@"; }

say "Two namespaces: $client (198.18.0.1) and $fw (198.18.0.2), joined by a veth pair"
ip netns add "$client"
ip netns add "$fw"
ip link add ctdemo0 netns "$client" type veth peer name ctdemo1 netns "$fw"
ip -n "$client" addr add 198.18.0.1/24 dev ctdemo0
ip -n "$fw" addr add 198.18.0.2/24 dev ctdemo1
for ns in "$client" "$fw"; do ip -n "$ns" link set lo up; done
ip -n "$client" link set ctdemo0 up
ip -n "$fw" link set ctdemo1 up
# A stateful ruleset: from here on the firewall's kernel tracks every connection.
in_fw nft -f - <<'NFT'
table inet demo {
    chain input {
        type filter hook input priority 0; policy drop;
        iif lo accept
        ct state established,related accept
        tcp dport 8080 ct state new accept
    }
}
NFT

say "Starting ctsyncd on the firewall: its internal cache mirrors the kernel table"
cat >"$work/ctsyncd.conf" <<CONF
General {
    LogFile $work/ctsyncd.log
    LockFile $work/ctsyncd.lock
    UNIX {
        Path $work/ctsyncd.ctl
    }
    NetlinkBufferSize 4194304
    NetlinkBufferSizeMaxGrowth 16777216
    Filter From Userspace {
        Address Ignore {
            IPv4_address 127.0.0.1
        }
    }
}
CONF
in_fw "$ctsyncd" -C "$work/ctsyncd.conf" -d
echo "ctsyncd is running (conntrackd's flags: -C FILE -d); the log is $work/ctsyncd.log"

say "Watching the firewall's conntrack events in the background (ctsync kernel events)"
in_fw "$ctsync" kernel events --timeout 60 >"$work/events" 2>"$work/events.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/events.err" 2>/dev/null && break; sleep 0.05; done

say "A real TCP connection: client -> 198.18.0.2:8080, kept open"
in_fw timeout 30 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", 8080)); s.listen(1); c, _ = s.accept()
while True:
    d = c.recv(100)
    if not d: break
    c.sendall(d)
' &
pids+=($!)
for _ in $(seq 1 100); do in_fw ss -ltn 2>/dev/null | grep -q 198.18.0.2:8080 && break; sleep 0.05; done
ip netns exec "$client" timeout 30 python3 -c '
import socket, time
c = socket.create_connection(("198.18.0.2", 8080), timeout=5)
for i in range(3):
    c.sendall(b"ping %d\n" % i); c.recv(100)
open("'"$work"'/connected", "w").close()
time.sleep(6)
' &
pids+=($!)
for _ in $(seq 1 100); do [ -e "$work/connected" ] && break; sleep 0.05; done

say "ctsync kernel list -p tcp --dport 8080   (the live connection, conntrack's line layout)"
in_fw "$ctsync" kernel list -p tcp --dport 8080
say "... and as JSON (-o json): one object per flow, stable field names"
in_fw "$ctsync" kernel list -p tcp --dport 8080 -o json

say "The daemon saw it: ctsyncd -i (conntrackd's internal-cache layout) and ctsyncd -s"
for _ in $(seq 1 50); do in_fw "$ctsyncd" -C "$work/ctsyncd.conf" -i | grep -q 8080 && break; sleep 0.05; done
in_fw "$ctsyncd" -C "$work/ctsyncd.conf" -i
in_fw "$ctsyncd" -C "$work/ctsyncd.conf" -s | head -6

say "Inserting flows by hand: TCP with mark and zone, IPv6 UDP, ICMP echo, a DNAT'ed TCP flow"
in_fw "$ctsync" kernel insert -p tcp -s 198.18.1.10 -d 198.18.2.20 --sport 40000 --dport 443 \
    --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 600 -m 7 -w 3
in_fw "$ctsync" kernel insert -p udp -s 2001:db8::10 -d 2001:db8::53 --sport 5353 --dport 53 -t 60
in_fw "$ctsync" kernel insert -p icmp -s 198.18.1.10 -d 198.18.2.20 --icmp-type 8 --icmp-id 42 -t 30
in_fw "$ctsync" kernel insert -p tcp -s 198.18.1.11 -d 198.18.3.1 --sport 5000 --dport 80 \
    --reply-src 198.18.9.9 --reply-port-src 8080 --state ESTABLISHED -t 300
in_fw "$ctsync" kernel list -o extended

say "Batched insert: 20000 flows from a JSON-lines file, 256 netlink messages per sendmsg"
python3 -c '
import json
for i in range(20000):
    print(json.dumps({"proto": "udp", "timeout": 300, "original": {"src": "198.18.%d.%d" % (10 + i // 250, i % 250 + 1), "dst": "198.19.0.53", "sport": 10000 + i % 50000, "dport": 53}}))
' >"$work/flows.jsonl"
in_fw "$ctsync" kernel insert --file "$work/flows.jsonl"
echo "flows in the table: $(in_fw "$ctsync" kernel count)"
echo "of them udp to port 53: $(in_fw "$ctsync" kernel count -p udp --dport 53)"

say "Update: mark 99 on the flows from 198.18.1.10 (like conntrack -U)"
in_fw "$ctsync" kernel update -s 198.18.1.10 -m 99
in_fw "$ctsync" kernel list -s 198.18.1.10

say "Delete by filter: the 20000 batch flows (destination 198.19.0.53)"
in_fw "$ctsync" kernel delete -d 198.19.0.53
echo "flows left: $(in_fw "$ctsync" kernel count)"

say "Meanwhile the daemon's cache followed every change: kernel table and cache compared, flow by flow"
compare() {
    in_fw "$ctsync" kernel list -o json 2>/dev/null >"$work/kernel.json"
    in_fw "$ctsync" cache internal -C "$work/ctsyncd.conf" -o json 2>/dev/null >"$work/cache.json"
    python3 - "$work/kernel.json" "$work/cache.json" <<'PY'
import json, sys
def keys(path):
    out = {}
    for line in open(path):
        f = json.loads(line)
        o = f["original"]
        if o["src"] == "127.0.0.1":
            continue  # the daemon's filter ignores loopback (Address Ignore)
        out[(f["proto"], o["src"], o["dst"], o.get("sport"), o.get("dport"), f["zone"], json.dumps(f.get("icmp")))] = f
    return out
k, c = keys(sys.argv[1]), keys(sys.argv[2])
missing, ghosts = len(k.keys() - c.keys()), len(c.keys() - k.keys())
print("kernel (accepted by the filter): %d flows, cache: %d flows, missing: %d, ghosts: %d" % (len(k), len(c), missing, ghosts))
sys.exit(0 if missing == 0 and ghosts == 0 else 1)
PY
}
for _ in $(seq 1 100); do compare >/dev/null && break; sleep 0.05; done
compare || true
in_fw "$ctsync" stats -C "$work/ctsyncd.conf" -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("cache counters: created %d, updated %d, destroyed %d; events %d, overruns %d, resyncs %d"
      % (s["internal"]["created"], s["internal"]["updated"], s["internal"]["destroyed"],
         s["netlink"]["events_received"], s["netlink"]["overruns"], s["netlink"]["resyncs"]))'

say "Flush the IPv6 family, then everything"
in_fw "$ctsync" kernel flush -f ipv6
in_fw "$ctsync" kernel flush
echo "flows left: $(in_fw "$ctsync" kernel count)"

say "What the event watcher saw (first 8 of $(wc -l <"$work/events") lines, timestamps and types)"
head -n 8 "$work/events" | cut -c1-150
say "Errors name what is wrong and exit non-zero (2 for usage, 1 for failures)"
in_fw "$ctsync" kernel list -s 198.18.0.300 || echo "(exit $?)"
in_fw "$ctsync" kernel insert -p tcp -s 198.18.1.10 -d 198.18.2.20 --sport 1 --dport 2 || echo "(exit $?)"
say "Stopping the daemon (ctsyncd -k)"
in_fw "$ctsyncd" -C "$work/ctsyncd.conf" -k
say "Done: namespaces and processes are removed on exit"
