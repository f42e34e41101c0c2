"""A simulated multi-node Ray cluster on one machine: a worker node lost mid-sweep, then the sweep
driver killed and resumed, and what the sweep kept.

    python benchmarks/node_loss.py --out benchmarks/results          # ~3 min on 2 cores

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

JSON fields: nodes, trials finished / lost / restarted, per restarted trial the epochs trained twice
and the seconds from the node's removal to that trial's next reported epoch, and the same for the
driver kill.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
        "run": {"epochs": 6, "threads": 1},
        "model": {"sync_bn": True},
    },
    "space": {"attack.eps": {"loguniform": [0.03, 0.3]}},
    "sweep": {
        "num_samples": 3,
        "searcher": "random",
        "scheduler": "fifo",
        "workers": 2,
        "cpus_per_worker": 1,
        "max_failures": 3,
        "paper_point": False,
    },
    "proxy": {"train_size": 100, "val_size": 60, "epochs": 5},
    "final": {"protocol": "slf", "epochs": 3, "eval": {"steps": 3}},
}


def start_cluster(nodes: int) -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"TRAIN_DRIVER": 8}})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def driver(out: Path, address: str, cfg: Path | None, log: Path) -> subprocess.Popen[bytes]:
    """``acl-ray sweep`` (or ``--resume``) in its own process group, as the head's driver."""
    args = ["--resume", str(out)] if cfg is None else ["--config", str(cfg), "--out", str(out)]
    cmd = [sys.executable, "-m", "acl_ray.cli", "sweep", *args, "--address", address]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def reports(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every reported row per trial, in report order (a retrained epoch appears twice)."""
    return {t.trial_id: read_reports(t.dir) for t in read_trials(out) if t.dir is not None}


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


def node_of_trial(cluster: Cluster, trial_id: str) -> Any:
    """A worker node hosting a live Ray Train worker of ``trial_id`` (its actor name carries the id)."""
    actors = list_actors(
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True
    )
    ids = {a.node_id for a in actors if trial_id in (getattr(a, "ray_namespace", "") or "") + str(a.name)}
    ids = ids or {a.node_id for a in actors}  # the name may not carry the id: any training node works
    return next((n for n in cluster.worker_nodes if n.node_id in ids), None)


def run(out: Path, nodes: int, loss_after: int, timeout: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    sweep_dir, log = out / "sweep", out / "driver.log"
    cfg = out / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(SWEEP))
    cluster = start_cluster(nodes)
    try:
        ray.init(address=cluster.address)
        proc = driver(sweep_dir, cluster.address, cfg, log)

        def training() -> str | None:
            rows = reports(sweep_dir)
            return next((t for t, r in rows.items() if len(r) >= loss_after and r[-1]["epoch"] < 6), None)

        victim_trial = wait_for(training, timeout, f"a trial at epoch {loss_after}", proc)
        node = wait_for(lambda: node_of_trial(cluster, victim_trial), 60, "the trial's node")
        before = {t: len(r) for t, r in reports(sweep_dir).items()}
        lost_at = time.time()
        cluster.remove_node(node, allow_graceful=False)
        again = wait_for(
            lambda: len(reports(sweep_dir).get(victim_trial, [])) > before[victim_trial],
            timeout,
            "the trial to train again",
            proc,
        )
        node_recovery_s = max(r["timestamp"] for r in reports(sweep_dir)[victim_trial]) - lost_at
        done_before_kill = {
            t for t, r in reports(sweep_dir).items() if r and r[-1].get("val/robust_acc") is not None
        }
        rows_before_kill = {t: len(reports(sweep_dir)[t]) for t in done_before_kill}
        os.killpg(proc.pid, signal.SIGKILL)  # the head's driver dies; the cluster stays up
        proc.wait()
        killed_at = time.time()
        resumed = driver(sweep_dir, cluster.address, None, log)
        resumed.wait(timeout=timeout)
        if resumed.returncode != 0:
            raise RuntimeError(f"acl-ray sweep --resume exited {resumed.returncode}; see {log}")
        final = reports(sweep_dir)
    finally:
        ray.shutdown()
        cluster.shutdown()
    finished = {t for t, r in final.items() if r and r[-1].get("val/robust_acc") is not None}
    per_trial = {}
    for t, rows in final.items():
        epochs = [r["epoch"] for r in rows]
        pids = {r.get("worker/pid") for r in rows}
        per_trial[t] = {
            "epochs_reported": len(epochs),
            "epochs_trained_twice": len(epochs) - len(set(epochs)),
            "worker_groups": len(pids),
            "finished": t in finished,
        }
    return {
        "nodes": {
            "head": "TRAIN_DRIVER only, 0 CPU",
            "workers": nodes,
            "cpus_per_node": 1,
            "after_loss": nodes - 1,
        },
        "sweep": SWEEP,
        "trials": len(final),
        "trials_finished": len(finished),
        "trials_lost": len(final) - len(finished),
        "trials_restarted": sum(p["worker_groups"] > 1 for p in per_trial.values()),
        "node_loss": {
            "trial": victim_trial,
            "after_epoch": loss_after,
            "seconds_to_training_again": node_recovery_s,
            "epochs_trained_twice": per_trial[victim_trial]["epochs_trained_twice"],
            "reported": again,
        },
        "driver_kill": {
            "finished_before": sorted(done_before_kill),
            "rerun_after_resume": sorted(t for t in done_before_kill if len(final[t]) != rows_before_kill[t]),
            "seconds_killed_to_done": time.time() - killed_at,
        },
        "per_trial": per_trial,
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
