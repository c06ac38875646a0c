# shellcheck shell=bash
# A keepalived + ctsyncd (or conntrackd) failover pair in network namespaces: a reusable bash
# library. Source it, then call the fo_* functions. Needs root, iproute2, nftables, keepalived,
# conntrack and python3. Used by scripts/failover/failover-test.sh and scripts/demo.sh.
#
#   client 198.18.1.1 --- [client LAN 198.18.1.0/24, VIP .254] ---+--- fw1 (.11) eth0
#                                                                 +--- fw2 (.12) eth0
#   server 198.18.2.1 --- [server LAN 198.18.2.0/24, VIP .254] ---+--- fw1 (.11) eth1
#                                                                 +--- fw2 (.12) eth1
#   fw1 eth2 198.18.3.1 --- sync link 198.18.3.0/24 --- fw2 eth2 198.18.3.2
#
# The two LANs are bridges in a fifth namespace (sw). Both firewalls forward, with a stateful
# nft ruleset (forward: policy drop; ct state established,related accept; new TCP SYNs from the
# client LAN accept) and net.netfilter.nf_conntrack_tcp_loose=0, so a firewall forwards a
# mid-stream packet only if its kernel table has the flow: after a failover, only if the flow
# was committed. keepalived runs VRRP (unicast, on each LAN leg) for the two gateway addresses
# in one vrrp_sync_group; its notify scripts call scripts/primary-backup.sh with the daemon.
#
#   source scripts/failover/topology.sh
#   fo_init PREFIX WORKDIR DAEMON_BINARY     # e.g. fo_init ctfo_$$ "$(mktemp -d)" /usr/sbin/conntrackd
#   trap fo_teardown EXIT
#   fo_create                                # namespaces, links, addresses, routes, sysctls, nft
#   fo_write_configs                         # daemon + keepalived configs, notify wrappers
#   fo_start_daemon fw1; fo_start_daemon fw2
#   fo_start_keepalived fw1; fo_wait_notify fw1 primary 1 10
#   fo_start_keepalived fw2; fo_wait_notify fw2 backup 1 10
#   fo_start_server; fo_start_client c1; fo_wait_counter c1 10 5
#   fo_wait_cache fw2 external c1 10         # replicated
#   fo_kill_fw fw1                           # crash: its processes frozen + SIGKILLed, links down
#   fo_wait_notify fw2 primary 1 10          # fw2 is master and its notify script has committed
#   fo_revive_fw fw1                         # reboot: empty table, links up, keepalived again
#   fo_stop_client c1; fo_client_result c1   # the client's JSON result
#   fo_teardown
#
# Settings (environment, read by fo_init): FO_ADVERT_INT (VRRP advert interval, s, default 0.1:
# VRRPv3 allows centiseconds; the master-down time is 3 adverts + skew, about 0.4 s),
# FO_PREEMPT_DELAY (s, default 2: how long a returning fw1 stays backup to receive the table
# before it takes the addresses back), FO_PRIORITY_FW1/FW2 (150/100), FO_PORT (server port,
# 5001), FO_PURGE_TIMEOUT (60), FO_TCP_LOOSE (0; 1 = the kernel's default, which lets a
# firewall pick up connections in mid-stream), FO_SYN_ONLY (1: a new connection must start
# with a SYN; 0: any TCP packet from the client LAN may open one, the common `ct state new
# accept`; with FO_TCP_LOOSE=1 too, the backup picks connections up without any commit and
# the control run cannot fail), FO_PYTHON (/usr/bin/python3, else python3), FO_QUIET=1 (no
# progress lines), FO_KEEP_WORK=1 (fo_teardown leaves the work directory), FO_NAT=1 (the
# client connects to the client-side VIP, which each firewall DNATs to the server and SNATs to
# the server-side VIP: the connection lives on NAT state that only the commit brings to the
# new master), FO_PUSH=S (the server pushes a line every S seconds and the client only reads,
# instead of the client's echoed counter), FO_GATE=0|1 (CTSYNC_GATE for the notify script:
# the takeover gate; unset = the script's default). Each firewall counts the TCP resets and the
# ICMP errors to the client or the server it sends or forwards (fo_rst_count).
# FO_TRACK_HEALTH=1: keepalived tracks `ctsync health` as the
# shipped conf/keepalived/keepalived.conf does (weight -60, init_fail); FO_HASHLIMIT_FW1/FW2: the
# daemons' HashLimit (131072).
# Every wait is a bounded poll; processes are killed by PID only (ours, or those living in our
# namespaces); fo_teardown deletes every namespace.

