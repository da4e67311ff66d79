#!/usr/bin/env bash
# Networking benchmark: Gantry's bridge networks and published ports
# against podman's (netavark when Debian has it), in the same run, on the
# same busybox root file system.
#
#   sudo Benchmarks/network.sh [--runs N] [--transfers N] [--size-mib N]
#
# - reachable: create + start of busybox `httpd -f -p 80` with port 80
#   published, timed until an HTTP GET on 127.0.0.1:<host port> answers.
#   Gantry in-process (`gantry-bench port`: host port 0, read from the
#   record) and through its CLI (`gantry run -d --network … -p HOST:80`),
#   against `podman run -d --network … -p HOST:80`, alternating, each run
#   on a fresh host port. Removal follows every run and is timed apart.
# - throughput: SIZE MiB sent from the host over TCP to one container's
#   published port on 127.0.0.1, and directly to its address on the
#   bridge, alternating; the receiver is busybox `nc -l -e dd` in the
#   container, the sender python3 on the host; median of the transfers.
#
# Every address contacted is 127.0.0.1 or a container's address on a
# bridge this script made. State lives in $GANTRY_BENCH_DIR/network
# (default /var/tmp/gantry-bench/network) and podman's in its own root
# there, all removed on exit. GANTRY_SCRATCH_PATH chooses the build
# folder (default .build); GANTRY_BENCH_PREBUILT=1 uses the binaries
# already built there, and GANTRY_BENCH_BIN=DIR those in DIR (built from
# another commit, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20
transfers=5
size_mib=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --transfers) transfers="$2"; shift 2 ;;
        --size-mib) size_mib="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--transfers N] [--size-mib N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root" >&2; exit 1; }

echo "== packages"
packages=(podman busybox-static python3)
# Netavark (and its DNS server) where Debian has it; podman falls back to CNI otherwise.
if apt-cache show netavark >/dev/null 2>&1; then packages+=(netavark aardvark-dns); fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
source Benchmarks/lib/busybox.sh
scratch="${GANTRY_SCRATCH_PATH:-.build}"

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}/network"
cli_root="$work/gantry-cli"
lib_root="$work/gantry-lib"
podman_dir="$work/podman"
podman_run="/run/gantry-bench-podman-$$"
# podman runs crun, which refuses a hybrid cgroup host: all of podman's
# commands run in one mount namespace of their own (kept on a file) where
# /sys/fs/cgroup/unified is unmounted, so that crun sees the v1
# controllers only, as Gantry uses them. The network namespace stays the host's.
podman_namespace="$podman_run/ns/mnt"
pod=(nsenter --mount="$podman_namespace" podman --root "$podman_dir/root" --runroot "$podman_run/run" --tmpdir "$podman_run/tmp"
     --network-config-dir "$podman_dir/networks" --storage-driver overlay)
gantry=""
rm -rf "$work" && mkdir -p "$work" "$podman_dir/networks" "$podman_run/ns"
# Netavark's chains stay in iptables after its last container; remove
# them afterwards unless they were there before.
netavark_chains_before="$(iptables-save 2>/dev/null | grep -c NETAVARK || true)"

# Names of what the gantry CLI lists, as JSON, under a root.
gantry_names() {
    GANTRY_ROOT="$1" "$gantry" "${@:2}" --format json 2>/dev/null | python3 -c '
import json, sys
for item in json.load(sys.stdin): print(item["id"] if "status" in item else item["name"])'
}
cleanup() {
    set +e
    if [ -n "$gantry" ]; then
        for root in "$cli_root" "$lib_root"; do
            [ -d "$root" ] || continue
            ids="$(gantry_names "$root" ps -a)"
            [ -z "$ids" ] || "$gantry" --root "$root" rm -f $ids >/dev/null
            for network in $(gantry_names "$root" network ls); do GANTRY_ROOT="$root" "$gantry" network rm "$network" >/dev/null; done
        done
    fi
    if [ -d "$podman_dir/root" ] && [ -f "$podman_namespace" ]; then
        "${pod[@]}" rm -af -t 0 >/dev/null 2>&1
        "${pod[@]}" rmi -af >/dev/null 2>&1
        "${pod[@]}" network rm -f gb-podman >/dev/null 2>&1
    fi
    umount "$podman_namespace" 2>/dev/null
    umount "$podman_run/ns" 2>/dev/null
    if [ "$netavark_chains_before" = 0 ]; then
        iptables -D FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD 2>/dev/null
        iptables -F NETAVARK_FORWARD 2>/dev/null && iptables -X NETAVARK_FORWARD
        iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D POSTROUTING -j NETAVARK-HOSTPORT-MASQ 2>/dev/null
        for chain in NETAVARK-HOSTPORT-DNAT NETAVARK-HOSTPORT-MASQ NETAVARK-HOSTPORT-SETMARK; do
            iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain"
        done
    fi
    # Whatever podman left mounted under its root and run directories.
    for dir in "$podman_dir" "$podman_run" "$work"; do
        awk -v dir="$dir/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r mount; do umount -l "$mount"; done
    done
    rm -rf "$work" "$podman_run"
}
trap cleanup EXIT

