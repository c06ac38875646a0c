#!/usr/bin/env bash
# Installs the Debian packages ctsync builds and tests with. Needs root; idempotent.
set -euo pipefail
# man-db and systemd: the package test renders the manuals and verifies the unit (no running
# systemd needed). zsh and fish: the package test parses their completions.
packages=(libnetfilter-conntrack-dev libmnl-dev pkg-config conntrack conntrackd keepalived nftables iproute2 util-linux python3 man-db systemd g++ zsh fish)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"
