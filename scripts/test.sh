#!/usr/bin/env bash
# Sets up the machine and runs every test: unit tests, integration tests on real containers
# (containerd-shim-runc-v2 + runc, crun), real LMDB files and real mounts; then the device
# builds' unit tests under qemu-user (aarch64, armv7). Run as root.
# EDGED_SKIP_CROSS=1 skips the device part (it needs about 10 minutes cold).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests make containers and mounts)" >&2; exit 1; }
scripts/setup.sh
cargo build --quiet --bins
cargo test --quiet --no-fail-fast -- --test-threads=2 2>&1
if [ "${EDGED_SKIP_CROSS:-0}" != 1 ]; then
  scripts/cross-test.sh
fi
