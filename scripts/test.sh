#!/usr/bin/env bash
# Builds everything (the CLI tests run the gantry binary) and runs the whole
# test suite. Tests that need root are skipped, with a reason, when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build "$@"