FO_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FO_ROOT=$(cd "$FO_LIB_DIR/../.." && pwd)

# Addresses (198.18.0.0/15, RFC 2544)
FO_CLIENT_IP=198.18.1.1
FO_SERVER_IP=198.18.2.1
FO_VIP_CLIENT=198.18.1.254
FO_VIP_SERVER=198.18.2.254
declare -gA FO_LAN_IP=([fw1]=198.18.1.11 [fw2]=198.18.1.12)
declare -gA FO_WAN_IP=([fw1]=198.18.2.11 [fw2]=198.18.2.12)
declare -gA FO_SYNC_IP=([fw1]=198.18.3.1 [fw2]=198.18.3.2)
declare -gA FO_PEER=([fw1]=fw2 [fw2]=fw1)
declare -gA FO_PIDS=()

fo_log() { [ "${FO_QUIET:-0}" = 1 ] || printf '[failover %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
fo_err() { printf '[failover %s] ERROR: %s\n' "$(date +%T.%3N)" "$*" >&2; }
fo_now() { echo "$EPOCHREALTIME"; }
fo_now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# fo_poll TIMEOUT_S INTERVAL_S COMMAND...: run COMMAND until it succeeds; 1 after TIMEOUT_S.
fo_poll() {
    local timeout=$1 interval=$2
    shift 2
    local deadline
    deadline=$(($(fo_now_us) + $(awk -v t="$timeout" 'BEGIN { printf "%d", t * 1000000 }')))
    while true; do
        "$@" && return 0
        [ "$(fo_now_us)" -ge "$deadline" ] && return 1
        sleep "$interval"
    done
}

fo_init() {
    FO_PREFIX=${1:?fo_init PREFIX WORKDIR DAEMON}
    FO_WORK=${2:?fo_init PREFIX WORKDIR DAEMON}
    FO_DAEMON=${3:?fo_init PREFIX WORKDIR DAEMON}
    FO_ADVERT_INT=${FO_ADVERT_INT:-0.1}
    FO_PREEMPT_DELAY=${FO_PREEMPT_DELAY:-2}
    FO_PRIORITY_FW1=${FO_PRIORITY_FW1:-150}
    FO_PRIORITY_FW2=${FO_PRIORITY_FW2:-100}
    FO_PORT=${FO_PORT:-5001}
    FO_PURGE_TIMEOUT=${FO_PURGE_TIMEOUT:-60}
    FO_TCP_LOOSE=${FO_TCP_LOOSE:-0}
    FO_SYN_ONLY=${FO_SYN_ONLY:-1}
    FO_NAT=${FO_NAT:-0}
    FO_PUSH=${FO_PUSH:-}
    # Where clients connect: the server, or with NAT the client-side VIP.
    FO_CONNECT_IP=$FO_SERVER_IP
    [ "$FO_NAT" = 1 ] && FO_CONNECT_IP=$FO_VIP_CLIENT
    # The system python3 first: a wrapper (pyenv's shim) would not pass our signals on.
    if [ -z "${FO_PYTHON:-}" ]; then
        if [ -x /usr/bin/python3 ]; then FO_PYTHON=/usr/bin/python3; else FO_PYTHON=python3; fi
    fi
    FO_CREATED=0
    mkdir -p "$FO_WORK"/{fw1,fw2,client,server}
    command -v "$FO_DAEMON" >/dev/null || { fo_err "daemon binary '$FO_DAEMON' not found"; return 1; }
    FO_DAEMON=$(command -v "$FO_DAEMON")
    local tool
    for tool in ip nft keepalived conntrack "$FO_PYTHON"; do
        command -v "$tool" >/dev/null || { fo_err "$tool not found (sudo scripts/install-deps.sh)"; return 1; }
    done
    [ "$(id -u)" -eq 0 ] || { fo_err "needs root (network namespaces)"; return 1; }
}

fo_ns() { echo "${FO_PREFIX}_$1"; }
# fo_in ROLE COMMAND...: run in ROLE's namespace. (Background processes are started with
# `ip netns exec` directly instead: then $! is the process itself, not a subshell.)
fo_in() { local role=$1; shift; ip netns exec "$(fo_ns "$role")" "$@"; }
fo_conf() { echo "$FO_WORK/$1/daemon.conf"; }
# fo_daemon FW ARGS...: the daemon's client side (conntrackd's flags) against FW's daemon
fo_daemon() { local fw=$1; shift; fo_in "$fw" "$FO_DAEMON" -C "$(fo_conf "$fw")" "$@"; }

# _fo_must COMMAND...: run it; on failure say so and count it (fo_create checks the count;
# `set -e` would not help: callers run fo_create in `||` lists, where bash ignores it)
_fo_must() { "$@" || { fo_err "setup: '$*' failed"; FO_SETUP_ERRORS=$((FO_SETUP_ERRORS + 1)); }; }

fo_create() {
    local role sw fw i new_match='tcp flags & (fin | syn | rst | ack) == syn'
    [ "$FO_SYN_ONLY" = 1 ] || new_match='meta l4proto tcp'
    FO_CREATED=1
    FO_SETUP_ERRORS=0
    for role in sw client server fw1 fw2; do
        _fo_must ip netns add "$(fo_ns "$role")"
        _fo_must ip -n "$(fo_ns "$role")" link set lo up
        _fo_must fo_in "$role" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    sw=$(fo_ns sw)
    _fo_must ip -n "$sw" link add brc type bridge stp_state 0 forward_delay 0
    _fo_must ip -n "$sw" link add brs type bridge stp_state 0 forward_delay 0
    _fo_must ip link add eth0 netns "$(fo_ns client)" type veth peer name c netns "$sw"
    _fo_must ip link add eth0 netns "$(fo_ns server)" type veth peer name s netns "$sw"
    _fo_must ip -n "$sw" link set c master brc
    _fo_must ip -n "$sw" link set s master brs
    for i in 1 2; do
        fw=$(fo_ns "fw$i")
        _fo_must ip link add eth0 netns "$fw" type veth peer name "f${i}c" netns "$sw"
        _fo_must ip link add eth1 netns "$fw" type veth peer name "f${i}s" netns "$sw"
        _fo_must ip -n "$sw" link set "f${i}c" master brc
        _fo_must ip -n "$sw" link set "f${i}s" master brs
    done
    _fo_must ip link add eth2 netns "$(fo_ns fw1)" type veth peer name eth2 netns "$(fo_ns fw2)"
    for i in brc brs c s f1c f1s f2c f2s; do _fo_must ip -n "$sw" link set "$i" up; done

    _fo_must ip -n "$(fo_ns client)" addr add "$FO_CLIENT_IP/24" dev eth0
    _fo_must ip -n "$(fo_ns client)" link set eth0 up
    _fo_must ip -n "$(fo_ns client)" route add default via "$FO_VIP_CLIENT"
    _fo_must ip -n "$(fo_ns server)" addr add "$FO_SERVER_IP/24" dev eth0
    _fo_must ip -n "$(fo_ns server)" link set eth0 up
    _fo_must ip -n "$(fo_ns server)" route add default via "$FO_VIP_SERVER"

    for fw in fw1 fw2; do
        _fo_must ip -n "$(fo_ns "$fw")" addr add "${FO_LAN_IP[$fw]}/24" dev eth0
        _fo_must ip -n "$(fo_ns "$fw")" addr add "${FO_WAN_IP[$fw]}/24" dev eth1
        _fo_must ip -n "$(fo_ns "$fw")" addr add "${FO_SYNC_IP[$fw]}/24" dev eth2
        for i in eth0 eth1 eth2; do _fo_must ip -n "$(fo_ns "$fw")" link set "$i" up; done
        # The ruleset first: it loads conntrack in this namespace, and with it the
        # net.netfilter sysctls.
        _fo_must fo_in "$fw" nft -f - <<NFT
table inet ctfo {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "eth0" oifname "eth1" $new_match ct state new accept
    }
}
NFT
        # Resets and ICMP errors this firewall sends (output) or forwards towards the client or
        # the server: a takeover must not cause any.
        _fo_must fo_in "$fw" nft -f - <<NFT
table inet ctfo_rst {
    counter sent { }
    counter forwarded { }
    counter icmp_sent { }
    counter icmp_forwarded { }
    chain output {
        type filter hook output priority -300;
        tcp flags & rst == rst counter name sent
        ip daddr { $FO_CLIENT_IP, $FO_SERVER_IP } icmp type { destination-unreachable, time-exceeded, parameter-problem } counter name icmp_sent
    }
    chain forward {
        type filter hook forward priority -300;
        tcp flags & rst == rst counter name forwarded
        ip daddr { $FO_CLIENT_IP, $FO_SERVER_IP } icmp type { destination-unreachable, time-exceeded, parameter-problem } counter name icmp_forwarded
    }
}
NFT
        if [ "$FO_NAT" = 1 ]; then
            _fo_must fo_in "$fw" nft -f - <<NFT
table ip ctfo_nat {
    chain prerouting {
        type nat hook prerouting priority dstnat;
        ip daddr $FO_VIP_CLIENT tcp dport $FO_PORT dnat to $FO_SERVER_IP
    }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "eth1" ip daddr $FO_SERVER_IP snat to $FO_VIP_SERVER
    }
}
NFT
        fi
        _fo_must fo_in "$fw" sysctl -qw net.ipv4.ip_forward=1 \
            "net.netfilter.nf_conntrack_tcp_loose=$FO_TCP_LOOSE" net.netfilter.nf_conntrack_tcp_be_liberal=0
    done
    if [ "$FO_SETUP_ERRORS" -gt 0 ]; then
        fo_err "topology: $FO_SETUP_ERRORS setup commands failed"
        return 1
    fi
    fo_log "topology up: namespaces $(fo_ns '{sw,client,server,fw1,fw2}')"
}

