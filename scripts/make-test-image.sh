#!/usr/bin/env bash
# Builds a small busybox image archive for tests and examples, with plain shell tools only
# (tar, sha256sum, gzip): one layer holding Debian's static /bin/busybox and its applet
# links, a config with Cmd ["sh"] and PATH, for this machine's platform.
#
#   scripts/make-test-image.sh OUT.tar [--format oci|docker] [--name REF] [--pad-mb N]
#
# --format oci (default): an OCI image layout (gzip layer) with the name in index.json's
#   annotations. --format docker: a `docker save` archive (plain layer.tar, RepoTags).
# --name defaults to docker.io/library/busybox:test. The output is byte-for-byte the same on
# every run (fixed mtimes and owners), so its digests are stable.
# --pad-mb N (N > 0) adds a second layer holding /pad/data, N MiB made from the name: images
#   of different names then differ (their own layer each) and share the busybox layer.
set -euo pipefail

usage() { echo "usage: $0 OUT.tar [--format oci|docker] [--name REF] [--pad-mb N]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
format=oci
name=docker.io/library/busybox:test
pad_mb=0
while [ $# -gt 0 ]; do
  case "$1" in
    --format) [ $# -ge 2 ] || usage; format=$2; shift 2 ;;
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    --pad-mb) [ $# -ge 2 ] || usage; pad_mb=$2; shift 2 ;;
    *) usage ;;
  esac
done
case "$format" in oci|docker) ;; *) echo "$0: --format is oci or docker, not $format" >&2; exit 2 ;; esac
case "$pad_mb" in ''|*[!0-9]*) echo "$0: --pad-mb is a whole number of MiB, not $pad_mb" >&2; exit 2 ;; esac

# A static busybox (the image has no libc). Debian's busybox-static ships one.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  echo "$0: installing busybox-static" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq busybox-static >/dev/null
fi

case "$(uname -m)" in
  x86_64) arch=amd64; variant= ;;
  aarch64|arm64) arch=arm64; variant=v8 ;;
  armv7*|armhf) arch=arm; variant=v7 ;;
  *) echo "$0: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
platform="\"architecture\":\"$arch\",\"os\":\"linux\"${variant:+,\"variant\":\"$variant\"}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,var/www}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in sh ash sleep echo cat ls env id hostname wget nc httpd true false test '[' \
    mkdir touch kill ps rm cp mv ln grep sed awk head tail wc date uname printf pwd chmod \
    chown which stat df du mount umount ip ping nslookup seq tee sort tr cut xargs find \
    readlink realpath basename dirname timeout whoami sync yes vi; do
  ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

layer=$work/layer.tar
tar --create --file "$layer" --directory "$root" --sort=name --mtime=@0 \
  --owner=0 --group=0 --numeric-owner --format=gnu .
diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
layers=("$layer")
diff_ids=("$diff_id")
if [ "$pad_mb" -gt 0 ]; then
  mkdir -p "$work/pad/pad"
  # yes ends by SIGPIPE when head has enough: not a failure.
  { yes "$name" || true; } | head -c $((pad_mb * 1048576)) >"$work/pad/pad/data"
  tar --create --file "$work/pad.tar" --directory "$work/pad" --sort=name --mtime=@0 \
    --owner=0 --group=0 --numeric-owner --format=gnu .
  layers+=("$work/pad.tar")
  diff_ids+=("$(sha256sum "$work/pad.tar" | cut -d' ' -f1)")
fi
diff_list=$(printf '"sha256:%s",' "${diff_ids[@]}"); diff_list=${diff_list%,}
history=$(for _ in "${diff_ids[@]}"; do printf '{"created":"1970-01-01T00:00:00Z","created_by":"make-test-image.sh"},'; done); history=${history%,}

env_path='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
config="{$platform,\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Cmd\":[\"sh\"],\"Env\":[\"$env_path\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_list]},\"history\":[$history]}"
config_hex=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)

pkg=$work/pkg
mkdir -p "$pkg"
if [ "$format" = oci ]; then
  mkdir -p "$pkg/blobs/sha256"
  descs=
  for l in "${layers[@]}"; do
    gzip -n -9 <"$l" >"$work/layer.tar.gz"
    layer_hex=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
    layer_size=$(stat -c %s "$work/layer.tar.gz")
    mv "$work/layer.tar.gz" "$pkg/blobs/sha256/$layer_hex"
    descs="$descs{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer_hex\",\"size\":$layer_size},"
  done
  descs=${descs%,}
  printf '%s' "$config" >"$pkg/blobs/sha256/$config_hex"
  manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_hex\",\"size\":${#config}},\"layers\":[$descs]}"
  manifest_hex=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
  printf '%s' "$manifest" >"$pkg/blobs/sha256/$manifest_hex"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$pkg/oci-layout"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"platform":{%s}}]}' \
    "$manifest_hex" "${#manifest}" "$name" "$name" "$platform" >"$pkg/index.json"
else
  paths=
  for i in "${!layers[@]}"; do
    d=${diff_ids[$i]}
    mkdir -p "$pkg/$d"
    mv "${layers[$i]}" "$pkg/$d/layer.tar"
    printf '1.0' >"$pkg/$d/VERSION"
    paths="$paths\"$d/layer.tar\","
  done
  paths=${paths%,}
  diff_id=${diff_ids[-1]}
  printf '%s' "$config" >"$pkg/$config_hex.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":[%s]}]' \
    "$config_hex" "$name" "$paths" >"$pkg/manifest.json"
  base=${name##*/}
  if [ "${base#*:}" != "$base" ]; then repo=${name%:*}; tag=${base##*:}; else repo=$name; tag=latest; fi
  printf '{"%s":{"%s":"%s"}}' "$repo" "$tag" "$diff_id" >"$pkg/repositories"
fi

tar --create --file "$out.tmp" --directory "$pkg" --sort=name --mtime=@0 \
  --owner=0 --group=0 --numeric-owner --format=gnu .
mv "$out.tmp" "$out"
echo "$out: $format image $name (config sha256:$config_hex)"
