#!/usr/bin/env python3
"""edged benchmarks (driven by scripts/bench.sh): pod start latency beside raw runc and
containerd's ctr, memory and CPU at 0/50/100 pods, PLEG relist time, recovery after a power
cut, the store, leaks over create/delete cycles, binary sizes. Prints markdown; writes it and
a JSON of every figure to $BENCH_OUT_DIR.

Environment: EDGED_BIN (agent binary), STORE_BENCH_BIN, IMAGE_TAR, BENCH_QUICK=1 (a short
run), BENCH_STARTS (single starts, default 20), BENCH_MANY (pods at once, default 50),
BENCH_IDLE (seconds of each CPU window, default 60), BENCH_LEAK_CYCLES (default 200),
BENCH_DIST_DIR (cross-built binaries to size, default target/dist), BENCH_CNI_BIN_DIR (CNI
plugins, default /usr/lib/cni:/opt/cni/bin; the CNI section is skipped without a bridge plugin),
BENCH_CNI_ONLY=1 (the pod networking section alone), BENCH_START_ONLY=1 (the pod start section
alone), BENCH_AGENT_FLAGS (more agent flags, e.g. `--spare-shim`).
"""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgedlib import (Agent, pod_manifest, configmap_manifest, write_atomic, running, wait_for,
                      runc_containers, process_start_time, shims, mounts_under, pod_cgroups,
                      proc_status, cpu_ticks, fd_count, kill_everything, cleanup_root,
                      percentile, median, sh, IMAGE)

QUICK = os.environ.get("BENCH_QUICK") == "1"
STARTS = int(os.environ.get("BENCH_STARTS", 5 if QUICK else 20))
MANY = int(os.environ.get("BENCH_MANY", 10 if QUICK else 50))
IDLE = float(os.environ.get("BENCH_IDLE", 10 if QUICK else 60))
LEAK_CYCLES = int(os.environ.get("BENCH_LEAK_CYCLES", 20 if QUICK else 200))
NS = "edged-bench"
BIN = os.environ["EDGED_BIN"]
IMAGE_TAR = os.environ["IMAGE_TAR"]
OUT_DIR = os.environ.get("BENCH_OUT_DIR", "target/bench")
CNI_BIN_DIR = os.environ.get("BENCH_CNI_BIN_DIR", "/usr/lib/cni:/opt/cni/bin")
CNI_ONLY = os.environ.get("BENCH_CNI_ONLY") == "1"
START_ONLY = os.environ.get("BENCH_START_ONLY") == "1"
AGENT_FLAGS = os.environ.get("BENCH_AGENT_FLAGS", "").split()
CNI_BRIDGE = "edgedbench0"
CNI_PREFIX = "10.252"

results = {}
md = []


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line=""):
    md.append(line)
    print(line, flush=True)


def table(head, rows):
    out("| " + " | ".join(head) + " |")
    out("|" + "---|" * len(head))
    for r in rows:
        out("| " + " | ".join(str(x) for x in r) + " |")
    out()


def ms(x):
    return f"{x * 1000:.0f}" if x == x else "n/a"


def machine():
    mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "mem_gib": round(int(mem) / 1048576, 1),
        "kernel": platform.release(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "runc": sh("runc", "--version").splitlines()[0],
        "containerd": sh("containerd", "--version").strip(),
    }


# --- agent side -----------------------------------------------------------------------

