"""Helpers shared by bench.py and chaos.py (python3 stdlib only): run an edged agent on its
own root dir, write pod manifests atomically, read `edged get pods`, and look at what the
host holds for that root dir (runc containers, shims, mounts, cgroups)."""

import datetime
import json
import math
import os
import re
import signal
import subprocess
import time
import uuid

IMAGE = "docker.io/library/busybox:test"
RUNC_ROOT = "/run/containerd/runc/edged"  # runc state of edged's shims (namespace edged)
SHIM = "containerd-shim-runc-v2"
LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+)\s+(\w+)\s+(\S+?): (.*)$")
FIELD_RE = re.compile(r"(\w+)=(\S+)")


def sh(*args, check=True, timeout=60, **kw):
    """Runs a command, returns its stdout as text."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def parse_ts(s):
    """An RFC 3339 timestamp of the agent's log as a Unix time (float seconds)."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Agent:
    """One edged agent process with its log file; restartable on the same root dir."""

    def __init__(self, binary, root, manifests, logdir, work, freq="100ms", level="info",
                 extra=()):
        self.binary, self.root, self.manifests, self.logdir = binary, root, manifests, logdir
        self.freq, self.level, self.extra = freq, level, list(extra)
        self.log_path = os.path.join(work, "agent.log")
        self.proc = None
        self.started_at = None
        self._pos = 0

    def start(self):
        os.makedirs(self.manifests, exist_ok=True)
        log = open(self.log_path, "a")
        args = [self.binary, "--root-dir", self.root, "--pod-log-dir", self.logdir,
                "--pod-manifest-path", self.manifests, "--file-check-frequency", self.freq,
                "--log-level", self.level, *self.extra]
        self.started_at = time.time()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        return self.proc.pid

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if not self.alive():
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def get_pods(self):
        """Pods of the store (with their stored status), as `edged get pods -o json` has them."""
        out = sh(self.binary, "--root-dir", self.root, "get", "pods", "-o", "json", check=False)
        try:
            return json.loads(out).get("items", [])
        except ValueError:
            return []

    def new_lines(self):
        """Log lines written since the last call: (unix time, level, target, text, fields)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._pos += end
        out = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            m = LOG_RE.match(line)
            if not m:
                continue
            ts, level, target, rest = m.groups()
            try:
                t = parse_ts(ts)
            except ValueError:
                continue
            out.append((t, level, target, rest, dict(FIELD_RE.findall(rest))))
        return out

    def errors(self):
        """ERROR lines and panics of the whole log."""
        with open(self.log_path, errors="replace") as f:
            return [l.rstrip() for l in f if " ERROR " in l or "panicked" in l]


def pod_manifest(ns, name, uid=None, command=("sleep", "100000"), env=None, grace=0,
                 configmap=None, probe=False, emptydir=False):
    """A Pod manifest (dict) of one busybox container."""
    c = {"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": list(command)}
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    vols, mounts = [], []
    if configmap:
        vols.append({"name": "cfg", "configMap": {"name": configmap}})
        mounts.append({"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True})
    if emptydir:
        vols.append({"name": "scratch", "emptyDir": {}})
        mounts.append({"name": "scratch", "mountPath": "/scratch"})
    if mounts:
        c["volumeMounts"] = mounts
    if probe:
        c["readinessProbe"] = {"exec": {"command": ["test", "-d", "/proc/1"]},
                               "periodSeconds": 1}
    meta = {"name": name, "namespace": ns, "uid": uid or str(uuid.uuid4())}
    spec = {"restartPolicy": "Always", "terminationGracePeriodSeconds": grace,
            "containers": [c]}
    if vols:
        spec["volumes"] = vols
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def configmap_manifest(ns, name, data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": data}


def write_atomic(dirname, filename, obj):
    """Writes a manifest file as one rename (the agent never reads half a file)."""
    tmp = os.path.join(dirname, "." + filename + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, os.path.join(dirname, filename))


def running(pod):
    """Whether a pod (from get_pods) is Running with every container running and ready."""
    st = pod.get("status") or {}
    cs = st.get("containerStatuses") or []
    n = len(pod.get("spec", {}).get("containers", []))
    return (st.get("phase") == "Running" and len(cs) == n and
            all(c.get("ready") and "running" in (c.get("state") or {}) for c in cs))


def wait_for(pred, timeout, interval=0.05):
    """Polls pred() until it answers true or timeout passes; returns its last answer."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


# --- what the host holds for one root dir -------------------------------------------------

