"""A simulated multi-node Ray cluster on one machine: a worker node lost mid-sweep, then the sweep
driver killed and resumed, and what the sweep kept.

    python benchmarks/node_loss.py --out benchmarks/results          # 3-4 min on 2 cores

The cluster is Ray's own ``ray.cluster_utils.Cluster``: a head that carries the trial drivers'
``TRAIN_DRIVER`` resource and no CPU, and ``--nodes`` worker nodes of one CPU each, so every
2-worker trial runs DDP (gloo) across two nodes. Storage is one local folder every node sees, as
NFS would be. The sweep is a real ``acl-ray sweep`` in a subprocess (the "head's driver") with FIFO
scheduling and ``sweep.max_failures`` retries. Steps:

1. wait until a trial has reported ``--loss-after`` epochs, then remove a worker node that hosts one
   of its Ray Train workers (``Cluster.remove_node``: its raylet and every process on it die);
2. wait until that trial reports an epoch again (on the remaining nodes), then kill the driver
   process group with SIGKILL, and start ``acl-ray sweep --resume`` against the same cluster;
3. read every trial's reported epochs (``acl_ray.results.trials``) and write the figures.

JSON fields: nodes; trials finished / lost; for the node loss, each trial whose workers were hit
(found by a new rank-0 pid in its reports after the removal): its last epoch before, the first
epoch after (resumed from its last checkpoint), epochs reported twice and the seconds from the
removal to its next reported epoch; for the driver kill, the trials finished before it and whether
any was re-run, and the seconds from the kill to the resumed sweep's end.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from acl_ray.results.trials import read_reports, read_trials

SWEEP = {
    "base": {
        "data": {"name": "synthetic", "synthetic_size": 300, "batch_size": 32},
        "run": {"epochs": 20, "threads": 1},
        "model": {"sync_bn": True},
    },
    "space": {"attack.eps": {"loguniform": [0.03, 0.3]}},
    "sweep": {
        # 2 trials side by side (a trial's start, not its epochs, is what costs here: about a minute
        # on 2 loaded cores, against 2 s an epoch). The node is taken from a trial early in its 20
        # epochs; it restarts once the other one has finished (the 3 nodes left hold one 2-worker
        # trial), and the driver is killed once the hit trial reports again: one trial finished, one
        # mid-training. Its 12+ epochs to go outlast the driver's copies of result.json into the
        # sweep folder, which a loaded machine delays (12 epochs did not, pinned to one busy core)
        "num_samples": 2,
        "searcher": "random",
        "scheduler": "fifo",
        "proxy_every": 20,  # FIFO decides nothing on the proxy: only at the last epoch
        "workers": 2,
        "cpus_per_worker": 1,
        "max_failures": 3,
        "paper_point": False,
    },
    "proxy": {"train_size": 100, "val_size": 60, "epochs": 5},
    "final": {"protocol": "slf", "epochs": 3, "eval": {"steps": 3}},
}

LIVE_WORKERS: list[Any] = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cluster(nodes: int) -> Cluster:
    """A head (trial drivers only) and ``nodes`` one-CPU workers; its own dashboard port, since the
    state API goes through the dashboard and another local Ray may hold the default one."""
    head = {"num_cpus": 0, "resources": {"TRAIN_DRIVER": 8}, "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def driver(out: Path, address: str, cfg: Path | None, log: Path) -> subprocess.Popen[bytes]:
    """``acl-ray sweep`` (or ``--resume``) in its own process group, as the head's driver."""
    args = ["--resume", str(out)] if cfg is None else ["--config", str(cfg), "--out", str(out)]
    cmd = [sys.executable, "-m", "acl_ray.cli", "sweep", *args, "--address", address]
    # every "auto" lookup in it finds this cluster; Tune saves (and copies result.json into the sweep
    # folder, tuner.LIVE_SYNC) every 5 s, so the harness sees each report soon after it is made
    env = {**os.environ, "RAY_ADDRESS": address, "TUNE_GLOBAL_CHECKPOINT_S": "5"}
    return subprocess.Popen(
        cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env
    )


