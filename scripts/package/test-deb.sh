#!/usr/bin/env bash
# Builds the Debian package and checks it the way a firewall would get it (CI runs this, as
# root, on a throw-away machine): the contents, an install with dpkg, the unit verified by
# systemd-analyze, the manuals rendered by man without a warning, the binaries run with the
# Swift toolchain's directory hidden (and load only glibc, libmnl, libnetfilter_conntrack), the
# packaged configuration checked and run, then a purge that leaves nothing behind.
#
#   sudo scripts/package/test-deb.sh [DEB]       (builds one with build-deb.sh unless given)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root (dpkg -i)" >&2; exit 1; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
deb=${1:-$(scripts/package/build-deb.sh)}
[ -f "$deb" ] || fail "no package at $deb"
echo "test-deb: $deb ($(du -h "$deb" | cut -f1))"

echo "== contents"
dpkg-deb -I "$deb" | sed -n '/Package:/,$p'
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#' | grep -v '/$' | sort > /tmp/ctsync-deb-contents
cat /tmp/ctsync-deb-contents
for path in /usr/sbin/ctsyncd /usr/sbin/ctsync /lib/systemd/system/ctsyncd.service /etc/ctsyncd/ctsyncd.conf \
    /etc/ctsyncd/primary-backup.sh /etc/logrotate.d/ctsyncd /usr/share/man/man8/ctsyncd.8.gz /usr/share/man/man8/ctsync.8.gz \
    /usr/share/man/man5/ctsyncd.conf.5.gz /usr/share/bash-completion/completions/ctsync /usr/share/zsh/vendor-completions/_ctsync \
    /usr/share/fish/vendor_completions.d/ctsync.fish /usr/share/doc/ctsync/copyright /usr/share/doc/ctsync/examples/ftfw-udp.conf \
    /usr/share/doc/ctsync/examples/keepalived/keepalived.conf; do
    grep -qx "$path" /tmp/ctsync-deb-contents || fail "the package lacks $path"
done

installed=0
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
    ip netns del ctt_pkg 2>/dev/null || true
    [ "$installed" = 1 ] && dpkg -P ctsync >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== install"
dpkg -i "$deb"
installed=1
dpkg -s ctsync | grep -q '^Status: install ok installed' || fail "dpkg does not list ctsync as installed"

echo "== unit"
systemd-analyze verify /lib/systemd/system/ctsyncd.service || fail "systemd-analyze verify"

echo "== manuals"
for page in ctsyncd.8 ctsync.8 ctsyncd.conf.5; do
    warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l "/usr/share/man/man${page##*.}/$page.gz" 2>&1 >/dev/null || true)
    [ -z "$warnings" ] || fail "man $page: $warnings"
    MANWIDTH=80 man -l "/usr/share/man/man${page##*.}/$page.gz" 2>/dev/null | grep -q "SEE ALSO" || fail "man $page renders no SEE ALSO"
done
bash -n /usr/share/bash-completion/completions/ctsync || fail "the bash completion does not parse"
zsh -n /usr/share/zsh/vendor-completions/_ctsync || fail "the zsh completion does not parse"
fish --no-execute /usr/share/fish/vendor_completions.d/ctsync.fish || fail "the fish completion does not parse"

echo "== without the toolchain"
# A mount namespace in which the toolchain's directory is an empty tmpfs: the binaries must
# not need anything from it.
unshare -m bash -c '
    set -e
    [ -d /opt/swift ] && mount -t tmpfs none /opt/swift
    ldd /usr/sbin/ctsyncd
    if ldd /usr/sbin/ctsyncd /usr/sbin/ctsync | grep -E "swift|not found"; then echo "loads Swift libraries" >&2; exit 1; fi
    /usr/sbin/ctsyncd -v
    /usr/sbin/ctsync --version
    /usr/sbin/ctsyncd --check -C /etc/ctsyncd/ctsyncd.conf
' || fail "the binaries do not run without the toolchain"

echo "== the packaged configuration runs"
ip netns add ctt_pkg
ip -n ctt_pkg link set lo up

echo "== the keepalived example loads (its scripts are the package's; eth0-eth2 as it names them)"
ip -n ctt_pkg link add eth0 type veth peer name eth1
ip -n ctt_pkg link add eth2 type veth peer name eth3
ip netns exec ctt_pkg keepalived -t -f /usr/share/doc/ctsync/examples/keepalived/keepalived.conf \
    || fail "keepalived -t refuses the example configuration"
mkdir -p /run/ctsyncd
ip netns exec ctt_pkg /usr/sbin/ctsyncd -C /etc/ctsyncd/ctsyncd.conf -d || fail "ctsyncd -d with the packaged configuration"
pid=$(cat /run/ctsyncd/ctsyncd.lock)
[ "$(cat "/proc/$pid/comm")" = ctsyncd ] || fail "the daemon's process is named $(cat "/proc/$pid/comm")"
ip netns exec ctt_pkg /usr/sbin/ctsync stats | grep -q "cache stats" || fail "ctsync stats (stats mode: conntrackd's layout, cache stats)"
ip netns exec ctt_pkg /usr/sbin/ctsyncd -k
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null || fail "ctsyncd -k did not stop the daemon"
pid=

echo "== purge"
dpkg -P ctsync
installed=0
for path in /usr/sbin/ctsyncd /etc/ctsyncd/ctsyncd.conf /lib/systemd/system/ctsyncd.service; do
    [ ! -e "$path" ] || fail "$path is still there after the purge"
done
echo "test-deb: ok"
