#!/usr/bin/env bash
# Reconciler benchmark: self-healing and convergence (gantry-bench heal and
# converge), with crun measured in the same run as the reference.
#
#   sudo Benchmarks/reconciler.sh [--kills N] [--replicas N]
#
#   GANTRY_BENCH_BIN=DIR uses the gantry-bench in DIR instead of building one
#   (built from another commit, for a before/after).
#
# - heal: SIGKILL of a running replica (a different one each time) until its
#   replacement runs: the replacement's startedAt minus the victim's
#   finishedAt, p50 and p99. Reference: a shell loop restarting `crun run`,
#   SIGKILLed the same way, observed by polling `crun state` (so it includes
#   the polling's cost; no orchestrator of the others runs here).
# - converge: a service of N replicas from nothing until all run and are
#   available. Reference: N `crun run -d` started at once, until all run.
#
# The state roots are on tmpfs, where crun keeps its state. On a hybrid
# cgroup host crun runs inside `unshare -m` with /sys/fs/cgroup/unified
# unmounted, so that it uses the v1 controllers as Gantry does.
set -euo pipefail
cd "$(dirname "$0")/.."

kills=100
replicas=100
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) kills="$2"; shift 2 ;;
        --replicas) replicas="$2"; shift 2 ;;
        *) echo "usage: $0 [--kills N] [--replicas N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root" >&2; exit 1; }
for tool in crun python3 unshare; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done
source Benchmarks/lib/busybox.sh

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}/reconciler"
state="/dev/shm/gantry-bench-reconciler-$$"
rm -rf "$work" && mkdir -p "$work" "$state"
cleanup() {
    pkill -f "gb-heal-loop" 2>/dev/null || true
    for id in $(crun list -q 2>/dev/null | grep '^gb-' || true); do crun delete -f "$id" >/dev/null 2>&1 || true; done
    rm -rf "$work" "$state"
}
trap cleanup EXIT

echo "== busybox root file system and a crun bundle running sleep"
rootfs="$work/bundle/rootfs"
busybox_rootfs "$rootfs" sh sleep
(cd "$work/bundle" && crun spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/bin/sleep", "600"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"), indent=1)
PY

source Benchmarks/lib/bench-binary.sh

peer() {
    if grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo; then
        unshare -m sh -c "umount -l /sys/fs/cgroup/unified && $1"
    else
        sh -c "$1"
    fi
}
value() { awk -v key="$1:" '$1 == key { print $2 }'; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

echo "== heal: $kills kills of 10 replicas"
gantry_heal="$("$bench" heal --rootfs "$rootfs" --kills "$kills" --root "$state/heal")"
echo "$gantry_heal" | sed 's/^/   gantry: /'
crun_heal="$(peer "python3 - '$work/bundle' $kills" <<'PY'
import json, os, signal, subprocess, sys, time
bundle, kills = sys.argv[1], int(sys.argv[2])
loop = subprocess.Popen(["bash", "-c", "exec -a gb-heal-loop sh -c 'while :; do crun run --bundle %s gb-heal >/dev/null 2>&1; done'" % bundle])
def state():
    out = subprocess.run(["crun", "state", "gb-heal"], capture_output=True, text=True)
    if out.returncode != 0: return None
    s = json.loads(out.stdout)
    return s["pid"] if s.get("status") == "running" else None
def wait_new(old):
    while True:
        pid = state()
        if pid and pid != old: return pid
        time.sleep(0.0005)
times = []
pid = wait_new(None)
for _ in range(kills):
    start = time.monotonic()
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        # It ended between `crun state` and the kill: time the next one.
        pid = wait_new(pid)
        continue
    pid = wait_new(pid)
    times.append((time.monotonic() - start) * 1000)
loop.kill()
subprocess.run(["crun", "delete", "-f", "gb-heal"], capture_output=True)
times.sort()
print("%.2f %.2f" % (times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]))
PY
)"
read -r crun_heal_p50 crun_heal_p99 <<<"$crun_heal"
echo "   crun restart loop: p50 $crun_heal_p50 ms, p99 $crun_heal_p99 ms"

echo "== converge: $replicas replicas from nothing"
gantry_converge="$("$bench" converge --rootfs "$rootfs" --replicas "$replicas" --root "$state/converge")"
echo "$gantry_converge" | sed 's/^/   gantry: /'
crun_converge="$(peer "
    start=\$(date +%s%N)
    for i in \$(seq $replicas); do crun run -d --bundle $work/bundle gb-conv-\$i >/dev/null 2>&1 & done
    wait
    echo \$(( (\$(date +%s%N) - start) / 1000000 ))
    for i in \$(seq $replicas); do crun delete -f gb-conv-\$i >/dev/null 2>&1 & done
    wait
")"
echo "   crun: $replicas containers running after $crun_converge ms"

heal_p50="$(echo "$gantry_heal" | value heal_p50_ms)"
heal_p99="$(echo "$gantry_heal" | value heal_p99_ms)"
converge="$(echo "$gantry_converge" | value "converge_${replicas}_ms")"
echo
echo "== summary (ratios against crun measured in this run; lower is better)"
echo "heal_p50: $heal_p50 ms ($(ratio "$heal_p50" "$crun_heal_p50")x a crun restart loop)"
echo "heal_p99: $heal_p99 ms ($(ratio "$heal_p99" "$crun_heal_p99")x)"
echo "converge_$replicas: $converge ms ($(ratio "$converge" "$crun_converge")x crun run -d of $replicas at once)"
