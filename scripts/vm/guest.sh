#!/bin/bash
# The cgroup v2 lane's guest, as its PID 1, on the host's userland shared
# read-only: makes the places tests write to, mounts cgroup2 as the only
# hierarchy with every controller, runs the test products, prints the code
# they exited with, and powers the guest off.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp LANG=C.UTF-8

finish() {
    echo "gantry-vm: exit $1"
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}

parameter() {
    local word
    for word in $(cat /proc/cmdline); do
        case "$word" in "gantry.$1="*) echo "${word#gantry.$1=}"; return ;; esac
    done
}
repo=$(parameter repo)
tests=$(parameter tests)
kernel_root=$(parameter kernel)
mapfile -t -d '' arguments < "$(parameter args)"

for dir in /tmp /run /var/tmp /root; do mount -t tmpfs -o mode=1777 tmpfs "$dir"; done
chmod 0700 /root
mkdir -p /dev/pts /dev/shm /dev/mqueue
ln -sf /proc/self/fd /dev/fd
n=0
for stream in stdin stdout stderr; do ln -sf "/proc/self/fd/$n" "/dev/$stream"; n=$((n + 1)); done
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
# Modules come from the kernel's package, which is not installed here: the
# kernel asks for them through a modprobe that looks there.
echo "$repo/scripts/vm/modprobe" > /proc/sys/kernel/modprobe
for module in overlay loop veth bridge nf_tables; do modprobe -d "$kernel_root" "$module" || echo "gantry-vm: cannot load $module"; done
# The kernel's default of 1024 open files is far below what hosts give
# (tests hold thousands open on purpose).
ulimit -Hn 1048576
ulimit -Sn 1048576
hostname gantry-vm
ip link set lo up

printf '\ngantry-vm: start\n'
echo "gantry-vm: $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if [ "$(parameter mode)" = run ]; then
    cd "$repo"
    bash -c "${arguments[0]}" 2>&1
else
    cd /
    "$tests" --testing-library swift-testing "${arguments[@]}" 2>&1
fi
finish $?
