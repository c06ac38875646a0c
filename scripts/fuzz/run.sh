#!/usr/bin/env bash
# Builds ctsync's libFuzzer harnesses (scripts/fuzz/*Fuzz.swift, with ASan) from the sources of
# the pure modules they need (no C library, no Package.swift target) and runs each for a bounded
# time. docs/fuzzing.md says what each harness feeds and checks.
#
#   scripts/fuzz/run.sh [HARNESS[,HARNESS...]|all] [SECONDS] [JOBS]
#       each named harness (or all of them) for SECONDS seconds (default 60) with JOBS jobs (default 1)
#   scripts/fuzz/run.sh SECONDS [JOBS]      (what CI runs: scripts/fuzz/run.sh 60)
#       all harnesses, SECONDS in total: each gets SECONDS divided by their number (at least 1)
#   scripts/fuzz/run.sh                     the same as scripts/fuzz/run.sh 60
#
# Harnesses: wire (SyncWireFuzz), frame (SyncFrameFuzz), stream (StreamFramerFuzz), node
# (SyncNodeFuzz), control (ControlRequestFuzz), config (ConfigFuzz); the file names work too.
#
# Output: .build-fuzz/modules/ (the modules' objects, shared and rebuilt only when a source
# changed) and, per harness, .build-fuzz/<harness>/: the fuzzer, corpus/ (kept between runs;
# scripts/fuzz/seeds/<harness>/ is copied in first), artifacts/ (crashing inputs),
# last-run.log. Before fuzzing, every seed is run once with CTSYNC_FUZZ_STRICT=1, which makes
# the harness reject an invalid seed. Exits non-zero if a harness failed to build, rejected a
# seed or found a crash. Ends with one summary line per harness. Needs swiftc (PATH or $SWIFTC).
# FUZZ_OUT moves .build-fuzz; FUZZ_OPT=-Onone builds without optimization (default -O);
# FUZZ_BUILD_JOBS limits the builds run at once (default: the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
script=$(pwd)/scripts/fuzz/run.sh

all_harnesses=(wire frame stream node control config)
usage() {
    sed -n '6,13p' "$script" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

selection=${1:-60}
if is_number "$selection"; then
    # The CI form: the time is shared by all harnesses.
    [ $# -le 2 ] || usage
    harnesses=("${all_harnesses[@]}")
    seconds=$((selection / ${#harnesses[@]}))
    [ "$seconds" -ge 1 ] || seconds=1
    jobs=${2:-1}
else
    [ $# -le 3 ] || usage
    harnesses=()
    IFS=, read -ra names <<<"$selection"
    for name in "${names[@]}"; do
        case "$name" in
        all) harnesses+=("${all_harnesses[@]}") ;;
        wire | SyncWireFuzz) harnesses+=(wire) ;;
        frame | SyncFrameFuzz) harnesses+=(frame) ;;
        stream | StreamFramerFuzz) harnesses+=(stream) ;;
        node | SyncNodeFuzz) harnesses+=(node) ;;
        control | ControlRequestFuzz) harnesses+=(control) ;;
        config | ConfigFuzz) harnesses+=(config) ;;
        *)
            echo "fuzz: unknown harness '$name' (wire, frame, stream, node, control, config, all)" >&2
            usage
            ;;
        esac
    done
    seconds=${2:-60}
    jobs=${3:-1}
    # Each once, in the order given.
    mapfile -t harnesses < <(printf '%s\n' "${harnesses[@]}" | awk '!seen[$0]++')
fi
is_number "$seconds" && is_number "$jobs" && [ "$jobs" -ge 1 ] || usage

out=${FUZZ_OUT:-.build-fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -z "${SWIFTC:-}" ]; then
    if command -v swiftc >/dev/null; then SWIFTC=swiftc; else SWIFTC=/opt/swift/usr/bin/swiftc; fi
