"""A Ray cluster of real addresses (benchmarks/netns_cluster.py): a head and 3 one-CPU worker nodes,
each in its own network namespace, token authentication on; one start for the module. Who gets in
without the token, where the dashboard answers, what the harness leaves behind, and one real sweep
(a trial of 2 workers on two nodes) through two faults: its rank 0's node killed, then a node of its
new worker group cut off for a while; the finished sweep is then resumed against the cluster.
Skipped, with the reason, where network namespaces cannot be made (not root, no ``ip netns``). The
sweep replaces tests/orchestration/test_node_loss.py's simulated cluster (benchmarks/node_loss.py is
still a script); a sweep driver killed mid-trial and resumed: test_tune_resume.py on a local Ray, and
the benchmark on this cluster."""

import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
nc = load_script(ROOT / "benchmarks" / "netns_cluster.py")

# run in a namespace: what a TCP connection to host argv[1], port argv[2] meets
TCP = """
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("open")
except OSError as e:
    print(errno.errorcode.get(e.errno or 0, type(e).__name__))
"""

# a driver on worker node argv[2]'s own raylet; it exits non-zero when it cannot connect
DRIVER = """
import sys, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False)
print("connected", ray.get_runtime_context().get_node_id())
"""

# in the head's namespace: the dashboard listens on its loopback only
SUBMIT = f"""
from ray.job_submission import JobSubmissionClient
print("submitted", JobSubmissionClient("http://127.0.0.1:{nc.DASHBOARD_PORT}").submit_job(entrypoint="true"))
"""


# a harness in a process of its own whose `ray start` fails on every node: what it raises, its pid
FAILED_START = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import netns_cluster as nc
c = nc.NetnsCluster(workers=2)
c.bin = Path("/nonexistent")
print(os.getpid())
with c:
    pass
