#!/usr/bin/env python3
"""Agent threads, RSS and CPU at rest at 0 / MANY / 2*MANY pods, and the time to delete
2*MANY pods whose containers ignore SIGTERM (grace GRACE s), for a baseline binary and the
binary under test in the same run (driven by scripts/bench-threads.sh; issue 19).

Environment: BASE_BIN, EDGED_BIN (the binaries), IMAGE_TAR, BENCH_MANY (50), BENCH_IDLE
(window seconds, 30), BENCH_GRACE (terminationGracePeriodSeconds of the pods, 10),
BENCH_OUT_DIR.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (its globals: NS, IMAGE_TAR; Bench reads bench.BIN)
from edgedlib import pod_manifest, write_atomic, running, wait_for, cleanup_root, sh  # noqa: E402

MANY = int(os.environ.get("BENCH_MANY", 50))
IDLE = float(os.environ.get("BENCH_IDLE", 30))
GRACE = int(os.environ.get("BENCH_GRACE", 10))


def write_pods(b, first, count):
    names = [f"t-{i}" for i in range(first, first + count)]
    t0 = time.time()
    for n in names:
        # `sleep` as the container's init ignores SIGTERM: each stop waits its whole grace.
        m = pod_manifest(bench.NS, n, grace=GRACE)
        b.uids.add(m["metadata"]["uid"])
        write_atomic(b.manifests, n + ".json", m)

    def done():
        return set(names) <= {p["metadata"]["name"] for p in b.pods() if running(p)}
    ok = wait_for(done, 300, 0.2)
    return time.time() - t0 if ok else None


def run(binary):
    bench.BIN = binary
    work = tempfile.mkdtemp(prefix="edged-threads-", dir="/var/tmp")
    b = bench.Bench(work)
    r = {}
    try:
        sh(binary, "--root-dir", b.root, "image", "import", bench.IMAGE_TAR)
        b.agent.start()
        if not wait_for(lambda: os.path.exists(os.path.join(b.root, "meta", "data.mdb")), 30):
            raise RuntimeError("agent did not start: see " + b.agent.log_path)
        time.sleep(2)
        r["0"] = b.idle_window(IDLE)
        r["start1_s"] = write_pods(b, 0, MANY)
        time.sleep(2)
        r[str(MANY)] = b.idle_window(IDLE)
        r["start2_s"] = write_pods(b, MANY, MANY)
        time.sleep(2)
        r[str(2 * MANY)] = b.idle_window(IDLE)
        names = [p["metadata"]["name"] for p in b.pods()]
        t0 = time.time()
        for n in names:
            b.remove_file(n)
        gone = b.wait_gone(names, 20 * GRACE + 300)
        r["delete_s"] = time.time() - t0 if gone else None
        r["threads_after_delete"] = bench.proc_status(b.agent.pid).get("Threads")
        # The pool's threads above its bound end after 500 ms idle.
        time.sleep(3)
        r["threads_3s_later"] = bench.proc_status(b.agent.pid).get("Threads")
    finally:
        b.agent.stop()
        cleanup_root(b.root)
    return r


def main():
    base, new = os.environ["BASE_BIN"], os.environ["EDGED_BIN"]
    m = bench.machine()
    print(f"## Threads run of {m['date']}: load average at start {' '.join(m['loadavg'])}, "
          f"{m['nproc']} cores; {MANY} / {2 * MANY} pods, {IDLE:.0f} s windows, grace {GRACE} s\n")
    res = {}
    for label, binary in [("before", base), ("after", new)]:
        print(f"== {label}: {binary}", file=sys.stderr, flush=True)
        res[label] = run(binary)
    print("| pods | threads before / after | RSS MiB before / after | CPU % core before / after |")
    print("|---|---|---|---|")
    for k in ["0", str(MANY), str(2 * MANY)]:
        a, z = res["before"][k], res["after"][k]
        print(f"| {k} | {a['threads']} / {z['threads']} | {a['rss_kib'] / 1024:.1f} / "
              f"{z['rss_kib'] / 1024:.1f} | {a['cpu_pct']:.2f} / {z['cpu_pct']:.2f} |")
    print()
    for k, what in [("start1_s", f"0 → {MANY} pods Running (s)"),
                    ("start2_s", f"{MANY} → {2 * MANY} pods Running (s)"),
                    ("delete_s", f"{2 * MANY} pods deleted, grace {GRACE} s, SIGTERM ignored (s)"),
                    ("threads_after_delete", "threads when the last pod was gone"),
                    ("threads_3s_later", "threads 3 s later")]:
        a, z = res["before"].get(k), res["after"].get(k)
        fmt = (lambda v: f"{v:.1f}" if isinstance(v, float) else str(v))
        ratio = f" (after/before {z / a:.2f})" if isinstance(a, float) and isinstance(z, float) else ""
        print(f"- {what}: before {fmt(a)}, after {fmt(z)}{ratio}")


if __name__ == "__main__":
    main()