fi
modules=$out/modules
mkdir -p "$modules"
# -O keeps every check Swift makes (bounds, overflow, preconditions) and runs the harnesses 4 to
# 17 times faster than -Onone; FUZZ_OPT=-Onone gives exact stacks for a crash.
flags=(-sanitize=fuzzer,address -parse-as-library -swift-version 6 "${FUZZ_OPT:--O}" -gline-tables-only -use-ld=lld -I "$modules")
# Other flags than last time: every module is built again.
if [ "$(cat "$modules/flags" 2>/dev/null)" != "${flags[*]}" ]; then
    rm -f "$modules"/*.o
    echo "${flags[*]}" >"$modules/flags"
fi

# What each harness is built from and fed.
harness_file() {
    case "$1" in
    wire) echo SyncWireFuzz ;;
    frame) echo SyncFrameFuzz ;;
    stream) echo StreamFramerFuzz ;;
    node) echo SyncNodeFuzz ;;
    control) echo ControlRequestFuzz ;;
    config) echo ConfigFuzz ;;
    esac
}
harness_modules() {
    case "$1" in
    wire | frame | stream) echo FlowModel SyncProtocol ;;
    node) echo FlowModel SyncProtocol SyncEngine ;;
    control) echo FlowModel SystemCalls ControlProtocol ;;
    config) echo FlowModel Configuration ;;
    esac
}
# A UDP datagram's payload for the wire decoder; a full datagram and its record header for the
# node; the control socket's request limit (ControlServer.requestLimit); for configuration files
# 16 KiB, seven times the largest example (conf/).
harness_max_len() {
    case "$1" in
    wire) echo 65507 ;;
    frame) echo 65536 ;;
    stream) echo 200000 ;;
    node) echo 65536 ;;
    control) echo 65536 ;;
    config) echo 16384 ;;
    esac
}
module_deps() {
    case "$1" in
    SyncProtocol | Configuration) echo FlowModel ;;
    SyncEngine) echo FlowModel SyncProtocol ;;
    ControlProtocol) echo FlowModel SystemCalls ;;
    esac
}

# Builds a module when its object is missing or older than one of its sources or its
# dependencies' objects (or the flags changed, above).
build_module() {
    local module=$1 dep
    local sources=()
    mapfile -t sources < <(find "Sources/$module" -name '*.swift' | LC_ALL=C sort)
    local object=$modules/$module.o stale=0 file
    if [ ! -f "$object" ] || [ ! -f "$modules/$module.swiftmodule" ]; then stale=1; fi
    if [ "$stale" = 0 ]; then
        for file in "${sources[@]}" $(for dep in $(module_deps "$module"); do echo "$modules/$dep.o"; done); do
            if [ "$file" -nt "$object" ]; then
                stale=1
                break
            fi
        done
    fi
    if [ "$stale" = 1 ]; then
        echo "fuzz: building $module (${#sources[@]} files)"
        "$SWIFTC" "${flags[@]}" -wmo -module-name "$module" -emit-module -emit-module-path "$modules/$module.swiftmodule" \
            -c "${sources[@]}" -o "$object" || return 1
        # swiftc leaves an output whose bytes did not change untouched: date it for the checks.
        touch "$object"
    fi
}

# Builds a harness's fuzzer into .build-fuzz/<harness>/ when it is missing or older than its
# source or a module object.
build_harness() {
    local harness=$1 name module
    name=$(harness_file "$harness")
    local dir=$out/$harness objects=() stale=0 file
    mkdir -p "$dir/corpus" "$dir/artifacts"
    for module in $(harness_modules "$harness"); do objects+=("$modules/$module.o"); done
    [ -x "$dir/$name" ] || stale=1
    for file in "scripts/fuzz/$name.swift" "${objects[@]}"; do
        if [ "$stale" = 0 ] && [ "$file" -nt "$dir/$name" ]; then stale=1; fi
    done
    if [ "$stale" = 1 ]; then
        echo "fuzz: building $name"
        "$SWIFTC" "${flags[@]}" -module-name "$name" "scripts/fuzz/$name.swift" "${objects[@]}" -o "$dir/$name" || return 1
    fi
}

# Builds the selected harnesses and the modules they need, up to FUZZ_BUILD_JOBS (default: the
# number of CPUs) at a time, each once its dependencies are built. Leaves done or failed in
# `state` for each.
declare -A state=()
build_all() {
    local items=() item dep
    add_item() {
        local dep
        [ -n "${state[$1]:-}" ] && return 0
        for dep in $2; do add_item "$dep" "$(module_deps "$dep")"; done
        state[$1]=pending
        items+=("$1")
    }
    for item in "${harnesses[@]}"; do add_item "harness:$item" "$(harness_modules "$item")"; done
    item_deps() { case "$1" in harness:*) harness_modules "${1#harness:}" ;; *) module_deps "$1" ;; esac; }
    build_item() { case "$1" in harness:*) build_harness "${1#harness:}" ;; *) build_module "$1" ;; esac; }
    local lanes=${FUZZ_BUILD_JOBS:-$(nproc 2>/dev/null || echo 1)} running=0 pid rc ready
    # `wait -n -p` needs bash 5.1; before it, one at a time (`items` lists dependencies first).
    if [ "${BASH_VERSINFO[0]}" -lt 5 ] || { [ "${BASH_VERSINFO[0]}" = 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then lanes=1; fi
    declare -A job=()
    while true; do
        for item in "${items[@]}"; do
            [ "${state[$item]}" = pending ] || continue
            ready=1
            for dep in $(item_deps "$item"); do
                case "${state[$dep]}" in
                failed) ready=failed ;;
                done) ;;
                *) [ "$ready" = failed ] || ready=0 ;;
                esac
            done
            if [ "$ready" = failed ]; then
                state[$item]=failed
            elif [ "$ready" = 1 ] && [ "$lanes" -le 1 ]; then
                if build_item "$item"; then state[$item]=done; else state[$item]=failed; fi
            elif [ "$ready" = 1 ] && [ "$running" -lt "$lanes" ]; then
                build_item "$item" &
                job[$!]=$item
                state[$item]=running
                running=$((running + 1))
            fi
        done
        [ "$running" -gt 0 ] || break
        rc=0
        wait -n -p pid || rc=$?
        if [ "$rc" = 0 ]; then state[${job[$pid]}]=done; else state[${job[$pid]}]=failed; fi
        running=$((running - 1))
    done
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
# Swift's crash backtracer and ASan's report get in each other's way; ASan's is the one we want.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}

# A corpus from before the harnesses had folders of their own belongs to the wire decoder.
if [ -d "$out/corpus" ] && [ ! -d "$out/wire/corpus" ]; then
    mkdir -p "$out/wire"
    mv "$out/corpus" "$out/wire/corpus"
    echo "fuzz: moved the old corpus (.build-fuzz/corpus) to $out/wire/corpus"
fi

build_all
summary=()
failed=0
for harness in "${harnesses[@]}"; do
    name=$(harness_file "$harness")
    dir=$out/$harness
    log=$dir/last-run.log
    if [ "${state[harness:$harness]}" != done ]; then
        summary+=("$(printf '%-8s %6s s %12s execs %7s inputs  %s' "$harness" 0 - - "BUILD FAILED")")
        failed=1
        continue
    fi

    # Seeds: each must be a valid input (the harness checks, strictly), then they join the corpus.
    seeds=()
    for seed in scripts/fuzz/seeds/"$harness"/*; do [ -f "$seed" ] && seeds+=("$seed"); done
    if [ ${#seeds[@]} -gt 0 ] && ! CTSYNC_FUZZ_STRICT=1 "$dir/$name" -artifact_prefix="$dir/seed-check-" "${seeds[@]}" >"$dir/seed-check.log" 2>&1; then
        echo "fuzz: $harness: a seed is not a valid input (log: $dir/seed-check.log):"
        grep -E "Running:|Fatal error|ERROR" "$dir/seed-check.log" | tail -4
        summary+=("$(printf '%-8s %6s s %12s execs %7s inputs  %s' "$harness" 0 - - "INVALID SEED")")
        failed=1
        continue
    fi
    [ ${#seeds[@]} -eq 0 ] || cp "${seeds[@]}" "$dir/corpus/"

    echo "fuzz: $harness ($name): ${seconds}s, $jobs job(s), -max_len=$(harness_max_len "$harness")"
    fuzz_flags=(-max_total_time="$seconds" -max_len="$(harness_max_len "$harness")" -timeout=25 -print_final_stats=1
        -artifact_prefix="$dir/artifacts/")
    marker=$dir/.run-started
    : >"$marker"
    start=$(date +%s)
    status=0
    if [ "$jobs" -gt 1 ]; then
        # libFuzzer writes each job's log to fuzz-<n>.log in the working directory.
        rm -f "$dir"/fuzz-*.log
        (cd "$dir" && "./$name" "${fuzz_flags[@]}" -jobs="$jobs" -workers="$jobs" corpus >/dev/null 2>&1) || status=$?
        cat "$dir"/fuzz-*.log >"$log" 2>/dev/null || : >"$log"
        rm -f "$dir"/fuzz-*.log
    else
        # The fuzzer's status, not the filter's (`... || true` would leave PIPESTATUS to `true`).
        set +e
        "$dir/$name" "${fuzz_flags[@]}" "$dir/corpus" 2>&1 | tee "$log" |
            grep --line-buffered -E "^#[0-9]+[[:space:]]+(pulse|DONE)|ERROR|Fatal error|Fuzz:|^stat::" |
            sed -u "s/^/  $harness: /"
        status=${PIPESTATUS[0]}
        set -e
    fi
    elapsed=$(($(date +%s) - start))
    executions=$(awk '/^stat::number_of_executed_units:/ { n += $2 } END { print n + 0 }' "$log")
    inputs=$(find "$dir/corpus" -type f | wc -l)
    # crash-, timeout-, oom- and leak- inputs fail the run; slow-unit- ones (over 10 s) are named.
    found=$(find "$dir/artifacts" -type f -newer "$marker" ! -name 'slow-unit-*' | LC_ALL=C sort | tr '\n' ' ')
    slow=$(find "$dir/artifacts" -type f -newer "$marker" -name 'slow-unit-*' | LC_ALL=C sort | tr '\n' ' ')
    rm -f "$marker"
    if [ -n "$found" ]; then
        result="CRASH: $found"
        failed=1
    elif [ "$status" -ne 0 ]; then
        result="FAILED (exit status $status, see $log)"
        failed=1
    else
        result=ok
    fi
    [ -z "$slow" ] || result="$result; slow inputs: $slow"
    summary+=("$(printf '%-8s %6d s %12d execs %7d inputs  %s' "$harness" "$elapsed" "$executions" "$inputs" "$result")")
done

echo "fuzz: summary (harness, seconds, executions, corpus, result); logs in $out/<harness>/last-run.log"
printf '%s\n' "${summary[@]}"
exit "$failed"