"""


def leftovers(tag: str, root: Path) -> list[str]:
    """What of a harness is still there: namespaces, links, its temp folder, processes naming it.
    ``tag`` is ``PREFIX<pid>``; another pid that starts with the same digits is another harness."""
    left = [n for n in nc.ip("netns", "list").split() if n.startswith(f"{tag}-")]
    left += [line for line in nc.ip("-o", "link", "show").splitlines() if re.match(rf"\d+: {tag}[a-z]", line)]
    left += [str(root)] if root.exists() else []
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return left + [line for line in ps.splitlines() if f"{root}/" in line]


@pytest.fixture(scope="module")
def cluster() -> Any:
    why = nc.unavailable()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    c = nc.NetnsCluster(workers=3)
    with c:
        yield c
    tag = f"{nc.PREFIX}{c.root.name[len(nc.TEMP_PREFIX):]}"
    # the kernel drops a namespace's veth links once the last process in it has exited, which can
    # come after the harness is done (seen once in a suite run after a failed sweep): wait for that
    with contextlib.suppress(TimeoutError):  # the assertion below says what is left
        nc.wait_for(lambda: not leftovers(tag, c.root), 120, "the harness's leftovers to go")
    assert leftovers(tag, c.root) == []


def tcp(c: Any, node: Any, host: str, port: int) -> str:
    return c.run(node, [sys.executable, "-c", TCP, host, str(port)], timeout=60).stdout.strip()


def test_without_root_the_reason_is_given(monkeypatch) -> None:
    monkeypatch.setattr(nc.os, "geteuid", lambda: 1000)
    assert nc.unavailable() == "needs root (network namespaces, veth links)"


def test_leftovers_of_a_killed_harness_are_removed() -> None:
    why = nc.unavailable()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a harness pid that no longer runs
    ns, link = f"{nc.PREFIX}{gone.pid}-w1", f"{nc.PREFIX}{gone.pid}w1"
    root = Path(nc.tempfile.gettempdir()) / f"{nc.TEMP_PREFIX}{gone.pid}"
    nc.ip("netns", "add", ns)
    nc.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    root.mkdir()
    inside = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"])
    try:
        nc.wait_for(lambda: nc.ip("netns", "pids", ns).split(), 30, "the process in the namespace")
        nc.remove_leftovers()
        assert inside.wait(timeout=30) == -9
        assert leftovers(f"{nc.PREFIX}{gone.pid}", root) == []
    finally:
        inside.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        if root.exists():
            root.rmdir()


def test_every_node_has_its_own_address(cluster) -> None:
    addrs = sorted(n.ip for n in cluster.node_ids.values())  # as Ray registered the nodes
    assert addrs == sorted(n.ip for n in [cluster.head, *cluster.workers])
    assert len(set(addrs)) == 4


def test_traffic_stays_between_the_namespaces(cluster) -> None:
    for link in [cluster.bridge, *(n.link for n in cluster.nodes)]:  # the host has no address on them
        assert "inet" not in nc.ip("-o", "addr", "show", "dev", link), link
    for n in cluster.nodes:  # no way out: only the bridge's subnet is routed, no default route
        routes = nc.ip("-n", n.ns, "-4", "route").splitlines()
        assert [r.split()[0] for r in routes] == [f"{nc.SUBNET}.0/24"], (n, routes)
    assert tcp(cluster, cluster.client, cluster.head.ip, nc.GCS_PORT) == "open"
    host = nc.ip("-4", "-o", "addr", "show", "scope", "global").split()
    if "inet" in host:  # the host's own address is out of reach
        addr = host[host.index("inet") + 1].split("/")[0]
        assert tcp(cluster, cluster.client, addr, 22) == "ENETUNREACH"


@pytest.mark.parametrize("auth", ["token", "wrong", "none"])
def test_ray_status_needs_the_token(cluster, auth) -> None:
    got = cluster.run(cluster.client, [str(cluster.bin / "ray"), "status", "--address", cluster.address],
                      auth=auth, timeout=120)
    if auth == "token":
        assert got.returncode == 0 and "Active:" in got.stdout, got.stderr[-2000:]
    else:
        assert got.returncode != 0
        assert "AuthenticationError: RPC error: InvalidAuthToken" in got.stderr, got.stderr[-2000:]


@pytest.mark.parametrize("auth", ["token", "wrong", "none"])
def test_a_driver_needs_the_token(cluster, auth) -> None:
    w1 = cluster.workers[0]
    # a refused driver tries the GCS 20 times, 1 s apart, unless told otherwise (this variable)
    got = cluster.run(w1, [sys.executable, "-c", DRIVER, cluster.address, w1.ip], auth=auth,
                      timeout=120, RAY_gcs_server_port_wait_time_s="2")
    if auth == "token":
        assert got.returncode == 0, got.stderr[-2000:]
        assert cluster.node_ids[got.stdout.split()[-1]] == w1
    else:
        assert got.returncode != 0 and "connected" not in got.stdout
        assert "Unauthenticated" in got.stderr and "InvalidAuthToken" in got.stderr, got.stderr[-2000:]


@pytest.mark.parametrize("auth", ["token", "wrong", "none"])
def test_job_submission_needs_the_token(cluster, auth) -> None:
    got = cluster.run(cluster.head, [sys.executable, "-c", SUBMIT], auth=auth, timeout=120)
    if auth == "token":
        assert got.returncode == 0 and "submitted raysubmit_" in got.stdout, got.stderr[-2000:]
    else:
        refusal = "Forbidden: Invalid" if auth == "wrong" else "Unauthorized: Missing"
        assert got.returncode != 0 and "submitted" not in got.stdout
        assert "AuthenticationError" in got.stderr and refusal in got.stderr, got.stderr[-2000:]


def test_the_dashboard_answers_only_on_the_heads_loopback(cluster) -> None:
    assert tcp(cluster, cluster.head, "127.0.0.1", nc.DASHBOARD_PORT) == "open"
    for node in (cluster.head, cluster.workers[0], cluster.client):
        assert tcp(cluster, node, cluster.head.ip, nc.DASHBOARD_PORT) == "ECONNREFUSED", node.name


def test_a_failed_start_leaves_nothing_and_spares_a_running_cluster(cluster) -> None:
    # another harness (its own pid) whose nodes cannot start: it raises, and removes all it made
    got = subprocess.run([sys.executable, "-c", FAILED_START, str(ROOT / "benchmarks")], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode != 0 and "RuntimeError: ray start on head failed 3 times" in got.stderr, got.stderr
    pid = got.stdout.split()[0]
    assert leftovers(f"{nc.PREFIX}{pid}", Path(nc.tempfile.gettempdir()) / f"{nc.TEMP_PREFIX}{pid}") == []
    # a second cluster in this process (the same names) fails before it makes anything, and its
    # clean-up takes nothing from the running one
    with pytest.raises(FileExistsError), nc.NetnsCluster(workers=1):
        pass
    assert cluster.token_path.is_file()
    assert {n.ns for n in cluster.nodes} <= set(nc.ip("netns", "list").split())
    assert tcp(cluster, cluster.client, cluster.head.ip, nc.GCS_PORT) == "open"


# LEAD: epochs the trial has to go at each fault, as the sweep folder shows them. The folder lags
# training by Tune's copies (every 5 s): 3 epochs here at 2 s an epoch, 6 leaves room for a machine
# twice as fast. The faults come early (the trial's first reports), but the second waits for the
# restarted group's reports, which came at epoch 5 of 10 in one suite run, too late for LEAD:
# EPOCHS = LEAD + 10 leaves room for both and costs few epochs (2 s each) after the last fault.
EPOCHS, LEAD, DOWN = 16, 6, 10


def test_a_sweep_survives_a_killed_node_and_a_partition(cluster, tmp_path) -> None:
    """One 2-worker trial on 3 one-CPU nodes, in this order:

    1. its rank 0's node killed (every process in its namespace): Ray Train restarts the worker group
       on the two nodes left (a tight cluster now), from the last checkpoint;
    2. the link of its new rank 0's node down for DOWN s, then up: the DDP group waits and goes on, no
       epoch lost or trained again (the GCS declares a node dead only after 5 failed health checks,
       each given 10 s to answer);
    3. the finished sweep resumed against the cluster (``--resume --address``, which first asks Ray's
       state API, through the token, for placement groups a killed driver left): nothing trains again.

    Ray Train put each worker group's two workers on two nodes, each with its own address, so their
    node ranks differ. (A driver killed mid-trial: the benchmark on this cluster, and
    test_tune_resume.py on a local Ray.)"""
    # timeout: a deadline per wait, generous for slow machines; the waits are for events
    res = nc.run(cluster, tmp_path, ("kill", "partition"), trials=1, epochs=EPOCHS, partition_s=DOWN,
                 timeout=600, lead=LEAD)
    assert res["trials"] == res["trials_finished"] == 1 and res["trials_lost"] == 0
    (trial,) = res["epochs_reported"]
    faults = res["faults"]
    assert {f["trial"] for f in faults.values()} == {trial} and len(faults) == 2

    kill = faults["node_kill"]
    hit = kill["per_trial"][trial]
    assert kill["processes_killed"] > 0 and hit["worker_group_restarted"], kill
    assert hit["last_epoch_before"] <= hit["first_epoch_after"] <= hit["last_epoch_before"] + 1, hit
    assert hit["epochs_reported_twice"] <= 1, hit

    cut = faults["partition"]
    hit = cut["per_trial"][trial]
    assert not cut["node_declared_dead"] and not hit["worker_group_restarted"], cut
    assert hit["first_epoch_after"] == hit["last_epoch_before"] + 1 and hit["epochs_reported_twice"] == 0, hit
    # its next epoch could not be reported before the link was back (Tune's timestamps: whole seconds)
    assert hit["seconds_to_training_again"] > DOWN - 1, hit

    assert res["epochs_missing"] == {trial: []}
    assert res["epochs_reported"][trial][-1] == EPOCHS

    # one worker group at the start, one after the node kill, never on the killed node
    groups = res["train_worker_groups"]
    assert len(groups) == 2, groups
    workers = {n.ip for n in cluster.workers}
    for group in groups:
        ips = {w["ip"] for w in group["workers"]}
        assert sorted(w["node_rank"] for w in group["workers"]) == [0, 1], group  # one worker per node
        assert len(ips) == 2 and ips <= workers, group
    killed = next(n.ip for n in cluster.workers if n.name == kill["node"])
    assert killed not in {w["ip"] for w in groups[1]["workers"]}, groups

    sweep, log = tmp_path / "sweep", tmp_path / "resume.log"
    done = nc.reports(sweep)
    assert nc.resume(cluster, sweep, log, timeout=600) == 0, log.read_text()[-3000:]
    assert nc.reports(sweep) == done  # the finished trial was not trained again