# The daemon configuration for FW: FTFW over UDP on the sync link; conntrackd-compatible.
fo_daemon_config() {
    local fw=$1 peer=${FO_PEER[$1]}
    cat <<CONF
# $fw's daemon (ctsyncd or conntrackd), written by scripts/failover/topology.sh
Sync {
    Mode FTFW {
        ResendQueueSize 131072
        ACKWindowSize 300
        PurgeTimeout $FO_PURGE_TIMEOUT
        StartupResync on
    }
    UDP {
        IPv4_address ${FO_SYNC_IP[$fw]}
        IPv4_Destination_Address ${FO_SYNC_IP[$peer]}
        Port 3780
        Interface eth2
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }
}
General {
    # Above 8192: conntrackd 1.4.7 commits a smaller table in one step and then ignores every
    # later flush ("ignoring flush command, commit still in progress").
    HashSize 32768
    HashLimit $(if [ "$fw" = fw1 ]; then echo "${FO_HASHLIMIT_FW1:-131072}"; else echo "${FO_HASHLIMIT_FW2:-131072}"; fi)
    LogFile $FO_WORK/$fw/daemon.log
    Syslog off
    LockFile $FO_WORK/$fw/daemon.lock
    UNIX {
        Path $FO_WORK/$fw/daemon.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {
        Protocol Accept {
            TCP
            UDP
            SCTP
        }
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv4_address $FO_VIP_CLIENT
            IPv4_address $FO_VIP_SERVER
            IPv4_address ${FO_LAN_IP[$fw]}
            IPv4_address ${FO_WAN_IP[$fw]}
            IPv4_address ${FO_SYNC_IP[$fw]}
        }
    }
}
CONF
}

