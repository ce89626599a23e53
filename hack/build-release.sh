#!/usr/bin/env bash
# The one release build of the operator binary. The Dockerfile runs it inside the builder image and
# `make release` runs it here (CI too), so a build step that breaks is caught without a Docker engine.
# Prints the path of the built binary on stdout; cargo's progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

# --locked: the image is built from exactly the committed Cargo.lock, never a fresh resolution.
# Stripping, LTO and codegen units are set in Cargo.toml's [profile.release].
cargo build --release --locked --bin canary-operator

echo "${CARGO_TARGET_DIR:-target}/release/canary-operator"
