#!/usr/bin/env bash
# Pull benchmark: the Debian bookworm minbase image (one 49 MiB gzip layer)
# pulled from Debian's docker-registry on 127.0.0.1 into a fresh state root
# by Gantry, and copied by `skopeo copy docker://… oci:…` into a fresh
# layout, alternating the two, with each run's time and peak memory.
#
#   sudo Benchmarks/pull.sh [--runs N]
#
# The image is made and cached as for Benchmarks/unpack.sh in
# $GANTRY_BENCH_DIR (default /var/tmp/gantry-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (debootstrap)" >&2; exit 1; }
for tool in debootstrap umoci skopeo docker-registry python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}"
source Benchmarks/lib/bookworm.sh
bookworm_layout "$work"
echo "== building gantry (release)"
gantry="$(gantry_release)"

registry_dir="$work/registry"
rm -rf "$registry_dir" && mkdir -p "$registry_dir"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$registry_dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $registry_dir/storage
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$registry_dir/config.yml" >"$registry_dir/registry.log" 2>&1 &
registry_pid=$!
cleanup() {
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    rm -rf "$registry_dir" "$work/pull-gantry" "$work/pull-skopeo"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
done
image="127.0.0.1:$port/bench/bookworm:12"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:bookworm" "docker://$image"
echo "== pulling $image, $runs runs each, alternating"

python3 - "$runs" "$gantry" "$image" "$work" <<'PY'
import shutil, statistics, subprocess, sys, time

runs, gantry, image, work = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
commands = {
    "gantry image pull": [gantry, "--root", f"{work}/pull-gantry", "image", "pull", image],
    "skopeo copy docker:// oci:": ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}", f"oci:{work}/pull-skopeo:12"],
}
targets = {"gantry image pull": f"{work}/pull-gantry", "skopeo copy docker:// oci:": f"{work}/pull-skopeo"}
times = {name: [] for name in commands}
peaks = {name: 0 for name in commands}

def once(name):
    shutil.rmtree(targets[name], ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M"] + commands[name], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{name} failed: {result.stderr}")
    return seconds, int(result.stderr.strip().splitlines()[-1])

for name in commands:  # warm-up
    once(name)
order = list(commands)
for run in range(runs):
    for name in (order if run % 2 == 0 else reversed(order)):
        seconds, kib = once(name)
        times[name].append(seconds)
        peaks[name] = max(peaks[name], kib)

skopeo = statistics.mean(times["skopeo copy docker:// oci:"])
print("| tool | mean ± σ | ratio to skopeo | peak RSS |")
print("|---|---|---|---|")
for name in commands:
    mean = statistics.mean(times[name])
    sigma = statistics.stdev(times[name]) if len(times[name]) > 1 else 0
    print(f"| {name} | {mean * 1000:.0f} ± {sigma * 1000:.0f} ms | {mean / skopeo:.2f}× | {peaks[name] / 1024:.1f} MiB |")
PY
