#!/usr/bin/env python3
"""The node's whole footprint (driven by scripts/bench-footprint.sh, issue 19): the agent and
every shim it started, RSS and PSS from /proc/PID/smaps_rollup, threads, at FOOTPRINT_PODS
pods; a containerd 1.6 daemon of its own (bench.py's `Containerd`: own root, state and
sockets, the CRI plugin disabled) running the same command from the same image with
`ctr run -d`, daemon and shims; then shim variants at FOOTPRINT_VARIANT_PODS pods, each on a
fresh agent: the Go runc v2 shim per pod and per node (`--shim-grouping node`), the Rust runc
shim (RUST_SHIM) likewise, and what one shim's SIGKILL does to them (pods started again,
seconds until all run). Phases run one after another, never side by side: shims of the same
binary share text pages, which PSS divides among them.

Environment: EDGED_BIN, IMAGE_TAR, RUST_SHIM (empty: no Rust variants), BENCH_OUT_DIR,
FOOTPRINT_PODS ("0 10 50 100"), FOOTPRINT_VARIANT_PODS (50), FOOTPRINT_SETTLE (10 s).
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgedlib import (Agent, pod_manifest, write_atomic, running, wait_for, runc_containers,
                      container_pod_uid, cleanup_root, pod_cgroups, sh, IMAGE)
from bench import Containerd, machine, md, out, say, table

BIN = os.environ["EDGED_BIN"]
IMAGE_TAR = os.environ["IMAGE_TAR"]
OUT_DIR = os.environ.get("BENCH_OUT_DIR", "target/bench")
RUST_SHIM = os.environ.get("RUST_SHIM", "")
PODS = [int(x) for x in os.environ.get("FOOTPRINT_PODS", "0 10 50 100").split()]
VARIANT_PODS = int(os.environ.get("FOOTPRINT_VARIANT_PODS", 50))
SETTLE = float(os.environ.get("FOOTPRINT_SETTLE", 10))
NS = "edged-footprint"
GO_SHIM = "containerd-shim-runc-v2"

results = {}


def mem(pid):
    """RSS and PSS (KiB, smaps_rollup) and threads of a process; zeros if it is gone."""
    r = {"rss": 0, "pss": 0, "threads": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss"):
                    r[k.lower()] = int(v.split()[0])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    r["threads"] = int(line.split()[1])
    except OSError:
        pass
    return r


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def shim_daemons(marker):
    """Shim daemons (any `containerd-shim*` binary, not a `start`/`delete` invocation) whose
    command line holds `marker` (the events socket or daemon socket they publish to)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        argv = cmdline(p)
        if (argv and os.path.basename(argv[0]).startswith("containerd-shim")
                and argv[-1] not in ("start", "delete") and any(marker in a for a in argv)):
            found.append(int(p))
    return found


def total(pids):
    t = {"n": len(pids), "rss": 0, "pss": 0, "threads": 0}
    for p in pids:
        m = mem(p)
        for k in ("rss", "pss", "threads"):
            t[k] += m[k]
    return t


def mib(kib):
    return f"{kib / 1024:.1f}"


# --- edged ------------------------------------------------------------------------------

