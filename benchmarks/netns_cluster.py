"""A Ray cluster of real addresses on one machine: a head and N worker nodes, each in its own Linux
network namespace, token authentication on; then faults in a real sweep on it.

    python benchmarks/netns_cluster.py --out /tmp/netns-run   # needs root and `ip netns`

The harness (:class:`NetnsCluster`, also the fixture of tests/orchestration/test_netns_cluster.py)
makes a bridge with no address in the host's namespace, and one namespace per node with a veth
link to it: ``10.88.0.1`` the head, ``10.88.0.11..`` the workers, ``10.88.0.200`` a client with no
Ray (the outsider of the security checks). No namespace has a route out, the host has none in,
nothing forwards: Ray's traffic stays between the namespaces the harness made. Every Ray process
runs with ``RAY_AUTH_MODE=token`` and the token file the harness writes (``RAY_AUTH_TOKEN_PATH``),
and its own ``--temp-dir`` under ``/tmp/aclray-netns-<pid>/``, so a ``ray.init()`` elsewhere on the
machine does not pick it (nor could it connect: the host has no address on the bridge). The head
carries the trial drivers (``TRAIN_DRIVER``, no CPU) and the dashboard on its namespace's loopback
only; each worker node has one CPU, so a 2-worker trial runs DDP (gloo, over ``eth0``: the hostname
resolves to loopback here, as on many hosts) across two nodes. Everything it made is removed on the
way out, after a failure too (and only what it made: another harness's cluster is left alone), and
leftovers of a killed harness (its pid in the names) at the next start.

The benchmark runs an ``acl-ray sweep`` (FIFO, 2 trials of 2 workers side by side, 6 worker nodes:
a hit trial restarts on a spare one) inside the head's namespace and puts three faults on it, each
once the trial the previous one hit trains again:

1. node kill: SIGKILL to every process in the namespace of a training trial's rank-0 node;
2. partition: the link of a training trial's rank-0 node goes down for ``--partition`` seconds, then
   up (a node the GCS has declared dead meanwhile exits once it hears so);
3. driver kill: SIGKILL to the sweep driver's process group, then ``acl-ray sweep --resume`` against
   the same cluster (which first gives back placement groups the killed driver left reserved).

Figures (``netns_cluster.json``): the size run and the machine's load; trials lost; per fault and
per trial that reported over the time up to the next fault: epochs reported twice, seconds from the
fault to its next trained epoch, whether its worker group restarted; epochs with no report at all;
placement groups the resumed driver gave back; every worker group Ray Train started, from its
controller's log: each worker's IP (as the worker found it), world, local and node rank.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from acl_ray.results.trials import read_reports, read_trials

PREFIX = "aclrn"  # namespaces aclrn<pid>-<node>, links aclrn<pid><b|h|c|w1..>: <pid> is the harness's
TEMP_PREFIX = "aclray-netns-"  # /tmp/aclray-netns-<pid>: token, Ray temp dirs, logs
SUBNET = "10.88.0"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
STORE_BYTES = 200 * 2**20  # object store per node: the sweep puts only a small data set there

# Run inside the head's namespace: wait until each address in argv[3] (comma separated) has an alive
# node with an id not in argv[4] (a restarted node's old id may still count as alive for a while),
# then print the alive nodes, {node id: IP}
NODES_PROBE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False, logging_level="ERROR")
want, old = set(sys.argv[3].split(",")), set(sys.argv[4].split(","))
end = time.monotonic() + float(sys.argv[5])
while True:
    alive = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    if want <= {a for i, a in alive.items() if i not in old} or time.monotonic() > end:
        break
    time.sleep(0.5)
print(json.dumps(alive))
"""


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unavailable() -> str | None:
    """Why this machine cannot host the cluster, or None when it can (a namespace with a veth link
    made, a process run in it, both removed again)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth links)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command"
    ns, link = f"{PREFIX}{os.getpid()}-probe", f"{PREFIX}{os.getpid()}p"
    try:
        ip("netns", "add", ns)
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("netns", "exec", ns, "true")  # needs to mount /sys for the namespace, which a container may forbid
    except subprocess.CalledProcessError as e:
        return f"cannot make a network namespace with a veth link and run in it: {e.stderr.strip()}"
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return None


def kill_namespace(ns: str, timeout: float = 60) -> list[int]:
    """SIGKILL every process in the namespace until none is left; the pids killed. A process still
    there ``timeout`` seconds on (stuck in the kernel) is an error, not a reason to loop forever."""
    killed: set[int] = set()
    end = time.monotonic() + timeout
    while pids := [int(p) for p in ip("netns", "pids", ns).split()]:
        if time.monotonic() > end:
            raise RuntimeError(f"processes {pids} in namespace {ns} still there {timeout:.0f}s after SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.1)  # a dying process stays listed until it has exited
    return sorted(killed)


def raylets(node: Node) -> list[str]:
    """The node ids of the raylets running in the node's namespace (a raylet exits once it hears the
    GCS has declared its node dead)."""
    ids = []
    for pid in ip("netns", "pids", node.ns).split():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if args and args[0].endswith(b"raylet/raylet"):
            ids += [a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--node_id=")]
    return ids


def host_off(link: str) -> None:
    """No address for the host on a link of the bridge: not even IPv6's automatic link-local one,
    which would let the namespaces reach the host."""
    conf = Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6")
    if conf.exists():
        conf.write_text("1")


def remove_leftovers() -> None:
    """Namespaces, links and temp folders of a harness that is no longer running (killed before its
    own clean-up): its pid is in their names."""
    for line in ip("netns", "list").splitlines():
        m = re.match(rf"({PREFIX}(\d+)-\S+)", line)
        if m and not alive(int(m[2])):
            kill_namespace(m[1])
            subprocess.run(["ip", "netns", "del", m[1]], capture_output=True)
    for line in ip("-o", "link", "show").splitlines():
        m = re.match(rf"\d+: ({PREFIX}(\d+)[a-z]\d*)[@:]", line)
        if m and not alive(int(m[2])):
            subprocess.run(["ip", "link", "del", m[1]], capture_output=True)
    for d in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        if d.name[len(TEMP_PREFIX):].isdigit() and not alive(int(d.name[len(TEMP_PREFIX):])):
            shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class Node:
    name: str  # head | w1.. | client
    ns: str  # its network namespace
    ip: str  # its address on the bridge (eth0 in the namespace)
    link: str  # the host end of its veth, on the bridge: down = partitioned


class NetnsCluster:
    """The cluster; a context manager: ``with NetnsCluster(4) as c: ...`` (see the module docstring)."""

    def __init__(self, workers: int = 4, node_env: dict[str, str] | None = None) -> None:
        tag = f"{PREFIX}{os.getpid()}"
        self.root = Path(tempfile.gettempdir()) / f"{TEMP_PREFIX}{os.getpid()}"
        self.bridge = f"{tag}b"
        self.head = Node("head", f"{tag}-head", f"{SUBNET}.1", f"{tag}h")
        self.workers = [Node(f"w{i}", f"{tag}-w{i}", f"{SUBNET}.{10 + i}", f"{tag}w{i}") for i in
                        range(1, workers + 1)]
        self.client = Node("client", f"{tag}-client", f"{SUBNET}.200", f"{tag}c")
        self.token_path = self.root / "token"
        self.address = f"{self.head.ip}:{GCS_PORT}"
        self.made: list[str] = []  # what this instance made and stop() removes: "root", "bridge", namespaces
        self.node_ids: dict[str, Node] = {}  # Ray node id -> node, for every node started so far
        self.given_up: set[str] = set()  # node ids of raylets whose `ray start` failed
        self.bin = Path(sys.executable).parent
        # every Ray process's environment, besides the token and RAY_ADDRESS (Ray's own "auto" lookups,
        # e.g. Train's placement group cleaner, would otherwise find every GCS on the machine by `ps`):
        # gloo takes its address from the hostname (here, as on many hosts, 127.0.0.1) unless told the
        # interface, and a DDP group across nodes would not connect
        self.node_env = {"GLOO_SOCKET_IFNAME": "eth0"} if node_env is None else node_env

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers, self.client]

    def env(self, auth: str = "token", **extra: str) -> dict[str, str]:
        """An environment for a process of (``auth="token"``) or against the cluster: ``"wrong"``, a
        token of its own; ``"none"``: no token anywhere (RAY_AUTH_MODE unset, an empty HOME, since
        ``~/.ray/auth_token`` would otherwise be read)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if auth == "token":
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        elif auth == "wrong":
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        elif auth == "none":
            (self.root / "home").mkdir(exist_ok=True)
            env["HOME"] = str(self.root / "home")
        else:
            raise ValueError(f"Illegal auth={auth!r}: token | wrong | none")
        return {**env, **extra}

    def cmd(self, node: Node, args: list[str]) -> list[str]:
        """``args`` run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", node.ns, *args]

    def run(self, node: Node, args: list[str], auth: str = "token", timeout: float = 300,
            **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(node, args), env=self.env(auth, **extra), capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> NetnsCluster:
        remove_leftovers()
        # the names hold this process's pid: a second cluster of this process fails here, before it
        # has made anything that its clean-up would then take from the first
        self.root.mkdir(parents=True)
        self.made.append("root")
        self.token_path.touch(mode=0o600)  # readable by root only before the token is in it
        self.token_path.write_text(secrets.token_hex(32))
        ip("link", "add", self.bridge, "type", "bridge")
        self.made.append("bridge")
        host_off(self.bridge)
        ip("link", "set", self.bridge, "up")
        for n in self.nodes:
            ip("netns", "add", n.ns)
            self.made.append(n.ns)
            ip("link", "add", n.link, "type", "veth", "peer", "name", "eth0", "netns", n.ns)
            host_off(n.link)
            ip("link", "set", n.link, "master", self.bridge, "up")
            ip("-n", n.ns, "addr", "add", f"{n.ip}/24", "dev", "eth0")
            ip("-n", n.ns, "link", "set", "eth0", "up")
            ip("-n", n.ns, "link", "set", "lo", "up")
        head = ["--head", f"--port={GCS_PORT}", "--num-cpus=0", '--resources={"TRAIN_DRIVER": 8}',
                "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}"]
        self._ray_start([self.head], head)
        self._ray_start(self.workers, [f"--address={self.address}", "--num-cpus=1"])
        self._wait_joined([self.head, *self.workers])
        return self

    def _ray_start(self, nodes: list[Node], args: list[str], tries: int = 3) -> None:
        """``ray start`` on each node in turn (side by side on one loaded core, raylets missed the 30 s
        ``ray start`` gives them to register: seen with 4), again up to ``tries`` times when it fails
        so (seen on a core shared with two test suites), its processes killed first."""
        for n in nodes:
            cmd = [str(self.bin / "ray"), "start", *args, f"--node-ip-address={n.ip}",
                   f"--temp-dir={self.root / n.name}", f"--object-store-memory={STORE_BYTES}",
                   "--disable-usage-stats"]
            log = self.root / f"ray-start-{n.name}.log"
            for _ in range(tries):
                with log.open("a") as f:
                    rc = subprocess.run(self.cmd(n, cmd), stdout=f, stderr=subprocess.STDOUT, timeout=300,
                                        env=self.env(RAY_ADDRESS=self.address, **self.node_env)).returncode
                if rc == 0:
                    break
                self.given_up.update(raylets(n))  # it may still register, late: not the node to wait for
                kill_namespace(n.ns)
            else:
                raise RuntimeError(f"ray start on {n.name} failed {tries} times: {log.read_text()[-2000:]}")

    def _wait_joined(self, nodes: list[Node]) -> None:
        """Wait until each of ``nodes`` is in the cluster under a new node id; record the ids."""
        want = ",".join(n.ip for n in nodes)
        got = self.run(self.head, [sys.executable, "-c", NODES_PROBE, self.address, self.head.ip, want,
                                   ",".join([*self.node_ids, *self.given_up]) or "-", "300"])
        if got.returncode != 0:
            raise RuntimeError(f"reading the cluster's nodes failed: {got.stderr[-2000:]}")
        by_ip = {n.ip: n for n in self.nodes}
        found = json.loads(got.stdout.strip().splitlines()[-1])
        new = {i: by_ip[a] for i, a in found.items()
               if i not in self.node_ids and i not in self.given_up and a in by_ip}
        missing = {n.name for n in nodes} - {n.name for n in new.values()}
        if missing:
            raise RuntimeError(f"nodes {sorted(missing)} did not join the cluster: {found}")
        self.node_ids.update(new)

    def kill(self, node: Node) -> list[int]:
        """Node failure: SIGKILL every process in its namespace (raylet, agents, Train workers)."""
        return kill_namespace(node.ns)

    def link(self, node: Node, up: bool) -> None:
        """Partition (``up=False``) or reconnect a node: the host end of its veth down or up."""
        ip("link", "set", node.link, "up" if up else "down")

    def sessions(self) -> list[Path]:
        """Every Ray session folder of every node (a restarted node has two), not the ``session_latest``
        links."""
        return sorted(d for d in self.root.glob("*/session_*") if d.is_dir() and not d.is_symlink())

    def train_groups(self) -> list[dict[str, Any]]:
        """Every worker group Ray Train started, in order, from its controllers' JSON logs: the Train run
        (``trial-<id>``), when, and per worker its IP (as the worker found it), pid and ranks (Train
        gives node ranks by distinct worker IP)."""
        worker = re.compile(r"- \(ip=([\d.]+), pid=(\d+)\) world_rank=(\d+), local_rank=(\d+), "
                            r"node_rank=(\d+)")
        groups: dict[tuple[int, ...], dict[str, Any]] = {}
        for f in [f for d in self.sessions() for f in sorted(d.glob("logs/train/*.log"))]:
            for line in f.read_text(errors="replace").splitlines():
                if "Started training worker group" not in line:
                    continue
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:  # the line being written
                    continue
                found = list(worker.finditer(msg["message"]))
                ws = [{"ip": m[1], "pid": int(m[2]), "world_rank": int(m[3]), "local_rank": int(m[4]),
                       "node_rank": int(m[5])} for m in found]
                groups[tuple(int(m[2]) for m in found)] = {"run": msg.get("run_name"),
                                                           "at": msg["timestamp_ns"] / 1e9, "workers": ws}
        return sorted(groups.values(), key=lambda g: g["at"])

    def save_logs(self, dest: Path) -> None:
        """Copy every node's Ray logs (each session) and the harness's ``ray start`` output to ``dest``."""
        for d in self.sessions():
            shutil.copytree(d / "logs", dest / d.parent.name / d.name, dirs_exist_ok=True)
        for f in self.root.glob("ray-start-*.log"):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.name)

    def stop(self) -> None:
        """Kill every process in the namespaces this instance made, remove them (their veths go with
        them), its bridge and its temp folder: every step is tried, after a failed one too, and the
        first failure is raised at the end. Safe to call on a half-started cluster, and again."""
        errors: list[BaseException] = []
        for ns in [m for m in self.made if m not in ("root", "bridge")]:
            try:
                kill_namespace(ns)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                errors.append(e)
            del_ns = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if del_ns.returncode != 0:
                errors.append(RuntimeError(f"ip netns del {ns}: {del_ns.stderr.strip()}"))
        if "bridge" in self.made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if "root" in self.made:
            shutil.rmtree(self.root, ignore_errors=True)
        self.made.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> NetnsCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the benchmark: a sweep on the cluster, and faults on it ----------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def sweep_config(trials: int, epochs: int) -> dict[str, Any]:
    """FIFO, ``trials`` trials of 2 one-CPU workers at once (a trial's start, about a minute on a loaded
    core, is what costs; an epoch is a few seconds), the proxy only at the last epoch."""
    return {
        "base": {
            "data": {"name": "synthetic", "synthetic_size": 200, "batch_size": 32},
            "run": {"epochs": epochs, "threads": 1},
            "model": {"sync_bn": True},
        },
        "space": {"attack.eps": {"loguniform": [0.03, 0.3]}},
        "sweep": {"num_samples": trials, "searcher": "random", "scheduler": "fifo", "proxy_every": epochs,
                  "workers": 2, "cpus_per_worker": 1, "max_failures": 3, "paper_point": False},
        "proxy": {"train_size": 100, "val_size": 60, "epochs": 3},
        "final": {"protocol": "slf", "epochs": 2, "eval": {"steps": 3}},
    }


def driver(cluster: NetnsCluster, sweep: Path, cfg: Path | None, log: Path) -> subprocess.Popen[bytes]:
    """``acl-ray sweep`` (``--resume`` without ``cfg``) in the head's namespace, in its own process group.
    Tune saves its state and copies results into the sweep folder every 5 s (TUNE_GLOBAL_CHECKPOINT_S)."""
    args = ["--resume", str(sweep)] if cfg is None else ["--config", str(cfg), "--out", str(sweep)]
    cmd = cluster.cmd(cluster.head, [sys.executable, "-m", "acl_ray.cli", "sweep", *args,
                                     "--address", cluster.address])
    env = cluster.env(RAY_ADDRESS=cluster.address, TUNE_GLOBAL_CHECKPOINT_S="5")
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=ROOT)


def resume(cluster: NetnsCluster, sweep: Path, log: Path, timeout: float) -> int:
    """``acl-ray sweep --resume`` against the cluster, run to its end: its exit status. Still running
    after ``timeout`` seconds, it is killed (its process group) and TimeoutExpired raised."""
    proc = driver(cluster, sweep, None, log)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reports(sweep: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trained epoch's report per trial, in report order (an epoch trained again appears twice; a
    restored checkpoint's rows reported again, ``replayed``, are no training)."""
    return {t.trial_id: [r for r in read_reports(t.dir) if not r.get("replayed")]
            for t in read_trials(sweep) if t.dir is not None}