fo_keepalived_config() {
    local fw=$1 peer=${FO_PEER[$1]} prio
    if [ "$fw" = fw1 ]; then prio=$FO_PRIORITY_FW1; else prio=$FO_PRIORITY_FW2; fi
    cat <<CONF
# $fw's keepalived, written by scripts/failover/topology.sh
global_defs {
    router_id ${FO_PREFIX}_$fw
    script_user root
    vrrp_version 3
}

$(if [ "${FO_TRACK_HEALTH:-0}" = 1 ]; then cat <<TRACK
vrrp_script chk_ctsync {
    script "$(dirname "$FO_DAEMON")/ctsync health -C $FO_WORK/$fw/daemon.conf"
    interval 1
    timeout 2
    fall 3
    rise 2
    weight -60
    init_fail
}
TRACK
fi)

vrrp_sync_group CTFO {
    group {
        VI_CLIENT
        VI_SERVER
    }
$([ "${FO_TRACK_HEALTH:-0}" = 1 ] && printf '    sync_group_tracking_weight\n')
    notify_master "$FO_WORK/$fw/notify.sh primary"
    notify_backup "$FO_WORK/$fw/notify.sh backup"
    notify_fault "$FO_WORK/$fw/notify.sh fault"
}

vrrp_instance VI_CLIENT {
    state BACKUP
    interface eth0
    virtual_router_id 61
    priority $prio
    advert_int $FO_ADVERT_INT
    preempt_delay $FO_PREEMPT_DELAY
    unicast_src_ip ${FO_LAN_IP[$fw]}
    unicast_peer {
        ${FO_LAN_IP[$peer]}
    }
    virtual_ipaddress {
        $FO_VIP_CLIENT/24 dev eth0
    }
$([ "${FO_TRACK_HEALTH:-0}" = 1 ] && printf '    track_script {\n        chk_ctsync\n    }\n')
}

vrrp_instance VI_SERVER {
    state BACKUP
    interface eth1
    virtual_router_id 62
    priority $prio
    advert_int $FO_ADVERT_INT
    preempt_delay $FO_PREEMPT_DELAY
    unicast_src_ip ${FO_WAN_IP[$fw]}
    unicast_peer {
        ${FO_WAN_IP[$peer]}
    }
    virtual_ipaddress {
        $FO_VIP_SERVER/24 dev eth1
    }
$([ "${FO_TRACK_HEALTH:-0}" = 1 ] && printf '    track_script {\n        chk_ctsync\n    }\n')
}
CONF
}

