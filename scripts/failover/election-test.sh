#!/usr/bin/env bash
# keepalived and sync health (docs/failover.md, "Sync health"): a node that is not in sync with
# its peer is not preferred as master. fw1 (priority 150) has an external cache too small for
# fw2's table (HashLimit 200 for 1,000 flows), so its `ctsync health` fails ("the external cache
# is full"); keepalived tracks it (weight -60, as the shipped keepalived.conf does): fw1 counts
# 90 against fw2's 100 and fw2 stays master although fw1's priority is higher. Once fw2's table
# shrinks below what fw1 holds, fw1 is healthy again, counts 150 and takes the addresses back.
# Needs root. Prints one RESULT line and exits 0 when both held.
set -uo pipefail
if [ -z "${FO_SIGNALS_RESET:-}" ] && ! grep -Eq '^SigBlk:[[:space:]]*0+$' /proc/$$/status; then
    export FO_SIGNALS_RESET=1
    exec /usr/bin/python3 -c 'import os, signal, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE): signal.signal(s, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
os.execvp(sys.argv[1], sys.argv[1:])' bash "$0" "$@"
fi
cd "$(dirname "$0")/../.." || exit 1
[ "$(id -u)" -eq 0 ] || { echo "election-test: needs root (network namespaces)" >&2; exit 1; }
daemon=${CTSYNCD:-$PWD/.build/release/ctsyncd}
[ -x "$daemon" ] || { echo "election-test: no daemon binary $daemon (swift build -c release)" >&2; exit 1; }
export FO_TRACK_HEALTH=1 FO_HASHLIMIT_FW1=200 FO_PREEMPT_DELAY=${FO_PREEMPT_DELAY:-2}
# shellcheck source=scripts/failover/topology.sh
source scripts/failover/topology.sh
work=$(mktemp -d /tmp/ctel.XXXXXX)
fo_init "ctel_$$" "$work" "$daemon" || exit 1
trap fo_teardown EXIT
failures=()
fail() { failures+=("$*"); fo_err "$*"; }
ctsync=$(dirname "$daemon")/ctsync
kept_backup=false unhealthy_reason='' took_over=false took_over_s=''

fo_create && fo_write_configs && fo_start_daemon fw1 && fo_start_daemon fw2 || fail "setup"
fo_preload fw2 1000 || fail "preload"
fo_start_keepalived fw2
fo_wait_notify fw2 primary 1 15 || fail "fw2 did not become master"
# fw2's own check starts failed (init_fail): only once keepalived counts it healthy does fw2
# stand at 100, else fw1 (90) would outrank it anyway and the test could not tell.
_el_fw2_tracked() { grep -q "VRRP_Script(chk_ctsync) succeeded" "$work/fw2/keepalived.log"; }
fo_poll 20 0.1 _el_fw2_tracked || fail "keepalived on fw2 never counted ctsync health as succeeded"
fo_start_keepalived fw1
fo_wait_notify fw1 backup 1 15 || fail "fw1 did not become backup"
# fw1 is out of sync: its external cache refuses fw2's flows.
_el_unhealthy() { ! fo_in fw1 "$ctsync" health -C "$(fo_conf fw1)" >/dev/null 2>&1; }
fo_poll 10 0.2 _el_unhealthy || fail "fw1's health did not fail"
unhealthy_reason=$(fo_in fw1 "$ctsync" health -C "$(fo_conf fw1)" 2>&1)
# Priority 150 and preempt_delay 2 s: without the health check fw1 would take over now.
sleep_until=$(($(fo_now_us) + 8000000))
while [ "$(fo_now_us)" -lt "$sleep_until" ]; do
    [ "$(fo_notify_count fw1 primary)" -eq 0 ] || break
    sleep 0.2
done
if [ "$(fo_notify_count fw1 primary)" -eq 0 ] && fo_is_master fw2; then
    kept_backup=true
    fo_log "fw1 (out of sync) stayed backup for 8 s: $unhealthy_reason"
else
    fail "fw1 became master while out of sync"
fi
# fw2's table shrinks (the preloaded flows end): fw1 holds it all, is healthy again, takes over.
t0=$(fo_now)
fo_in fw2 "$ctsync" kernel delete -s 198.19.0.0/16 >/dev/null 2>&1 || fail "deleting fw2's preloaded flows"
if fo_wait_notify fw1 primary 1 40 && fo_is_master fw1; then
    took_over=true
    took_over_s=$(awk -v a="$t0" -v b="$(fo_now)" 'BEGIN { printf "%.1f", b - a }')
    fo_log "fw1 in sync again and master ${took_over_s} s after fw2's table shrank"
else
    fail "fw1 did not take over once in sync"
fi
[ ${#failures[@]} -eq 0 ] || fo_diagnostics
passed=false
[ ${#failures[@]} -eq 0 ] && passed=true
reason_json=$(printf '%s' "$unhealthy_reason" | "$FO_PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')
echo "RESULT {\"passed\":$passed,\"kept_backup_while_out_of_sync\":$kept_backup,\"unhealthy_reason\":$reason_json,\"took_over_when_in_sync\":$took_over,\"took_over_s\":${took_over_s:-null}}"
$passed
