#!/usr/bin/env bash
# Expectation sync beside conntrackd, in one run (Options { ExpectationSync on }): a's kernel
# holds N FTP control connections (the kernel's ftp helper, through nftables) and one
# expectation on each; a bulk send (-B) from a must bring all N expectations into b's external
# expectation cache, and b's commit (-c: the flows, then the expectations) must put them into b's
# kernel. Both times are taken for ctsyncd and conntrackd on the same tables, b's kernel emptied
# between rounds. Needs root, conntrackd (Debian package) and python3.
#
#   sudo scripts/bench/expectations.sh [N]      (default 2000; the kernel allows 4096 a namespace)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
n=${1:-2000}
[ "$(id -u)" -eq 0 ] || { echo "expectations: needs root" >&2; exit 1; }
command -v conntrackd >/dev/null || { echo "expectations: needs conntrackd" >&2; exit 1; }
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_pair_setup exp

ruleset='table inet ctb_ftp {
    ct helper ftp-standard { type "ftp" protocol tcp; }
    chain pre { type filter hook prerouting priority 0; tcp dport 21 ct helper set "ftp-standard"; ct state established accept; }
}'
for ns in "$a" "$b"; do ip netns exec "$ns" nft -f - <<<"$ruleset"; done

# N masters (one JSON flow a line) and the expectation of each (a data port per master).
python3 - "$n" "$work" <<'PY'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
with open(work + "/masters.jsonl", "w") as m, open(work + "/expect.args", "w") as e:
    for i in range(n):
        src = "198.18.%d.%d" % (10 + i // 250, i % 250 + 1)
        sport = 20000 + i
        m.write(json.dumps({"proto": "tcp", "state": "ESTABLISHED", "timeout": 600, "status": ["SEEN_REPLY", "ASSURED"],
                            "helper": "ftp", "original": {"src": src, "dst": "198.19.0.21", "sport": sport, "dport": 21}}) + "\n")
        e.write(("-I expect -s %s -d 198.19.0.21 -p tcp --sport %d --dport 21 --tuple-src %s --tuple-dst 198.19.0.21 "
                 "--mask-src 255.255.255.255 --mask-dst 255.255.255.255 --tuple-port-src 0 --tuple-port-dst %d "
                 "--mask-port-src 0 --mask-port-dst 65535 -t 3000\n") % (src, sport, src, 30000 + i))
PY
ip netns exec "$a" "$bin/ctsync" kernel insert --file "$work/masters.jsonl" >/dev/null
# shellcheck disable=SC2016
xargs -P 2 -L 1 ip netns exec "$a" "$bin/ctsync" <"$work/expect.args" >/dev/null 2>&1
made=$(ip netns exec "$a" conntrack -L expect 2>/dev/null | wc -l)
[ "$made" -eq "$n" ] || { echo "expectations: a holds $made of $n expectations" >&2; exit 1; }

for name in ct cd; do
    config "${name}a" 198.18.254.1 198.18.254.2 "${link}a" "Options { ExpectationSync on }" >"$work/${name}a.conf"
    config "${name}b" 198.18.254.2 198.18.254.1 "${link}b" "Options { ExpectationSync on }" >"$work/${name}b.conf"
done

# seconds until COMMAND's output counts TARGET (polled every 10 ms, at most 60 s), or "never".
# The count: with "-s expect" (the same layout from both daemons) the external expectation
# cache's "current active connections", else the output's lines.
lines_within() {
    python3 - "$@" <<'PY'
import re, subprocess, sys, time
target, command = int(sys.argv[1]), sys.argv[2:]
def count(out):
    if "-s" in command:
        active = re.findall(r"current active connections:\s+(\d+)", out)
        return int(active[1]) if len(active) > 1 else 0
    return len([l for l in out.splitlines() if l.strip()])
start = time.monotonic()
while time.monotonic() - start < 60:
    if count(subprocess.run(command, capture_output=True, text=True).stdout) >= target:
        print("%.3f" % (time.monotonic() - start)); sys.exit(0)
    time.sleep(0.01)
print("never")
PY
}

run() {  # name binary -> "bulk commit" seconds
    local name=$1 binary=$2 t0 bulk commit only logged
    ip netns exec "$b" conntrack -F >/dev/null 2>&1 || true
    ip netns exec "$b" conntrack -F expect >/dev/null 2>&1 || true
    bench_start_pair "$name" "$binary"
    t0=$(now)
    ip netns exec "$a" "$binary" -C "$work/${name}a.conf" -B >/dev/null
    bulk=$(lines_within "$n" ip netns exec "$b" "$binary" -C "$work/${name}b.conf" -s expect)
    [ "$bulk" = never ] || bulk=$(python3 -c "import sys, time; print('%.3f' % (time.time() - float(sys.argv[1])))" "$t0")
    t0=$(now)
    ip netns exec "$b" "$binary" -C "$work/${name}b.conf" -c >/dev/null 2>&1 || true
    commit=$(lines_within "$n" ip netns exec "$b" conntrack -L expect)
    [ "$commit" = never ] || commit=$(python3 -c "import sys, time; print('%.3f' % (time.time() - float(sys.argv[1])))" "$t0")
    # The expectations alone (their masters are there now): -c expect answers when it is done.
    ip netns exec "$b" conntrack -F expect >/dev/null 2>&1 || true
    t0=$(now)
    ip netns exec "$b" "$binary" -C "$work/${name}b.conf" -c expect >/dev/null 2>&1 || true
    only=$(python3 -c "import sys, time; print('%.3f' % (time.time() - float(sys.argv[1])))" "$t0")
    [ "$(ip netns exec "$b" conntrack -L expect 2>/dev/null | wc -l)" -eq "$n" ] || only=never
    # What the daemon itself says it took ("commit has taken X seconds", both log it so).
    logged=$(grep -o 'commit has taken [0-9.]* seconds' "$work/${name}b.log" | tail -1 | awk '{print $4}')
    kill "$pa" "$pb" 2>/dev/null || true
    wait "$pa" "$pb" 2>/dev/null || true
    echo "$bulk $commit $only ${logged:-never}"
}

read -r ct_bulk ct_commit ct_only ct_logged < <(run ct "$bin/ctsyncd")
read -r cd_bulk cd_commit cd_only cd_logged < <(run cd conntrackd)
ratio() { python3 -c "import sys; a, b = sys.argv[1:]; print('-' if 'never' in (a, b) else '%.2fx' % (float(a) / float(b)))" "$1" "$2"; }
printf '%s expectations (and their FTP masters), FTFW over UDP, one run\n' "$n"
printf '%-44s %10s %10s %8s\n' "" ctsyncd conntrackd ratio
printf '%-44s %10s %10s %8s\n' "-B on a until b's external cache holds all (s)" "$ct_bulk" "$cd_bulk" "$(ratio "$ct_bulk" "$cd_bulk")"
printf '%-44s %10s %10s %8s\n' "-c on b until b's kernel holds all (s)" "$ct_commit" "$cd_commit" "$(ratio "$ct_commit" "$cd_commit")"
printf '%-44s %10s %10s %8s\n' "-c expect on b, the expectations alone (s)" "$ct_only" "$cd_only" "$(ratio "$ct_only" "$cd_only")"
printf '%-44s %10s %10s %8s\n' "  the same, as the daemon logs it (s)" "$ct_logged" "$cd_logged" "$(ratio "$ct_logged" "$cd_logged")"
