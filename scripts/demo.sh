#!/usr/bin/env bash
# A guided tour of a firewall failover: two stateful firewalls (fw1, fw2) in network
# namespaces, keepalived moving the gateway addresses between them, ctsyncd replicating the
# connection-tracking table from the master to the backup, and a TCP connection that keeps
# running while the master dies and comes back.
#
#   sudo scripts/demo.sh                    # with ctsyncd (built here, release)
#   sudo DAEMON=conntrackd scripts/demo.sh  # the same with conntrackd
#
# Needs root. Installs missing Debian packages, builds, runs, cleans up (also on Ctrl-C).
# Bounded: every wait has a time limit; the tour takes about half a minute after the build.
# The topology comes from scripts/failover/topology.sh; docs/failover.md explains the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (it creates network namespaces): sudo $0" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
bash scripts/install-deps.sh >/dev/null
say "Building ctsync (release)"
swift build -c release 2>&1 | tail -1
ctsync="$PWD/.build/release/ctsync"
case "${DAEMON:-ctsyncd}" in
    conntrackd) daemon=$(command -v conntrackd) ;;
    *) daemon="$PWD/.build/release/ctsyncd" ;;
esac
name=$(basename "$daemon")

# shellcheck source=scripts/failover/topology.sh
source scripts/failover/topology.sh
export FO_QUIET=1  # read by the library
fo_init "ctdemo_fo_$$" "$(mktemp -d /tmp/ctdemo-fo.XXXXXX)" "$daemon"
trap fo_teardown EXIT
trap 'exit 130' INT TERM

# stats of FW's daemon in a few words
cache_line() {
    local fw=$1
    if [ "$name" = ctsyncd ]; then
        fo_in "$fw" "$ctsync" stats -C "$(fo_conf "$fw")" -o json | "$FO_PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
print("internal cache (this firewall\x27s flows): %d, external cache (the peer\x27s flows): %d"
      % (s["internal"]["active"], s["external"]["active"]))'
    else
        fo_daemon "$fw" -s | awk '/^cache internal/ { c = "i" } /^cache external/ { c = "e" }
            /current active connections/ && c { n[c] = $NF }
            END { printf "internal cache (this firewall\x27s flows): %d, external cache (the peer\x27s flows): %d\n", n["i"], n["e"] }'
    fi
}
master_of() { if fo_is_master fw1; then echo fw1; elif fo_is_master fw2; then echo fw2; else echo nobody; fi; }
counter() { fo_client_counter c1; }
ms_since() { awk -v a="$1" -v b="$(fo_now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

say "The network: a client, a server, and two firewalls between them"
cat <<'PIC'
   client 198.18.1.1                                      server 198.18.2.1
        |  gateway 198.18.1.254                                |  gateway 198.18.2.254
   -----+-------- client LAN ---------+        +-------- server LAN ---------+-----
                  |                   |        |                   |
             fw1 .11 (eth0)      fw2 .12       fw1 .11 (eth1)     fw2 .12
                  \_____ sync link 198.18.3.0/24 (eth2): the daemons talk here ____/
PIC
note "The gateway addresses (.254) belong to whichever firewall keepalived makes master."
note "Both firewalls drop forwarded packets unless their kernel tracks the connection"
note "(nft: ct state established,related accept; new TCP SYNs from the client LAN accept;"
note "net.netfilter.nf_conntrack_tcp_loose=0: no picking up a connection in the middle)."
fo_create
fo_write_configs

say "Starting $name on both firewalls, then keepalived (fw1 priority 150, fw2 100)"
fo_start_daemon fw1
fo_start_daemon fw2
fo_start_keepalived fw1
fo_wait_notify fw1 primary 1 10
fo_start_keepalived fw2
fo_wait_notify fw2 backup 1 10
note "master: $(master_of). keepalived ran scripts/primary-backup.sh on each firewall:"
note "fw1 'primary' (commit, flush, resync, bulk send), fw2 'backup' (-t, request a resync)."

say "A TCP connection from the client to the server: a counter, one exchange every 100 ms"
fo_start_server
fo_start_client c1
fo_wait_counter c1 10 5
fo_wait_cache fw2 external c1 10
note "counter at $(counter). The connection in fw1's kernel table (ctsync kernel list):"
fo_in fw1 "$ctsync" kernel list -p tcp --dport "$FO_PORT" 2>/dev/null | sed 's/^/   /'
note "fw2 forwards nothing yet, but its daemon already holds the flow, replicated over the"
note "sync link (ctsync cache external on fw2 / $name -e):"
if [ "$name" = ctsyncd ]; then
    fo_in fw2 "$ctsync" cache external -C "$(fo_conf fw2)" -p tcp --dport "$FO_PORT" 2>/dev/null | sed 's/^/   /'
else
    fo_daemon fw2 -e | sed 's/^/   /'
fi
note "fw2's kernel table has $(fo_in fw2 "$ctsync" kernel count -p tcp --dport "$FO_PORT") such flows."
for fw in fw1 fw2; do note "$fw: $(cache_line "$fw")"; done

say "fw1 dies: its processes are killed and its links go down, without warning"
before=$(counter)
t_kill=$(fo_now)
fo_kill_fw fw1
fo_wait_notify fw2 primary 1 10
note "keepalived on fw2 noticed the silence and took the gateway addresses; $(ms_since "$t_kill") ms after"
note "the crash its notify script had committed the replicated flows into fw2's kernel:"
grep "ctsync-failover: primary" "$FO_WORK/fw2/notify.log" | sed 's/^ctsync-failover: /   /'
note "fw2's kernel table now has $(fo_in fw2 "$ctsync" kernel count -p tcp --dport "$FO_PORT") connection(s) to port $FO_PORT."
fo_wait_counter c1 $((before + 20)) 8 || true
report=$(fo_report c1 "$t_kill" "$(fo_now)")
gap=$("$FO_PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["max_gap_ms"])' "$report")
note "The connection goes on through fw2: counter $before when fw1 died, $(counter) now;"
note "the longest wait for an answer was $gap ms (TCP resent what was lost during the switch)."

say "fw1 comes back (like after a reboot: empty conntrack table)"
t_back=$(fo_now)
fo_revive_fw fw1
fo_wait_notify fw1 backup 2 10
fo_wait_cache fw1 external c1 10 && note "fw1 starts as backup: its notify script started $name, which asked fw2 for its table: fw1 has the connection in its external cache."
note "keepalived waits preempt_delay ($FO_PREEMPT_DELAY s) before fw1, the higher priority, takes the addresses back..."
fo_wait_notify fw1 primary 2 $((FO_PREEMPT_DELAY + 10))
c=$(counter)
fo_wait_counter c1 $((c + 20)) 8 || true
report=$(fo_report c1 "$t_back" "$(fo_now)")
gap=$("$FO_PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])["max_gap_ms"])' "$report")
note "master: $(master_of). fw1 committed the flow it had received; counter $(counter), longest wait $gap ms."

say "The connection, from the client's side"
fo_stop_client c1
"$FO_PYTHON" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("   %d exchanges, reset: %s, closed: %s, longest gap between two answers: %.0f ms"
      % (r["counter"], "yes" if r["reset"] else "no", "yes" if r["closed"] else "no", r["max_gap_ms"]))' \
    "$FO_WORK/client/c1.json"
note "The full test, with a control run where fw2 does not commit (the connection stalls):"
note "sudo scripts/failover/failover-test.sh"
say "Done: namespaces and processes are removed on exit"
