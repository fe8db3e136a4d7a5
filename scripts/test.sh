#!/usr/bin/env bash
# Sets up the machine and runs every test: unit tests, and integration tests on real
# containers (containerd-shim-runc-v2 + runc), real LMDB files and real mounts. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests make containers and mounts)" >&2; exit 1; }
scripts/setup.sh
cargo build --quiet --bins
cargo test --quiet --no-fail-fast -- --test-threads=2 2>&1