def finished(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and rows[-1].get("val/robust_acc") is not None


def wait_for(cond: Callable[[], Any], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None) -> Any:
    """Poll ``cond`` until it is truthy; fail when ``timeout`` passes or the driver ``proc`` exits (once
    ``cond`` has been asked again: the driver's last copies into the sweep folder come as it ends)."""
    end = time.monotonic() + timeout
    while not (got := cond()):
        if proc is not None and proc.poll() is not None:
            if got := cond():
                break
            raise RuntimeError(f"the sweep driver exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return got


def after(rows: list[dict[str, Any]], start: float, end: float = math.inf) -> dict[str, Any] | None:
    """How a trial trained on after a fault at ``start``, up to ``end`` (the next fault): None when it
    reported no epoch in between. Tune's ``timestamp`` is whole seconds, given when the trial's driver
    takes the report: one of the fault's own second or the next counts as before it (on its way then);
    a hit trial cannot report that soon after: its rank 0, its link or the driver is gone."""
    old = [r for r in rows if r["timestamp"] <= int(start) + 1]
    new = [r for r in rows if int(start) + 1 < r["timestamp"] < end]
    if not old or not new:
        return None
    last = max(r["epoch"] for r in old)
    return {
        "last_epoch_before": last,
        "first_epoch_after": new[0]["epoch"],  # last + 1: resumed from its last checkpoint, or went on
        "epochs_reported_twice": sum(r["epoch"] <= last for r in new),
        "seconds_to_training_again": new[0]["timestamp"] - start,
        "worker_group_restarted": any(r["worker/pid"] != old[-1]["worker/pid"] for r in new),
    }


def target(cluster: NetnsCluster, rows: dict[str, list[dict[str, Any]]], epochs: int,
           left: int) -> tuple[str, Node] | None:
    """The training trial with the most epochs to go (at least ``left``) and the node of its rank 0."""
    going = sorted((len(r), t) for t, r in rows.items() if r and not finished(r) and r[-1]["epoch"]
                   <= epochs - left)
    for _, t in going:
        node = cluster.node_ids.get(rows[t][-1]["worker/node_id"])
        if node is not None and node in cluster.workers:
            return t, node
    return None


def run(cluster: NetnsCluster, out: Path, faults: tuple[str, ...], trials: int = 2, epochs: int = 30,
        partition_s: float = 30, timeout: float = 900, lead: int = 3) -> dict[str, Any]:
    """The sweep on ``cluster`` with ``faults`` (kill | partition | driver, in this order) into ``out``.

    Each fault hits a trial that has, as far as the sweep folder shows, ``lead`` epochs or more to go,
    and waits for it to train again before the next fault; the figures are read from the finished
    sweep's reports, per fault over the time up to the next. The folder lags training by Tune's copies
    (every 5 s, more on a loaded machine): ``lead`` must cover the epochs trained meanwhile. A node
    lost stays lost: the hit trial restarts on spare nodes (a spare per node fault, or it waits for
    another trial to end). ``timeout`` is the deadline of each wait (for an event). A driver still
    running when this fails is killed (its process group) before the error leaves.
    """
    out.mkdir(parents=True, exist_ok=True)
    sweep, log, cfg = out / "sweep", out / "driver.log", out / "sweep.yaml"
    spec = sweep_config(trials, epochs)
    cfg.write_text(yaml.safe_dump(spec))
    load = [os.getloadavg()[0]]
    began = time.time()
    procs = [driver(cluster, sweep, cfg, log)]
    hits: dict[str, dict[str, Any]] = {}  # fault -> what it hit, and when

    def hit(fault: str) -> tuple[str, Node]:
        def found() -> tuple[str, Node] | None:
            rows = reports(sweep)
            got = target(cluster, rows, epochs, lead)
            if got is None and len(rows) == trials and all(rows.values()) and all(
                    finished(r) or r[-1]["epoch"] > epochs - lead for r in rows.values()):
                last = {t: r[-1]["epoch"] for t, r in rows.items()}
                raise RuntimeError(f"no trial has {lead} epochs to go for the {fault} (last epochs {last}): "
                                   "more epochs, or a smaller lead")
            return got

        return wait_for(found, timeout, f"a training trial to {fault} (>= {lead} epochs to go)", procs[-1])

    def rows_of(trial: str) -> list[dict[str, Any]]:
        # a live folder: the trial may be missing for a moment (its params.json being copied again)
        return reports(sweep).get(trial, [])

    def back(trial: str, start: float, what: str) -> None:
        wait_for(lambda: after(rows_of(trial), start), timeout, what, procs[-1])

    try:
        if "kill" in faults:
            trial, node = hit("kill")
            start = time.time()
            killed = cluster.kill(node)
            hits["node_kill"] = {"at": start, "node": node.name, "trial": trial,
                                 "processes_killed": len(killed)}
            back(trial, start, f"trial {trial} to train again after {node.name} was killed")
        if "partition" in faults:
            trial, node = hit("partition")
            start = time.time()
            cluster.link(node, up=False)
            try:
                time.sleep(partition_s)  # the fault's length, by definition: not a wait for an event
            finally:
                cluster.link(node, up=True)
            dead_at: list[float] = []

            def trains_or_dies() -> bool:  # after a long cut the GCS declares the node dead: its raylet
                if after(rows_of(trial), start):  # exits once it hears so, and the trial's
                    return True  # worker group restarts elsewhere
                if not raylets(node):
                    dead_at.append(time.time())
                return bool(dead_at)

            wait_for(trains_or_dies, timeout, f"trial {trial} to train again or {node.name} to die",
                     procs[-1])
            hits["partition"] = {"at": start, "node": node.name, "trial": trial, "seconds_down": partition_s,
                                 "node_declared_dead": bool(dead_at),
                                 "seconds_to_node_death": dead_at[0] - start if dead_at else None}
            back(trial, start, f"trial {trial} to train again after the partition")
        before: dict[str, list[dict[str, Any]]] = {}
        if "driver" in faults:
            trial, _ = hit("driver kill")
            before = reports(sweep)
            start = time.time()
            os.killpg(procs[-1].pid, signal.SIGKILL)  # the driver, and with it the trial drivers it owns
            procs[-1].wait()
            procs.append(driver(cluster, sweep, None, log))
            hits["driver_kill"] = {"at": start, "trial": trial,
                                   "finished_before": sorted(t for t, r in before.items() if finished(r))}
        if procs[-1].wait(timeout=timeout) != 0:
            raise RuntimeError(f"acl-ray sweep exited {procs[-1].returncode}; see {log}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    load.append(os.getloadavg()[0])
    final = reports(sweep)
    starts = [h["at"] for h in hits.values()]
    for h, end in zip(hits.values(), [*starts[1:], math.inf], strict=True):
        h["per_trial"] = {t: a for t, rows in final.items() if (a := after(rows, h["at"], end))}
    if "driver_kill" in hits:  # a trial finished before the kill must not train again after the resume
        kill = hits["driver_kill"]
        kill["rerun_after_resume"] = [t for t in kill["finished_before"] if len(final[t]) != len(before[t])]
        given = re.findall(r"gave back (\d+) placement group", log.read_text(errors="replace"))
        kill["placement_groups_given_back"] = sum(int(n) for n in given)
    groups = cluster.train_groups()
    return {
        "size": {"worker_nodes": len(cluster.workers), "trials": trials, "epochs": epochs,
                 "partition_s": partition_s, "faults": list(faults)},
        "load_1min": {"start": load[0], "end": load[1], "cpus": os.cpu_count()},
        "cluster": {"head": f"{cluster.head.ip}: TRAIN_DRIVER only, 0 CPU, dashboard on its loopback",
                    "workers": {n.name: n.ip for n in cluster.workers}, "cpus_per_worker_node": 1,
                    "auth": "token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH)"},
        "sweep": spec,
        "sweep_seconds": time.time() - began,
        "trials": len(final),
        "trials_finished": sum(finished(r) for r in final.values()),
        "trials_lost": sum(not finished(r) for r in final.values()),
        "faults": hits,
        "epochs_reported": {t: [r["epoch"] for r in rows] for t, rows in final.items()},
        # epochs with no report at all (a replayed re-report counts): rows the sweep's tables would lack
        "epochs_missing": {t.trial_id: sorted(set(range(1, epochs + 1)) - {int(r["epoch"]) for r in
                                                                           read_reports(t.dir)})
                           for t in read_trials(sweep) if t.dir is not None},
        # each DDP group as Ray Train started it: per worker the IP it found itself on, and its ranks
        "train_worker_groups": groups,
        "groups_on_distinct_nodes": all(len({w["ip"] for w in g["workers"]}) == len(g["workers"]) ==
                                        len({w["node_rank"] for w in g["workers"]}) for g in groups),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the sweep, its driver's log and Ray's logs")
    p.add_argument("--json", help="where the figures go (default: OUT/netns_cluster.json)")
    p.add_argument("--workers", type=int, default=6, help="worker nodes of one CPU (2 per trial + spares)")
    p.add_argument("--trials", type=int, default=2, help="trials of 2 workers, all at once")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--partition", type=float, default=30, help="seconds a node's link is down")
    p.add_argument("--faults", default="kill,partition,driver", help="of kill, partition, driver")
    p.add_argument("--timeout", type=float, default=900, help="deadline of each wait, in seconds")
    p.add_argument("--lead", type=int, default=3, help="epochs a hit trial has to go (in the sweep folder)")
    args = p.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    if set(faults) - {"kill", "partition", "driver"}:
        p.error(f"--faults: unknown {sorted(set(faults) - {'kill', 'partition', 'driver'})}")
    why = unavailable()
    if why:
        sys.exit(f"netns_cluster: {why}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    with NetnsCluster(args.workers) as cluster:
        started = time.time() - began
        try:
            res = run(cluster, out, faults, args.trials, args.epochs, args.partition, timeout=args.timeout,
                      lead=args.lead)
        finally:
            cluster.save_logs(out / "ray-logs")
    res = {"cluster_start_seconds": started, **res}
    dest = Path(args.json) if args.json else out / "netns_cluster.json"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(dest)
    print(json.dumps({k: v for k, v in res.items() if k not in ("sweep", "train_worker_groups")}, indent=2))
    return res


if __name__ == "__main__":
    main()
