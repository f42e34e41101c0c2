"""Where a sweep's trials run and how many at once: resources per trial, concurrency, storage.

Shared by the search (:mod:`acl_ray.orchestration.tune`) and its confirmation
(:mod:`acl_ray.orchestration.confirm`).
"""

from __future__ import annotations

import math
from pathlib import Path

import ray

from acl_ray.config.sweep import Sweep
from acl_ray.console import log
from acl_ray.orchestration.trial import in_process


def trial_resources(s: Sweep) -> tuple[dict[str, float], dict[str, float]]:
    """(resources of the Tune trial process, one trial's total need) for scheduling and concurrency.

    A trial that trains in its own process takes a worker's CPUs (and GPUs); a TorchTrainer's driver
    only waits, so it takes a ``TRAIN_DRIVER`` (or 0.01 CPU) and its workers the rest.
    """
    sw = s.sweep
    if in_process(s):
        own = {"CPU": sw.cpus_per_worker, **({"GPU": sw.gpus_per_worker} if sw.gpus_per_worker else {})}
        return own, {"CPU": sw.cpus_per_worker, "GPU": sw.gpus_per_worker}
    driver = {"CPU": 0.01} if "TRAIN_DRIVER" not in ray.cluster_resources() else {"TRAIN_DRIVER": 1.0}
    need = {
        "CPU": sw.workers * sw.cpus_per_worker + driver.get("CPU", 0.0),
        "GPU": sw.workers * sw.gpus_per_worker,
    }
    return driver, need


def experiment_path(s: Sweep, out: Path) -> str:
    """Where Tune keeps the experiment: ``out`` itself, or ``sweep.storage/<out name>`` (S3, NFS)."""
    return f"{s.sweep.storage.rstrip('/')}/{out.name}" if s.sweep.storage else str(out)


def concurrency(s: Sweep) -> int:
    """Trials that fit at once; raises when not even one fits (the sweep would wait forever).

    On an autoscaling cluster whose GPU nodes are not up yet, ``sweep.max_concurrent`` is trusted.
    """
    have = ray.cluster_resources()
    _, need = trial_resources(s)
    fits = [math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    n = min(fits)
    if n < 1 and s.sweep.max_concurrent:
        log(
            f"the cluster has no room for a trial yet; trusting sweep.max_concurrent={s.sweep.max_concurrent}"
        )
        return min(s.sweep.max_concurrent, s.sweep.num_samples)
    if n < 1:
        missing = ", ".join(f"{v:g} {k} (cluster has {have.get(k, 0):g})" for k, v in need.items() if v > 0)
        raise ValueError(f"A trial needs {missing}: lower sweep.workers / cpus_per_worker / gpus_per_worker")
    return min(n, s.sweep.max_concurrent or n, s.sweep.num_samples)
