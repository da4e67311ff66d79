#!/usr/bin/env bash
# Runs the tests whose behaviour depends on cgroups on a pure cgroup v2
# kernel, the kind production hosts run: Debian's cloud kernel booted under
# QEMU (TCG emulation: no KVM needed), with cgroup2 as the only hierarchy and
# its controllers (cpu, cpuset, io, memory, pids, …) enabled.
#
# The guest runs this machine's own Debian userland, shared read-only over
# virtiofs, with tmpfs where it writes: the test products link the Swift
# toolchain's runtime and the system libraries they were built against, and
# the guest finds exactly those, and every tool the tests call, without
# copying anything. Its initramfs is made of Debian packages only: the
# kernel's modules and busybox-static.
#
# Run `scripts/test.sh` (or `swift build --build-tests`) first. Arguments
# replace the default choice of tests (`--filter NAME`, as for the test
# runner); `--run COMMAND` runs a shell command in the guest instead, from
# this checkout (`--run 'Benchmarks/runtime.sh --runs 30'`). Prints the test
# runner's closing line; exits non-zero when a test fails or the guest does
# not finish. Needs root (virtiofsd shares `/`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache="$repo/.build/cgroup-v2-vm"
mkdir -p "$cache"

[ "$(id -u)" -eq 0 ] || { echo "the cgroup v2 lane needs root (virtiofsd shares /)" >&2; exit 1; }
for tool in qemu-system-x86_64 /usr/lib/qemu/virtiofsd cpio depmod modprobe /bin/busybox; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done
tests="$(swift build --show-bin-path)/GantryPackageTests.xctest"
[ -x "$tests" ] || { echo "no test products: run scripts/test.sh first" >&2; exit 1; }

# The tests chosen: cgroup drivers against the real kernel (limits of every
# kind, freezing, cgroup.kill, a subtree delegated to an ordinary user),
# containers' limits, OOM kills and their report, the pids limit, pause and
# resume, timeouts and stops, removal, exec (cloned into the cgroup), many
# containers at once, the command line's pause and stats, stats and the
# metrics and autoscaling built on them, QoS's cpusets and jobs on a local
# node, a healed replica, and device control.
default_filter='CgroupHierarchyTests|CgroupDriverTests|CgroupV2HostTests|DeviceControlTests|ObservabilityTests|LocalNodeTests'
default_filter+='|reportsOutputAndExitCodes|reportsAnOOMKill|holdsAForkBombWithThePidsLimit|throttlesWithACPUQuota'
default_filter+='|killsAtTheTimeout|stopEscalatesToSIGKILL|pausesAndResumes|sayWhyAnExecdProcessEnded|initReapsAndForwardsSignals'
default_filter+='|scopedUseRemovesEverythingOnThrowAndCancellation|removingWhileStartingIsOneOrTheOther|execJoinsTheRunningContainer'
default_filter+='|runsManyContainersAtOnce|containerCommandsEndToEnd|aKilledReplicaThatPublishesAPortIsReplacedOnTheSamePort'
mode=tests
if [ "${1:-}" = "--run" ]; then
    [ $# -eq 2 ] || { echo "usage: $0 [--filter NAME …] | --run COMMAND" >&2; exit 2; }
    mode=run
    shift
elif [ $# -eq 0 ]; then
    set -- --filter "$default_filter"
fi

# The kernel: Debian's cloud flavour, the version its meta-package names.
kernel_root="$cache/kernel"
if [ ! -f "$kernel_root/ready" ]; then
    rm -rf "$kernel_root" "$cache/debs"
    mkdir -p "$cache/debs" "$kernel_root"
    version_package=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
    [ -n "$version_package" ] || { echo "apt knows no linux-image-cloud-amd64: run apt-get update" >&2; exit 1; }
    (cd "$cache/debs" && apt-get download "$version_package" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    dpkg-deb -x "$cache"/debs/"$version_package"_*.deb "$kernel_root"
    touch "$kernel_root/ready"
fi
release=$(ls "$kernel_root/lib/modules")
vmlinuz="$kernel_root/boot/vmlinuz-$release"
# modprobe in the guest reads the dependencies depmod writes here.
[ -f "$kernel_root/lib/modules/$release/modules.dep" ] || depmod -b "$kernel_root" "$release"

# The initramfs: busybox, the modules that reach the shared root, and the
# init that mounts it and hands over to the guest script.
initramfs="$cache/initramfs.cpio.gz"
staging="$cache/initramfs"
rm -rf "$staging"
mkdir -p "$staging"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$staging/bin/busybox"
for wanted in virtio_pci virtiofs; do
    modprobe -d "$kernel_root" -S "$release" --show-depends "$wanted" | awk '/^insmod/ { print $2 }'
done | awk '!seen[$0]++' | while read -r module; do
    cp "$module" "$staging/modules/"
    basename "$module" >> "$staging/modules/order"
done
cp scripts/vm/initramfs-init "$staging/init"
chmod 0755 "$staging/init"
(cd "$staging" && find . | cpio --quiet -o -H newc | gzip -1 > "$initramfs")

# virtiofsd shares this machine's root read-only.
virtiofsd=/usr/lib/qemu/virtiofsd
socket="$cache/virtiofs.sock"
console="$cache/console.log"
rm -f "$socket" "$console"
"$virtiofsd" --socket-path="$socket" -o source=/ -o cache=always -o sandbox=chroot > "$cache/virtiofsd.log" 2>&1 &
virtiofsd_pid=$!
trap 'kill $virtiofsd_pid 2>/dev/null || true; wait $virtiofsd_pid 2>/dev/null || true; rm -f "$socket"' EXIT
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { cat "$cache/virtiofsd.log" >&2; echo "virtiofsd did not start" >&2; exit 1; }

# The arguments travel in a file the guest reads through the shared root.
arguments="$cache/arguments"
printf '%s\0' "$@" > "$arguments"
memory=6G
started=$(date +%s)
status=0
timeout 1500 qemu-system-x86_64 \
    -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m "$memory" \
    -object memory-backend-memfd,id=mem,size="$memory",share=on -numa node,memdev=mem \
    -chardev socket,id=root,path="$socket" -device vhost-user-fs-pci,chardev=root,tag=root \
    -kernel "$vmlinuz" -initrd "$initramfs" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 cgroup_no_v1=all gantry.mode=$mode gantry.repo=$repo gantry.tests=$tests gantry.kernel=$kernel_root gantry.args=$arguments" \
    -nographic -no-reboot -serial file:"$console" -monitor none -display none > "$cache/qemu.log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))

# The guest's console: the test runner's output, then the code it exited with.
sed -e 's/\r$//' "$console" | sed -n '/^gantry-vm: start$/,$p' | grep -v -e '^gantry-vm: start$' -e '^gantry-vm: exit ' -e '^\[ *[0-9.]*\] ' || true
code=$(sed -n 's/^gantry-vm: exit \([0-9]*\).*/\1/p' "$console" | tail -1)
echo "cgroup v2 lane: kernel $release under TCG, ${elapsed}s"
if [ "$status" -ne 0 ] || [ -z "$code" ]; then
    echo "the guest did not finish (qemu: $status); its console: $console" >&2
    tail -30 "$console" >&2 || true
    exit 1
fi
exit "$code"
