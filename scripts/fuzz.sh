#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer targets of Fuzz/ (every parser that reads
# bytes Gantry did not write: image references, manifests, indexes and
# configurations, compose files, seccomp profiles, DNS queries, registry
# challenges and Link headers, state-root records, layer archives) with
# AddressSanitizer, and runs each for a bounded time from its corpus in
# Fuzz/Corpus/<target>.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20; CI runs 20)
#   scripts/fuzz.sh --merge SECONDS [TARGET...]        (adds what was found to the corpus)
#
# The corpus in the repository is only read unless --merge is given; new
# inputs go to a scratch directory. A crash, a leak, a timeout (10 s on one
# input) or running out of memory (2 GiB) stops the script with the
# input's path; copy that input into the target's corpus, where the test
# suite (FuzzCorpusTests) replays it in every run, and fix the parser.
# Prints one line per target (runs, corpus size) and a closing line.
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
if [ "${1:-}" = "--merge" ]; then merge=1; shift; fi
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(ls Fuzz/Corpus))
fi

build_log="$(mktemp)"
if ! swift build --package-path Fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address >"$build_log" 2>&1; then
    cat "$build_log" >&2
    exit 1
fi
rm -f "$build_log"
binary="$(swift build --package-path Fuzz --scratch-path .build-fuzz --show-bin-path)/GantryFuzz"

work="$(mktemp -d /tmp/gantry-fuzz-XXXXXX)"
trap 'rm -rf "$work"' EXIT
total_runs=0
crashes=0
for target in "${targets[@]}"; do
    corpus="Fuzz/Corpus/$target"
    [ -d "$corpus" ] || { echo "fuzz: no corpus directory $corpus" >&2; exit 1; }
    mkdir -p "$work/$target/new" "$work/$target/artifacts"
    log="$work/$target/log"
    status=0
    GANTRY_FUZZ_TARGET="$target" ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
        "$binary" "$work/$target/new" "$corpus" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$work/$target/artifacts/" >"$log" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    runs="${runs:-0}"
    total_runs=$((total_runs + runs))
    found="$(ls "$work/$target/new" | wc -l)"
    if [ "$status" -ne 0 ]; then
        crashes=$((crashes + 1))
        tail -40 "$log" >&2
        for artifact in "$work/$target/artifacts"/*; do
            [ -e "$artifact" ] || continue
            mkdir -p fuzz-artifacts
            cp "$artifact" "fuzz-artifacts/$target-$(basename "$artifact")"
            echo "fuzz: $target failed on the input saved as fuzz-artifacts/$target-$(basename "$artifact")" >&2
        done
        echo "fuzz: $target: failed (exit $status) after $runs runs" >&2
        continue
    fi
    echo "fuzz: $target: $runs runs in ${seconds} s, $found new inputs found"
    if [ "$merge" -eq 1 ] && [ "$found" -gt 0 ]; then
        GANTRY_FUZZ_TARGET="$target" "$binary" -merge=1 "$corpus" "$work/$target/new" >/dev/null 2>&1
        echo "fuzz: $target: corpus now $(ls "$corpus" | wc -l) inputs"
    fi
done
echo "fuzz: ${#targets[@]} targets, $total_runs runs, $crashes failed"
[ "$crashes" -eq 0 ]
