#!/usr/bin/env bash
# Installs every system package Gantry needs to build, test and benchmark on
# Debian 12, then builds the package and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=(
    # Build: C libraries found through pkg-config.
    pkg-config libarchive-dev libseccomp-dev libsqlite3-dev
    # Tests: tools that make and read images, and compressors.
    busybox-static umoci skopeo tar gzip zstd python3
    # Benchmarks.
    debootstrap hyperfine time
)
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"

swift build --build-tests
