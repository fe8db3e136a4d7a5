#!/usr/bin/env bash
# Builds edged and its unit tests for the device targets and runs them under qemu-user: the
# binary's `--help`, `get pods` on an empty root dir (an error, not a crash), and
# `cargo test --lib`. Installs what it needs (see cross/lib.sh); safe to run again.
#
#   scripts/cross-test.sh [TARGET...]   default: aarch64 and armv7 musl
#
# Env: CROSS_JOBS (cargo -j, default 2); CROSS_TEST_SKIP: space-separated test name filters
# passed to the test harness as --skip (for unit tests that need a container runtime).
# These are emulation builds: LMDB is compiled without robust mutexes, which qemu-user lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/lib.sh

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
skip=()
for s in ${CROSS_TEST_SKIP:-}; do skip+=(--skip "$s"); done

cross_install_tools
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  cross_add_target "$target"
  qemu=$(cross_qemu "$target")
  start=$SECONDS
  cross_log "$target: building edged (debug, emulated)"
  cross_cargo build "$target" emulated --bin edged
  bin=$(cross_target_dir "$target")/$target/debug/edged

  cross_log "$target: $qemu edged --help"
  $qemu "$bin" --help >"$scratch/help"
  grep -q -- '--root-dir' "$scratch/help" || cross_die "$target: edged --help does not list --root-dir"

  # An empty root dir: edged must exit with its own error, not a signal or a qemu fault.
  cross_log "$target: $qemu edged --root-dir <empty> get pods"
  mkdir -p "$scratch/$target-root"
  rc=0
  $qemu "$bin" --root-dir "$scratch/$target-root" get pods >"$scratch/out" 2>"$scratch/err" || rc=$?
  cat "$scratch/out" "$scratch/err" >&2
  if [ "$rc" = 0 ] || [ "$rc" -ge 128 ] || grep -qE 'panicked|uncaught target signal' "$scratch/err" ||
    ! grep -q '^edged: ' "$scratch/err"; then
    cross_die "$target: get pods on an empty store should fail with an edged: error, exited $rc"
  fi

  cross_log "$target: cargo test --lib under $qemu"
  cross_cargo test "$target" emulated --lib -- "${skip[@]}"
  cross_log "$target: passed in $((SECONDS - start))s"
done
