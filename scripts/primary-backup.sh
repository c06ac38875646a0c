#!/bin/sh
# keepalived notify script for a primary-backup pair of firewalls running ctsyncd (or
# conntrackd: the flags are the same). The successor of conntrack-tools'
# doc/sync/primary-backup.sh, doing the same on each transition:
#
#   primary  this node became master: commit the external cache (the peer's flows) into the
#            kernel table (-c), flush the caches (-f), resync the internal cache from the
#            kernel (-R) so it holds the committed flows, send it all to the peer (-B)
#   backup   start the daemon if it is not running (-d), shorten the kernel timers of the
#            flows this node holds (-t), ask the master for its whole table (-n)
#   fault    shorten the kernel timers (-t)
#
# The takeover gate (docs/failover.md, "No reset window"): keepalived brings the virtual
# addresses up and only then runs this script, so for the length of the commit a packet of a
# replicated connection can reach a kernel that does not know it yet, and be answered with a
# TCP reset or an ICMP error (with NAT it is addressed to the VIP itself). While this node is
# backup (or faulty) an nftables table `inet ctsync_gate` drops, without answering, TCP
# packets that would open a connection in mid-stream (not a SYN, no conntrack entry), in
# input and forward, and new forwarded UDP/ICMP; on "primary" it also drops new UDP/ICMP to
# local addresses, all of it bounded by a kernel-enforced timeout, and opens once the commit
# is done. Dropped packets are sent again by their endpoints (TCP retransmits) and then find
# the committed state. New connections (a SYN) always pass.
#
# Usage (keepalived.conf, in the vrrp_sync_group):
#   notify_master "/etc/ctsyncd/primary-backup.sh primary"
#   notify_backup "/etc/ctsyncd/primary-backup.sh backup"
#   notify_fault  "/etc/ctsyncd/primary-backup.sh fault"
# (keepalived's own words master/slave are accepted too.)
#
# Environment:
#   CTSYNCD        the daemon binary (default: ctsyncd from PATH, else /usr/sbin/ctsyncd);
#                  CTSYNCD=/usr/sbin/conntrackd runs the same steps with conntrackd
#   CTSYNCD_CONF   its configuration (default: ctsyncd's own, the first of
#                  /etc/ctsyncd/ctsyncd.conf (the package's) and /etc/conntrackd/conntrackd.conf
#                  that exists; with CTSYNCD=...conntrackd always conntrackd's)
#   CTSYNCD_NOTIFY_LOCK  lock serialising transitions (default: the daemon's LockFile
#                  with ".notify" appended)
#   CTSYNCD_START_WAIT   seconds to wait for a daemon started by "backup" to answer (5)
#   CTSYNCD_SKIP_COMMIT=1  testing only: behave as if the commit had failed (the failover
#                  test's control run uses it to show that without commit connections break)
#   CTSYNC_GATE    1 (default): the takeover gate above; 0: none (as conntrackd's script)
#   CTSYNC_GATE_TIMEOUT  seconds after which the kernel opens the gate of a takeover by
#                  itself, even if this script dies before opening it (default 10)
#
# Messages go to syslog (logger -t ctsync-failover) and to stderr. Exit status: 0 when the
# transition's essential step worked (primary: the commit; backup: the daemon runs),
# 1 otherwise, 2 on a usage error. keepalived only logs a notify script's status; a failed
# commit needs an operator: the external cache is kept so that `ctsync commit` (or
# `ctsyncd -C CONF -c`) can be run again by hand.

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
TAG=ctsync-failover

if [ -z "${CTSYNCD:-}" ]; then
    CTSYNCD=$(command -v ctsyncd 2>/dev/null || echo /usr/sbin/ctsyncd)
fi
# ctsyncd's own default: the package's configuration, else conntrackd's (it drops in for
# conntrackd without moving files).
if [ -z "${CTSYNCD_CONF:-}" ]; then
    if [ -e /etc/ctsyncd/ctsyncd.conf ] && [ "$(basename "$CTSYNCD")" != conntrackd ]; then
        CTSYNCD_CONF=/etc/ctsyncd/ctsyncd.conf
    else
        CTSYNCD_CONF=/etc/conntrackd/conntrackd.conf
    fi
