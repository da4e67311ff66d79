#!/usr/bin/env bash
# Installs every system package Gantry needs to build, test and benchmark on
# Debian 12, then builds the package and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=(
    # Build: C libraries found through pkg-config.
    pkg-config libarchive-dev libseccomp-dev libsqlite3-dev libnftables-dev
    # Tests: tools that make, move and read images; compressors; the
    # Distribution registry with htpasswd and token authentication.
    busybox-static umoci skopeo tar gzip zstd bzip2 python3
    docker-registry apache2-utils openssl
    # Runtime tests: a C compiler and static libc for a system-call probe;
    # nft and ip to look at what networks leave behind.
    gcc libc6-dev nftables iproute2
    # GantryTesting's module tests: a PostgreSQL client.
    postgresql-client
    # The cgroup v2 lane: a pure v2 kernel under QEMU, its initramfs and
    # modules; loop devices for the device-control tests.
    qemu-system-x86 kmod cpio util-linux
    # Rootless containers: newuidmap/newgidmap for subordinate IDs, pasta
    # for their network (slirp4netns where pasta is missing), useradd, and
    # setcap for an image's file capability.
    uidmap passt slirp4netns passwd libcap2-bin procps
    # Builds: git for ADD of a repository (and its daemon in the tests).
    git
    # kube generate's test: a virtual environment for kubernetes-validate.
    python3-venv
    # Benchmarks, with the runtimes Gantry is compared with.
    debootstrap hyperfine time crun runc podman buildah
)
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"

# Kubernetes' schemas (kubernetes-validate, from PyPI, in a virtual
# environment of its own), to validate what `gantry kube generate` writes.
if [ ! -x /usr/local/bin/kubernetes-validate ]; then
    # Debian's own Python, which every user can run (not one under a home).
    $sudo /usr/bin/python3 -m venv /opt/gantry-python
    $sudo /opt/gantry-python/bin/pip install --quiet kubernetes-validate
    $sudo ln -sf /opt/gantry-python/bin/kubernetes-validate /usr/local/bin/kubernetes-validate
fi

swift build --build-tests

# A Debian bookworm minbase image (debootstrap, once; kept in
# /var/tmp/gantry-bench) for the builder's comparison with Buildah and the
# benchmarks. Without the network its test is skipped, and says why.
if ! $sudo bash -c 'source Benchmarks/lib/bookworm.sh && bookworm_layout "${GANTRY_BENCH_CACHE:-/var/tmp/gantry-bench}"'; then
    echo "warning: no Debian bookworm layout (debootstrap failed); the Debian build comparison will be skipped" >&2
fi

# pasta gives an ordinary user's containers their network through a tap
# device, which every user may make where /dev/net/tun is mode 0666, as
# Debian's udev rules leave it; a machine without udev may have it 0600.
if [ ! -e /dev/net/tun ]; then
    $sudo mkdir -p /dev/net && $sudo mknod -m 0666 /dev/net/tun c 10 200
fi
$sudo chmod 0666 /dev/net/tun
