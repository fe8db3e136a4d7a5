#!/usr/bin/env bash
# The node's whole footprint (issue 19), one bounded run (about 10 min): the agent plus every
# shim it started, RSS and PSS (/proc/PID/smaps_rollup) and threads, at 0/10/50/100 busybox
# `sleep` pods, beside a containerd 1.6 daemon of its own (CRI plugin disabled, the same
# image, `ctr run -d` of the same command) with its shims, in the same run; then the shim
# variants at 50 pods: one shim per pod (the default), one shim for the node
# (`--shim-grouping node`), and containerd's Rust runc shim (`containerd-shim-runc-v2-rs`,
# per pod and per node) when it is there.
# Prints markdown and keeps it (and a JSON of every figure) in target/bench/.
#
#   scripts/bench-footprint.sh
# Knobs: FOOTPRINT_PODS ("0 10 50 100"), FOOTPRINT_VARIANT_PODS (50), FOOTPRINT_SETTLE
# (seconds between the last pod Running and the reading, 10), EDGED_BIN (default
# target/release/edged, built here), RUST_SHIM (default containerd-shim-runc-v2-rs in PATH,
# else /tmp/rs-shim/bin/containerd-shim-runc-v2-rs; built with
# `cargo install containerd-runc-shim --root /tmp/rs-shim`; the variant is skipped without it).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-footprint.sh: run as root (edged makes containers and mounts)" >&2; exit 1; }
for tool in runc containerd ctr containerd-shim-runc-v2 python3; do
  command -v "$tool" >/dev/null || { echo "bench-footprint.sh: $tool is missing: apt-get install -y containerd runc" >&2; exit 1; }
done
if [ -z "${EDGED_BIN:-}" ]; then
  cargo build --release --quiet --bin edged
  export EDGED_BIN=$PWD/target/release/edged
fi
if [ -z "${RUST_SHIM:-}" ]; then
  RUST_SHIM=$(command -v containerd-shim-runc-v2-rs || true)
  [ -n "$RUST_SHIM" ] || [ ! -x /tmp/rs-shim/bin/containerd-shim-runc-v2-rs ] ||
    RUST_SHIM=/tmp/rs-shim/bin/containerd-shim-runc-v2-rs
fi
export RUST_SHIM
export BENCH_OUT_DIR=${BENCH_OUT_DIR:-$PWD/target/bench}
mkdir -p "$BENCH_OUT_DIR"
export IMAGE_TAR=$BENCH_OUT_DIR/busybox.tar
scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null
exec python3 -B scripts/bench/footprint.py "$@"
