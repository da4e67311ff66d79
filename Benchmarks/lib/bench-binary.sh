# Sets $bench to the gantry-bench to measure: the one in $GANTRY_BENCH_BIN
# when set (built from another commit, for a before/after), else a release
# build of this checkout's.
if [ -n "${GANTRY_BENCH_BIN:-}" ]; then
    bench="$GANTRY_BENCH_BIN/gantry-bench"
else
    echo "== building gantry-bench (release)"
    swift build -c release --product gantry-bench >/dev/null
    bench="$(swift build -c release --show-bin-path)/gantry-bench"
fi