# The notify wrapper keepalived runs: environment for primary-backup.sh, a log per firewall.
# A file "skip-commit" in the firewall's directory makes it skip the commit (control runs);
# a file "teardown" in the work directory makes it do nothing (while tearing down).
fo_notify_wrapper() {
    local fw=$1
    cat <<SH
#!/bin/sh
[ -e "$FO_WORK/teardown" ] && exit 0
export CTSYNCD="$FO_DAEMON" CTSYNCD_CONF="$FO_WORK/$fw/daemon.conf"
[ -e "$FO_WORK/$fw/skip-commit" ] && export CTSYNCD_SKIP_COMMIT=1
${FO_GATE:+export CTSYNC_GATE=$FO_GATE}
log="$FO_WORK/$fw/notify.log"
echo "\$(date +%s.%N) notify \$* begins" >>"\$log"
"$FO_ROOT/scripts/primary-backup.sh" "\$@" >>"\$log" 2>&1
status=\$?
echo "\$(date +%s.%N) notify \$* exit \$status" >>"\$log"
exit \$status
SH
}

fo_write_configs() {
    local fw
    for fw in fw1 fw2; do
        fo_daemon_config "$fw" >"$FO_WORK/$fw/daemon.conf"
        fo_keepalived_config "$fw" >"$FO_WORK/$fw/keepalived.conf"
        fo_notify_wrapper "$fw" >"$FO_WORK/$fw/notify.sh"
        chmod 755 "$FO_WORK/$fw/notify.sh"
        : >>"$FO_WORK/$fw/notify.log"
    done
    # keepalived runs the scripts as root only from paths root alone can write; the work
    # directory is ours (mktemp -d): make the path to it traversable.
    chmod 755 "$FO_WORK" "$FO_WORK/fw1" "$FO_WORK/fw2"
}

fo_daemon_answers() { fo_daemon "$1" -s >/dev/null 2>&1; }

# fo_start_daemon FW: the daemon in the foreground, in the background (its PID is ours);
# returns once it answers on its control socket (bounded, 10 s).
fo_start_daemon() {
    local fw=$1
    ip netns exec "$(fo_ns "$fw")" "$FO_DAEMON" -C "$(fo_conf "$fw")" >>"$FO_WORK/$fw/daemon.out" 2>&1 &
    FO_PIDS[daemon_$fw]=$!
    disown "$!"  # no "Killed" job notices; _fo_gone sees it exit
    if ! fo_poll 10 0.05 fo_daemon_answers "$fw"; then
        fo_err "$fw: $(basename "$FO_DAEMON") does not answer after 10 s"
        tail -n 20 "$FO_WORK/$fw/daemon.out" "$FO_WORK/$fw/daemon.log" >&2 2>/dev/null
        return 1
    fi
    fo_log "$fw: $(basename "$FO_DAEMON") running (pid ${FO_PIDS[daemon_$fw]})"
}

fo_start_keepalived() {
    local fw=$1
    ip netns exec "$(fo_ns "$fw")" keepalived -n -l -D -P -f "$FO_WORK/$fw/keepalived.conf" \
        -p "$FO_WORK/$fw/keepalived.pid" -r "$FO_WORK/$fw/keepalived-vrrp.pid" \
        >>"$FO_WORK/$fw/keepalived.log" 2>&1 &
    FO_PIDS[keepalived_$fw]=$!
    disown "$!"  # no "Killed" job notices; _fo_gone sees it exit
    fo_log "$fw: keepalived started (pid ${FO_PIDS[keepalived_$fw]})"
}