def runc_containers(root):
    """runc's containers (namespace edged) whose bundle lies under `root`."""
    out = sh("runc", "--root", RUNC_ROOT, "list", "-f", "json", check=False)
    try:
        items = json.loads(out) or []
    except ValueError:
        items = []
    prefix = os.path.realpath(root) + "/"
    return [c for c in items if os.path.realpath(c.get("bundle", "")).startswith(prefix)]


def container_env(pid):
    """The environment of a process, as a dict."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def process_start_time(pid):
    """When a process started (Unix time, 10 ms resolution): /proc/PID/stat starttime is
    CLOCK_BOOTTIME ticks, compared with that clock now (btime is whole seconds and drifts)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    now_wall, now_boot = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
    return now_wall - (now_boot - started)


def shims(root):
    """Pids of shim processes serving bundles under `root` (their cwd is a bundle dir)."""
    prefix = os.path.realpath(root) + "/"
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
            if not argv0.endswith(SHIM.encode()):
                continue
            cwd = os.readlink(f"/proc/{p}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix) or cwd.replace(" (deleted)", "").startswith(prefix):
            found.append(int(p))
    return found


def mounts_under(*dirs):
    """Mount points (from /proc/self/mountinfo) at or under any of `dirs`."""
    prefixes = [os.path.realpath(d) for d in dirs]
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split(" ")[4].replace("\\040", " ")
            if any(mp == p or mp.startswith(p + "/") for p in prefixes):
                out.append(mp)
    return out


def cgroup_hierarchies():
    """The cgroup hierarchy roots (v2: /sys/fs/cgroup; v1: one dir per controller)."""
    base = "/sys/fs/cgroup"
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        return [base]
    return sorted(os.path.join(base, d) for d in os.listdir(base)
                  if os.path.isdir(os.path.join(base, d)) and
                  not os.path.islink(os.path.join(base, d)))


def pod_cgroups(uids):
    """cgroup dirs (pod parents and the containers below them) of the pods `uids`, as the
    runtime names them: <hierarchy>/edged/pod<uid>[/<container id>]."""
    out, uids = [], list(uids)
    for h in cgroup_hierarchies():
        for uid in uids:
            d = os.path.join(h, "edged", "pod" + uid)
            if os.path.isdir(d):
                out.append(d)
                out.extend(os.path.join(d, c) for c in os.listdir(d)
                           if os.path.isdir(os.path.join(d, c)))
    return out


def proc_status(pid):
    """VmRSS and VmHWM of a process in KiB, and its thread count."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                vals[k] = int(v.split()[0])
    return vals


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def container_pod_uid(c):
    """The pod uid of a runc container of edged (its sandbox-id annotation, or the bundle's
    meta.json; the group annotation is the node's with `--shim-grouping node`)."""
    uid = (c.get("annotations") or {}).get("io.kubernetes.cri.sandbox-id")
    if uid:
        return uid
    try:
        with open(os.path.join(c["bundle"], "meta.json")) as f:
            return json.load(f).get("pod_uid")
    except (OSError, ValueError, KeyError):
        return None


def kill_everything(root, agent=None, unmount=True, reboot=False):
    """A power cut for one root dir: the agent, its shims and containers SIGKILLed, then the
    root's mounts undone (deepest first). With `reboot`, also what a reboot empties (tmpfs
    /run and cgroupfs): the runc state and shim sockets of the root's containers and the
    pods' cgroups."""
    if agent:
        agent.kill9()
    containers = runc_containers(root)
    for pid in shims(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pids = [c["pid"] for c in containers if c.get("pid")]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), 10)
    if unmount:
        for mp in sorted(mounts_under(root), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
    if reboot:
        uids = set()
        for c in containers:
            uids.add(container_pod_uid(c))
            subprocess.run(["rm", "-rf", os.path.join(RUNC_ROOT, c["id"])], check=False)
        bundles = os.path.join(root, "runtime", "containers")
        for b in os.listdir(bundles) if os.path.isdir(bundles) else []:
            try:
                addr = open(os.path.join(bundles, b, "address")).read().strip()
            except OSError:
                continue
            path = addr.split("://", 1)[-1]
            if path.startswith("/run/containerd/s/"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        sandboxes = os.path.join(root, "runtime", "sandboxes")
        uids |= set(os.listdir(sandboxes)) if os.path.isdir(sandboxes) else set()
        for d in sorted(pod_cgroups(u for u in uids if u), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass


def cleanup_root(root):
    """Removes every container, shim and mount of `root` (end of a run)."""
    kill_everything(root)
    for c in runc_containers(root):
        subprocess.run(["runc", "--root", RUNC_ROOT, "delete", "-f", c["id"]],
                       capture_output=True)


def percentile(xs, p):
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(xs):
    if not xs:
        return float("nan")
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
