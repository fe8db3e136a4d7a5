# shellcheck shell=bash
# Shared by cross/build.sh and scripts/cross-test.sh (sourced, not run): installs the cross
# toolchain and sets the environment for one target. Bash; the caller sets -euo pipefail.
#
# The path: rustup's stable toolchain, zig (PyPI `ziglang`) as C compiler and linker through
# cargo-zigbuild (PyPI), and qemu-user-static (Debian) to run foreign binaries. zig carries
# musl's headers and libc for every target: LMDB's C code sees a 64-bit off_t on armv7 (Debian's
# arm cross gcc brings glibc headers and gets a 32-bit off_t, and LMDB then fails with EINVAL).

# Tested versions; pip does nothing when they are installed already.
CROSS_ZIGLANG_VERSION=${CROSS_ZIGLANG_VERSION:-0.17.1}
CROSS_ZIGBUILD_VERSION=${CROSS_ZIGBUILD_VERSION:-0.24.1}
CROSS_JOBS=${CROSS_JOBS:-2}

cross_log() { printf 'cross: %s\n' "$*" >&2; }
cross_die() {
  printf 'cross: error: %s\n' "$*" >&2
  exit 1
}

# The QEMU user-mode emulator for a target, empty for the host's own architecture.
cross_qemu() {
  case "$1" in
    x86_64-*) [ "$(uname -m)" = x86_64 ] || echo qemu-x86_64-static ;;
    aarch64-*) [ "$(uname -m)" = aarch64 ] || echo qemu-aarch64-static ;;
    armv7-* | arm-*) echo qemu-arm-static ;;
    *) cross_die "no emulator known for $1" ;;
  esac
}

# Debian packages (qemu-user-static, file), zig and cargo-zigbuild, rustup's rust-src.
# Each step runs only when its tool is missing.
cross_install_tools() {
  local need=()
  command -v file >/dev/null || need+=(file)
  command -v qemu-aarch64-static >/dev/null && command -v qemu-arm-static >/dev/null ||
    need+=(qemu-user-static)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || cross_die "need the Debian packages ${need[*]}: run as root or install them"
    cross_log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  command -v python3 >/dev/null || cross_die "python3 is missing (zig and cargo-zigbuild come from PyPI)"
  # pip's console scripts (cargo-zigbuild) land beside the interpreter's other scripts.
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  case ":$PATH:" in *":$scripts:"*) ;; *) PATH="$scripts:$PATH" ;; esac
  export PATH
  if ! python3 -m ziglang version >/dev/null 2>&1 || ! command -v cargo-zigbuild >/dev/null; then
    cross_log "pip install ziglang==$CROSS_ZIGLANG_VERSION cargo-zigbuild==$CROSS_ZIGBUILD_VERSION"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      "ziglang==$CROSS_ZIGLANG_VERSION" "cargo-zigbuild==$CROSS_ZIGBUILD_VERSION"
    hash -r
  fi
  command -v cargo-zigbuild >/dev/null || cross_die "cargo-zigbuild is not in PATH after pip install (looked in $scripts)"
  if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    cross_log "rustup component add rust-src"
    rustup component add rust-src >/dev/null
  fi
}

# Adds the rustup target if rustup has a prebuilt std for it. armv7 musl answered 404 on this
# kind of machine: that target's std is then built from rust-src (see cross_target_env).
cross_add_target() {
  local target=$1
  rustup target list --installed | grep -qx "$target" && return
  if rustup target add "$target" >/dev/null 2>&1; then
    cross_log "rustup target add $target: done"
  else
    cross_log "rustup has no prebuilt std for $target: std will be built from rust-src"
  fi
}

# Whether std comes from rust-src for this target (no prebuilt std installed).
cross_needs_build_std() {
  ! rustup target list --installed | grep -qx "$1"
}

# Where cargo builds a target. Not target/: the cross builds then leave the host's own build
# alone, and the builds with RUSTC_BOOTSTRAP=1 (build-std) get a directory of their own, as
# some build scripts (proc-macro2's) rerun when it changes and would rebuild the host's crates.
cross_target_dir() {
  if cross_needs_build_std "$1"; then echo target/cross/build-std; else echo target/cross/prebuilt-std; fi
}

# The environment and cargo arguments for a target, in a mode:
#   mode "device": what ships; mode "emulated": for running under qemu-user, where LMDB's robust
#   mutexes fail with ENOSYS (qemu does not emulate set_robust_list), so LMDB is compiled
#   without them. The cc crate adds CFLAGS_<target> to the flags of lmdb-master-sys's C build.
# Sets CROSS_ENV (array of NAME=value) and CROSS_ARGS (array of cargo arguments).
cross_target_env() {
  local target=$1 mode=$2
  local tu TU qemu
  tu=${target//-/_}
  TU=${tu^^}
  CROSS_ENV=("CARGO_TARGET_DIR=$(cross_target_dir "$target")")
  CROSS_ARGS=(--target "$target" -j "$CROSS_JOBS")
  if cross_needs_build_std "$target"; then
    # -Zbuild-std on the stable toolchain: RUSTC_BOOTSTRAP unlocks it (no nightly can be
    # fetched on this kind of machine). zig brings crt objects, libc and libunwind, so rustc's
    # own self-contained objects (absent without a prebuilt std) are not asked for.
    CROSS_ENV+=(RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${TU}_RUSTFLAGS=-C link-self-contained=no")
    if [ "$mode" = device ]; then
      CROSS_ARGS+=('-Zbuild-std=std,panic_abort')
    else
      CROSS_ARGS+=(-Zbuild-std)
    fi
  fi
  qemu=$(cross_qemu "$target")
  if [ "$mode" = emulated ] && [ -n "$qemu" ]; then
    # binfmt_misc is not mounted on this kind of machine: cargo calls qemu itself.
    CROSS_ENV+=("CFLAGS_${tu}=-DMDB_USE_ROBUST=0" "CARGO_TARGET_${TU}_RUNNER=$qemu")
  fi
}

# Runs cargo-zigbuild SUBCOMMAND for a target in a mode, with extra cargo arguments.
cross_cargo() {
  local sub=$1 target=$2 mode=$3
  shift 3
  cross_target_env "$target" "$mode"
  env "${CROSS_ENV[@]}" cargo-zigbuild "$sub" "${CROSS_ARGS[@]}" "$@"
}
