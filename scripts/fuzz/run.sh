#!/usr/bin/env bash
# Builds the SyncWire libFuzzer harness (scripts/fuzz/SyncWireFuzz.swift, with ASan) against the
# FlowModel and SyncProtocol sources (no C library), and runs it for a bounded time.
#
#   scripts/fuzz/run.sh [SECONDS] [JOBS]     defaults: 60 seconds, 1 job
#
# Output goes to .build-fuzz/ (objects, the fuzzer, its corpus, crash artifacts); the corpus is
# kept between runs. Exits non-zero if the fuzzer found a crash (the input is in
# .build-fuzz/artifacts/). Needs swiftc (PATH or $SWIFTC) only.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
jobs=${2:-1}
out=${FUZZ_OUT:-.build-fuzz}
if [ -z "${SWIFTC:-}" ]; then
    if command -v swiftc >/dev/null; then SWIFTC=swiftc; else SWIFTC=/opt/swift/usr/bin/swiftc; fi
fi
mkdir -p "$out/obj" "$out/corpus" "$out/artifacts"

flags=(-sanitize=fuzzer,address -parse-as-library -swift-version 6 -Onone -gline-tables-only -use-ld=lld -I "$out/obj")

echo "fuzz: building FlowModel, SyncProtocol and the harness in $out"
"$SWIFTC" "${flags[@]}" -wmo -module-name FlowModel -emit-module -emit-module-path "$out/obj/FlowModel.swiftmodule" \
    -c Sources/FlowModel/*.swift -o "$out/obj/FlowModel.o"
"$SWIFTC" "${flags[@]}" -wmo -module-name SyncProtocol -emit-module -emit-module-path "$out/obj/SyncProtocol.swiftmodule" \
    -c Sources/SyncProtocol/*.swift -o "$out/obj/SyncProtocol.o"
"$SWIFTC" "${flags[@]}" -module-name SyncWireFuzz scripts/fuzz/SyncWireFuzz.swift \
    "$out/obj/FlowModel.o" "$out/obj/SyncProtocol.o" -o "$out/SyncWireFuzz"

# Seeds: messages conntrackd 1.4.7 sent (docs/protocol.md), an expectation, control messages.
seeds=(
    100000546b062f4a000c0000c6120001c6120002000800050000000c0005000206000000000800039c4000500005000403000000000800060000012c00080007000000070010001f000000000000000000000000
    100000746b06deff000c0000c6120001c612000200080005000001b80005000206000000000800039c4a00150005000403000000000800060000012c00080007000000100008000cc61209090008000dc61207070006000ed00700000006000f490800000010001f000000000000000000000000
    100000806b06df090024000120010db800000000000000000000000120010db80000000000000000000000020008000500000198000500020600000000080003138901bb0005000403000000000800060000006400080007000000000014001d20010db80000000000000000000000990010001f000000000000000000000000
    100000746b06df0a0024000120010db800000000000000000000000120010db80000000000000000000000020008000500000008000500023a000000000500168000000000050017000000000006001834120000000800060000001e00080007000000000010001f000000000000000000000000
    100000786b06e1db000c0000c6120001c6120015000800050000204e0005000206000000000800039c45001500050004030000000008000600000bb80008000700000000001c0010000003e80000000000000004000007d000000000000000000008001b667470000010001f000000000000000000000000
    100000606b06e1da000c0000c6120001c6120002000800050000000800050002110000000008000300010002000800060000006400080007000000030014001c000000210000000000000000800000100010001f000000000000000000000000
    100000646b06defe000c0000c6120001c6120002000800050000000800050002840000000008000317701b58000500110400000000080012000000000008001300000000000800060000006400080007000000000010001f000000000000000000000000
    13000074000000050000c0000c6120001c61200020005000206000000000800039c400015000c0004c6120001c61200020005000606000000000800070000138800
    1a0800106b062f4b0000007d000000831a1000086b06ddac1a2200100000ff00000000000000000
)
i=0
for seed in "${seeds[@]}"; do
    # Odd-length strings lose their last digit; bash printf turns \xHH into bytes.
    printf "$(printf '%s' "${seed:0:$(( ${#seed} / 2 * 2 ))}" | sed 's/../\\x&/g')" >"$out/corpus/seed-$i"
    i=$((i + 1))
done

echo "fuzz: running for ${seconds}s with $jobs job(s)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
# Swift's crash backtracer and ASan's report get in each other's way; ASan's is the one we want.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}
start=$(date +%s)
status=0
if [ "$jobs" -gt 1 ]; then
    "$out/SyncWireFuzz" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
        -jobs="$jobs" -workers="$jobs" "$out/corpus" || status=$?
    cat fuzz-*.log >"$out/last-run.log" 2>/dev/null && rm -f fuzz-*.log
else
    "$out/SyncWireFuzz" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
        "$out/corpus" 2>&1 | tee "$out/last-run.log" | grep -E "^#[0-9]+[[:space:]]+(pulse|DONE)|ERROR|SyncWireFuzz:|stat::" || true
    status=${PIPESTATUS[0]}
fi
echo "fuzz: ran $(($(date +%s) - start))s, exit status $status, corpus $(ls "$out/corpus" | wc -l) inputs, log $out/last-run.log"
if ls "$out"/artifacts/crash-* >/dev/null 2>&1; then
    echo "fuzz: crash inputs:"
    ls -l "$out"/artifacts/crash-*
fi
exit "$status"