def reports(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trained epoch's report per trial, in report order (a retrained epoch appears twice; the
    re-report of a restored checkpoint's last row, ``replayed``, is not a training)."""
    return {
        t.trial_id: [r for r in read_reports(t.dir) if not r.get("replayed")]
        for t in read_trials(out) if t.dir is not None
    }


def wait_for(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the sweep driver exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def training_node(cluster: Cluster, rows: dict[str, list[dict[str, Any]]], epochs: int) -> Any:
    """The node of the rank-0 worker of a trial with at least 12 epochs still to train (its reports
    carry that worker's node id), so removing the node certainly hits that trial, and after its
    recovery it still has an epoch to report before its last one: the driver kill needs a trial
    mid-training then. Read from the reports, not Ray's state API, which answered too slowly on a
    loaded one-core machine for the trial to still be early when the answer came (seen there)."""
    ids = {r[-1].get("worker/node_id") for r in rows.values() if r and len(r) <= epochs - 12}
    return next((n for n in cluster.worker_nodes if n.node_id in ids), None)


def restarts(rows: list[dict[str, Any]], start: float, end: float) -> dict[str, Any] | None:
    """How a trial came back from a failure in [start, end): None when its workers were not hit.

    A restarted worker group reports under a new rank-0 pid; Tune's ``timestamp`` is whole seconds.
    Epochs the old group still reported after ``start`` count as before the failure.
    """
    seen = {r.get("worker/pid") for r in rows if r["timestamp"] < start}
    first = next(
        (i for i, r in enumerate(rows) if r["timestamp"] >= int(start) and r.get("worker/pid") not in seen),
        None,
    )
    if not seen or first is None or rows[first]["timestamp"] >= end:
        return None
    old, new = rows[:first], rows[first:]
    last = max(r["epoch"] for r in old)
    return {
        "last_epoch_before": last,
        "first_epoch_after": new[0]["epoch"],  # last + 1: resumed from the last checkpoint
        "epochs_reported_twice": sum(r["epoch"] <= last for r in new),
        "seconds_to_training_again": new[0]["timestamp"] - start,
    }


def finished(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and rows[-1].get("val/robust_acc") is not None


def run(out: Path, nodes: int, loss_after: int, timeout: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    sweep_dir, log = out / "sweep", out / "driver.log"
    cfg = out / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(SWEEP))
    epochs = SWEEP["base"]["run"]["epochs"]  # type: ignore[index]
    cluster = start_cluster(nodes)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        list_actors(address=cluster.address)  # the state API's first answer is slow: not mid-sweep
        proc = driver(sweep_dir, cluster.address, cfg, log)

        def training() -> bool:
            return any(loss_after <= len(r) < epochs for r in reports(sweep_dir).values())

        wait_for(training, timeout, f"a trial past epoch {loss_after}", proc)
        node = wait_for(
            lambda: training_node(cluster, reports(sweep_dir), epochs),
            timeout,
            "a node with a training rank 0",
            proc,
        )
        live = list_actors(address=cluster.address, filters=LIVE_WORKERS)
        per_node = sorted(collections.Counter(a.node_id for a in live).values())
        lost_at = time.time()
        cluster.remove_node(node, allow_graceful=False)  # raylet and every process on it: gone

        def recovered() -> bool:
            return any(restarts(r, lost_at, math.inf) for r in reports(sweep_dir).values())

        wait_for(recovered, timeout, "a hit trial to train again on the remaining nodes", proc)
        recovered_at = time.time()

        def mid_training() -> bool:  # a trial with a report after the recovery and epochs to go,
            rows = reports(sweep_dir).values()  # and one finished (the kill must not re-run it)
            return any(finished(r) for r in rows) and any(
                r and not finished(r) and r[-1]["timestamp"] >= int(recovered_at) for r in rows
            )

        wait_for(mid_training, timeout, "a trial finished and one training when the driver is killed", proc)
        done = {t: len(r) for t, r in reports(sweep_dir).items() if finished(r)}
        os.killpg(proc.pid, signal.SIGKILL)  # the head's driver dies; the cluster stays up
        proc.wait()
        killed_at = time.time()
        resumed = driver(sweep_dir, cluster.address, None, log)
        resumed.wait(timeout=timeout)
        if resumed.returncode != 0:
            raise RuntimeError(f"acl-ray sweep --resume exited {resumed.returncode}; see {log}")
        final = reports(sweep_dir)
        done_s = time.time() - killed_at
    finally:
        ray.shutdown()
        cluster.shutdown()
    hit = {t: h for t, r in final.items() if (h := restarts(r, lost_at, killed_at))}
    resumed_trials = {t: h for t, r in final.items() if (h := restarts(r, killed_at, math.inf))}
    return {
        "nodes": {
            "head": "TRAIN_DRIVER only, 0 CPU",
            "workers": nodes,
            "cpus_per_node": 1,
            "after_loss": nodes - 1,
        },
        # 2 one-CPU workers per trial on 1-CPU nodes: every DDP group spans two nodes.
        "train_workers_per_node_at_loss": per_node,
        "sweep": SWEEP,
        "trials": len(final),
        "trials_finished": sum(finished(r) for r in final.values()),
        "trials_lost": sum(not finished(r) for r in final.values()),
        "node_loss": {"after_epoch": loss_after, "trials_restarted": len(hit), "per_trial": hit},
        "driver_kill": {
            "finished_before": sorted(done),
            "rerun_after_resume": sorted(t for t, n in done.items() if len(final[t]) != n),
            "trials_resumed": resumed_trials,
            "seconds_killed_to_done": done_s,
        },
        "epochs_reported": {t: [r["epoch"] for r in rows] for t, rows in final.items()},
        # epochs with no report at all (a replayed re-report counts): rows the sweep's tables lack
        "epochs_missing": {
            t.trial_id: sorted(set(range(1, epochs + 1)) - {int(r["epoch"]) for r in read_reports(t.dir)})
            for t in read_trials(sweep_dir) if t.dir is not None
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for node_loss.json and the sweep")
    p.add_argument("--nodes", type=int, default=4, help="worker nodes of 1 CPU (>= 3)")
    p.add_argument("--loss-after", type=int, default=2, help="remove the node after this many epochs")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    res = run(Path(args.out), args.nodes, args.loss_after, args.timeout)
    (Path(args.out) / "node_loss.json").write_text(json.dumps(res, indent=2, default=str))
    print(
        json.dumps({k: v for k, v in res.items() if k not in ("sweep", "per_trial")}, indent=2, default=str)
    )
    return res


if __name__ == "__main__":
    main()