fi

log() {
    # $1: syslog priority (info, warning, err); the rest: the message
    prio=$1
    shift
    logger -t "$TAG" -p "daemon.$prio" -- "$*" 2>/dev/null || true
    echo "$TAG: $*" >&2
}

# run STEP-DESCRIPTION ARGS...: one daemon request; logs and returns its status
run() {
    what=$1
    shift
    if "$CTSYNCD" -C "$CTSYNCD_CONF" "$@" >/dev/null 9>&-; then
        log info "$what: ok ($(basename "$CTSYNCD") $*)"
        return 0
    else
        status=$?
        log err "ERROR: $what failed: $(basename "$CTSYNCD") -C $CTSYNCD_CONF $* exited with $status"
        return 1
    fi
}

# The daemon's LockFile from the configuration (conntrackd's default when unset).
lock_file() {
    awk '$1 == "LockFile" { print $2; found = 1; exit } END { if (!found) print "/var/lock/conntrack.lock" }' \
        "$CTSYNCD_CONF" 2>/dev/null || echo /var/lock/conntrack.lock
}

# The takeover gate. Its sets say what is held back: `midstream` (TCP not starting with a
# SYN, input and forward), `forwarded` (new forwarded flows of these protocols), `local` (new
# flows of these protocols to this host). Elements without a timeout while standing by, with
# CTSYNC_GATE_TIMEOUT during a takeover; emptied when the takeover is done.
GATE_TABLE=ctsync_gate
gate() {
    # $1: standby | takeover | open
    [ "${CTSYNC_GATE:-1}" = 1 ] || return 0
    if ! command -v nft >/dev/null 2>&1; then
        log warning "WARNING: $state: no nft: the takeover gate is not installed (connections may be reset during a takeover)"
        return 0
    fi
    case "$1" in
        standby) t='' ;;
        takeover) t=" timeout ${CTSYNC_GATE_TIMEOUT:-10}s" ;;
        open) t='' ;;
    esac
    {
        # One transaction: the old gate goes and the new one comes at once (declaring the table
        # again would append its rules a second time).
        cat <<NFT
add table inet $GATE_TABLE
delete table inet $GATE_TABLE
table inet $GATE_TABLE {
    set midstream { type inet_proto; flags timeout; }
    set forwarded { type inet_proto; flags timeout; }
    set local { type inet_proto; flags timeout; }
    chain input {
        type filter hook input priority -5; policy accept;
        ct state new tcp flags & (fin | syn | rst | ack) != syn meta l4proto @midstream counter drop
        ct state new meta l4proto @local counter drop
    }
    chain forward {
        type filter hook forward priority -5; policy accept;
        ct state new tcp flags & (fin | syn | rst | ack) != syn meta l4proto @midstream counter drop
        ct state new meta l4proto @forwarded counter drop
    }
}
NFT
        if [ "$1" != open ]; then
            echo "add element inet $GATE_TABLE midstream { tcp$t }"
            echo "add element inet $GATE_TABLE forwarded { udp$t, icmp$t, ipv6-icmp$t }"
        fi
        if [ "$1" = takeover ]; then
            echo "add element inet $GATE_TABLE local { udp$t, icmp$t, ipv6-icmp$t }"
        fi
    } | nft -f - 2>&1 | while read -r line; do log warning "WARNING: $state: takeover gate: $line"; done
    log info "$state: takeover gate $1"
}

daemon_answers() {
    "$CTSYNCD" -C "$CTSYNCD_CONF" -s >/dev/null 2>&1 9>&-
}

state=$1
case "$state" in
    primary | master | MASTER) state=primary ;;
    backup | slave | BACKUP) state=backup ;;
    fault | FAULT) state=fault ;;
    *)
        log err "ERROR: unknown state transition '${1:-}'"
        echo "Usage: $0 {primary|backup|fault}" >&2
        exit 2
        ;;
esac

if [ ! -r "$CTSYNCD_CONF" ]; then
    log err "ERROR: $state: cannot read the configuration $CTSYNCD_CONF (set CTSYNCD_CONF)"
    exit 1
