#!/usr/bin/env bash
# Agent threads, RSS and CPU at rest at 0 / 50 / 100 pods and the time to delete 100 pods
# whose containers ignore SIGTERM (grace 10 s), for a baseline binary beside the one under
# test, in one run (issue 19; about 8 min). Run as root:
#   BASE_BIN=path/to/old/edged scripts/bench-threads.sh
# Knobs: EDGED_BIN (default target/release/edged, built here), BENCH_MANY (50),
# BENCH_IDLE (30 s windows), BENCH_GRACE (10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-threads.sh: run as root" >&2; exit 1; }
[ -n "${BASE_BIN:-}" ] || { echo "bench-threads.sh: set BASE_BIN (the baseline agent binary)" >&2; exit 1; }
if [ -z "${EDGED_BIN:-}" ]; then
  cargo build --release --quiet --bin edged
  export EDGED_BIN=$PWD/target/release/edged
fi
export BENCH_OUT_DIR=${BENCH_OUT_DIR:-$PWD/target/bench}
mkdir -p "$BENCH_OUT_DIR"
export IMAGE_TAR=$BENCH_OUT_DIR/busybox.tar
scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null
exec python3 -B scripts/bench/threads.py "$@"