echo "== busybox root file system"
rootfs="$work/rootfs"
busybox_rootfs "$rootfs" sh true sleep httpd nc dd cat
echo 'root:x:0:' >"$rootfs/etc/group"
echo 'ok' >"$rootfs/index.html"
tar -C "$rootfs" -cf "$work/rootfs.tar" .

mount --bind "$podman_run/ns" "$podman_run/ns"
mount --make-private "$podman_run/ns"
touch "$podman_namespace"
# Its copy of the host's mounts drops the cgroup2 mount and every bound
# namespace file, which it would otherwise keep alive (such as the network
# namespaces of containers other programs run meanwhile).
unshare --mount="$podman_namespace" --propagation private sh -c '
    grep -q " /sys/fs/cgroup/unified " /proc/self/mountinfo && umount -l /sys/fs/cgroup/unified
    awk "{ for (i = 7; i < NF; i++) if (\$i == \"-\") { if (\$(i + 1) == \"nsfs\") print \$5; break } }" /proc/self/mountinfo |
        while read -r mount; do umount -l "$mount"; done
    true'

if [ -n "${GANTRY_BENCH_BIN:-}" ]; then
    bin="$GANTRY_BENCH_BIN"
else
    if [ -z "${GANTRY_BENCH_PREBUILT:-}" ]; then
        echo "== building gantry and gantry-bench (release, in $scratch)"
        swift build -c release --scratch-path "$scratch" --product gantry >/dev/null
        swift build -c release --scratch-path "$scratch" --product gantry-bench >/dev/null
    fi
    bin="$(swift build -c release --scratch-path "$scratch" --show-bin-path)"
fi
gantry="$bin/gantry"
bench="$bin/gantry-bench"

echo "== images: gantry import-rootfs, podman import of a tar of the same directory"
"$gantry" --root "$cli_root" image import-rootfs "$rootfs" --name busybox:bench >/dev/null
"${pod[@]}" import --quiet "$work/rootfs.tar" localhost/gantry-bench/busybox:bench >/dev/null
podman_version="$("${pod[@]}" version --format '{{.Client.Version}}')"
podman_backend="$("${pod[@]}" info --format '{{.Host.NetworkBackend}}')"
echo "   podman $podman_version, network backend $podman_backend, runtime $("${pod[@]}" info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}}' | head -1)"

echo "== networks: gantry network create, podman network create (a free /24 outside Gantry's 10.88.0.0/14)"
GANTRY_ROOT="$cli_root" "$gantry" network create gb-cli >/dev/null
podman_subnet="$(python3 - <<'PY'
import ipaddress, subprocess
routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout.split("\n")
taken = []
for line in routes:
    fields = line.split()
    for field in fields[:3]:
        try:
            taken.append(ipaddress.ip_network(field, strict=False))
        except ValueError:
            pass
for third in range(256):
    candidate = ipaddress.ip_network(f"10.200.{third}.0/24")
    if not any(candidate.overlaps(route) for route in taken if route.prefixlen > 0):
        print(candidate)
        break
PY
)"
"${pod[@]}" network create --subnet "$podman_subnet" gb-podman >/dev/null
echo "   gantry gb-cli: $(GANTRY_ROOT="$cli_root" "$gantry" network inspect gb-cli | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["subnet"])'); podman gb-podman: $podman_subnet"

