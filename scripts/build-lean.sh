#!/usr/bin/env bash
# Builds the Gantry product as an embedder that turns the default traits
# off (no registry client: no HTTP, SwiftNIO or TLS) does, so that the code
# kept out by them keeps compiling, and as an embedder ships it: optimized
# (the compiler checks some things, such as unused imports, differently
# there). Its own build folder: other flags.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --disable-default-traits --target Gantry --scratch-path .build-lean
