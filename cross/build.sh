#!/usr/bin/env bash
# Builds edged as stripped, statically linked release binaries for devices, and writes them to
# target/dist/edged-<target>. Installs what it needs (rustup targets and rust-src, zig and
# cargo-zigbuild from PyPI, qemu-user-static and file from Debian); safe to run again.
#
#   cross/build.sh [TARGET...]    default: x86_64, aarch64 and armv7 musl
#
# Env: CROSS_JOBS (cargo -j, default 2), EDGED_MAX_BYTES (fail above it, default 5 MiB).
# Each binary is checked: `file` must say statically linked, and `edged --help` must run
# (under qemu-user for a foreign architecture).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/lib.sh

targets=("$@")
[ ${#targets[@]} -gt 0 ] ||
  targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
max_bytes=${EDGED_MAX_BYTES:-$((5 << 20))}

cross_install_tools
mkdir -p target/dist
failed=0
summary=()
for target in "${targets[@]}"; do
  cross_add_target "$target"
  cross_log "building $target (release, device)"
  start=$SECONDS
  cross_cargo zigbuild "$target" device --release --bin edged
  secs=$((SECONDS - start))
  out=target/dist/edged-$target
  cp "$(cross_target_dir "$target")/$target/release/edged" "$out"
  size=$(stat -c %s "$out")
  what=$(file -b "$out")
  verdict=ok
  case "$what" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) verdict="NOT STATIC" ;;
  esac
  case "$what" in *", stripped"*) ;; *) verdict="$verdict, NOT STRIPPED" ;; esac
  [ "$size" -le "$max_bytes" ] || verdict="$verdict, OVER $max_bytes BYTES"
  qemu=$(cross_qemu "$target")
  if ! $qemu "$out" --help >/dev/null; then verdict="$verdict, --help FAILED"; fi
  [ "$verdict" = ok ] || failed=1
  summary+=("$(printf '%-50s %9d bytes  %4ds  %s' "$out" "$size" "$secs" "$verdict")")
  cross_log "$out: $what"
done

printf '%s\n' "${summary[@]}"
[ "$failed" = 0 ] || cross_die "some binaries failed their checks (see above)"