# fo_is_master FW: FW holds both gateway addresses
fo_is_master() {
    local addrs
    addrs=$(ip -n "$(fo_ns "$1")" -4 -o addr show 2>/dev/null) || return 1
    [[ $addrs == *" $FO_VIP_CLIENT/"* && $addrs == *" $FO_VIP_SERVER/"* ]]
}
fo_holds_no_vip() {
    local addrs
    addrs=$(ip -n "$(fo_ns "$1")" -4 -o addr show 2>/dev/null) || return 1
    [[ $addrs != *" $FO_VIP_CLIENT/"* && $addrs != *" $FO_VIP_SERVER/"* ]]
}

# fo_notify_count FW STATE: how many STATE transitions of FW's notify script have finished
fo_notify_count() {
    local n
    n=$(grep -c " notify $2 exit " "$FO_WORK/$1/notify.log" 2>/dev/null) || true
    echo "${n:-0}"
}
# fo_wait_notify FW STATE N TIMEOUT: until N STATE transitions have finished
fo_wait_notify() {
    local fw=$1 state=$2 n=$3 timeout=${4:-10}
    # shellcheck disable=SC2317  # called through fo_poll
    _fo_notify_reached() { [ "$(fo_notify_count "$1" "$2")" -ge "$3" ]; }
    if ! fo_poll "$timeout" 0.02 _fo_notify_reached "$fw" "$state" "$n"; then
        fo_err "$fw: notify '$state' #$n not finished after ${timeout}s"
        return 1
    fi
}
# fo_last_notify_status FW STATE: the exit status of the last STATE transition
fo_last_notify_status() {
    grep " notify $2 exit " "$FO_WORK/$1/notify.log" | tail -n 1 | awk '{print $NF}'
}

fo_start_server() {
    rm -f "$FO_WORK/server/ready"
    ip netns exec "$(fo_ns server)" "$FO_PYTHON" "$FO_LIB_DIR/tcp-counter.py" server --listen "$FO_SERVER_IP:$FO_PORT" \
        --ready "$FO_WORK/server/ready" ${FO_PUSH:+--push "$FO_PUSH"} >>"$FO_WORK/server/server.log" 2>&1 &
    FO_PIDS[server]=$!
    disown "$!"  # no "Killed" job notices; _fo_gone sees it exit
    fo_poll 5 0.05 test -e "$FO_WORK/server/ready" || { fo_err "server not listening"; return 1; }
}

# fo_start_client NAME: a new connection client -> server:FO_PORT through the VIPs
fo_start_client() {
    local name=$1
    rm -f "$FO_WORK/client/$name.log" "$FO_WORK/client/$name.json"
    ip netns exec "$(fo_ns client)" "$FO_PYTHON" "$FO_LIB_DIR/tcp-counter.py" client --connect "$FO_CONNECT_IP:$FO_PORT" \
        --log "$FO_WORK/client/$name.log" --result "$FO_WORK/client/$name.json" \
        --interval 0.1 --max-seconds 110 ${FO_PUSH:+--push} >>"$FO_WORK/client/$name.out" 2>&1 &
    FO_PIDS[client_$name]=$!
    disown "$!"  # no "Killed" job notices; _fo_gone sees it exit
}
# fo_client_counter NAME: the last counter value echoed (0 before the first)
fo_client_counter() {
    local last
    last=$(tail -n 1 "$FO_WORK/client/$1.log" 2>/dev/null) || true
    case "$last" in "" | "#"*) echo 0 ;; *) echo "${last#* }" ;; esac
}
fo_client_port() { awk '/^# local/ {print $4; exit}' "$FO_WORK/client/$1.log" 2>/dev/null; }
fo_client_alive() { kill -0 "${FO_PIDS[client_$1]:-}" 2>/dev/null && [ ! -e "$FO_WORK/client/$1.json" ]; }
# fo_wait_counter NAME VALUE TIMEOUT: until the counter reaches VALUE
fo_wait_counter() {
    # shellcheck disable=SC2317  # called through fo_poll
    _fo_counter_reached() { [ "$(fo_client_counter "$1")" -ge "$2" ]; }
    fo_poll "$3" 0.05 _fo_counter_reached "$1" "$2"
}
# fo_stop_client NAME: SIGTERM, wait (bounded) for its JSON result (fo_client_result)
fo_stop_client() {
    local name=$1 pid=${FO_PIDS[client_$1]:-}
    [ -z "$pid" ] || ! _fo_ours "$pid" || kill -TERM "$pid" 2>/dev/null || true
    fo_poll 5 0.05 test -e "$FO_WORK/client/$name.json" || { fo_err "client $name: no result"; return 1; }
    [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
    unset "FO_PIDS[client_$name]"
    return 0
}
# fo_client_result NAME: the client's final JSON object ({} if it has none)
fo_client_result() { cat "$FO_WORK/client/$1.json" 2>/dev/null || echo '{}'; }
# fo_report NAME FROM TO: the client's echoes in [FROM, TO] (wall-clock s), as JSON
fo_report() {
    "$FO_PYTHON" "$FO_LIB_DIR/tcp-counter.py" report "$FO_WORK/client/$1.log" --from "$2" --to "$3"
}

# fo_flow_pattern NAME: how the flow of client NAME appears in conntrack's and the caches' lines
fo_flow_pattern() {
    echo "src=$FO_CLIENT_IP dst=$FO_CONNECT_IP sport=$(fo_client_port "$1") dport=$FO_PORT"
}
# fo_rst_count FW: TCP resets and ICMP errors (to the client or the server) FW has sent or
# forwarded since its ruleset was loaded
fo_rst_count() {
    fo_in "$1" nft list table inet ctfo_rst 2>/dev/null | awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
}

# fo_preload FW N: N established TCP flows (198.19.0.0/16, not the test's) written into FW's
# kernel table, as a busy firewall's table: what the peer must replicate and commit.
fo_preload() {
    local fw=$1 n=$2 ctsync
    ctsync=${FO_CTSYNC:-$(dirname "$FO_DAEMON")/ctsync}
    [ -x "$ctsync" ] || { fo_err "fo_preload needs ctsync next to $FO_DAEMON (or FO_CTSYNC)"; return 1; }
    "$FO_PYTHON" - "$n" >"$FO_WORK/$fw/preload.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"proto": "tcp", "state": "ESTABLISHED", "timeout": 3600, "status": ["SEEN_REPLY", "ASSURED"],
                      "original": {"src": "198.19.%d.%d" % (i >> 16 & 255, i >> 8 & 255), "dst": "198.19.255.%d" % (i & 255),
                                   "sport": 1024 + (i & 1023), "dport": 443}}))