class Bench:
    def __init__(self, work, extra=()):
        self.work = work
        self.root = os.path.join(work, "root")
        self.manifests = os.path.join(work, "manifests")
        self.logs = os.path.join(work, "logs")
        self.uids = set()
        self.agent = Agent(BIN, self.root, self.manifests, self.logs, work, freq="100ms",
                           level="debug", extra=extra)

    def write_pod(self, name, **kw):
        m = pod_manifest(NS, name, **kw)
        self.uids.add(m["metadata"]["uid"])
        write_atomic(self.manifests, name + ".json", m)
        return m

    def remove_file(self, name):
        os.unlink(os.path.join(self.manifests, name + ".json"))

    def pods(self):
        return [p for p in self.agent.get_pods() if p["metadata"]["namespace"] == NS]

    def running_names(self):
        return {p["metadata"]["name"] for p in self.pods() if running(p)}

    def wait_gone(self, names, timeout=60):
        names = set(names)

        def gone():
            left = {p["metadata"]["name"] for p in self.pods()} & names
            if left:
                return False
            ours = [c for c in runc_containers(self.root)]
            return not ours
        return wait_for(gone, timeout, 0.1)

    def idle_window(self, seconds):
        """CPU % of one core and memory of the agent over `seconds` idle, PLEG relist times."""
        pid = self.agent.pid
        self.agent.new_lines()
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.time(), cpu_ticks(pid)
        time.sleep(seconds)
        t1, c1 = time.time(), cpu_ticks(pid)
        relists = [int(f["took_us"]) for (_, _, _, text, f) in self.agent.new_lines()
                   if text.startswith("PLEG relist") and "took_us" in f]
        mem = proc_status(pid)
        sp = shims(self.root)
        shim_rss = sum(proc_status(p).get("VmRSS", 0) for p in sp)
        shim_pss = sum(pss(p) for p in sp)
        return {
            "cpu_pct": 100.0 * (c1 - c0) / hz / (t1 - t0),
            "rss_kib": mem.get("VmRSS"), "hwm_kib": mem.get("VmHWM"),
            "threads": mem.get("Threads"),
            "relist_us_p50": median(relists), "relist_us_p95": percentile(relists, 95),
            "relists": len(relists), "shims": len(sp), "shim_rss_kib": shim_rss,
            "shim_pss_kib": shim_pss,
        }

    def single_start(self, i):
        """One pod from file to running process; returns the times (s) or None."""
        name = f"single-{i}"
        self.agent.new_lines()
        m = pod_manifest(NS, name)
        self.uids.add(m["metadata"]["uid"])
        tmp = os.path.join(self.manifests, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(m, f)
        t0 = time.time()
        os.rename(tmp, os.path.join(self.manifests, name + ".json"))
        added = started = cid = None
        deadline = t0 + 60
        while started is None and time.time() < deadline:
            for (t, _, _, text, f) in self.agent.new_lines():
                if f.get("pod") != f"{NS}/{name}":
                    continue
                if text.startswith("pod added"):
                    added = t
                elif text.startswith("container started"):
                    started, cid = t, f.get("id")
            time.sleep(0.005)
        if started is None:
            say(f"  {name}: no 'container started' within 60 s")
            return None
        # Cross-check with runc: the container runs, and its process started when the log says.
        c = next((c for c in runc_containers(self.root) if c["id"] == cid), None)
        proc = None
        if c and c.get("status") == "running" and c.get("pid"):
            proc = process_start_time(c["pid"]) - t0
        ok = wait_for(lambda: name in self.running_names(), 30)
        t_running = time.time() - t0
        self.remove_file(name)
        self.wait_gone([name])
        return {"file_to_started": started - t0, "added_to_started": started - added,
                "file_to_added": added - t0, "runc_process_start": proc,
                "runc_status": c.get("status") if c else None,
                "file_to_get_running": t_running if ok else None}

    def many(self, first, count, prefix="many", with_ip=False):
        """`count` pods written at once; seconds until all are Running in `edged get pods`
        (`with_ip`: and have a `status.podIP`)."""
        names = [f"{prefix}-{i}" for i in range(first, first + count)]
        self.agent.new_lines()
        t0 = time.time()
        for n in names:
            self.write_pod(n)

        def done():
            ps = [p for p in self.pods() if running(p) and
                  (not with_ip or (p.get("status") or {}).get("podIP"))]
            return set(names) <= {p["metadata"]["name"] for p in ps}
        ok = wait_for(done, 300, 0.1)
        t_all = time.time() - t0
        starts = [t for (t, _, target, text, f) in self.agent.new_lines()
                  if text.startswith("container started") and
                  target == "edged::podmanager::worker" and
                  f.get("pod", "").split("/")[-1] in names]
        return {"all_running_s": t_all if ok else None,
                "last_started_s": (max(starts) - t0) if starts else None,
                "started_lines": len(starts)}


def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for l in f:
                if l.startswith("Pss:"):
                    return int(l.split()[1])
    except OSError:
        pass
    return 0


# --- baselines: raw runc and containerd's ctr -----------------------------------------

def unpack_image_layer(tar_path, dest):
    """Unpacks the OCI archive's (single) layer into `dest`: the same rootfs edged runs."""
    with tarfile.open(tar_path) as t:
        index = json.load(t.extractfile("./index.json"))
        mdig = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(t.extractfile(f"./blobs/sha256/{mdig}"))
        ldig = manifest["layers"][0]["digest"].split(":")[1]
        layer = t.extractfile(f"./blobs/sha256/{ldig}")
        with tarfile.open(fileobj=layer, mode="r:gz") as lt:
            lt.extractall(dest)


class Runc:
    """`runc run -d` (or crun's) of a bundle from `runc spec` (args sleep, no terminal)."""

    def __init__(self, work, binary="runc"):
        self.binary = binary
        self.root = os.path.join(work, f"{binary}-state")
        self.bundle = os.path.join(work, "runc-bundle")
        if not os.path.isdir(self.bundle):
            os.makedirs(os.path.join(self.bundle, "rootfs"))
            unpack_image_layer(IMAGE_TAR, os.path.join(self.bundle, "rootfs"))
            sh("runc", "spec", "--bundle", self.bundle)
            cfg_path = os.path.join(self.bundle, "config.json")
            cfg = json.load(open(cfg_path))
            cfg["process"]["args"] = ["sleep", "1000"]
            cfg["process"]["terminal"] = False
            json.dump(cfg, open(cfg_path, "w"))
        self.ids = []

    def run_once(self, i):
        cid = f"edged-bench-{self.binary}-{os.getpid()}-{i}"
        t0 = time.time()
        # No pipes: the container inherits runc's stdio, and a pipe would never see EOF.
        subprocess.run([self.binary, "--root", self.root, "run", "-d", "--bundle", self.bundle,
                        cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        t = time.time() - t0
        st = json.loads(sh(self.binary, "--root", self.root, "state", cid))
        assert st["status"] == "running", st
        sh(self.binary, "--root", self.root, "delete", "-f", cid)
        return t

    def create_start_once(self, i):
        """`runc create` then `runc start`: the two runc executions a shim v2 start makes (the
        Create and Start calls), with nothing of a shim: the floor of any shim v2 runtime."""
        cid = f"edged-bench-{self.binary}-cs-{os.getpid()}-{i}"
        quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, check=True)
        t0 = time.time()
        subprocess.run([self.binary, "--root", self.root, "create", "--bundle", self.bundle, cid],
                       **quiet)
        subprocess.run([self.binary, "--root", self.root, "start", cid], **quiet)
        t = time.time() - t0
        st = json.loads(sh(self.binary, "--root", self.root, "state", cid))
        assert st["status"] == "running", st
        sh(self.binary, "--root", self.root, "delete", "-f", cid)
        return t

    def cleanup(self):
        if os.path.isdir(self.root):
            listed = sh(self.binary, "--root", self.root, "list", "-f", "json") or "[]"
            for c in json.loads(listed) or []:
                subprocess.run([self.binary, "--root", self.root, "delete", "-f", c["id"]],
                               capture_output=True)


class Containerd:
    """A containerd daemon of our own (own root, state, sockets; the CRI plugin disabled: ctr
    does not use it); `ctr run --snapshotter overlayfs` (containerd's default)."""

    def __init__(self, work):
        d = os.path.join(work, "ctrd")
        os.makedirs(d)
        self.sock = os.path.join(d, "c.sock")
        self.cfg = os.path.join(d, "config.toml")
        with open(self.cfg, "w") as f:
            f.write(f'''version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
''')
        self.log = open(os.path.join(d, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", self.cfg], stdout=self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        if not wait_for(lambda: os.path.exists(self.sock), 30, 0.1):
            raise RuntimeError("containerd did not start: see " + self.log.name)
        time.sleep(0.5)
        self.ctr("images", "import", IMAGE_TAR, timeout=120)
        self.ids = []

    def ctr(self, *args, timeout=60):
        return sh("ctr", "-a", self.sock, "-n", "bench", *args, timeout=timeout)

    def run_once(self, i):
        cid = f"bench-ctr-{os.getpid()}-{i}"
        t0 = time.time()
        self.ctr("run", "-d", "--snapshotter", "overlayfs", IMAGE, cid, "sleep", "1000")
        t = time.time() - t0
        out = self.ctr("task", "ls")
        assert any(l.split()[0] == cid and "RUNNING" in l for l in out.splitlines()[1:]), out
        self.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: "STOPPED" in self.ctr("task", "ls") or
                 cid not in self.ctr("task", "ls"), 10, 0.05)
        self.ctr("task", "delete", cid)
        self.ctr("container", "delete", cid)
        return t

    def rss(self):
        return proc_status(self.proc.pid)

    def stop(self):
        try:
            for l in self.ctr("task", "ls").splitlines()[1:]:
                cid = l.split()[0]
                subprocess.run(["ctr", "-a", self.sock, "-n", "bench", "task", "delete", "-f",
                                cid], capture_output=True)
            for l in self.ctr("container", "ls", "-q").splitlines():
                subprocess.run(["ctr", "-a", self.sock, "-n", "bench", "container", "delete",
                                l.strip()], capture_output=True)
        except Exception as e:  # the daemon may be gone already
            say(f"  containerd cleanup: {e}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Shims of our daemon outlive it: kill those whose namespace is bench.
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"containerd-shim-runc-v2") and self.sock.encode() in b" ".join(argv):
                os.kill(int(p), signal.SIGKILL)


# --- sections -------------------------------------------------------------------------

def section_start(b, rc, cd, crn=None):
    say(f"== pod start latency: {STARTS} single starts (edged, runc, ctr interleaved)")
    e, r, cs, c, cr = [], [], [], [], []
    for i in range(STARTS):
        x = b.single_start(i)
        if x:
            e.append(x)
        r.append(rc.run_once(i))
        cs.append(rc.create_start_once(i))
        if crn:
            cr.append(crn.run_once(i))
        if cd:
            c.append(cd.run_once(i))
        say(f"  {i}: edged {ms(x['file_to_started']) if x else 'fail'} ms, runc {ms(r[-1])} ms,"
            f" runc create+start {ms(cs[-1])} ms" + (f", crun {ms(cr[-1])} ms" if crn else "")
            + (f", ctr {ms(c[-1])} ms" if cd else ""))
    f2s = [x["file_to_started"] for x in e]
    a2s = [x["added_to_started"] for x in e]
    f2a = [x["file_to_added"] for x in e]
    proc = [x["runc_process_start"] for x in e if x["runc_process_start"] is not None]
    getr = [x["file_to_get_running"] for x in e if x["file_to_get_running"] is not None]
    res = {"edged": e, "runc": r, "runc_create_start": cs, "crun": cr, "ctr": c}
    results["start"] = res
    flags = " ".join(["--file-check-frequency 100ms"] + AGENT_FLAGS)
    out(f"### Pod start latency (image local; {len(e)} single-pod starts, deleted between; "
        f"{flags})")
    out()
    rows = [
        ["edged: manifest file → `container started` log", ms(median(f2s)), ms(percentile(f2s, 95))],
        ["edged: of which file → `pod added` (manifest poll, 100 ms period)", ms(median(f2a)), ms(percentile(f2a, 95))],
        ["edged: agent-internal `pod added` → `container started`", ms(median(a2s)), ms(percentile(a2s, 95))],
        ["edged: file → container process start (runc state pid, /proc starttime, 10 ms res.)", ms(median(proc)), ms(percentile(proc, 95))],
        ["edged: file → Running in `edged get pods` (polled every 50 ms)", ms(median(getr)), ms(percentile(getr, 95))],
        ["raw `runc run -d` (floor)", ms(median(r)), ms(percentile(r, 95))],
        ["raw `runc create` + `runc start` (the two runc runs of a shim v2 start)",
         ms(median(cs)), ms(percentile(cs, 95))],
    ]
    if cr:
        rows.append(["raw `crun run -d`", ms(median(cr)), ms(percentile(cr, 95))])
    if c:
        rows.append(["`ctr run -d` via containerd 1.6 (overlayfs)", ms(median(c)), ms(percentile(c, 95))])
    table(["path", "p50 ms", "p95 ms"], rows)
    ratios = [["edged (file → started) / runc", f"{median(f2s) / median(r):.2f}"],
              ["edged (agent-internal) / runc", f"{median(a2s) / median(r):.2f}"],
              ["runc create + start / runc run (the shim v2 floor)",
               f"{median(cs) / median(r):.2f}"],
              ["edged (agent-internal) / runc create + start", f"{median(a2s) / median(cs):.2f}"]]
    if cr:
        ratios += [["edged (agent-internal) / crun run", f"{median(a2s) / median(cr):.2f}"]]
    if c:
        ratios += [["ctr / edged (file → started)", f"{median(c) / median(f2s):.2f}"],
                   ["ctr / edged (agent-internal)", f"{median(c) / median(a2s):.2f}"]]
    table(["ratio of medians (same run, interleaved)", "value"], ratios)
    res["summary"] = {"file_to_started_p50": median(f2s), "added_to_started_p50": median(a2s),
                      "runc_p50": median(r), "runc_create_start_p50": median(cs),
                      "ctr_p50": median(c) if c else None}


# The agent's start with each shim and OCI runtime choice (`--spare-shim`, `--runtime-binary`).
START_VARIANTS = [[], ["--spare-shim"], ["--runtime-binary", "crun"],
                  ["--runtime-binary", "crun", "--spare-shim"]]


def section_start_variants(b, rc, crn):
    """Single starts with the agent restarted with each of START_VARIANTS (crun's only when
    crun is installed), interleaved with raw runc and crun runs; the agent then runs with its
    own flags again."""
    variants = [v for v in START_VARIANTS if crn or "crun" not in v]
    say(f"== pod start by shim and runtime choice: {STARTS} single starts each")
    rows, res = [], []
    for k, v in enumerate(variants):
        b.agent.stop()
        b.agent.extra = list(AGENT_FLAGS) + v
        b.agent.start()
        time.sleep(2)  # the agent up, and its spare shim started when asked for
        a2s, r, cs, cr, ccs = [], [], [], [], []
        for i in range(STARTS):
            x = b.single_start(1000 * (k + 1) + i)
            if x:
                a2s.append(x["added_to_started"])
            r.append(rc.run_once(i))
            cs.append(rc.create_start_once(i))
            if crn:
                cr.append(crn.run_once(i))
                ccs.append(crn.create_start_once(i))
        flags = " ".join(v) or "(default: runc, no spare)"
        say(f"  {flags}: agent-internal p50 {ms(median(a2s))} ms, runc run {ms(median(r))} ms")
        rows.append([flags, ms(median(a2s)), ms(percentile(a2s, 95)),
                     f"{median(a2s) / median(r):.2f}", f"{median(a2s) / median(cs):.2f}",
                     f"{median(a2s) / median(cr):.2f}" if cr else "n/a",
                     f"{median(a2s) / median(ccs):.2f}" if ccs else "n/a"])
        res.append({"flags": v, "added_to_started": a2s, "runc": r, "runc_create_start": cs,
                    "crun": cr, "crun_create_start": ccs})
    b.agent.stop()
    b.agent.extra = list(AGENT_FLAGS)
    b.agent.start()
    time.sleep(2)
    results["start_variants"] = res
    out(f"### Pod start inside the agent by shim and OCI runtime choice ({STARTS} single-pod "
        f"starts each, interleaved with the raw runs; ratios of medians)")
    out()
    table(["agent flags", "`pod added` → `container started` p50 ms", "p95 ms",
           "/ `runc run`", "/ `runc create`+`start`", "/ `crun run`",
           "/ `crun create`+`start`"], rows)


def mem_row(label, w):
    return [label, f"{w['rss_kib'] / 1024:.1f}", f"{w['hwm_kib'] / 1024:.1f}",
            f"{w['cpu_pct']:.2f}", w["threads"], w["shims"],
            f"{w['shim_rss_kib'] / 1024 / max(1, w['shims']):.1f}" if w["shims"] else "-",
            f"{w['shim_pss_kib'] / 1024 / max(1, w['shims']):.1f}" if w["shims"] else "-",
            f"{w['relist_us_p50'] / 1000:.1f}" if w["relists"] else "n/a",
            f"{w['relist_us_p95'] / 1000:.1f}" if w["relists"] else "n/a"]


def recovery(b, count):
    """Power cut with `count` pods running: time until all run again."""
    say(f"== recovery after a power cut with {count} pods")
    before = {p["metadata"]["name"]: [c.get("containerID") for c in
                                      (p.get("status") or {}).get("containerStatuses", [])]
              for p in b.pods()}
    old_ids = {i for ids in before.values() for i in ids}
    kill_everything(b.root, b.agent)
    left = runc_containers(b.root)
    running_left = [c for c in left if c.get("status") == "running"]
    t0 = time.time()
    b.agent.start()

    def back():
        ps = b.pods()
        fresh = [p for p in ps if running(p) and not
                 ({c.get("containerID") for c in p["status"]["containerStatuses"]} & old_ids)]
        return len(fresh) >= count
    ok = wait_for(back, 300, 0.1)
    t = time.time() - t0
    lines = b.agent.new_lines()
    starts = [x[0] for x in lines if x[3].startswith("container started") and
              x[2] == "edged::podmanager::worker"]
    live = [c for c in runc_containers(b.root) if c.get("status") == "running"]
    r = {"all_running_s": t if ok else None, "last_started_s": max(starts) - t0 if starts else None,
         "started_lines": len(starts), "runc_running_after": len(live),
         "runc_running_right_after_cut": len(running_left)}
    results["recovery"] = r
    return r


def cni_net(work):
    """A bridge + host-local + portmap conflist of the run's own (bridge, subnet, IPAM dir);
    returns the agent flags, or None when the plugins are not installed."""
    dirs = [d for d in CNI_BIN_DIR.split(":") if d]
    if not any(os.path.exists(os.path.join(d, "bridge")) for d in dirs):
        return None
    cni = os.path.join(work, "cni")
    os.makedirs(os.path.join(cni, "net.d"), exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": "edged-bench", "plugins": [
        {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "dataDir": os.path.join(cni, "ipam"),
                  "ranges": [[{"subnet": f"{CNI_PREFIX}.0.0/16"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    with open(os.path.join(cni, "net.d", "10-bench.conflist"), "w") as f:
        json.dump(conf, f)
    return ["--cni-conf-dir", os.path.join(cni, "net.d"), "--cni-bin-dir", CNI_BIN_DIR,
            "--cni-cache-dir", os.path.join(cni, "cache"), "--port", "0"]


def cni_left(work):
    """What the CNI run left: veths on its bridge, IPAM reservations, cached results."""
    veths = sh("ip", "-o", "link", "show", "master", CNI_BRIDGE, check=False).splitlines()
    ipam = os.path.join(work, "cni", "ipam", "edged-bench")
    held = [n for n in (os.listdir(ipam) if os.path.isdir(ipam) else []) if n[0].isdigit()]
    cache = os.path.join(work, "cni", "cache", "results")
    cached = os.listdir(cache) if os.path.isdir(cache) else []
    return {"veths": len(veths), "ipam": len(held), "cached": len(cached)}


def cni_cleanup():
    subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)


def section_cni(b, work):
    """Pod start with the bridge conflist beside pod start without CNI (two agents, starts
    interleaved); MANY pods at once on each (with CNI: until all have an IP)."""
    flags = cni_net(work)
    if flags is None:
        say(f"== pod networking: no CNI bridge plugin in {CNI_BIN_DIR}: skipped")
        return
    cni_cleanup()
    bc = Bench(os.path.join(work, "cni-agent"), extra=flags)
    uids = set()
    try:
        sh(BIN, "--root-dir", bc.root, "image", "import", IMAGE_TAR)
        bc.agent.start()
        if not wait_for(lambda: os.path.exists(os.path.join(bc.root, "meta", "data.mdb")), 30):
            raise RuntimeError("CNI agent did not start: see " + bc.agent.log_path)
        time.sleep(2)
        say(f"== pod networking: {STARTS} single starts with the bridge conflist and without CNI")
        plain, cni = [], []
        for i in range(STARTS):
            x = b.single_start(1000 + i)
            y = bc.single_start(2000 + i)
            if x:
                plain.append(x)
            if y:
                cni.append(y)
            say(f"  {i}: no CNI {ms(x['file_to_started']) if x else 'fail'} ms, "
                f"bridge {ms(y['file_to_started']) if y else 'fail'} ms")
        say(f"== pod networking: {MANY} pods at once, without CNI and with (until all have an IP)")
        m_plain = b.many(0, MANY, prefix="plain")
        m_cni = bc.many(0, MANY, prefix="cni", with_ip=True)
        ips = {(p.get("status") or {}).get("podIP") for p in bc.pods()}
        for x, names in [(b, [p["metadata"]["name"] for p in b.pods()]),
                         (bc, [p["metadata"]["name"] for p in bc.pods()])]:
            for n in names:
                x.remove_file(n)
        t0 = time.time()
        b.wait_gone([f"plain-{i}" for i in range(MANY)], 300)
        bc.wait_gone([f"cni-{i}" for i in range(MANY)], 300)
        wait_for(lambda: not any(cni_left(bc.work).values()), 60, 0.1)
        t_del = time.time() - t0
        left = cni_left(bc.work)
    finally:
        bc.agent.stop()
        uids = bc.uids
        b.uids |= uids
        cleanup_root(bc.root)
        cni_cleanup()
    r = {"plain": plain, "cni": cni, "many_plain": m_plain, "many_cni": m_cni,
         "distinct_ips": len(ips - {None, ""}), "delete_s": t_del, "left": left}
    results["cni"] = r

    def col(xs, k):
        return [x[k] for x in xs]
    out(f"### Pod networking: start with the bridge conflist beside start without CNI "
        f"({len(cni)}/{len(plain)} single-pod starts, two agents, starts interleaved)")
    out()
    out(f"Conflist: bridge (`{CNI_BRIDGE}`, isGateway) + host-local (`{CNI_PREFIX}.0.0/16`) + "
        f"portmap, Debian's plugins from `{CNI_BIN_DIR}`; the pods have no hostPort.")
    out()
    rows = []
    for label, k in [("manifest file → `container started`", "file_to_started"),
                     ("of which file → `pod added` (manifest poll, 100 ms period)", "file_to_added"),
                     ("agent-internal `pod added` → `container started`", "added_to_started")]:
        a, c = col(plain, k), col(cni, k)
        rows.append([label, ms(median(a)), ms(percentile(a, 95)), ms(median(c)),
                     ms(percentile(c, 95)), f"{median(c) / median(a):.2f}",
                     ms(median(c) - median(a))])
    table(["path", "no CNI p50 ms", "no CNI p95 ms", "bridge p50 ms", "bridge p95 ms",
           "ratio of p50s", "p50 difference ms"], rows)
    table(["what", "seconds"], [
        [f"{MANY} manifest files written → all Running, no CNI",
         f"{m_plain['all_running_s']:.2f}" if m_plain["all_running_s"] else "timeout"],
        [f"{MANY} manifest files written → all Running with a pod IP, bridge",
         f"{m_cni['all_running_s']:.2f}" if m_cni["all_running_s"] else "timeout"],
        [f"distinct pod IPs among the {MANY}", len(ips - {None, ""})],
        [f"all {2 * MANY} files removed → no pod, veth, IPAM reservation or cached result left",
         f"{t_del:.2f}"],
        ["left after that: veths / IPAM reservations / cached results",
         f"{left['veths']} / {left['ipam']} / {left['cached']}"],
    ])


def section_leaks(b, cycles):
    say(f"== leaks: {cycles} create/delete cycles of a pod with volumes and a probe")
    write_atomic(b.manifests, "leak-cm.json", configmap_manifest(NS, "leak-cm", {"k": "v"}))
    pid = b.agent.pid
    # One warm-up cycle so caches and the first shim spawn are out of the figures.
    leak_uids = set()

    def cycle(i):
        m = b.write_pod("leak", configmap="leak-cm", probe=True, emptydir=True,
                        uid=f"00000000-0000-4000-8000-{i:012d}")
        leak_uids.add(m["metadata"]["uid"])
        ok = wait_for(lambda: "leak" in b.running_names(), 60)
        b.remove_file("leak")
        gone = b.wait_gone(["leak"])
        return ok and gone

    cycle(999999)
    time.sleep(2)

    def snap():
        return {"fds": fd_count(pid), "rss_kib": proc_status(pid)["VmRSS"],
                "mounts": len(mounts_under(b.root)), "cgroups": len(pod_cgroups(leak_uids)),
                "shims": len(shims(b.root)), "threads": len(os.listdir(f"/proc/{pid}/task")),
                "pod_dirs": len(os.listdir(os.path.join(b.root, "pods")))
                if os.path.isdir(os.path.join(b.root, "pods")) else 0,
                "bundles": len(os.listdir(os.path.join(b.root, "runtime", "containers"))),
                "sandboxes": len(os.listdir(os.path.join(b.root, "runtime", "sandboxes")))}
    before = snap()
    failed = 0
    t0 = time.time()
    for i in range(cycles):
        if not cycle(i):
            failed += 1
            say(f"  cycle {i}: the pod did not start or did not go")
            if failed >= 3:
                say("  leaks: 3 failed cycles, stopping here")
                cycles = i + 1
                break
    took = time.time() - t0
    time.sleep(3)
    after = snap()
    results["leaks"] = {"cycles": cycles, "failed": failed, "before": before, "after": after,
                        "seconds": took}
    out(f"### Leaks: {cycles} create/delete cycles (pod with a configMap and an emptyDir volume "
        f"and an exec readiness probe; {took:.0f} s, {failed} failed cycles)")
    out()
    table(["what", "before", "after", "delta"],
          [[k, before[k], after[k], after[k] - before[k]] for k in before])
    os.unlink(os.path.join(b.manifests, "leak-cm.json"))


def section_store():
    binary = os.environ.get("STORE_BENCH_BIN")
    if not binary or not os.path.exists(binary):
        out("### Store\n\nnot run: no store_bench binary\n")
        return
    n = "2000" if QUICK else "10000"
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        r = json.loads(sh(binary, d, n, timeout=600))
    results["store"] = r
    out(f"### Store (LMDB, `{os.path.basename(binary)} DIR {n}`: {r['objects']} ConfigMaps of "
        f"{r['value_bytes']} bytes)")
    out()
    table(["operation", "figure"], [
        ["put (one fsync'd transaction each)", f"{r['puts_per_s']:.0f} puts/s "
         f"(p50 {r['put_us_p50'] / 1000:.2f} ms, p99 {r['put_us_p99'] / 1000:.2f} ms)"],
        ["MetaClient::config_map (MetaManager::query + decode), p50 / p99",
         f"{r['query_us_p50']:.1f} / {r['query_us_p99']:.1f} µs"],
        ["MetaManager::query (raw JSON), p50 / p99",
         f"{r['raw_query_us_p50']:.1f} / {r['raw_query_us_p99']:.1f} µs"],
    ])


def section_sizes():
    rows = []
    dist = os.environ.get("BENCH_DIST_DIR", "target/dist")
    for p in [BIN] + sorted(__import__("glob").glob(os.path.join(dist, "edged-*"))):
        if os.path.isfile(p):
            kind = sh("file", "-b", p, check=False).split(",")[0:2]
            rows.append([p, f"{os.path.getsize(p) / 1048576:.2f} MiB", ",".join(kind).strip()])
    results["sizes"] = rows
    out("### Binary sizes")
    out()
    table(["file", "size", "type"], rows)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    m = machine()
    results["machine"] = m
    out(f"## Run of {m['date']}")
    out()
    out(f"`{' '.join(['scripts/bench.sh'] + sys.argv[1:])}`"
        f"{' (BENCH_QUICK=1)' if QUICK else ''}; {m['nproc']} cores, {m['mem_gib']} GiB, "
        f"kernel {m['kernel']}, load average at start {' '.join(m['loadavg'])} (the cores are "
        f"shared with other developers' builds and tests); {m['runc']}; {m['containerd']}.")
    out()
    work = tempfile.mkdtemp(prefix="edged-bench-", dir="/var/tmp")
    b = Bench(work, AGENT_FLAGS)
    rc = cd = crn = None
    try:
        sh(BIN, "--root-dir", b.root, "image", "import", IMAGE_TAR)
        b.agent.start()
        if not wait_for(lambda: os.path.exists(os.path.join(b.root, "meta", "data.mdb")), 30):
            raise RuntimeError("agent did not start: see " + b.agent.log_path)
        time.sleep(2)
        if CNI_ONLY:
            section_cni(b, work)
        else:
            say(f"== idle agent, 0 pods ({IDLE:.0f} s)")
            windows = [("0 pods", b.idle_window(IDLE))]
            rc = Runc(work)
            crn = Runc(work, "crun") if shutil.which("crun") else None
            try:
                cd = Containerd(work)
            except Exception as e:
                say(f"containerd baseline not run: {e}")
            if cd:
                time.sleep(2)
                results["containerd_idle"] = cd.rss()
            section_start(b, rc, cd, crn)
            if cd:
                cd.stop()
                cd = None
            section_start_variants(b, rc, crn)
        if not CNI_ONLY and not START_ONLY:
            say(f"== {MANY} pods at once")
            first = b.many(0, MANY)
            results["many"] = first
            time.sleep(2)
            say(f"== idle agent, {MANY} pods ({IDLE:.0f} s)")
            windows.append((f"{MANY} pods", b.idle_window(IDLE)))
            rec = recovery(b, MANY)
            say(f"== {MANY} more pods at once")
            second = b.many(MANY, MANY)
            results["many2"] = second
            time.sleep(2)
            say(f"== idle agent, {2 * MANY} pods ({IDLE:.0f} s)")
            windows.append((f"{2 * MANY} pods", b.idle_window(IDLE)))
            results["idle"] = {k: v for k, v in windows}
            say(f"== deleting {2 * MANY} pods")
            names = [p["metadata"]["name"] for p in b.pods()]
            t0 = time.time()
            for n in names:
                b.remove_file(n)
            b.wait_gone(names, 300)
            t_del = time.time() - t0
            results["delete_all_s"] = t_del

            out(f"### {MANY} pods at once")
            out()
            table(["what", "seconds"], [
                [f"{MANY} manifest files written → all Running in `edged get pods` (0 → {MANY})",
                 f"{first['all_running_s']:.2f}" if first["all_running_s"] else "timeout"],
                [f"… last `container started` line", f"{first['last_started_s']:.2f}"
                 if first["last_started_s"] else "n/a"],
                [f"{MANY} more ({MANY} → {2 * MANY})", f"{second['all_running_s']:.2f}"
                 if second["all_running_s"] else "timeout"],
                [f"all {2 * MANY} files removed → no pod, no container left", f"{t_del:.2f}"],
            ])
            out(f"### Recovery after a power cut ({MANY} pods; agent, shims and containers "
                f"SIGKILLed, the root's mounts unmounted, no cloud)")
            out()
            table(["what", "value"], [
                ["agent start → all pods Running again (new container ids in `edged get pods`)",
                 f"{rec['all_running_s']:.2f} s" if rec["all_running_s"] else "timeout"],
                ["agent start → last `container started` line", f"{rec['last_started_s']:.2f} s"
                 if rec["last_started_s"] else "n/a"],
                ["containers running after recovery (runc list)", rec["runc_running_after"]],
            ])
            out(f"### Agent memory and CPU at rest ({IDLE:.0f} s windows; PLEG relist from the "
                f"agent's debug line `PLEG relist took_us=`, relist period 1 s)")
            out()
            rows = [mem_row(k, v) for k, v in windows]
            table(["pods", "agent VmRSS MiB", "agent VmHWM MiB", "agent CPU % of a core",
                   "agent threads", "shims", "shim RSS MiB/pod", "shim PSS MiB/pod", "relist p50 ms",
                   "relist p95 ms"], rows)
            if "containerd_idle" in results:
                ci = results["containerd_idle"]
                out(f"For comparison: our containerd 1.6 daemon (CRI plugin disabled, one image, no "
                    f"containers) idled at VmRSS {ci['VmRSS'] / 1024:.1f} MiB "
                    f"(VmHWM {ci['VmHWM'] / 1024:.1f} MiB).")
                out()
            section_cni(b, work)
            section_leaks(b, LEAK_CYCLES)
    finally:
        if cd:
            cd.stop()
        if rc:
            rc.cleanup()
        if crn:
            crn.cleanup()
        b.agent.stop()
        errs = b.agent.errors()
        results["agent_errors"] = errs[:50]
        cleanup_root(b.root)
        for d in sorted(pod_cgroups(b.uids), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
    if not CNI_ONLY and not START_ONLY:
        section_store()
        section_sizes()
    if results.get("agent_errors"):
        out(f"Agent ERROR lines during the run: {len(results['agent_errors'])} (first: "
            f"`{results['agent_errors'][0][:200]}`)")
        out()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(OUT_DIR, f"bench-{stamp}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(OUT_DIR, f"bench-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    say(f"results: {OUT_DIR}/bench-{stamp}.md and .json; agent log kept in {work}/agent.log")
    shutil.rmtree(os.path.join(work, "root"), ignore_errors=True)


if __name__ == "__main__":
    main()
