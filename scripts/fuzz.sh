#!/usr/bin/env bash
# Fuzzes manifest parsing, message decoding and the kubelet API's request heads with cargo-fuzz
# (libFuzzer), each target for a bounded time (FUZZ_SECONDS, default 60). Not part of CI. Installs cargo-fuzz if missing; the
# sanitizer flags need nightly features, taken on the stable toolchain with RUSTC_BOOTSTRAP.
# A crash is saved under fuzz/artifacts/<target>/: fix it and add a regression test.
#   scripts/fuzz.sh [TARGET...]     targets: manifest message http_request
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest message http_request)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # Seeds: the example manifests, a message as the cloud sends one, a log request.
  case "$t" in
    manifest) cp examples/*.yaml fuzz/seeds/manifest/* "fuzz/corpus/$t/" ;;
    message) printf '%s' '{"header":{"msg_id":"1","timestamp":1},"route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/p"},"content":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"},"spec":{"containers":[{"name":"c","image":"i"}]}}}' >"fuzz/corpus/$t/seed.json" ;;
    http_request) printf 'GET /containerLogs/default/web/app?follow=true&tailLines=10&sinceTime=2024-01-01T00%%3A00%%3A00Z HTTP/1.1\r\nHost: n\r\nConnection: keep-alive\r\n\r\n' >"fuzz/corpus/$t/seed.http" ;;
  esac
  echo "fuzz: $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=65536
done
echo "fuzz: all targets ran ${secs}s without a crash"
