#!/usr/bin/env bash
# Fuzzes manifest parsing and message decoding with cargo-fuzz (libFuzzer), each target for a
# bounded time (FUZZ_SECONDS, default 60). Not part of CI. Installs cargo-fuzz if missing; the
# sanitizer flags need nightly features, taken on the stable toolchain with RUSTC_BOOTSTRAP.
# A crash is saved under fuzz/artifacts/<target>/: fix it and add a regression test.
#   scripts/fuzz.sh [TARGET...]     targets: manifest message
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest message)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # Seeds: the example manifests, and a message as the cloud sends one.
  case "$t" in
    manifest) cp examples/*.yaml fuzz/seeds/manifest/* "fuzz/corpus/$t/" ;;
    message) printf '%s' '{"header":{"msg_id":"1","timestamp":1},"route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/p"},"content":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"},"spec":{"containers":[{"name":"c","image":"i"}]}}}' >"fuzz/corpus/$t/seed.json" ;;
  esac
  echo "fuzz: $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=65536
done
echo "fuzz: all targets ran ${secs}s without a crash"