PY
    fo_in "$fw" "$ctsync" kernel insert --file "$FO_WORK/$fw/preload.jsonl" >/dev/null
}

# fo_cache_has FW internal|external NAME
fo_cache_has() {
    local flag=-i
    [ "$2" = external ] && flag=-e
    fo_daemon "$1" "$flag" 2>/dev/null | grep -qF "$(fo_flow_pattern "$3")"
}
# fo_wait_cache FW internal|external NAME TIMEOUT
fo_wait_cache() { fo_poll "$4" 0.05 fo_cache_has "$1" "$2" "$3"; }
# fo_kernel_has FW NAME: FW's kernel table has the flow
fo_kernel_has() {
    fo_in "$1" conntrack -L -p tcp --dport "$FO_PORT" 2>/dev/null | grep -qF "$(fo_flow_pattern "$2")"
}

# _fo_ours PID: the process lives in one of our namespaces (a PID we recorded may have been
# reused by now; everything we start runs in our namespaces)
_fo_ours() {
    local ns
    ns=$(ip netns identify "$1" 2>/dev/null) || return 1
    [[ $ns == "${FO_PREFIX}_"* ]]
}
# _fo_gone PID: the process has exited (a zombie counts as gone)
_fo_gone() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}
_fo_all_gone() { local p; for p in "$@"; do _fo_gone "$p" || return 1; done; return 0; }
# _fo_kill_pids SIGNAL PID...: signal, then SIGKILL whatever is left after 2 s; reap our children
_fo_kill_pids() {
    local sig=$1 pid
    shift
    [ $# -eq 0 ] && return 0
    kill "-$sig" "$@" 2>/dev/null || true
    fo_poll 2 0.02 _fo_all_gone "$@" || kill -KILL "$@" 2>/dev/null || true
    fo_poll 2 0.02 _fo_all_gone "$@" || true
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    return 0
}

# fo_kill_fw FW: the firewall crashes. Every process in its namespace (keepalived, the daemon,
# any notify script) is frozen (SIGSTOP) at once, its links go down, and the processes are
# SIGKILLed: no VRRP goodbye, no notify script for the link failure, the daemon's lock file
# is left behind, the gateway addresses stay configured on the dead links.
fo_kill_fw() {
    local fw=$1 ns dev pids all=() round
    ns=$(fo_ns "$fw")
    for round in 1 2 3; do
        # shellcheck disable=SC2207
        pids=($(ip netns pids "$ns"))
        [ ${#pids[@]} -eq 0 ] && break
        kill -STOP "${pids[@]}" 2>/dev/null || true
        all+=("${pids[@]}")
        [ "$round" = 1 ] && for dev in eth0 eth1 eth2; do ip -n "$ns" link set "$dev" down; done
    done
    for dev in eth0 eth1 eth2; do ip -n "$ns" link set "$dev" down; done
    _fo_kill_pids KILL "${all[@]}"
    unset "FO_PIDS[keepalived_$fw]" "FO_PIDS[daemon_$fw]"
    fo_log "$fw: crashed (${#all[@]} processes frozen then SIGKILLed, links down)"
}

# fo_revive_fw FW: the firewall reboots. Its kernel table is empty and the addresses keepalived
# had added are gone (as after a reboot); links up; keepalived starts in BACKUP, and its
# notify script starts the daemon (after removing the stale lock file), shortens the timers
# and asks the master for its table. After FO_PREEMPT_DELAY the higher priority takes over.
fo_revive_fw() {
    local fw=$1 dev
    ip -n "$(fo_ns "$fw")" addr del "$FO_VIP_CLIENT/24" dev eth0 2>/dev/null || true
    ip -n "$(fo_ns "$fw")" addr del "$FO_VIP_SERVER/24" dev eth1 2>/dev/null || true
    fo_in "$fw" conntrack -F >/dev/null 2>&1 || true
    for dev in eth0 eth1 eth2; do ip -n "$(fo_ns "$fw")" link set "$dev" up; done
    fo_start_keepalived "$fw"
    fo_log "$fw: rebooted (empty conntrack table, links up, keepalived started; the notify script starts the daemon)"
}

# fo_diagnostics: the tails of every log, and both kernel tables (on failure)
fo_diagnostics() {
    local fw f
    for fw in fw1 fw2; do
        for f in notify.log keepalived.log daemon.log daemon.out; do
            [ -s "$FO_WORK/$fw/$f" ] || continue
            echo "----- $fw/$f (last 25 lines)"
            tail -n 25 "$FO_WORK/$fw/$f"
        done
        echo "----- $fw: kernel table (tcp dport $FO_PORT)"
        fo_in "$fw" conntrack -L -p tcp --dport "$FO_PORT" 2>&1 | head -n 10
        echo "----- $fw: addresses"
        ip -n "$(fo_ns "$fw")" -4 -o addr show 2>&1 | awk '{print $2, $4}'
    done
    for f in client/*.out server/server.log; do
        [ -s "$FO_WORK/$f" ] && { echo "----- $f"; tail -n 10 "$FO_WORK/$f"; }
    done
} >&2

# fo_teardown: stop every process that lives in our namespaces (by PID), delete the
# namespaces and (unless FO_KEEP_WORK=1) the work directory. Safe to call twice.
fo_teardown() {
    local role fw ns pids=() p
    [ -n "${FO_WORK:-}" ] || return 0
    [ -d "$FO_WORK" ] && : >"$FO_WORK/teardown"
    # keepalived first, so no notify script starts a daemon while we stop them
    for fw in fw1 fw2; do
        p=${FO_PIDS[keepalived_$fw]:-}
        [ -z "$p" ] || ! _fo_ours "$p" || _fo_kill_pids TERM "$p"
    done
    if [ "${FO_CREATED:-0}" = 1 ]; then
        for fw in fw1 fw2; do
            if ip netns list 2>/dev/null | grep -q "^$(fo_ns "$fw")\b" && fo_daemon_answers "$fw"; then
                fo_daemon "$fw" -k >/dev/null 2>&1 || true
            fi
        done
        for role in client server fw1 fw2 sw; do
            ns=$(fo_ns "$role")
            ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
            # shellcheck disable=SC2207
            pids+=($(ip netns pids "$ns" 2>/dev/null))
        done
    fi
    # shellcheck disable=SC2046
    [ ${#pids[@]} -gt 0 ] && _fo_kill_pids TERM $(printf '%s\n' "${pids[@]}" | sort -u)
    FO_PIDS=()
    if [ "${FO_CREATED:-0}" = 1 ]; then
        for role in client server fw1 fw2 sw; do ip netns del "$(fo_ns "$role")" 2>/dev/null || true; done
        FO_CREATED=0
    fi
    if [ "${FO_KEEP_WORK:-0}" = 1 ]; then
        fo_log "work directory kept: $FO_WORK"
    else
        rm -rf "$FO_WORK"
    fi
    FO_WORK=
    return 0
}
