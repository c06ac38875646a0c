#!/usr/bin/env bash
# End-to-end failover test: a TCP connection through a keepalived pair of stateful firewalls
# survives the master's crash (and its return) because the backup commits the replicated flows;
# a control run without the commit shows the same connection stalling. Needs root.
#
#   sudo scripts/failover/failover-test.sh                     # ctsyncd (.build/release, or CTSYNCD=path)
#   sudo DAEMON=conntrackd scripts/failover/failover-test.sh   # the same with conntrackd 1.4.x
#
# Topology and helpers: scripts/failover/topology.sh (docs/failover.md explains the setup).
#  1. fw1 is master; a connection client -> server exchanges a counter every 100 ms; the runner
#     waits until fw2's external cache has the flow.
#  2. fw1 crashes (its processes frozen and SIGKILLed, its links down). fw2 takes the addresses; its
#     notify script commits. The connection must go on: no reset, counter increasing, longest
#     gap between two echoes < FO_MAX_GAP_MS.
#  3. fw1 reboots: empty table, keepalived starts in BACKUP, its notify script starts the daemon
#     and requests a resync (fw1's external cache gets the flow); after FO_PREEMPT_DELAY fw1 takes
#     the addresses back and commits. The connection must survive again.
#  4. Control: a second connection; fw2 has it in its external cache, but its notify script skips
#     the commit (CTSYNCD_SKIP_COMMIT=1). fw1 crashes again: the connection must stall (no echo
#     for FO_CONTROL_WINDOW s). Then `DAEMON -c` by hand on fw2: the connection must resume,
#     showing that the commit, and nothing else, made the difference.
#
# Last line on stdout: RESULT {...} (one JSON object, see docs/failover.md). Progress on stderr;
# on failure the logs' tails too. Exit 0 only if every property holds, 1 otherwise.
# Settings: DAEMON (ctsyncd|conntrackd|PATH), CTSYNCD, FO_MAX_GAP_MS (3000), FO_CONTROL_WINDOW (4),
# FO_KEEP_WORK=1, and topology.sh's FO_ADVERT_INT, FO_PREEMPT_DELAY, ...
set -uo pipefail
# A launcher may leave signals blocked or ignored (test harnesses do, e.g. swift test's); our
# children would inherit that and ignore the TERM that stops them. Start again, cleanly.
if [ -z "${FO_SIGNALS_RESET:-}" ] && ! grep -Eq '^SigBlk:[[:space:]]*0+$' /proc/$$/status; then
    export FO_SIGNALS_RESET=1
    exec /usr/bin/python3 -c 'import os, signal, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE): signal.signal(s, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
os.execvp(sys.argv[1], sys.argv[1:])' bash "$0" "$@"
fi
cd "$(dirname "$0")/../.." || exit 1
started=$EPOCHREALTIME
[ "$(id -u)" -eq 0 ] || { echo "failover-test: needs root (network namespaces)" >&2; exit 1; }

case "${DAEMON:-ctsyncd}" in
    ctsyncd) daemon=${CTSYNCD:-$PWD/.build/release/ctsyncd} ;;
    conntrackd) daemon=$(command -v conntrackd || echo /usr/sbin/conntrackd) ;;
    *) daemon=$DAEMON ;;
esac
[ -x "$daemon" ] || { echo "failover-test: no daemon binary $daemon (swift build -c release, or DAEMON=conntrackd)" >&2; exit 1; }
max_gap_ms=${FO_MAX_GAP_MS:-3000}
control_window=${FO_CONTROL_WINDOW:-4}

