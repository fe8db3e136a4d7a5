#!/usr/bin/env bash
# Time to serve /stats/summary and /metrics/resource with 10 running pods (as root): each pod
# one busybox container with a 1 MiB file in its layer and a line in its log. 30 requests of
# each, one at a time, timed by curl (connect to last byte, loopback); prints min, median and
# max. Needs a release build (cargo build --release) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${EDGED_BIN:-$PWD/target/release/edged}
IMAGE_TAR=target/tmp/stats-bench-busybox.tar
[ -f "$IMAGE_TAR" ] || { mkdir -p target/tmp; scripts/make-test-image.sh "$IMAGE_TAR" >/dev/null; }
T=$(mktemp -d /var/tmp/edged-stats-bench.XXXX)
mkdir -p $T/root $T/logs $T/man
$BIN --root-dir $T/root image import "$IMAGE_TAR" >/dev/null 2>&1
for i in $(seq 10); do
  cat > $T/man/p$i.json <<P
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p$i","namespace":"bench-stats"},
 "spec":{"terminationGracePeriodSeconds":1,"containers":[
  {"name":"app","image":"docker.io/library/busybox:test","imagePullPolicy":"Never",
   "command":["sh","-c","head -c 1048576 /dev/zero > /f; echo up; sleep 100000"]}]}}
P
done
PORT=18352
$BIN --root-dir $T/root --pod-log-dir $T/logs --pod-manifest-path $T/man --file-check-frequency 1s \
  --node-name bench-stats --node-ip 127.0.0.1 --port $PORT > $T/agent.log 2>&1 &
AGENT=$!
count() { # pods with a container in the summary
  local b
  b=$(curl -sf localhost:$PORT/stats/summary || true)
  grep -o '"containers":\[{' <<<"$b" | wc -l || true
}
for i in $(seq 120); do [ "$(count)" -ge 10 ] && break; sleep 1; done
echo "pods with a running container in the summary: $(count)"
timeit() { # path
  for i in $(seq 30); do curl -sf -o /dev/null -w '%{time_total}\n' "localhost:$PORT$1"; done |
    sort -n | awk -v p="$1" '{a[NR]=$1} END {printf "%-32s min %6.1f ms  median %6.1f ms  max %6.1f ms  (n=%d)\n", p, a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, NR}'
}
timeit /stats/summary
timeit "/stats/summary?only_cpu_and_memory=true"
timeit /metrics/resource
printf 'summary size: %s bytes; metrics size: %s bytes\n' \
  "$(curl -sf localhost:$PORT/stats/summary | wc -c)" "$(curl -sf localhost:$PORT/metrics/resource | wc -c)"
rm $T/man/*.json
for i in $(seq 60); do [ -z "$(ls $T/root/runtime/containers 2>/dev/null)" ] && break; sleep 1; done
kill $AGENT; wait $AGENT || true
rm -rf $T
