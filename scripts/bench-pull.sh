#!/usr/bin/env bash
# Registry pull benchmark (issue 13), one bounded run (about a minute): a ~50 MB image of
# six layers (busybox and five 8 MiB random layers) in Debian's docker-registry on loopback,
# pulled by `edged image pull` and copied by `skopeo copy docker://... oci:...` in the same
# run, BENCH_PULL_RUNS times each (default 3); prints the median times, their ratio, and
# edged's peak RSS during a pull beside its peak RSS for `image ls` (its idle figure).
#
#   scripts/bench-pull.sh        EDGED_BIN=... scripts/bench-pull.sh
# Needs docker-registry, skopeo, python3 (scripts/setup.sh). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in docker-registry skopeo python3; do
  command -v "$tool" >/dev/null || { echo "bench-pull.sh: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done
if [ -z "${EDGED_BIN:-}" ]; then
  cargo build --release --quiet --bin edged
  EDGED_BIN=$PWD/target/release/edged
fi
runs=${BENCH_PULL_RUNS:-3}
work=$(mktemp -d /tmp/edged-bench-pull-XXXXXX)
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

scripts/make-test-image.sh "$work/busybox.tar" >/dev/null
mkdir -p "$work/layout" && tar -xf "$work/busybox.tar" -C "$work/layout"
python3 - "$work/layout" <<'PY'
import hashlib, io, json, os, sys, tarfile
d = sys.argv[1]
def put(data):
    h = hashlib.sha256(data).hexdigest()
    open(os.path.join(d, "blobs/sha256", h), "wb").write(data)
    return "sha256:" + h
def get(dg):
    return open(os.path.join(d, "blobs/sha256", dg[7:]), "rb").read()
idx = json.load(open(os.path.join(d, "index.json")))
m = json.loads(get(idx["manifests"][0]["digest"]))
cfg = json.loads(get(m["config"]["digest"]))
for i in range(5):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        data = os.urandom(8 << 20)
        ti = tarfile.TarInfo(f"pad/{i}"); ti.size = len(data); ti.mtime = 1
        t.addfile(ti, io.BytesIO(data))
    layer = buf.getvalue()
    dg = put(layer)
    cfg["rootfs"]["diff_ids"].append(dg)
    m["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": len(layer)})
cb = json.dumps(cfg).encode(); m["config"]["digest"] = put(cb); m["config"]["size"] = len(cb)
mb = json.dumps(m).encode()
idx = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(mb), "size": len(mb)}]}
json.dump(idx, open(os.path.join(d, "index.json"), "w"))
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/reg.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/regdata
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
ref=127.0.0.1:$port/bench/app:1
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout" "docker://$ref"
size=$(du -sb "$work/regdata" | cut -f1)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
edged_times=() skopeo_times=() rss=()
for i in $(seq "$runs"); do
  rm -rf "$work/root" "$work/oci"
  /usr/bin/time -f '%e %M' -o "$work/t" "$EDGED_BIN" --root-dir "$work/root" image pull "$ref" >/dev/null 2>&1
  read -r secs kb <"$work/t"; edged_times+=("$secs"); rss+=("$kb")
  /usr/bin/time -f '%e' -o "$work/t" skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/oci" >/dev/null
  skopeo_times+=("$(cat "$work/t")")
done
/usr/bin/time -f '%M' -o "$work/t" "$EDGED_BIN" --root-dir "$work/root" image ls >/dev/null
idle=$(cat "$work/t")
e=$(printf '%s\n' "${edged_times[@]}" | median)
s=$(printf '%s\n' "${skopeo_times[@]}" | median)
r=$(printf '%s\n' "${rss[@]}" | median)
echo "| figure | value |"
echo "| --- | --- |"
echo "| image (registry storage) | $((size / 1000000)) MB, 6 layers |"
echo "| edged image pull (median of $runs) | ${e} s |"
echo "| skopeo copy docker:// oci: (median of $runs) | ${s} s |"
echo "| ratio edged / skopeo | $(python3 -c "print(f'{$e / $s:.2f}')") |"
echo "| edged peak RSS during the pull | $((r / 1024)) MiB |"
echo "| edged peak RSS of image ls (idle) | $((idle / 1024)) MiB |"
echo "| pull above idle | $(((r - idle) / 1024)) MiB |"
