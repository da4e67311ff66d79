# Shared by the benchmarks: a busybox root file system.
#
#   source Benchmarks/lib/busybox.sh; busybox_rootfs DIR APPLET...
#
# Makes DIR with the mount points every image has (so that no runtime makes
# them on each run), busybox-static with a symlink per APPLET, and a passwd
# file with root.
busybox_rootfs() {
    local rootfs="$1"
    shift
    local busybox
    busybox="$(command -v busybox)" || { echo "missing busybox-static: run scripts/setup.sh" >&2; return 1; }
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in "$@"; do ln -s busybox "$rootfs/bin/$applet"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
}
