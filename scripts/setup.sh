#!/usr/bin/env bash
# Installs what edged and its tests need on a Debian machine: the containerd shim, runc and
# crun, and busybox-static for the test image. Safe to run again.
set -euo pipefail
need=()
command -v containerd-shim-runc-v2 >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
[ -x /bin/busybox ] && file_is_static=$(ldd /bin/busybox 2>&1 | grep -c "not a dynamic") || file_is_static=0
[ "$file_is_static" = 1 ] || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v cc >/dev/null || need+=(gcc)
# Test tools: the store's power-cut test (loop device, ext4), its fsync check (strace), zstd
# layers for the image tests.
command -v strace >/dev/null || need+=(strace)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v zstd >/dev/null || need+=(zstd)
command -v python3 >/dev/null || need+=(python3)
command -v file >/dev/null || need+=(file)
# Pod networking tests (tests/network.rs): Debian's CNI plugins (bridge, host-local, portmap
# in /usr/lib/cni) and iptables for portmap.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/portmap ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
# Registry pull tests: a real registry, skopeo to push into it, htpasswd (bcrypt) for basic auth.
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The grpc probe test (tests/probes_grpc.rs): a real gRPC health server, grpcio's, from PyPI
# (into the system python; on a Debian python that refuses pip, past its guard).
if ! python3 -c "import grpc, grpc_health.v1.health" 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  }
  python3 -m pip install --quiet grpcio grpcio-health-checking 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages grpcio grpcio-health-checking
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing (this machine kind ships a Rust toolchain)" >&2; exit 1; }
