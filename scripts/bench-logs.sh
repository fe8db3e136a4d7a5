#!/usr/bin/env bash
# Agent RSS, threads and CPU (as root): idle with one pod writing 10 lines/s, then with 10
# concurrent `follow=true` clients of /containerLogs over HTTP, then with 5 `edged exec`
# sessions (WebSocket, through the agent) beside those, then with 10 `edged logs -f` beside it. Needs a release build (cargo build --release) and curl; figures in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${EDGED_BIN:-$PWD/target/release/edged}
IMAGE_TAR=target/tmp/logs-bench-busybox.tar
[ -f "$IMAGE_TAR" ] || { mkdir -p target/tmp; scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null; }
T=$(mktemp -d /var/tmp/edged-logs-bench.XXXX)
mkdir -p $T/root $T/logs $T/man
$BIN --root-dir $T/root image import "$IMAGE_TAR" >/dev/null
cat > $T/man/p.json <<'P'
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ticker","namespace":"bench-logs"},
 "spec":{"terminationGracePeriodSeconds":1,"containers":[
  {"name":"app","image":"docker.io/library/busybox:test","imagePullPolicy":"Never","command":["sh","-c","i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]}]}}
P
PORT=18351
$BIN --root-dir $T/root --pod-log-dir $T/logs --pod-manifest-path $T/man --file-check-frequency 1s \
  --node-name bench-logs --node-ip 127.0.0.1 --port $PORT --container-log-max-size 64Ki > $T/agent.log 2>&1 &
AGENT=$!
sample() { # label seconds
  local s1 s2 u1 u2
  read u1 s1 < <(awk '{print $14, $15}' /proc/$AGENT/stat)
  sleep "$2"
  read u2 s2 < <(awk '{print $14, $15}' /proc/$AGENT/stat)
  local tck=$(getconf CLK_TCK)
  printf '%-34s RSS %6s kB  HWM %6s kB  threads %3s  CPU %5.2f %%\n' "$1" \
    "$(awk '/VmRSS/{print $2}' /proc/$AGENT/status)" "$(awk '/VmHWM/{print $2}' /proc/$AGENT/status)" \
    "$(awk '/Threads/{print $2}' /proc/$AGENT/status)" \
    "$(echo "scale=4; ($u2+$s2-$u1-$s1)*100/$tck/$2" | bc)"
}
for i in $(seq 60); do curl -sf localhost:$PORT/containerLogs/bench-logs/ticker/app?tailLines=1 | grep -q tick && break; sleep 1; done
sleep 10
sample "idle (1 pod, 10 lines/s)" 30
PIDS=()
for i in $(seq 10); do curl -sN "localhost:$PORT/containerLogs/bench-logs/ticker/app?follow=true" > $T/f$i.out & PIDS+=($!); done
sleep 5
sample "10 HTTP followers" 30
EXECS=()
for i in $(seq 5); do $BIN --port $PORT exec ticker -n bench-logs -- sh -c 'sleep 45; echo done' > $T/e$i.out 2>&1 & EXECS+=($!); done
sleep 5
sample "10 followers + 5 exec sessions" 30
wait "${EXECS[@]}" || true
echo "exec sessions ended: $(cat $T/e*.out | grep -c done) of 5 printed their last line"
for p in "${PIDS[@]}"; do kill $p; done; wait "${PIDS[@]}" 2>/dev/null || true
sleep 3
sample "after the 10 left" 10
echo "each follower received: $(wc -l < $T/f1.out) lines (f1), $(wc -l < $T/f10.out) (f10)"
PIDS=()
for i in $(seq 10); do $BIN --root-dir $T/root --pod-log-dir $T/logs logs ticker -n bench-logs -f > $T/c$i.out & PIDS+=($!); done
sleep 5
sample "agent, 10 CLI followers beside it" 30
C=${PIDS[0]}
printf 'one CLI follower: RSS %s kB, threads %s, CPU %s ticks over its life\n' "$(awk '/VmRSS/{print $2}' /proc/$C/status)" "$(awk '/Threads/{print $2}' /proc/$C/status)" "$(awk '{print $14+$15}' /proc/$C/stat)"
for p in "${PIDS[@]}"; do kill $p; done; wait "${PIDS[@]}" 2>/dev/null || true
rm $T/man/p.json
for i in $(seq 60); do [ -z "$(ls $T/root/runtime/containers 2>/dev/null)" ] && break; sleep 1; done
kill $AGENT; wait $AGENT || true
rm -rf $T
