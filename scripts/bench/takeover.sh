#!/usr/bin/env bash
# Takeover latency beside conntrackd, in one run (docs/failover.md, "No reset window"): the
# failover pair of scripts/failover/topology.sh (keepalived, the shipped primary-backup.sh with
# its gate), FLOWS flows preloaded into fw1's table and replicated to fw2, fw1 crashed; measured
# from the start of fw2's notify_master to the moment fw2's kernel holds every one of the flows
# (polled every 10 ms with ctsync kernel count), and the notify script's whole run. Each daemon,
# each size, ROUNDS times; the median is printed. Needs root, keepalived, conntrackd.
#
#   sudo scripts/bench/takeover.sh [FLOWS...]      (default: 50000 110000)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "takeover: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "takeover: needs conntrackd" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50000 110000)
rounds=${ROUNDS:-3}
swift build -c release >/dev/null || exit 1
export FO_CTSYNC=$PWD/.build/release/ctsync FO_QUIET=1
# shellcheck source=scripts/failover/topology.sh
source scripts/failover/topology.sh
trap fo_teardown EXIT
run_id=0

# one DAEMON FLOWS: prints "usable_ms notify_ms"
one() {
    local daemon=$1 flows=$2 work t_begin t_usable base
    work=$(mktemp -d /tmp/cttb.XXXXXX)
    run_id=$((run_id + 1))
    fo_init "cttb_$$_$run_id" "$work" "$daemon" || return 1
    fo_create && fo_write_configs && fo_start_daemon fw1 && fo_start_daemon fw2 || { fo_teardown; return 1; }
    fo_start_keepalived fw1
    fo_wait_notify fw1 primary 1 10 || { fo_teardown; return 1; }
    fo_start_keepalived fw2
    fo_wait_notify fw2 backup 1 10 || { fo_teardown; return 1; }
    fo_preload fw1 "$flows" || { fo_teardown; return 1; }
    _tb_replicated() { [ "$(fo_daemon fw2 -s 2>/dev/null | awk '/cache external/ { e = 1 } e && /current active connections/ { print $NF; exit }')" -ge "$flows" ]; }
    fo_poll 90 0.2 _tb_replicated || { fo_err "$daemon: fw2 did not get $flows flows"; fo_teardown; return 1; }
    base=$(fo_in fw2 "$FO_CTSYNC" kernel count 2>/dev/null || echo 0)
    fo_kill_fw fw1
    _tb_usable() { [ "$(fo_in fw2 "$FO_CTSYNC" kernel count 2>/dev/null || echo 0)" -ge $((base + flows)) ]; }
    fo_poll 60 0.01 _tb_usable || { fo_err "$daemon: fw2's kernel never held the flows"; fo_teardown; return 1; }
    t_usable=$(fo_now)
    fo_wait_notify fw2 primary 1 60
    t_begin=$(awk '/notify primary begins/ { print $1; exit }' "$work/fw2/notify.log")
    local notify_end
    notify_end=$(awk '/notify primary exit/ { print $1; exit }' "$work/fw2/notify.log")
    awk -v b="$t_begin" -v u="$t_usable" -v e="$notify_end" 'BEGIN { printf "%d %d\n", (u - b) * 1000, (e - b) * 1000 }'
    fo_teardown
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "takeover: flows from notify_master to every flow in the new master's kernel (median of $rounds, ms)"
printf '%-8s %-10s %10s %10s %8s\n' flows daemon usable_ms notify_ms ratio
for flows in "${sizes[@]}"; do
    declare -A usable=() notify=()
    for daemon in ctsyncd conntrackd; do
        bin=$PWD/.build/release/ctsyncd
        [ "$daemon" = conntrackd ] && bin=$(command -v conntrackd)
        u=() n=()
        for _ in $(seq "$rounds"); do
            # Command substitution waits for the run (its teardown included) to end.
            out=$(one "$bin" "$flows") || continue
            read -r a b <<<"$out"
            [ -n "${a:-}" ] || continue
            u+=("$a"); n+=("$b")
        done
        usable[$daemon]=$(printf '%s\n' "${u[@]}" | median)
        notify[$daemon]=$(printf '%s\n' "${n[@]}" | median)
    done
    for daemon in ctsyncd conntrackd; do
        ratio=$(awk -v a="${usable[$daemon]}" -v c="${usable[conntrackd]}" 'BEGIN { if (c > 0) printf "%.2f", a / c }')
        printf '%-8s %-10s %10s %10s %8s\n' "$flows" "$daemon" "${usable[$daemon]}" "${notify[$daemon]}" "$ratio"
    done
    unset usable notify
done