value() { awk -v key="$1:" '$1 == key { print $2 }'; }

echo "== reachable: gantry in-process (gantry-bench port), $runs runs"
in_process="$("$bench" port --rootfs "$rootfs" --root "$lib_root" --runs "$runs" --network gb-lib)"
echo "$in_process" | sed 's/^/   /'

echo "== reachable: gantry run -d and podman run -d, $runs runs each, alternating"
python3 - "$runs" "$work/reachable.json" "$gantry" "$cli_root" "${pod[@]}" <<'PY' | sed 's/^/   /'
import json, socket, statistics, subprocess, sys, time

runs, out, gantry, root, pod = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
httpd = ["/bin/httpd", "-f", "-p", "80"]
tools = {
    "gantry": (lambda port: [gantry, "--root", root, "run", "-d", "--network", "gb-cli", "-p", f"{port}:80", "busybox:bench"] + httpd,
               lambda id: [gantry, "--root", root, "rm", "-f", id]),
    "podman": (lambda port: pod + ["run", "-d", "--network", "gb-podman", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                                   "-p", f"{port}:80", "localhost/gantry-bench/busybox:bench"] + httpd,
               lambda id: pod + ["rm", "-f", "-t", "0", id]),
}

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            reply = b""
            while len(reply) < 5:
                chunk = s.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"HTTP/")
    except OSError:
        return False

def once(name):
    run, remove = tools[name]
    port = free_port()
    start = time.perf_counter()
    result = subprocess.run(run(port), capture_output=True, text=True)
    returned = time.perf_counter()
    if result.returncode != 0:
        sys.exit(f"{name} run failed: {result.stderr.strip()}")
    id = result.stdout.strip().splitlines()[-1]
    deadline = returned + 10
    while not answers(port):
        if time.perf_counter() > deadline:
            subprocess.run(remove(id), capture_output=True)
            sys.exit(f"{name}: nothing answered on 127.0.0.1:{port} within 10 s")
        time.sleep(0.0005)
    reached = time.perf_counter()
    result = subprocess.run(remove(id), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} rm failed: {result.stderr.strip()}")
    return (reached - start) * 1000, (returned - start) * 1000, (time.perf_counter() - reached) * 1000

for name in tools:  # warm-up
    for _ in range(2):
        once(name)
samples = {name: [] for name in tools}
order = list(tools)
for run in range(runs):
    for name in (order if run % 2 == 0 else reversed(order)):
        samples[name].append(once(name))

def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * 0.99))]

summary = {}
for name, rows in samples.items():
    reach, returned, removal = zip(*rows)
    summary[name] = {"median": statistics.median(reach), "p99": p99(reach), "returned": statistics.median(returned),
                     "remove": statistics.median(removal)}
    print(f"{name} run -d: reachable after median {summary[name]['median']:.1f} ms, p99 {summary[name]['p99']:.1f} ms "
          f"(the command returned after {summary[name]['returned']:.1f} ms); rm -f median {summary[name]['remove']:.1f} ms")
json.dump(summary, open(out, "w"))
PY

echo "== throughput: $size_mib MiB over TCP to a published port and to the container's bridge address, $transfers transfers each"
sink="$("$gantry" --root "$cli_root" run -d --network gb-cli -p 127.0.0.1:0:5001 busybox:bench \
    /bin/sh -c 'while :; do /bin/nc -l -p 5001 -e /bin/dd of=/dev/null bs=1M 2>/dev/null; done')"
read -r sink_address sink_port < <("$gantry" --root "$cli_root" inspect "$sink" --format json | python3 -c '
import json, sys
record = json.load(sys.stdin)[0]
print(record["ipAddress"], record["ports"][0].split(":")[-2])')
echo "   receiver $sink_address:5001, published on 127.0.0.1:$sink_port"
python3 - "$transfers" "$size_mib" "$work/throughput.json" "127.0.0.1:$sink_port" "$sink_address:5001" <<'PY' | sed 's/^/   /'
import errno, json, socket, statistics, sys, time

transfers, size, out = int(sys.argv[1]), int(sys.argv[2]) << 20, sys.argv[3]
targets = {"published": sys.argv[4], "direct": sys.argv[5]}
chunk = memoryview(bytearray(4 << 20))

def connect(target):
    host, port = target.rsplit(":", 1)
    deadline = time.perf_counter() + 10
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=30)
        except ConnectionRefusedError:
            # Between two transfers the receiver is listening again in a moment.
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.001)

