#!/usr/bin/env bash
# Runs the whole test suite again as an ordinary user, from the products
# `scripts/test.sh` built: tests that need root skip (their trait says why),
# and every other one must pass without it (the reconciler's decisions over
# a simulated runtime, the DNS and netlink parsers, the image store, …).
# Run as root: it makes the user (GANTRY_TEST_USER, gantry-test by default)
# when missing. Arguments go to the test runner (`--filter NAME`, say).
set -euo pipefail
cd "$(dirname "$0")/.."
user="${GANTRY_TEST_USER:-gantry-test}"
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
tests="$(swift build --show-bin-path)/GantryPackageTests.xctest"
[ -x "$tests" ] || { echo "no test products: run scripts/test.sh first" >&2; exit 1; }
home="$(getent passwd "$user" | cut -d: -f6)"
# The user's run-time directory, as a login session has it; removed after.
run="$(mktemp -d /tmp/gantry-unprivileged-run.XXXXXX)"
trap 'rm -rf "$run"' EXIT
chown "$user:" "$run" && chmod 700 "$run"
cd /
runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" TMPDIR=/tmp XDG_RUNTIME_DIR="$run" \
    "$tests" --testing-library swift-testing "$@"