fi
if ! command -v "$CTSYNCD" >/dev/null 2>&1; then
    log err "ERROR: $state: no daemon binary $CTSYNCD (set CTSYNCD)"
    exit 1
fi

# keepalived does not wait for a notify script before running the next one: a quick
# master -> backup -> master would run "primary" and "backup" at the same time. Serialise.
LOCKFILE=$(lock_file)
NOTIFY_LOCK=${CTSYNCD_NOTIFY_LOCK:-$LOCKFILE.notify}
# (A failed redirection of `exec` would end a POSIX shell: check the directory first.)
if command -v flock >/dev/null 2>&1 && mkdir -p "$(dirname "$NOTIFY_LOCK")" 2>/dev/null \
    && [ -w "$(dirname "$NOTIFY_LOCK")" ] && exec 9>>"$NOTIFY_LOCK"; then
    flock -w 30 9 || log warning "WARNING: $state: another transition still holds $NOTIFY_LOCK after 30 s; going on"
fi

log info "$state: transition starts (daemon $CTSYNCD, configuration $CTSYNCD_CONF)"
status=0
case "$state" in
    primary)
        # 0. Hold back what would be reset until the flows are in (bounded in time by the kernel).
        gate takeover
        # 1. The peer's flows into the kernel table, so their packets are "established" here.
        if [ "${CTSYNCD_SKIP_COMMIT:-0}" = 1 ]; then
            log warning "WARNING: primary: commit skipped (CTSYNCD_SKIP_COMMIT=1, testing only)"
            committed=no
        elif run "primary: commit the external cache to the kernel" -c; then
            committed=yes
        else
            committed=no
        fi
        # 2. Flush the caches. After a failed commit the external cache is the only copy of the
        #    peer's flows: keep it, so that the commit can be run again by hand.
        if [ $committed = yes ]; then
            run "primary: flush the internal and external caches" -f || status=1
        else
            status=1
            log err "ERROR: primary: flows NOT committed; the external cache is kept: run '$(basename "$CTSYNCD") -C $CTSYNCD_CONF -c' (or 'ctsync commit -C $CTSYNCD_CONF')"
            run "primary: flush the internal cache" -f internal || true
        fi
        # The flows are in (or could not be): let everything through again.
        gate open
        # 3. The internal cache from the kernel table: it now holds the committed flows
        #    (the daemon does not learn them from its own commit's events).
        run "primary: resync the internal cache with the kernel" -R || status=1
        # 4. Send everything to the peer (the new backup).
        run "primary: bulk send to the peer" -B || status=1
        ;;
    backup)
        # Stand by: this node may become master at any moment, before its notify script runs.
        gate standby
        if ! daemon_answers; then
            lock=$LOCKFILE
            if [ -f "$lock" ]; then
                log warning "WARNING: backup: the daemon does not answer and its lock file $lock exists: it was not stopped cleanly (crash?); removing the lock file"
                rm -f "$lock"
            fi
            # 9>&-: the daemon must not inherit (and hold forever) the transition lock.
            if ! "$CTSYNCD" -C "$CTSYNCD_CONF" -d 9>&-; then
                log err "ERROR: backup: cannot start $CTSYNCD -C $CTSYNCD_CONF -d"
                exit 1
            fi
            # conntrackd -d may return before its control socket answers: wait, bounded.
            tries=$(( ${CTSYNCD_START_WAIT:-5} * 10 ))
            while ! daemon_answers && [ "$tries" -gt 0 ]; do
                sleep 0.1
                tries=$((tries - 1))
            done
            if ! daemon_answers; then
                log err "ERROR: backup: $CTSYNCD started but does not answer on its control socket"
                exit 1
            fi
            log info "backup: daemon started"
        fi
        # Flows this node forwarded while it was master (or picked up) are stale now: let
        # them expire after PurgeTimeout unless the traffic comes back here.
        run "backup: shorten the kernel timers" -t || status=1
        # Ask the master for its whole table (FTFW and NOTRACK; nothing in ALARM mode).
        run "backup: request a resync from the master" -n || status=1
        ;;
    fault)
        gate standby
        run "fault: shorten the kernel timers" -t || status=1
        ;;
esac
log info "$state: transition done (status $status)"
exit $status