def transfer(target):
    s = connect(target)
    start = time.perf_counter()
    left = size
    while left:
        left -= s.send(chunk[:min(left, len(chunk))])
    s.shutdown(socket.SHUT_WR)
    # The receiver closes once it has read everything.
    while s.recv(65536):
        pass
    seconds = time.perf_counter() - start
    s.close()
    return seconds

for target in targets.values():  # warm-up
    transfer(target)
times = {name: [] for name in targets}
order = list(targets)
for index in range(transfers):
    for name in (order if index % 2 == 0 else reversed(order)):
        times[name].append(transfer(targets[name]))
summary = {}
for name, values in times.items():
    median = statistics.median(values)
    summary[name] = {"seconds": median, "mib_per_s": size / median / (1 << 20)}
    print(f"{name} ({targets[name]}): median {median * 1000:.0f} ms, {summary[name]['mib_per_s']:.0f} MiB/s "
          f"(all: {', '.join('%.0f' % (v * 1000) for v in values)} ms)")
json.dump(summary, open(out, "w"))
PY
"$gantry" --root "$cli_root" rm -f "$sink" >/dev/null

echo
echo "== summary (podman $podman_version, network backend $podman_backend; ratios measured in this run)"
python3 - "$work/reachable.json" "$work/throughput.json" "$(echo "$in_process" | value port_reachable_median)" \
    "$(echo "$in_process" | value p99)" "$(echo "$in_process" | value remove_median)" "$size_mib" <<'PY'
import json, sys
reach, throughput = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
lib_median, lib_p99, lib_remove, size = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
podman = reach["podman"]["median"]
rows = [
    ("reachable: gantry in-process (median)", f"{lib_median:.1f} ms", f"{lib_median / podman:.3f}x podman", "goal <= 0.25x"),
    ("reachable: gantry in-process (p99)", f"{lib_p99:.1f} ms", f"{lib_p99 / reach['podman']['p99']:.3f}x podman p99", ""),
    ("reachable: gantry run -d (median)", f"{reach['gantry']['median']:.1f} ms", f"{reach['gantry']['median'] / podman:.3f}x podman", "goal <= 0.25x"),
    ("reachable: gantry run -d (p99)", f"{reach['gantry']['p99']:.1f} ms", f"{reach['gantry']['p99'] / reach['podman']['p99']:.3f}x podman p99", ""),
    ("reachable: podman run -d (median)", f"{podman:.1f} ms", "1x", ""),
    ("reachable: podman run -d (p99)", f"{reach['podman']['p99']:.1f} ms", "", ""),
    ("remove: gantry in-process (median)", f"{lib_remove:.1f} ms", f"{lib_remove / reach['podman']['remove']:.3f}x podman", ""),
    ("remove: gantry rm -f (median)", f"{reach['gantry']['remove']:.1f} ms", f"{reach['gantry']['remove'] / reach['podman']['remove']:.3f}x podman", ""),
    ("remove: podman rm -f -t 0 (median)", f"{reach['podman']['remove']:.1f} ms", "1x", ""),
    (f"throughput {size} MiB: published port", f"{throughput['published']['mib_per_s']:.0f} MiB/s",
     f"{throughput['published']['mib_per_s'] / throughput['direct']['mib_per_s']:.3f}x direct", "goal >= 0.9x"),
    (f"throughput {size} MiB: bridge address", f"{throughput['direct']['mib_per_s']:.0f} MiB/s", "1x", ""),
]
print("| measurement | value | ratio | goal |")
print("|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"port_reachable_ratio: {lib_median / podman:.3f} x")
print(f"cli_port_reachable_ratio: {reach['gantry']['median'] / podman:.3f} x")
print(f"published_throughput_ratio: {throughput['published']['mib_per_s'] / throughput['direct']['mib_per_s']:.3f} x")
PY
