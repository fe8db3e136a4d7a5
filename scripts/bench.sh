#!/usr/bin/env bash
# edged benchmarks, one bounded run (about 10 min; BENCH_QUICK=1: about 3 min):
#   pod start latency (file → container process) beside raw `runc run -d` and `ctr run -d`
#   through a containerd daemon of its own; 50 pods at once; agent memory, CPU and PLEG
#   relist time at 0/50/100 pods, shim memory per pod, containerd's idle RSS; recovery after
#   a power cut; leaks over create/delete cycles; store latency and throughput; binary sizes.
# Prints markdown and keeps it (and a JSON of every figure) in target/bench/.
#
#   scripts/bench.sh            BENCH_QUICK=1 scripts/bench.sh
# Knobs: BENCH_STARTS (20), BENCH_MANY (50), BENCH_IDLE (60 s), BENCH_LEAK_CYCLES (200),
# BENCH_START_ONLY=1 (pod start latency alone), BENCH_AGENT_FLAGS (e.g. --spare-shim), EDGED_BIN (default target/release/edged, built
# here). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (edged makes containers and mounts)" >&2; exit 1; }
for tool in runc containerd ctr containerd-shim-runc-v2 python3; do
  command -v "$tool" >/dev/null || { echo "bench.sh: $tool is missing: apt-get install -y containerd runc" >&2; exit 1; }
done
if [ -z "${EDGED_BIN:-}" ]; then
  cargo build --release --quiet --bin edged --example store_bench
  export EDGED_BIN=$PWD/target/release/edged
  export STORE_BENCH_BIN=$PWD/target/release/examples/store_bench
fi
export BENCH_OUT_DIR=${BENCH_OUT_DIR:-$PWD/target/bench}
mkdir -p "$BENCH_OUT_DIR"
export IMAGE_TAR=$BENCH_OUT_DIR/busybox.tar
scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null
exec python3 -B scripts/bench/bench.py "$@"
