#!/usr/bin/env bash
# Crash harness: pod churn through the manifest directory (create, env update → restart,
# delete; some pods with a configMap volume and an exec readiness probe) while the agent is
# SIGKILLed at random moments; after each cycle it checks that no stored object is lost, no
# container, shim, mount or cgroup is orphaned, and every pod converges to its file.
#
#   scripts/chaos.sh [CYCLES] [--power-cut] [--seed N] [--deadline S] [--max-seconds S]
#
# CYCLES defaults to 100. --power-cut also kills shims and containers and empties what a
# reboot empties. Prints a summary line; exits 1 on a violation, naming it. Needs root.
# EDGED_BIN picks the agent binary (default: target/release/edged, built here);
# CHAOS_AGENT_FLAGS adds agent flags (`--spare-shim`, `--shim-grouping node`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "chaos.sh: run as root (edged makes containers and mounts)" >&2; exit 1; }
if [ -z "${EDGED_BIN:-}" ]; then
  cargo build --release --quiet --bin edged
  export EDGED_BIN=$PWD/target/release/edged
fi
if [ -z "${IMAGE_TAR:-}" ]; then
  img_dir=$(mktemp -d)
  trap 'rm -rf "$img_dir"' EXIT
  export IMAGE_TAR=$img_dir/busybox.tar
  scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null
fi
python3 -B scripts/bench/chaos.py "$@"
