#!/usr/bin/env bash
# The reset window of a takeover (docs/failover.md, "No reset window"): NAT to the VIPs, a
# server pushing a line every 10 ms, a large table to commit, fw1 crashes, fw2's notify script
# (scripts/primary-backup.sh) commits. keepalived brings the addresses up before it runs the
# script: without the takeover gate, the server's next packet reaches fw2 before its flow is
# committed, is addressed to the server-side VIP itself (the SNAT address), and fw2's kernel
# answers it with a reset. With the gate (the script's default) the connection survives and fw2
# sends no reset. Needs root.
#
#   sudo scripts/failover/takeover-test.sh                 # gated run, then the control run (CTSYNC_GATE=0)
#   sudo TK_FLOWS=110000 scripts/failover/takeover-test.sh
#   sudo TK_RUNS=gated TK_CRASH=0 scripts/failover/takeover-test.sh   # one run, graceful (keepalived stopped)
#
# Settings: TK_FLOWS (flows preloaded into fw1's table, replicated and committed with the
# connection's; default 50000), TK_RUNS ("gated control": the runs, in order), TK_CRASH (1: fw1
# crashes; 0: graceful, fw1's keepalived stops and fw1 keeps running), CTSYNCD, and
# topology.sh's FO_* settings. The kernel's default nf_conntrack_tcp_loose=1 is used: what an
# operator has. Prints one RESULT line per run (JSON) and exits 0 when the gated runs survived
# with no reset and every control run was reset.
set -uo pipefail
if [ -z "${FO_SIGNALS_RESET:-}" ] && ! grep -Eq '^SigBlk:[[:space:]]*0+$' /proc/$$/status; then
    export FO_SIGNALS_RESET=1
    exec /usr/bin/python3 -c 'import os, signal, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE): signal.signal(s, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
os.execvp(sys.argv[1], sys.argv[1:])' bash "$0" "$@"
fi
cd "$(dirname "$0")/../.." || exit 1
[ "$(id -u)" -eq 0 ] || { echo "takeover-test: needs root (network namespaces)" >&2; exit 1; }
daemon=${CTSYNCD:-$PWD/.build/release/ctsyncd}
[ -x "$daemon" ] || { echo "takeover-test: no daemon binary $daemon (swift build -c release)" >&2; exit 1; }
flows=${TK_FLOWS:-50000}
runs=${TK_RUNS:-gated control}
crash=${TK_CRASH:-1}
export FO_NAT=1 FO_PUSH=0.01 FO_TCP_LOOSE=1

# shellcheck source=scripts/failover/topology.sh
source scripts/failover/topology.sh
status=0
trap fo_teardown EXIT

# one_run NAME GATE: prints its RESULT line; returns 0 when its expectation held
one_run() {
    local name=$1 gate=$2 work started counter_before counter_after survived=false reset=false rst=0
    local committed=false takeover_ms='' commit_ms='' gap='' client='{}' external=0 failures=()
    started=$EPOCHREALTIME
    work=$(mktemp -d /tmp/cttk.XXXXXX)
    export FO_GATE=$gate
    fo_init "cttk_$$_$name" "$work" "$daemon" || return 1
    fail() { failures+=("$*"); fo_err "$name: $*"; }
    if fo_create && fo_write_configs && fo_start_daemon fw1 && fo_start_daemon fw2; then
        fo_start_keepalived fw1
        fo_wait_notify fw1 primary 1 10 || fail "fw1 did not become master"
        fo_start_keepalived fw2
        fo_wait_notify fw2 backup 1 10 || fail "fw2 did not become backup"
        fo_preload fw1 "$flows" || fail "preload"
        fo_start_server || fail "server"
        fo_start_client c1
        fo_wait_counter c1 50 10 || fail "the connection through fw1 does not work"
        fo_wait_cache fw2 external c1 30 || fail "the connection never reached fw2's external cache"
        # Everything replicated before the crash: the commit has the whole table to do.
        _tk_replicated() { [ "$(fo_daemon fw2 -s 2>/dev/null | awk '/cache external/ { e = 1 } e && /current active connections/ { print $NF; exit }')" -ge "$flows" ]; }
        fo_poll 60 0.2 _tk_replicated || fail "fw2's external cache did not reach $flows flows"
        external=$(fo_daemon fw2 -s 2>/dev/null | awk '/cache external/ { e = 1 } e && /current active connections/ { print $NF; exit }')
        counter_before=$(fo_client_counter c1)
        local rst_before t_kill
        rst_before=$(fo_rst_count fw2)
        t_kill=$(fo_now)
        if [ "$crash" = 1 ]; then
            fo_kill_fw fw1
        else
            kill -TERM "${FO_PIDS[keepalived_fw1]}" 2>/dev/null
        fi
        if fo_wait_notify fw2 primary 1 30; then
            takeover_ms=$(ms_between "$t_kill" "$(fo_now)")
            [ "$(fo_last_notify_status fw2 primary)" = 0 ] && committed=true
            commit_ms=$(awk '/notify primary begins/ { b = $1 } /notify primary exit/ { e = $1 } END { if (b && e) printf "%d", (e - b) * 1000 }' "$work/fw2/notify.log")
        else
            fail "fw2 did not take over"
        fi
        # 3 s of pushes after the takeover (300 lines), at most 10 s.
        fo_wait_counter c1 $((counter_before + 300)) 10
        counter_after=$(fo_client_counter c1)
        gap=$(fo_report c1 "$t_kill" "$(fo_now)" | "$FO_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["max_gap_ms"])')
        rst=$(( $(fo_rst_count fw2) - rst_before ))
        grep -q '^reset' "$work/server/server.log" && reset=true
        if fo_client_alive c1 && [ "$counter_after" -ge $((counter_before + 300)) ] && ! $reset; then survived=true; fi
        fo_stop_client c1
        client=$(fo_client_result c1)
    else
        fail "setup"
    fi
    [ ${#failures[@]} -eq 0 ] || fo_diagnostics
    fo_teardown
    local passed=false
    if [ "$gate" = 1 ]; then
        $survived || fail "the connection did not survive (counter $counter_before -> ${counter_after:-?}, server reset: $reset)"
        [ "$rst" = 0 ] || fail "fw2 sent or forwarded $rst resets or ICMP errors"
        $committed || fail "fw2's notify script did not commit"
    else
        $reset || [ "$rst" -gt 0 ] || fail "control: no reset without the gate: the test cannot tell"
    fi
    [ ${#failures[@]} -eq 0 ] && passed=true
    echo "RESULT {\"run\":\"$name\",\"gate\":$gate,\"passed\":$passed,\"crash\":$crash,\"flows\":$flows,\"external_before\":${external:-0},\"survived\":$survived,\"server_reset\":$reset,\"fw2_resets\":$rst,\"committed\":$committed,\"takeover_ms\":${takeover_ms:-null},\"notify_ms\":${commit_ms:-null},\"max_gap_ms\":${gap:-null},\"counter_before\":${counter_before:-null},\"counter_after\":${counter_after:-null},\"client\":$client,\"seconds\":$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')}"
    $passed
}
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

for run in $runs; do
    case "$run" in
        gated) one_run gated 1 || status=1 ;;
        control) one_run control 0 || status=1 ;;
        *) echo "takeover-test: unknown run '$run' (gated, control)" >&2; exit 2 ;;
    esac
done
exit $status