class Edged:
    """An agent on a fresh root under `work`, with `extra` flags."""

    def __init__(self, work, tag, extra=()):
        self.work = os.path.join(work, tag)
        os.makedirs(self.work)
        self.root = os.path.join(self.work, "root")
        self.manifests = os.path.join(self.work, "manifests")
        self.uids = set()
        self.names = []
        self.agent = Agent(BIN, self.root, self.manifests, os.path.join(self.work, "logs"),
                           self.work, freq="200ms", level="info", extra=extra)
        sh(BIN, "--root-dir", self.root, "image", "import", IMAGE_TAR)
        self.agent.start()
        if not wait_for(lambda: os.path.exists(os.path.join(self.root, "meta", "data.mdb")), 30):
            raise RuntimeError("agent did not start: see " + self.agent.log_path)
        time.sleep(1)

    def pods(self):
        return [p for p in self.agent.get_pods() if p["metadata"]["namespace"] == NS]

    def grow(self, n, timeout=300):
        """Pods up to `n` in all; seconds until every one is Running (None: timeout)."""
        t0 = time.time()
        while len(self.names) < n:
            name = f"fp-{len(self.names)}"
            m = pod_manifest(NS, name)
            self.uids.add(m["metadata"]["uid"])
            write_atomic(self.manifests, name + ".json", m)
            self.names.append(name)
        ok = wait_for(lambda: sum(1 for p in self.pods() if running(p)) >= n, timeout, 0.2)
        return time.time() - t0 if ok else None

    def measure(self):
        a = mem(self.agent.pid)
        s = total(shim_daemons(os.path.join(self.root, "runtime", "events.sock")))
        return {"agent": a, "shims": s}

    def shim_crash(self):
        """SIGKILLs the shim serving pod fp-0's container; returns how many pods' containers
        it served, how many pods were started again, and the seconds until each of those runs
        again in a new container (and every pod runs)."""
        ps = self.pods()
        before = {p["metadata"]["name"]: restarts(p) for p in ps}
        by_uid = {p["metadata"]["uid"]: p["metadata"]["name"] for p in ps}
        parent = {}
        for c in runc_containers(self.root):
            try:
                with open(f"/proc/{c['pid']}/status") as f:
                    parent[by_uid.get(container_pod_uid(c))] = next(
                        int(l.split()[1]) for l in f if l.startswith("PPid:"))
            except (OSError, StopIteration):
                pass
        shim = parent["fp-0"]
        assert os.path.basename(cmdline(shim)[0]).startswith("containerd-shim"), cmdline(shim)
        served = {n for n, s in parent.items() if s == shim}
        t0 = time.time()
        os.kill(shim, signal.SIGKILL)

        def again():
            ps = self.pods()
            done = {p["metadata"]["name"] for p in ps
                    if restarts(p) > before.get(p["metadata"]["name"], 0)}
            return served <= done and len(ps) == len(before) and all(running(p) for p in ps)
        ok = wait_for(again, 300, 0.2)
        t = time.time() - t0
        # Long enough for PLEG and a status write to show any other death the kill caused.
        time.sleep(3)
        hit = [p for p in self.pods() if restarts(p) > before.get(p["metadata"]["name"], 0)]
        return {"served": len(served), "restarted_pods": len(hit),
                "all_running_s": t if ok else None}

    def close(self):
        for n in self.names:
            try:
                os.unlink(os.path.join(self.manifests, n + ".json"))
            except FileNotFoundError:
                pass
        wait_for(lambda: not self.pods() and not runc_containers(self.root), 300, 0.2)
        self.agent.stop()
        cleanup_root(self.root)
        for d in sorted(pod_cgroups(self.uids), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
        errs = self.agent.errors()
        shutil.rmtree(self.root, ignore_errors=True)
        return errs


def restarts(p):
    cs = (p.get("status") or {}).get("containerStatuses") or []
    return sum(c.get("restartCount", 0) for c in cs)


# --- containerd ---------------------------------------------------------------------------

def ctr_phase(work):
    """containerd 1.6 (bench.py's daemon) at each pod count: daemon and its shims."""
    cd = Containerd(work)
    rows = {}
    try:
        time.sleep(2)
        ids = []
        for n in PODS:
            t0 = time.time()
            while len(ids) < n:
                cid = f"fp-{len(ids)}"
                cd.ctr("run", "-d", "--snapshotter", "overlayfs", IMAGE, cid, "sleep", "100000")
                ids.append(cid)

            def all_running():
                lines = cd.ctr("task", "ls").splitlines()[1:]
                return sum(1 for l in lines if "RUNNING" in l) >= n
            ok = wait_for(all_running, 300, 0.2)
            up = time.time() - t0 if ok else None
            time.sleep(SETTLE)
            rows[n] = {"daemon": mem(cd.proc.pid), "shims": total(shim_daemons(cd.sock)),
                       "up_s": up}
            say(f"  containerd {n} pods: daemon PSS {mib(rows[n]['daemon']['pss'])} MiB, "
                f"shims {rows[n]['shims']['n']} PSS {mib(rows[n]['shims']['pss'])} MiB")
    finally:
        cd.stop()
    return rows


# --- the run ------------------------------------------------------------------------------

def edged_phase(work):
    e = Edged(work, "edged-pod")
    rows = {}
    try:
        for n in PODS:
            up = e.grow(n)
            time.sleep(SETTLE)
            rows[n] = e.measure()
            rows[n]["up_s"] = up
            say(f"  edged {n} pods: agent PSS {mib(rows[n]['agent']['pss'])} MiB, shims "
                f"{rows[n]['shims']['n']} PSS {mib(rows[n]['shims']['pss'])} MiB")
    finally:
        results["edged_errors"] = e.close()[:20]
    return rows


def variant(work, tag, shim, grouping):
    say(f"== variant {tag}: {VARIANT_PODS} pods")
    e = Edged(work, tag, extra=["--runtime-shim", shim, "--shim-grouping", grouping])
    try:
        up = e.grow(VARIANT_PODS)
        time.sleep(SETTLE)
        r = e.measure()
        r["up_s"] = up
        r["crash"] = e.shim_crash()
        say(f"  {tag}: shims {r['shims']['n']} PSS {mib(r['shims']['pss'])} MiB; a shim "
            f"SIGKILL restarted {r['crash']['restarted_pods']} pods")
    finally:
        r_err = e.close()
    r["errors"] = r_err[:20]
    return r


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    m = machine()
    results["machine"] = m
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out(f"## Node footprint run of {m['date']}")
    out()
    out(f"`scripts/bench-footprint.sh`; {m['nproc']} cores, {m['mem_gib']} GiB, kernel "
        f"{m['kernel']}, load average at start {' '.join(m['loadavg'])} (the cores are shared "
        f"with other developers' builds and tests); {m['runc']}; {m['containerd']}; "
        f"{sh('containerd-shim-runc-v2', '-v', check=False).split(chr(10))[1].strip()} "
        f"(Go); Rust shim: {RUST_SHIM or 'not given'}; settle {SETTLE:.0f} s before each reading.")
    out()
    work = tempfile.mkdtemp(prefix="edged-footprint-", dir="/var/tmp")
    say("== edged, one shim per pod")
    ed = edged_phase(work)
    say("== containerd 1.6, ctr run -d")
    try:
        cd = ctr_phase(work)
    except Exception as ex:  # the table says so
        say(f"containerd baseline not run: {ex}")
        cd = {}
    results["edged"], results["containerd"] = ed, cd
    variants = [("go-pod", GO_SHIM, "pod"), ("go-node", GO_SHIM, "node")]
    if RUST_SHIM:
        variants += [("rust-pod", RUST_SHIM, "pod"), ("rust-node", RUST_SHIM, "node")]
    vs = {}
    for tag, shim, grouping in variants:
        try:
            vs[tag] = variant(work, tag, shim, grouping)
        except Exception as ex:
            say(f"variant {tag} failed: {ex!r}")
            vs[tag] = {"failed": str(ex)}
    results["variants"] = vs

    out("### Whole footprint by pod count (one busybox `sleep` container per pod)")
    out()
    rows = []
    for n in PODS:
        e = ed.get(n)
        c = cd.get(n)
        row = [n]
        if e:
            a, s = e["agent"], e["shims"]
            row += [mib(a["rss"]), mib(a["pss"]), a["threads"], s["n"], mib(s["rss"]),
                    mib(s["pss"]), f"{s['pss'] / 1024 / n:.2f}" if n else "-",
                    mib(a["pss"] + s["pss"])]
        else:
            row += ["n/a"] * 8
        if c:
            d, s = c["daemon"], c["shims"]
            row += [mib(d["rss"]), mib(d["pss"]), d["threads"], s["n"], mib(s["pss"]),
                    mib(d["pss"] + s["pss"])]
            row.append(f"{(d['pss'] + s['pss']) / max(1, e['agent']['pss'] + e['shims']['pss']):.2f}"
                       if e else "n/a")
        else:
            row += ["n/a"] * 7
        rows.append(row)
    table(["pods", "agent RSS MiB", "agent PSS MiB", "agent threads", "edged shims",
           "shims RSS MiB", "shims PSS MiB", "shim PSS MiB/pod", "edged total PSS MiB",
           "containerd RSS MiB", "containerd PSS MiB", "containerd threads", "its shims",
           "its shims PSS MiB", "containerd total PSS MiB", "containerd / edged (total PSS)"],
          rows)

    out(f"### Shim variants at {VARIANT_PODS} pods (each on a fresh agent; then the shim "
        f"serving pod fp-0 SIGKILLed)")
    out()
    vrows = []
    for tag, shim, grouping in variants:
        v = vs.get(tag, {})
        if "failed" in v:
            vrows.append([tag, os.path.basename(shim), grouping] + ["failed"] * 9)
            continue
        a, s, c = v["agent"], v["shims"], v["crash"]
        vrows.append([tag, os.path.basename(shim), grouping, s["n"], mib(s["rss"]), mib(s["pss"]),
                      s["threads"], mib(a["pss"]), mib(a["pss"] + s["pss"]),
                      f"{v['up_s']:.1f}" if v["up_s"] else "timeout",
                      f"{c['served']} / {c['restarted_pods']}",
                      f"{c['all_running_s']:.1f}" if c["all_running_s"] else "timeout"])
    table(["variant", "shim binary", "--shim-grouping", "shims", "shims RSS MiB",
           "shims PSS MiB", "shim threads", "agent PSS MiB", "total PSS MiB",
           f"s until {VARIANT_PODS} pods Running", "one shim SIGKILLed: pods it served / pods started again",
           "s until those run again"], vrows)
    errs = results.get("edged_errors") or []
    for v in vs.values():
        errs += v.get("errors") or []
    if errs:
        out(f"Agent ERROR lines during the run: {len(errs)} (first: `{errs[0][:200]}`)")
        out()
    with open(os.path.join(OUT_DIR, f"footprint-{stamp}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(OUT_DIR, f"footprint-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    say(f"results: {OUT_DIR}/footprint-{stamp}.md and .json; agent logs kept under {work}")


if __name__ == "__main__":
    main()
