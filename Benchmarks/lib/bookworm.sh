# Shared by the benchmarks: a Debian bookworm minbase image as an OCI layout.
#
#   source Benchmarks/lib/bookworm.sh; bookworm_layout "$work"
#
# Makes (once, then cached in $work) a minbase rootfs with debootstrap, apt
# caches and lists removed as in Debian's published images, packed by umoci
# into "$work/layout:bookworm" as one gzip layer.
bookworm_layout() {
    local work="$1"
    local rootfs="$work/bookworm-rootfs"
    local layout="$work/layout"
    mkdir -p "$work"
    if [ ! -f "$rootfs/.complete" ]; then
        echo "== debootstrap --variant=minbase bookworm (once)"
        rm -rf "$rootfs"
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        touch "$rootfs/.complete"
    fi
    if [ ! -f "$layout/index.json" ]; then
        echo "== umoci: packing the rootfs into an OCI layout (once)"
        rm -rf "$layout" "$work/bundle"
        umoci init --layout "$layout"
        umoci new --image "$layout:bookworm"
        umoci unpack --image "$layout:bookworm" "$work/bundle" >/dev/null
        (cd "$rootfs" && tar --exclude ./.complete -cf - .) | tar -C "$work/bundle/rootfs" -xf -
        umoci repack --image "$layout:bookworm" "$work/bundle"
        rm -rf "$work/bundle"
    fi
}

# Builds the gantry CLI in release mode and prints its path.
gantry_release() {
    swift build -c release --product gantry >/dev/null
    echo "$(swift build -c release --show-bin-path)/gantry"
}
