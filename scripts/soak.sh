#!/usr/bin/env bash
# Soak test: cycles of what users do, through the gantry CLI, for a bounded
# time, then a check that nothing grew. Each cycle runs a container on a
# network with a published port and a volume, execs into it, kills it
# (so that its port must be given up), runs a detached container to its end,
# and kills a replica of a healing compose service; a cycle ends with
# everything of it removed.
#
#   sudo scripts/soak.sh [SECONDS]      (default 60; CI runs it for 60)
#
# Counted before and after (at least one cycle): host mounts, cgroups in
# every hierarchy, links, nftables rules, port claims, network namespaces
# in the state root, files in the state root, and the descriptors and
# memory of the long-running `gantry up`. Prints one line per count and
# how many counts stayed and how many grew; exits non-zero on a leak.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
[ "$(id -u)" -eq 0 ] || { echo "the soak test needs root" >&2; exit 1; }
build_log="$(mktemp)"
swift build --product gantry >"$build_log" 2>&1 || { cat "$build_log" >&2; exit 1; }
rm -f "$build_log"
gantry="$(swift build --show-bin-path)/gantry"

work="$(mktemp -d /tmp/gantry-soak-XXXXXX)"
root="$work/state"
export GANTRY_CGROUP_PARENT="gantry-soak-$$"
up_pid=""
cleanup() {
    [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
    "$gantry" --root "$root" down -f "$work/compose.yaml" >/dev/null 2>&1 || true
    for id in $(ls "$root/containers" 2>/dev/null | grep -E '^[0-9a-f]{64}$' || true); do
        "$gantry" --root "$root" rm -f "$id" >/dev/null 2>&1 || true
    done
    for network in soak gantry; do "$gantry" --root "$root" network rm "$network" >/dev/null 2>&1 || true; done
    "$gantry" --root "$root" volume rm soak-data >/dev/null 2>&1 || true
    for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do rmdir "$hierarchy$GANTRY_CGROUP_PARENT" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A busybox image.
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
for applet in sh sleep echo cat mkdir httpd wget true kill; do ln -s busybox "$work/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
"$gantry" --root "$root" image import-rootfs "$work/rootfs" --name soak:1 >/dev/null
"$gantry" --root "$root" network create soak >/dev/null

cat > "$work/compose.yaml" <<'YAML'
name: soak
services:
  web:
    image: soak:1
    command: ["sh", "-c", "mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 80 -h /www"]
    deploy: {replicas: 2}
    ports: ["80"]
YAML
"$gantry" --root "$root" up -f "$work/compose.yaml" >"$work/up.log" 2>&1 &
up_pid=$!

g() { "$gantry" --root "$root" "$@"; }
counts() {
    local rules cgroups
    rules=$(nft -a list table ip gantry 2>/dev/null | grep -c 'handle' || true)
    cgroups=$(find /sys/fs/cgroup -path "*$GANTRY_CGROUP_PARENT*" -type d 2>/dev/null | wc -l)
    echo "mounts $(wc -l < /proc/mounts)"
    echo "cgroups $cgroups"
    echo "links $(ip -o link | wc -l)"
    echo "rules $rules"
    echo "port-claims $(ls /run/gantry/ports 2>/dev/null | wc -l)"
    echo "state-files $(find "$root" -path "$root/blobs" -prune -o -type f -print | wc -l)"
    echo "up-descriptors $(ls "/proc/$up_pid/fd" | wc -l)"
    echo "up-memory-kib $(awk '/VmRSS/ {print $2}' "/proc/$up_pid/status")"
}

# One cycle; its containers are gone at its end.
cycle() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    g run -d --name soak-web --network soak -p "$port:80" -v soak-data:/data soak:1 sh -c 'echo x >> /data/log; exec sleep 600' >/dev/null
    [ "$(g exec soak-web cat /data/log | wc -l)" -ge 1 ]
    g kill soak-web >/dev/null
    # Its port is free again at once.
    g run -d --name soak-next -p "$port:80" soak:1 sleep 600 >/dev/null
    g rm -f soak-web soak-next >/dev/null
    g run -d --name soak-once soak:1 sh -c 'exit 3' >/dev/null
    for _ in $(seq 100); do g inspect soak-once | grep -q '"exitCode" : 3' && break; sleep 0.05; done
    g inspect soak-once | grep -q '"exitCode" : 3'
    g rm soak-once >/dev/null
    # A replica killed; the service heals.
    local victim
    victim=$(g ps --format json | python3 -c 'import json,sys; r=[c["name"] for c in json.load(sys.stdin) if c["name"].startswith("soak_web") or c["name"].startswith("web-")]; print(r[0] if r else "")')
    [ -n "$victim" ] && g kill "$victim" >/dev/null 2>&1 || true
    for _ in $(seq 200); do
        [ "$(g ps --format json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c["status"] == "running"))')" -ge 2 ] && break
        sleep 0.05
    done
}

# A first cycle warms everything up (the default network, the volume, the
# service's replicas), then the counts are taken.
for _ in $(seq 200); do
    [ "$(g ps --format json | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin) if c["status"] == "running"))')" -ge 2 ] && break
    sleep 0.05
done
cycle
g ps -a --format json | python3 -c 'import json,sys; [print(c["id"]) for c in json.load(sys.stdin) if c["status"] != "running"]' | xargs -r "$gantry" --root "$root" rm >/dev/null
counts > "$work/before"
cycles=0
deadline=$((SECONDS + seconds))
while [ "$SECONDS" -lt "$deadline" ] || [ "$cycles" -eq 0 ]; do
    cycle
    cycles=$((cycles + 1))
done
# Replaced replicas stay stopped for their logs; they are not leaks.
g ps -a --format json | python3 -c 'import json,sys; [print(c["id"]) for c in json.load(sys.stdin) if c["status"] != "running"]' | xargs -r "$gantry" --root "$root" rm >/dev/null
sleep 1
counts > "$work/after"

passed=0
failed=0
echo "soak: $cycles cycles in ${seconds}s"
while read -r name before; do
    after=$(awk -v n="$name" '$1 == n {print $2}' "$work/after")
    # Memory may wander a little; a leak grows with the cycles.
    allowed=0
    [ "$name" = up-memory-kib ] && allowed=$((before / 10 + 2048))
    if [ "$after" -le $((before + allowed)) ]; then
        passed=$((passed + 1)); echo "ok    $name: $before -> $after"
    else
        failed=$((failed + 1)); echo "GREW  $name: $before -> $after"
    fi
done < "$work/before"
echo "soak: $passed counts steady, $failed grew"
[ "$failed" -eq 0 ]
