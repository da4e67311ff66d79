#!/usr/bin/env bash
# Unpack benchmark: a Debian bookworm minbase image (debootstrap, apt caches
# removed, packed with umoci as one gzip layer) unpacked by Gantry, by
# `umoci unpack` and by GNU `tar -xzf`, measured in the same run with
# hyperfine, plus each tool's peak memory.
#
#   sudo Benchmarks/unpack.sh [--runs N] [--disk]
#
# Targets live on a tmpfs, so that the figures measure the unpackers rather
# than this machine's disk; --disk also measures on the work directory's
# file system. The rootfs and layout are cached in $GANTRY_BENCH_DIR
# (default /var/tmp/gantry-bench) between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
disk=false
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --disk) disk=true; shift ;;
        *) echo "usage: $0 [--runs N] [--disk]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (debootstrap, device nodes, tmpfs)" >&2; exit 1; }
for tool in debootstrap umoci hyperfine tar python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}"
source Benchmarks/lib/bookworm.sh
bookworm_layout "$work"
layout="$work/layout"

echo "== building gantry (release)"
gantry="$(gantry_release)"
state="$work/state"
rm -rf "$state"
"$gantry" --root "$state" image import-layout "$layout:bookworm" --name bench:bookworm >/dev/null
layer="$(python3 - "$state" <<'PY'
import json, sqlite3, sys
state = sys.argv[1]
digest = sqlite3.connect(f"{state}/gantry.sqlite").execute("select digest from image").fetchone()[0]
manifest = json.load(open(f"{state}/blobs/sha256/{digest.split(':')[1]}"))
print(f"{state}/blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1])
PY
)"
echo "layer: $(du -h "$layer" | cut -f1) compressed, $(gzip -dc "$layer" | wc -c | numfmt --to=iec) uncompressed, $(gzip -dc "$layer" | tar -t | wc -l) entries"

measure() {
    local label="$1" base="$2"
    local out="$base/out"
    echo "== unpack into $label ($base)"
    hyperfine --warmup 1 --runs "$runs" --export-json "$work/$label.json" \
        --prepare "rm -rf $out; mkdir -p $out" \
        -n "GNU tar -xzf" "tar -xzf $layer -C $out" \
        -n "gantry image unpack" "$gantry --root $state image unpack bench:bookworm $out/rootfs" \
        -n "umoci unpack" "umoci unpack --image $layout:bookworm $out/bundle" >/dev/null
    local peaks=()
    for command in "tar -xzf $layer -C $out" "$gantry --root $state image unpack bench:bookworm $out/rootfs" \
                   "umoci unpack --image $layout:bookworm $out/bundle"; do
        local peak=0
        for _ in 1 2 3; do
            rm -rf "$out"; mkdir -p "$out"
            local kib
            kib=$(/usr/bin/time -f %M sh -c "$command >/dev/null" 2>&1 | tail -1)
            [ "$kib" -gt "$peak" ] && peak=$kib
        done
        peaks+=("$peak")
    done
    rm -rf "$out"
    python3 - "$work/$label.json" "${peaks[@]}" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
peaks = [int(kib) for kib in sys.argv[2:]]
tar = results[0]["mean"]
print(f"| tool | mean ± σ | ratio to GNU tar | peak RSS |")
print(f"|---|---|---|---|")
for result, peak in zip(results, peaks):
    print(f"| {result['command']} | {result['mean'] * 1000:.0f} ± {result['stddev'] * 1000:.0f} ms "
          f"| {result['mean'] / tar:.2f}× | {peak / 1024:.1f} MiB |")
PY
}

tmpfs="$work/tmpfs"
mkdir -p "$tmpfs"
mount -t tmpfs -o size=2g gantry-bench "$tmpfs"
trap 'umount "$tmpfs" 2>/dev/null || true' EXIT
measure tmpfs "$tmpfs"
umount "$tmpfs"
trap - EXIT
if $disk; then measure disk "$work/disk"; fi