# shellcheck source=scripts/failover/topology.sh
source scripts/failover/topology.sh
watchdog=''
cleanup() {
    [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
    fo_teardown
}
trap cleanup EXIT
trap 'fo_err "over 115 s or interrupted: giving up"; exit 143' TERM INT
work=$(mktemp -d /tmp/ctfo.XXXXXX)
fo_init "ctfo_$$" "$work" "$daemon" || exit 1
# The whole run is bounded: every wait below has its own limit; this is the backstop.
(
    for _ in $(seq 1150); do sleep 0.1; kill -0 $$ 2>/dev/null || exit 0; done
    kill -TERM $$
) >/dev/null 2>&1 &
watchdog=$!

failures=()
fail() { failures+=("$*"); fo_err "$*"; }
# abort MESSAGE: a step the rest depends on failed
abort() {
    fail "$*"
    fo_diagnostics
    result
    exit 1
}
js() { [ -n "${1:-}" ] && echo "$1" || echo null; }          # a number, or null
jb() { if [ "${1:-}" = true ]; then echo true; else echo false; fi; }
jget() { "$FO_PYTHON" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else (str(v).lower() if isinstance(v,bool) else v))' "$1" "$2"; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

survived=false failover_gap='' takeover_ms='' counter_before='' counter_after=''
fw2_committed=false
fw1_resynced=false failback_survived=false failback_gap='' failback_ms='' counter_failback=''
c1_json='{}'
control_replicated=false control_survived='' control_counter_before='' control_counter_after=''
control_kernel_had_flow='' control_recovered=false control_recover_ms='' c2_json='{}'
result() {
    local passed=false failures_json
    [ ${#failures[@]} -eq 0 ] && passed=true
    failures_json=$(printf '%s\n' "${failures[@]}" | "$FO_PYTHON" -c 'import json,sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))')
    echo "RESULT {\"passed\":$passed,\"daemon\":\"$(basename "$daemon")\",\"survived\":$(jb "$survived"),\"max_gap_ms\":$(js "$failover_gap"),\"max_gap_limit_ms\":$max_gap_ms,\"takeover_ms\":$(js "$takeover_ms"),\"counter_before\":$(js "$counter_before"),\"counter_after\":$(js "$counter_after"),\"fw2_committed\":$(jb "$fw2_committed"),\"failback_survived\":$(jb "$failback_survived"),\"failback_max_gap_ms\":$(js "$failback_gap"),\"failback_ms\":$(js "$failback_ms"),\"fw1_resynced\":$(jb "$fw1_resynced"),\"counter_failback\":$(js "$counter_failback"),\"connection\":$c1_json,\"control_replicated\":$(jb "$control_replicated"),\"control_survived\":$(js "$control_survived"),\"control_counter_before\":$(js "$control_counter_before"),\"control_counter_after\":$(js "$control_counter_after"),\"control_kernel_had_flow\":$(js "$control_kernel_had_flow"),\"control_recovered_by_commit\":$(jb "$control_recovered"),\"control_recover_ms\":$(js "$control_recover_ms"),\"control_connection\":$c2_json,\"advert_int\":$FO_ADVERT_INT,\"preempt_delay\":$FO_PREEMPT_DELAY,\"seconds\":$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'),\"failures\":$failures_json}"
}

# ---- setup
fo_create || abort "topology"
fo_write_configs
fo_start_daemon fw1 || abort "fw1: daemon does not start"
fo_start_daemon fw2 || abort "fw2: daemon does not start"
fo_start_keepalived fw1
fo_wait_notify fw1 primary 1 10 || abort "fw1 did not become master"
fo_start_keepalived fw2
fo_wait_notify fw2 backup 1 10 || abort "fw2 did not become backup"
fo_is_master fw1 || abort "fw1 does not hold the gateway addresses"
fo_start_server || abort "server"

# ---- 1. a connection through fw1, replicated to fw2
fo_start_client c1
fo_wait_counter c1 10 5 || abort "connection c1 through fw1 does not work"
fo_wait_cache fw2 external c1 10 || abort "c1 never reached fw2's external cache"
fo_log "c1 (client port $(fo_client_port c1)) runs through fw1 and is in fw2's external cache"

# ---- 2. fw1 crashes
counter_before=$(fo_client_counter c1)
t_kill=$(fo_now)
fo_kill_fw fw1
if fo_wait_notify fw2 primary 1 10 && fo_is_master fw2; then
    takeover_ms=$(ms_between "$t_kill" "$(fo_now)")
    [ "$(fo_last_notify_status fw2 primary)" = 0 ] && fw2_committed=true
    fo_log "fw2 is master ${takeover_ms} ms after the crash; notify primary exit $(fo_last_notify_status fw2 primary)"
else
    abort "fw2 did not take over"
fi
$fw2_committed || fail "fw2's notify script did not commit (see fw2/notify.log)"
# Observe until 2 s of exchanges after the takeover, at most 8 s.
fo_wait_counter c1 $((counter_before + 20)) 8
counter_after=$(fo_client_counter c1)
failover_gap=$(jget "$(fo_report c1 "$t_kill" "$(fo_now)")" max_gap_ms)
if fo_client_alive c1 && [ "$counter_after" -gt "$counter_before" ]; then
    survived=true
    fo_log "failover: c1 survived, counter $counter_before -> $counter_after, longest gap ${failover_gap} ms"
else
    fail "failover: c1 did not survive (counter $counter_before -> $counter_after, client alive: $(fo_client_alive c1 && echo yes || echo no))"
fi
awk -v g="$failover_gap" -v m="$max_gap_ms" 'BEGIN { exit !(g != "" && g < m) }' \
    || fail "failover: longest gap ${failover_gap} ms is not below ${max_gap_ms} ms"

# ---- 3. fw1 comes back, resyncs as backup, then takes over again
if $survived; then
    n_backup=$(fo_notify_count fw1 backup)
    n_primary=$(fo_notify_count fw1 primary)
    t_revive=$(fo_now)
    fo_revive_fw fw1
    fo_wait_notify fw1 backup $((n_backup + 1)) 10 || abort "failback: fw1's notify backup did not finish"
    if fo_wait_cache fw1 external c1 $((FO_PREEMPT_DELAY + 5)); then
        fw1_resynced=true
        fo_log "fw1 is backup and has c1 in its external cache ($(ms_between "$t_revive" "$(fo_now)") ms after reboot)"
    else
        fail "failback: fw1's external cache did not get c1"
    fi
    if fo_wait_notify fw1 primary $((n_primary + 1)) $((FO_PREEMPT_DELAY + 10)) && fo_is_master fw1; then
        failback_ms=$(ms_between "$t_revive" "$(fo_now)")
        [ "$(fo_last_notify_status fw1 primary)" = 0 ] || fail "failback: fw1's notify primary failed"
        fo_log "fw1 is master again ${failback_ms} ms after reboot"
    else
        abort "failback: fw1 did not become master again"
    fi
    fo_poll 5 0.05 fo_holds_no_vip fw2 || fail "failback: fw2 still holds a gateway address"
    c=$(fo_client_counter c1)
    fo_wait_counter c1 $((c + 20)) 8
    counter_failback=$(fo_client_counter c1)
    failback_gap=$(jget "$(fo_report c1 "$t_revive" "$(fo_now)")" max_gap_ms)
    if fo_client_alive c1 && [ "$counter_failback" -gt "$c" ]; then
        failback_survived=true
        fo_log "failback: c1 survived, counter $counter_after -> $counter_failback, longest gap ${failback_gap} ms"
    else
        fail "failback: c1 did not survive"
    fi
    awk -v g="$failback_gap" -v m="$max_gap_ms" 'BEGIN { exit !(g != "" && g < m) }' \
        || fail "failback: longest gap ${failback_gap} ms is not below ${max_gap_ms} ms"
fi
fo_stop_client c1
c1_json=$(fo_client_result c1)
if [ "$(jget "$c1_json" reset)" != false ] || [ "$(jget "$c1_json" closed)" != false ]; then
    fail "c1 was reset or closed: $c1_json"
fi

# ---- 4. control: no commit on fw2, the same crash
if $failback_survived; then
    fo_start_client c2
    fo_wait_counter c2 10 5 || abort "control: connection c2 through fw1 does not work"
    fo_wait_cache fw2 external c2 10 || abort "control: c2 never reached fw2's external cache"
    control_replicated=true
    : >"$work/fw2/skip-commit"
    n_primary=$(fo_notify_count fw2 primary)
    control_counter_before=$(fo_client_counter c2)
    t_kill=$(fo_now)
    fo_kill_fw fw1
    if ! fo_wait_notify fw2 primary $((n_primary + 1)) 10 || ! fo_is_master fw2; then
        abort "control: fw2 did not take over"
    fi
    grep -q "commit skipped" "$work/fw2/notify.log" || fail "control: fw2's notify script did not skip the commit"
    fo_kernel_has fw2 c2 && control_kernel_had_flow=true || control_kernel_had_flow=false
    # Without a commit fw2's kernel must not know c2: if it does, the control proves nothing.
    $control_kernel_had_flow && fail "control: fw2's kernel had c2's flow without a commit"
    if fo_wait_counter c2 $((control_counter_before + 3)) "$control_window"; then
        control_survived=true
        fail "control: c2 went on without a commit (counter $control_counter_before -> $(fo_client_counter c2)): the test cannot tell"
    else
        control_survived=false
        fo_log "control: without commit c2 stalls (counter stays at $(fo_client_counter c2) for ${control_window} s after the takeover)"
    fi
    control_counter_after=$(fo_client_counter c2)
    # The commit by hand: the stalled connection resumes at TCP's next retransmission.
    rm -f "$work/fw2/skip-commit"
    t_commit=$(fo_now)
    if fo_daemon fw2 -c >/dev/null 2>&1 && fo_wait_counter c2 $((control_counter_after + 3)) 15; then
        control_recovered=true
        control_recover_ms=$(ms_between "$t_commit" "$(fo_now)")
        fo_log "control: after '$(basename "$daemon") -c' on fw2, c2 resumed (${control_recover_ms} ms)"
    else
        fail "control: c2 did not resume after a commit by hand on fw2"
    fi
    fo_stop_client c2
    c2_json=$(fo_client_result c2)
fi

[ ${#failures[@]} -eq 0 ] || fo_diagnostics
result
[ ${#failures[@]} -eq 0 ]
