#!/usr/bin/env bash
# Runtime benchmark: Gantry's in-process launches (gantry-bench) against
# crun and runc on the same busybox root file system, in the same run.
#
#   sudo Benchmarks/runtime.sh [--runs N] [--burst N]
#
#   GANTRY_BENCH_BIN=DIR uses the gantry-bench in DIR instead of building one
#   (built from another commit, for a before/after).
#
# - start: create + start + wait + delete of `true`. Gantry: in-process,
#   from an image (an overlay of its layer over a fresh upper directory),
#   with the state root on tmpfs (/run, where crun and runc keep their
#   state) and, for reference, on the disk. crun and runc: `run` of a
#   bundle, timed by hyperfine.
# - burst: N containers running `sleep` started at once, time until all
#   run, then the time to remove them all. Gantry first starts and removes
#   one container, as a long-running server has (the first compiles the
#   seccomp profile); each crun is a new process anyway.
# - memory: this process's RSS growth per running container, and the
#   helper processes per container (none).
#
# On a hybrid cgroup host crun and runc run inside `unshare -m` with
# /sys/fs/cgroup/unified unmounted, so that they use the v1 controllers as
# Gantry does.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=200
burst=50
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --burst) burst="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--burst N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root" >&2; exit 1; }
for tool in crun runc hyperfine python3 unshare; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done
source Benchmarks/lib/busybox.sh

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}/runtime"
tmpfs_root="/dev/shm/gantry-bench-$$"
rm -rf "$work" && mkdir -p "$work"
cleanup() {
    for id in $(crun list -q 2>/dev/null | grep '^gb-' || true); do crun delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(runc list -q 2>/dev/null | grep '^gb-' || true); do runc delete -f "$id" >/dev/null 2>&1 || true; done
    rm -rf "$work" "$tmpfs_root"
}
trap cleanup EXIT

echo "== busybox root file system and bundle"
rootfs="$work/bundle/rootfs"
busybox_rootfs "$rootfs" sh true sleep
(cd "$work/bundle" && crun spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/bin/true"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"), indent=1)
PY
# The same bundle running sleep, for the burst.
mkdir -p "$work/sleep"
ln -s ../bundle/rootfs "$work/sleep/rootfs"
python3 - "$work/bundle/config.json" "$work/sleep/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["process"]["args"] = ["/bin/sleep", "60"]
json.dump(config, open(sys.argv[2], "w"), indent=1)
PY

source Benchmarks/lib/bench-binary.sh

# Runs a command where crun and runc see only the v1 controllers.
peer() {
    if grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo; then
        unshare -m sh -c "umount -l /sys/fs/cgroup/unified && $1"
    else
        sh -c "$1"
    fi
}

value() { awk -v key="$1:" '$1 == key { print $2 }'; }

echo "== start: create + start + wait + delete of true, $runs runs each"
mkdir -p "$tmpfs_root"
gantry_tmpfs="$("$bench" start --rootfs "$rootfs" --runs "$runs" --root "$tmpfs_root/state")"
echo "$gantry_tmpfs" | sed 's/^/   gantry (state on tmpfs): /'
gantry_disk="$("$bench" start --rootfs "$rootfs" --runs "$runs" --root "$work/state")"
echo "$gantry_disk" | sed 's/^/   gantry (state on disk):  /'
peer "hyperfine -N --warmup 10 --runs $runs --export-json $work/peers.json \
    'crun run --bundle $work/bundle gb-crun' 'runc run --bundle $work/bundle gb-runc'" >/dev/null
read -r crun_median runc_median < <(python3 - "$work/peers.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print(" ".join("%.3f" % (r["median"] * 1000) for r in results))
PY
)
tmpfs_median="$(echo "$gantry_tmpfs" | value start_median)"
disk_median="$(echo "$gantry_disk" | value start_median)"
echo "   crun run: median $crun_median ms; runc run: median $runc_median ms"

echo "== burst: $burst containers running sleep, started at once"
gantry_burst="$("$bench" burst --rootfs "$rootfs" --count "$burst" --root "$tmpfs_root/state")"
echo "$gantry_burst" | sed 's/^/   gantry: /'
crun_burst="$(peer "
    start=\$(date +%s%N)
    for i in \$(seq $burst); do crun run -d --bundle $work/sleep gb-burst-\$i >/dev/null 2>&1 & done
    wait
    started=\$(date +%s%N)
    for i in \$(seq $burst); do crun delete -f gb-burst-\$i >/dev/null 2>&1 & done
    wait
    echo \$(( (started - start) / 1000000 )) \$(( (\$(date +%s%N) - started) / 1000000 ))
")"
read -r crun_burst_start crun_cleanup <<<"$crun_burst"
echo "   crun: all running after $crun_burst_start ms, removed in $crun_cleanup ms"

echo "== memory: host memory per running container"
gantry_memory="$("$bench" memory --rootfs "$rootfs" --count 100 --root "$tmpfs_root/state")"
echo "$gantry_memory" | sed 's/^/   gantry: /'

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
burst_start="$(echo "$gantry_burst" | value burst_start)"
echo
echo "== summary (ratios against crun measured in this run; lower is better)"
echo "start_median_tmpfs: $tmpfs_median ms ($(ratio "$tmpfs_median" "$crun_median")x crun, $(ratio "$tmpfs_median" "$runc_median")x runc)"
echo "start_median_disk: $disk_median ms ($(ratio "$disk_median" "$crun_median")x crun)"
echo "burst_start: $burst_start ms ($(ratio "$burst_start" "$crun_burst_start")x crun)"
echo "$gantry_memory" | grep -E '^(memory_per_container|helper_processes):'
