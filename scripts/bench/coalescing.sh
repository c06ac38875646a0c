#!/usr/bin/env bash
# Update coalescing beside conntrackd, in one run: a pair replicates FLOWS flows from a to b;
# then every flow is updated ROUNDS times in a row at the kernel's rate (one `ctsync kernel
# update --file`: every flow with mark 1, then with mark 2, ...), and what a sends for those updates is counted: bytes
# and datagrams on the sync link (the `-s` channel lines, the same for both daemons), per flow
# update. ctsyncd runs with UpdateDelay 20 (the default) and 0 (off). Afterwards b's external
# cache must hold every flow with the last mark (exactness is not traded). Needs root,
# conntrackd, python3.
#
#   sudo scripts/bench/coalescing.sh [FLOWS] [ROUNDS]     (default 2000 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
flows=${1:-2000}
rounds=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "coalescing: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "coalescing: needs conntrackd" >&2; exit 1; }
swift build -c release >/dev/null
bin="$PWD/.build/release"
work=$(mktemp -d)
a="ctb_coa_$$"; b="ctb_cob_$$"; link="ctbq$$"
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_flows "$flows" > "$work/flows.jsonl"
python3 - "$work/flows.jsonl" "$rounds" > "$work/updates.jsonl" <<'PY'
import json, sys
flows = [json.loads(line) for line in open(sys.argv[1])]
for r in range(1, int(sys.argv[2]) + 1):
    for f in flows:
        f["mark"] = r
        print(json.dumps(f))
PY

sent() {  # ns daemon conf -> "bytes datagrams"
    ip netns exec "$1" "$2" -C "$3" -s 2>/dev/null | awk '/Bytes sent/ { b = $1 } /Pckts sent/ { p = $1 } END { print b + 0, p + 0 }'
}
external_marks() {  # ns daemon conf M -> flows in the external cache (with mark=M unless M is 0)
    if [ "$4" = 0 ]; then
        ip netns exec "$1" "$2" -C "$3" -e 2>/dev/null | grep -c "src=" || true
    else
        ip netns exec "$1" "$2" -C "$3" -e 2>/dev/null | grep -c "mark=$4 " || true
    fi
}

run() {  # label daemon-binary extra-option-line
    local label=$1 daemon=$2 extra=$3
    ip netns add "$a"; ip netns add "$b"
    ip link add "${link}a" netns "$a" type veth peer name "${link}b" netns "$b"
    ip -n "$a" addr add 198.18.254.1/24 dev "${link}a"; ip -n "$b" addr add 198.18.254.2/24 dev "${link}b"
    ip -n "$a" link set "${link}a" up; ip -n "$b" link set "${link}b" up
    local name=${label//[^a-z0-9]/_}
    config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" > "$work/a.conf"
    config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" > "$work/b.conf"
    if [ -n "$extra" ]; then
        for side in a b; do sed -i "s|^Sync {|Sync {\n    Options {\n        $extra\n    }|" "$work/$side.conf"; done
    fi
    ip netns exec "$a" "$daemon" -C "$work/a.conf" > "$work/a.out" 2>&1 & pids+=($!)
    ip netns exec "$b" "$daemon" -C "$work/b.conf" > "$work/b.out" 2>&1 & pids+=($!)
    for _ in $(seq 200); do ip netns exec "$a" "$daemon" -C "$work/a.conf" -s >/dev/null 2>&1 && ip netns exec "$b" "$daemon" -C "$work/b.conf" -s >/dev/null 2>&1 && break; sleep 0.05; done
    ip netns exec "$a" "$bin/ctsync" kernel insert --file "$work/flows.jsonl" >/dev/null
    for _ in $(seq 300); do [ "$(external_marks "$b" "$daemon" "$work/b.conf" 0)" -ge "$flows" ] && break; sleep 0.1; done
    sleep 1.5
    local before after
    before=$(sent "$a" "$daemon" "$work/a.conf")
    # One process, at the kernel's rate: every flow with mark 1, then every flow with mark 2, ...
    ip netns exec "$a" "$bin/ctsync" kernel update --file "$work/updates.jsonl" >/dev/null 2>&1 || true
    local exact=false
    for _ in $(seq 100); do [ "$(external_marks "$b" "$daemon" "$work/b.conf" "$rounds")" -ge "$flows" ] && { exact=true; break; }; sleep 0.1; done
    sleep 1.5
    after=$(sent "$a" "$daemon" "$work/a.conf")
    read -r b0 p0 <<<"$before"; read -r b1 p1 <<<"$after"
    local updates=$((flows * rounds))
    awk -v l="$label" -v b=$((b1 - b0)) -v p=$((p1 - p0)) -v u="$updates" -v e="$exact" \
        'BEGIN { printf "%-22s %9d %10d %9d %14.1f %16.3f %6s\n", l, u, b, p, b / u, p / u, e }'
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    pids=()
    ip netns del "$a"; ip netns del "$b"
}

echo "coalescing: $flows flows, each updated $rounds times in a row; what a sends for those updates"
printf '%-22s %9s %10s %9s %14s %16s %6s\n' daemon updates bytes datagrams bytes/update datagrams/update exact
run "ctsyncd UpdateDelay 20" "$bin/ctsyncd" "UpdateDelay 20"
run "ctsyncd UpdateDelay 0" "$bin/ctsyncd" "UpdateDelay 0"
run "conntrackd" "$(command -v conntrackd)" ""
