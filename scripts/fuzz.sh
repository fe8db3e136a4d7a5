#!/usr/bin/env bash
# Fuzzes every parser of outside bytes with cargo-fuzz (libFuzzer), one target after the other,
# each for FUZZ_SECONDS (default 600). Not part of CI. Targets (fuzz/fuzz_targets/):
#   manifest      manifest files, JSON and YAML (edged::manifest::read, ::check)
#   message       beehive messages and the pod, ConfigMap, Secret and token answers they carry
#   http_request  kubelet API request heads, routes, queries, SPDY/WebSocket upgrade handshakes
#   cni           CNI network configs, plugin results and errors, the result cache
#   spdy          SPDY/3 frames, zlib header blocks, port-forward headers, resize JSON
#   websocket     WebSocket frames (client and server side), the kubelet's channel protocols
#   tunnel        EdgeStream tunnel messages (uvarint id, type, payload), connect requests
#   http_answer   chunked bodies, `edged exec`'s reading of kubelet answers, certificate DER,
#                 pods' answers to httpGet probes and hooks
#   registry      registry manifests/indexes/configs, auth challenges, tokens, docker config
#                 JSON, image references
#   image_archive image archives: tar index, OCI layout and docker-save layout
#   layer         layer tars (plain, gzip, zstd) unpacked into a private tmpfs
#   shim_events   ttrpc frames and protobuf events shims send to the events service
#
#   scripts/fuzz.sh [TARGET...]      FUZZ_SECONDS=30 scripts/fuzz.sh spdy
#
# Corpora grow in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/, kept between runs).
# After each target a line goes to fuzz/results.tsv (target, seconds, total execs, execs/s,
# corpus files) and a markdown table of this run is printed at the end, for BENCHMARKS.md.
# A crash stops the script (non-zero) naming its artifact under fuzz/artifacts/<target>/:
# fix the bug, add a regression test. Uses the nightly toolchain (sanitizers need it); without
# one, stable with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-600}
all=(manifest message http_request cni spdy websocket tunnel http_answer registry image_archive layer shim_events)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The fuzz crate's lock starts from edged's, so edged builds with the versions it is tested with.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

# The longest input each target is given: what its formats need, small enough to run fast.
max_len() {
  case "$1" in
    image_archive | layer) echo 32768 ;;
    manifest | spdy) echo 16384 ;;
    message | cni | websocket | registry) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

results=fuzz/results.tsv
[ -s "$results" ] || printf 'date\ttarget\tseconds\texecs\texecs_per_s\tcorpus_files\n' >"$results"
table=()
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz: no target $t (have: ${all[*]})" >&2; exit 2; }
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  case "$t" in
    manifest) cp -n examples/*.yaml "$corpus/" ;;
  esac
  log=$(mktemp)
  echo "fuzz: $t for ${secs}s (max_len $(max_len "$t"))"
  rc=0
  "${fuzz[@]}" run "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+.*DONE|==[0-9]+==|thread .* panicked|SUMMARY|Test unit written|error(\[|:))' "$log" || true
  if [ "$rc" -ne 0 ]; then
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
    tail -n 40 "$log" >&2
    echo "fuzz: $t FAILED (exit $rc); input: ${artifact:-see the log above}" >&2
    echo "fuzz: reproduce with: ${fuzz[*]} run $t ${artifact:-fuzz/artifacts/$t/<file>}" >&2
    rm -f "$log"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  ran=${ran:-$secs}
  rate=$(( ${execs:-0} / (ran > 0 ? ran : 1) ))
  files=$(find "$corpus" -type f | wc -l)
  rm -f "$log"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$t" "$ran" "${execs:-0}" "$rate" "$files" >>"$results"
  table+=("| $t | $ran | ${execs:-0} | $rate | $files |")
  echo "fuzz: $t: ${execs:-0} execs in ${ran}s ($rate/s), corpus $files files"
done
echo
echo "| target | seconds | execs | execs/s | corpus files |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${table[@]}"
echo
echo "fuzz: ${#targets[@]} target(s) ran ${secs}s each without a crash"
