#!/usr/bin/env python3
"""Crash harness (driven by scripts/chaos.sh and tests/chaos.rs): pod churn through the
manifest directory (create, update an env value, delete; some pods with a configMap volume and
an exec readiness probe), the agent SIGKILLed at random moments and restarted; after each cycle
every invariant is checked until it holds or a deadline passes:

  - no stored object lost: `edged get pods -o json` holds exactly the pods whose file exists;
  - every pod converges: Running (ready), its running container has its file's env value, and
    it has one running container;
  - no orphan container (runc list, bundles under the root: every one belongs to a pod that
    exists), no orphan shim (shims ≤ pods, one more with --spare-shim, and that one the only
    spare; a shim whose bundle is readable serves a live pod),
    no orphan mount (under the root, in /proc/self/mountinfo, naming a pod or container that
    is gone), no orphan cgroup (<hierarchy>/edged/pod<uid> of a gone pod).

--power-cut also SIGKILLs the shims and containers, unmounts the root's mounts and empties
what a reboot empties (runc state and shim sockets in /run, the pods' cgroups).

Prints a summary line; exits 1 on a violation, naming what was found.
Environment: EDGED_BIN, IMAGE_TAR, CHAOS_AGENT_FLAGS (more agent flags, e.g.
`--shim-grouping node` or `--spare-shim`).
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgedlib import (Agent, pod_manifest, configmap_manifest, write_atomic, running, wait_for,
                      runc_containers, container_pod_uid, container_env, shims, mounts_under,
                      pod_cgroups, kill_everything, cleanup_root, sh)

NS = "edged-chaos"


def say(*a):
    print(*a, flush=True)


def readlink(path):
    """os.readlink, or "" when the link cannot be read (the process is gone)."""
    try:
        return os.readlink(path)
    except OSError:
        return ""


class Chaos:
    def __init__(self, args, work):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = work
        self.root = os.path.join(work, "root")
        self.manifests = os.path.join(work, "manifests")
        self.logs = os.path.join(work, "logs")
        flags = os.environ.get("CHAOS_AGENT_FLAGS", "").split()
        self.spare = "--spare-shim" in flags
        self.agent = Agent(os.environ["EDGED_BIN"], self.root, self.manifests, self.logs, work,
                           freq="200ms", extra=["--container-gc-period", "5s"] + flags)
        self.names = [f"p{i}" for i in range(args.pods)]
        # name → (uid, env version); absent: no file. Pods p0..p(with_volume-1) have the
        # configMap volume and the exec probe.
        self.want = {}
        self.uids = {n: [] for n in self.names}  # every uid a name had
        self.version = 0
        self.cm_version = 0
        self.conv = []  # seconds each cycle took to converge
        self.stats = {"creates": 0, "updates": 0, "deletes": 0, "cm_updates": 0, "kills": 0}

    # --- churn -------------------------------------------------------------------------

    def write(self, name, uid):
        self.version += 1
        fancy = int(name[1:]) < self.args.with_volume
        m = pod_manifest(NS, name, uid=uid, env={"VALUE": str(self.version)}, grace=1,
                         configmap="chaos-cm" if fancy else None, probe=fancy)
        write_atomic(self.manifests, name + ".json", m)
        self.want[name] = (uid, str(self.version))

    def write_cm(self):
        self.cm_version += 1
        write_atomic(self.manifests, "chaos-cm.json",
                     configmap_manifest(NS, "chaos-cm", {"version": str(self.cm_version)}))

    def op(self):
        name = self.rng.choice(self.names)
        r = self.rng.random()
        if r < 0.1:
            self.write_cm()
            self.stats["cm_updates"] += 1
        elif name not in self.want:
            uid = f"c4a05000-0000-4000-8000-{self.rng.getrandbits(48):012x}"
            self.uids[name].append(uid)
            self.write(name, uid)
            self.stats["creates"] += 1
        elif r < 0.6:
            self.write(name, self.want[name][0])
            self.stats["updates"] += 1
        else:
            os.unlink(os.path.join(self.manifests, name + ".json"))
            del self.want[name]
            self.stats["deletes"] += 1

    # --- checks ------------------------------------------------------------------------

    def violations(self):
        """What is wrong now (empty: every invariant holds)."""
        bad = []
        pods = {p["metadata"]["name"]: p for p in self.agent.get_pods()
                if p["metadata"]["namespace"] == NS}
        for name, (uid, value) in self.want.items():
            p = pods.get(name)
            if p is None:
                bad.append(f"lost: pod {name} has a file but is not in the store")
            elif p["metadata"].get("uid") != uid:
                bad.append(f"stale: pod {name} has uid {p['metadata'].get('uid')} in the store, "
                           f"{uid} in its file")
        for name in pods:
            if name not in self.want:
                bad.append(f"undeleted: pod {name} is in the store but its file is gone")
        live_uids = {uid for uid, _ in self.want.values()}
        containers = runc_containers(self.root)
        by_uid = {}
        for c in containers:
            uid = container_pod_uid(c)
            if uid not in live_uids:
                bad.append(f"orphan container {c['id']} ({c.get('status')}) of pod uid {uid}")
            elif c.get("status") == "running":
                by_uid.setdefault(uid, []).append(c)
        for name, (uid, value) in self.want.items():
            p = pods.get(name)
            run = by_uid.get(uid, [])
            if len(run) != 1:
                bad.append(f"pod {name}: {len(run)} running containers, want 1")
                continue
            env = container_env(run[0]["pid"]) or {}
            if env.get("VALUE") != value:
                bad.append(f"pod {name}: running container has VALUE={env.get('VALUE')}, "
                           f"its file says {value}")
            if p is not None and not running(p):
                st = p.get("status") or {}
                bad.append(f"pod {name}: status {st.get('phase')} "
                           f"{[c.get('state') for c in st.get('containerStatuses', [])]}")
            elif p is not None:
                ids = {c.get("containerID", "").split("://")[-1]
                       for c in p["status"].get("containerStatuses", [])}
                if run[0]["id"] not in ids:
                    bad.append(f"pod {name}: status names {ids}, runc runs {run[0]['id']}")
        sp = shims(self.root)
        # With --spare-shim one idle shim waits for the next pod, in <root>/runtime/spares/.
        spare_dir = os.path.join(os.path.realpath(self.root), "runtime", "spares") + "/"
        # A claimed spare runs in its removed directory (" (deleted)"): a pod's shim now.
        spares = [pid for pid in sp if readlink(f"/proc/{pid}/cwd").startswith(spare_dir)
                  and not readlink(f"/proc/{pid}/cwd").endswith(" (deleted)")]
        allowed = len(self.want) + (1 if self.spare else 0)
        if len(sp) > allowed:
            bad.append(f"orphan shim: {len(sp)} shims for {len(self.want)} pods "
                       f"({'with' if self.spare else 'no'} spare; pids {sp})")
        if len(spares) > (1 if self.spare else 0):
            bad.append(f"spare shims {spares}: at most one with --spare-shim, none without")
        if self.spare and os.path.isdir(spare_dir) and len(os.listdir(spare_dir)) > 1:
            bad.append(f"spare shim dirs left: {sorted(os.listdir(spare_dir))}")
        for pid in sp:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
                uid = json.load(open(os.path.join(cwd, "meta.json"))).get("pod_uid")
            except (OSError, ValueError):
                continue  # its first container's bundle is gone: judged by the count above
            if uid not in live_uids:
                bad.append(f"orphan shim {pid} of pod uid {uid}")
        live_ids = {c["id"] for c in containers if container_pod_uid(c) in live_uids}
        for mp in mounts_under(self.root):
            rel = os.path.relpath(mp, self.root).split("/")
            if not any(part in live_uids or part in live_ids for part in rel):
                bad.append(f"orphan mount {mp}")
        gone_uids = {u for us in self.uids.values() for u in us} - live_uids
        for d in pod_cgroups(gone_uids):
            bad.append(f"orphan cgroup {d}")
        for d in pod_cgroups(live_uids):
            cid = os.path.basename(d)
            if not cid.startswith("pod") and cid not in {c["id"] for c in containers}:
                bad.append(f"orphan cgroup {d} (no such container)")
        return bad

    def settle(self):
        """Waits for the invariants; returns the violations left at the deadline."""
        deadline = time.time() + self.args.deadline
        while True:
            bad = self.violations()
            if not bad or time.time() >= deadline:
                return bad
            time.sleep(0.5)

    # --- the run -----------------------------------------------------------------------

    def run(self):
        a = self.args
        sh(os.environ["EDGED_BIN"], "--root-dir", self.root, "image", "import",
           os.environ["IMAGE_TAR"])
        os.makedirs(self.manifests)
        self.write_cm()
        for n in self.names[: max(1, a.pods // 2)]:
            uid = f"c4a05000-0000-4000-8000-{self.rng.getrandbits(48):012x}"
            self.uids[n].append(uid)
            self.write(n, uid)
        self.agent.start()
        bad = self.settle()
        if bad:
            return 0, ["before any kill: " + b for b in bad]
        started = time.time()
        done = 0
        conv = self.conv
        for cycle in range(a.cycles):
            if time.time() - started > a.max_seconds:
                say(f"chaos: time budget of {a.max_seconds} s spent after {done} cycles")
                break
            # Churn, with the kill at a random moment inside it.
            ops = self.rng.randint(2, 6)
            kill_at = self.rng.randint(0, ops)
            for i in range(ops + 1):
                if i == kill_at:
                    time.sleep(self.rng.uniform(0, 0.8))
                    if a.power_cut:
                        kill_everything(self.root, self.agent, unmount=True, reboot=True)
                    else:
                        self.agent.kill9()
                    self.stats["kills"] += 1
                    time.sleep(self.rng.uniform(0, 0.3))
                    self.agent.start()
                if i < ops:
                    self.op()
                    time.sleep(self.rng.uniform(0, 0.4))
            t0 = time.time()
            bad = self.settle()
            done += 1
            if bad:
                return done, bad
            conv.append(time.time() - t0)
            say(f"cycle {cycle + 1}/{a.cycles}: ok ({len(self.want)} pods, converged in "
                f"{conv[-1]:.1f} s)")
        return done, []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cycles", nargs="?", type=int, default=100)
    ap.add_argument("--power-cut", action="store_true",
                    help="also kill shims and containers, unmount, empty /run state and cgroups")
    ap.add_argument("--pods", type=int, default=8, help="pod names churned (default 8)")
    ap.add_argument("--with-volume", type=int, default=3,
                    help="pods with a configMap volume and an exec probe (default 3)")
    ap.add_argument("--deadline", type=float, default=90,
                    help="seconds a cycle may take to converge (default 90)")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="stop starting cycles after this long (default 3600)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) on success")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    work = tempfile.mkdtemp(prefix="edged-chaos-", dir="/var/tmp")
    c = Chaos(args, work)
    t0 = time.time()
    done, bad = 0, ["harness failed"]
    try:
        done, bad = c.run()
    except Exception as e:  # a harness error is a failed run too, with its reason
        bad = [f"harness error: {type(e).__name__}: {e}"]
    finally:
        c.agent.stop()
        errors = c.agent.errors()
        cleanup_root(c.root)
        all_uids = [u for us in c.uids.values() for u in us]
        for d in sorted(pod_cgroups(all_uids), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
    conv = sorted(c.conv)
    med = conv[len(conv) // 2] if conv else float("nan")
    mode = "power-cut" if args.power_cut else "agent-kill"
    s = c.stats
    summary = (f"chaos {mode}: {done}/{args.cycles} cycles, {'VIOLATION' if bad else 'ok'}; "
               f"{s['kills']} kills, {s['creates']} creates, {s['updates']} updates, "
               f"{s['deletes']} deletes, {s['cm_updates']} configmap updates; convergence "
               f"median {med:.1f} s, max {max(conv) if conv else float('nan'):.1f} s; "
               f"{len(errors)} agent ERROR lines; {time.time() - t0:.0f} s; seed {args.seed}")
    if bad:
        print("\n".join(["violations:"] + ["  " + b for b in bad]), flush=True)
        with open(os.path.join(work, "violations.txt"), "w") as f:
            f.write("\n".join(bad + [summary]) + "\n")
        print(f"work dir kept: {work} (agent.log, violations.txt)", flush=True)
    elif args.keep:
        print(f"work dir kept: {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        print("agent ERROR lines (first 5):\n  " + "\n  ".join(e[:300] for e in errors[:5]))
    print(summary, flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
