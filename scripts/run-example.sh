#!/usr/bin/env bash
# The main job: sets up this machine, builds edged, imports the busybox test image and runs
# the agent with the pods of examples/ as static pods. Prints the pod table and the pod's log
# once it is Running, then keeps the agent in the foreground until Ctrl-C (the pod keeps
# running after, as with a kubelet; `scripts/run-example.sh --clean` removes it).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run-example.sh: run as root (edged makes containers and mounts)" >&2; exit 1; }
ROOT=${EDGED_ROOT:-/var/lib/edged-example}
LOGS=${EDGED_LOGS:-/var/log/pods}
if [ "${1:-}" = "--clean" ]; then
  # Start the agent on an empty manifest dir: it deletes the example's pods, then stop it.
  empty=$(mktemp -d)
  target/release/edged --root-dir "$ROOT" --pod-manifest-path "$empty" --file-check-frequency 1s &
  pid=$!
  # The store forgets the pod at once; the pod is gone when its sandbox is.
  for _ in $(seq 1 60); do
    [ -n "$(ls -A "$ROOT/runtime/sandboxes" 2>/dev/null)" ] || break
    sleep 1
  done
  kill -TERM "$pid"; wait "$pid" || true
  left=$(awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r)
  if [ -n "$left" ]; then
    echo "run-example.sh: mounts left under $ROOT (unmounting): $left" >&2
    for m in $left; do umount -l "$m"; done
  fi
  rm -rf "$ROOT" "$empty"
  echo "example removed"
  exit 0
fi
scripts/setup.sh
cargo build --release --quiet
BIN=target/release/edged
img=$(mktemp -d)/busybox.tar
scripts/make-test-image.sh "$img" >/dev/null
"$BIN" --root-dir "$ROOT" image import "$img"
"$BIN" --root-dir "$ROOT" image ls
(
  # Show the pod once it runs.
  for _ in $(seq 1 60); do
    if "$BIN" --root-dir "$ROOT" get pods 2>/dev/null | grep -q "hello .*1/1 *Running"; then
      echo; "$BIN" --root-dir "$ROOT" get pods
      echo; echo "--- log of container web:"; cat "$LOGS"/default_hello_*/web/*.log 2>/dev/null | tail -n 5
      echo; echo "edged is running the example pod; Ctrl-C stops the agent (the pod keeps running)."
      exit 0
    fi
    sleep 1
  done
  echo "the example pod did not become Running within 60 s:" >&2
  "$BIN" --root-dir "$ROOT" get pods -o yaml >&2 || true
) &
exec "$BIN" --root-dir "$ROOT" --pod-log-dir "$LOGS" --pod-manifest-path examples --file-check-frequency 5s
