#!/usr/bin/env bash
# GantryTesting against Testcontainers (Python) with Docker, on the same
# busybox web server image (one OCI layout, loaded into both), in one run.
#
#   sudo Benchmarks/testing.sh [--rounds N] [--sequence N]
#
#   GANTRY_BENCH_BIN=DIR uses the gantry-bench in DIR instead of building one.
#
# - ready: from the call that starts the container to ready (a wait on its
#   port, then one GET through the mapped host port), then to removed.
#   Medians of N rounds each, in two alternating halves.
# - sequence: N throwaway containers one after another, each started,
#   waited for, fetched from and removed.
# - kill: a process that started two servers is killed with SIGKILL; what
#   runs right after, and 2 s later. Testcontainers runs without Ryuk (its
#   image cannot be pulled here), so its containers stay; with Ryuk they go
#   after its timeout.
#
# Docker runs as a private dockerd (own data root and socket), stopped at
# the end; docker.io and testcontainers (in /opt/gantry-testcontainers) are
# installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=10
sequence=20
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --sequence) sequence="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--sequence N]" >&2; exit 64 ;;
    esac
done

if ! command -v dockerd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null
fi
python=/opt/gantry-testcontainers/bin/python
if [ ! -x "$python" ]; then
    python3 -m venv /opt/gantry-testcontainers
    "$python" -m pip install --quiet testcontainers
fi

source Benchmarks/lib/busybox.sh
source Benchmarks/lib/docker.sh
source Benchmarks/lib/bench-binary.sh

work="$(mktemp -d /tmp/gantry-bench-testing.XXXXXX)"
held=""
cleanup() {
    [ -n "$held" ] && kill -9 "$held" 2>/dev/null || true
    docker_stop "$work/docker" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== the busybox web server image, as one OCI layout"
busybox_rootfs "$work/rootfs" sh mkdir echo httpd
umoci init --layout "$work/layout"
umoci new --image "$work/layout:bench"
umoci unpack --image "$work/layout:bench" "$work/bundle" >/dev/null
cp -a "$work/rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$work/layout:bench" "$work/bundle"
rm -rf "$work/bundle"

echo "== a private dockerd, with the image loaded"
docker_start "$work/docker"
docker_load_oci "$work/layout" bench busybox:bench

half=$(( (rounds + 1) / 2 ))
for pass in 1 2; do
    echo "== pass $pass: GantryTesting"
    "$bench" testing --layout "$work/layout" --root "$work/gantry" --rounds "$half" --sequence "$sequence" --output "$work/gantry-$pass.json" >/dev/null
    echo "== pass $pass: Testcontainers with Docker"
    TESTCONTAINERS_RYUK_DISABLED=true "$python" Benchmarks/lib/testcontainers_bench.py --image busybox:bench \
        --rounds "$half" --sequence "$sequence" --output "$work/testcontainers-$pass.json" >/dev/null
done

echo "== SIGKILL of a process with two servers"
"$bench" testing --layout "$work/layout" --root "$work/gantry" --hold 2 > "$work/held" &
held=$!
for _ in $(seq 200); do [ -s "$work/held" ] && break; sleep 0.05; done
pids="$(cat "$work/held")"
kill -9 "$held"; wait "$held" 2>/dev/null || true; held=""
running() { local n=0; for pid in $pids; do grep -qs '^State:.[^Z]' "/proc/$pid/status" && n=$((n + 1)); done; echo $n; }
sleep 0.1
gantry_now=$(running)
sleep 2
gantry_later=$(running)
# The next session removes what is left on the disk.
"$bench" testing --layout "$work/layout" --root "$work/gantry" --rounds 1 --sequence 0 >/dev/null
TESTCONTAINERS_RYUK_DISABLED=true "$python" Benchmarks/lib/testcontainers_bench.py --image busybox:bench --kill-test --output "$work/testcontainers-kill.json" >/dev/null

python3 - "$work" "$gantry_now" "$gantry_later" <<'PY'
import json, statistics, sys
work, gantry_now, gantry_later = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def merged(tool):
    runs = [json.load(open(f"{work}/{tool}-{n}.json")) for n in (1, 2)]
    return {
        "tool": runs[0]["tool"],
        "ready": statistics.median(sum((r["ready_ms"] for r in runs), [])),
        "removed": statistics.median(sum((r["removed_ms"] for r in runs), [])),
        "sequence": statistics.median(r["sequence_total_ms"] for r in runs),
        "count": runs[0]["sequence_count"],
    }
g, t = merged("gantry"), merged("testcontainers")
kill = json.load(open(f"{work}/testcontainers-kill.json"))
print()
print(f"{'':28} {'GantryTesting':>16} {'Testcontainers':>16} {'ratio':>8}")
print(f"{'call to ready (median)':28} {g['ready']:13.1f} ms {t['ready']:13.1f} ms {g['ready'] / t['ready']:7.3f}x")
print(f"{'ready to removed (median)':28} {g['removed']:13.1f} ms {t['removed']:13.1f} ms {g['removed'] / t['removed']:7.3f}x")
print(f"{'sequence of ' + str(g['count']):28} {g['sequence']:13.0f} ms {t['sequence']:13.0f} ms {g['sequence'] / t['sequence']:7.3f}x")
print(f"{'running after SIGKILL':28} {gantry_now:>16} {kill['left_after_kill']:>16}")
print(f"{'running 2 s later':28} {gantry_later:>16} {kill['left_after_2s']:>16}")
print()
print(f"Testcontainers: {t['tool']}")
PY
