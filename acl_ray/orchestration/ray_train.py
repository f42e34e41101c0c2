"""Ray Train (V2): the same ACL epoch loop in N DDP workers, with checkpoints and recovery.

Ray enters at three marked places in the worker (prepare the model, read the checkpoint,
report); everything else is :class:`acl_ray.algorithm.pretrain.Pretrainer`, the code the in-process CLI
runs. Distributed correctness lives in the algorithm layer: NT-Xent gathers every worker's
views with gradients (``acl_ray.algorithm.losses``), both BN routes become ``SyncBatchNorm`` and each epoch
reshuffles through ``DistributedSampler.set_epoch``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from torch import nn

from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.models.sync_bn import convert_sync_bn
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.run_dir import METRICS, append_metrics, prepare_run_dir, truncate_metrics
from acl_ray.algorithm.runtime import set_threads
from acl_ray.config.pretrain import Config
from acl_ray.console import log
from acl_ray.orchestration.epochs import Evals, run_epochs


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: rebuild and validate the config, then train epochs and report each one.

    ``config``: ``{"acl": Config.to_dict(), "metrics_path": str | None, "eval": Evals dict | None,
    "data": ObjectRef | None, "replay": bool}`` (``replay``: a sweep trial, see :func:`epochs.run_epochs`).
    ``data``: the datasets already in Ray's object store (a sweep puts
    them there once); without it the worker loads them. Rank 0 appends each epoch's row to
    ``metrics_path`` (a local run directory) as it goes; every row is also kept in the checkpoint,
    which is what a restarted worker group resumes from. The epochs, their proxy and full-protocol
    evaluation (sweeps) and which of them write a checkpoint are :func:`epochs.run_epochs`'s.
    """
    cfg = Config.from_dict(config["acl"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    set_threads(cfg.run.threads)
    device = ray.train.torch.get_device()

    def wrap(model: nn.Module) -> nn.Module:
        if world > 1 and cfg.model.sync_bn:
            model = convert_sync_bn(model, device)  # both routes; converts in place
        return ray.train.torch.prepare_model(model)  # [Ray] DDP (gloo on CPU, NCCL on GPU)

    ref = config.get("data")
    data: Datasets = ray.get(ref) if ref is not None else load_datasets(cfg.data)
    trainer = Pretrainer(cfg, data, device, rank, world, wrap)
    checkpoint = ray.train.get_checkpoint()  # [Ray] set after a worker failure or on resume
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(load_checkpoint(Path(d), map_location=device), str(d))
    metrics_path = config.get("metrics_path")
    if rank == 0 and metrics_path:
        truncate_metrics(Path(metrics_path).parent, trainer.epoch)

    def report(row: dict[str, Any], state: dict[str, Any] | None) -> None:
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if state is not None:
                save_checkpoint(Path(d) / CHECKPOINT, state)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(row, checkpoint=ckpt)  # [Ray] a barrier: every rank calls it

    def after_report(row: dict[str, Any]) -> None:
        if rank == 0 and metrics_path:  # after report: a row on disk has its checkpoint persisted
            append_metrics(Path(metrics_path).parent, row)

    # where rank 0 runs: a fault harness finds the node to take down from the reports themselves
    node = ray.get_runtime_context().get_node_id()
    extra = {"worker/pid": os.getpid(), "worker/node_id": node, "workers": world}
    evals, replay = Evals.from_dict(config.get("eval")), bool(config.get("replay"))
    run_epochs(trainer, data, evals, report, extra, after_report, replay=replay)


@dataclasses.dataclass(frozen=True)
class Scaling:
    """One Train run's worker group."""

    workers: int  # DDP workers
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # 0 = CPU only (gloo); > 0 = NCCL on GPUs

    def to_ray(self) -> ray.train.ScalingConfig:
        gpu = {"GPU": self.gpus_per_worker} if self.gpus_per_worker else {}
        return ray.train.ScalingConfig(
            num_workers=self.workers,
            use_gpu=self.gpus_per_worker > 0,
            resources_per_worker={"CPU": self.cpus_per_worker, **gpu},
        )


def build_trainer(
    loop_config: dict[str, Any],
    scaling: Scaling,
    name: str,
    storage_path: str,
    max_failures: int,
    num_to_keep: int,
    callbacks: Sequence[Any] = (),
) -> ray.train.torch.TorchTrainer:
    """The one TorchTrainer of the package: ``train_loop_per_worker`` on ``loop_config`` (see there).

    The run is ``storage_path/name``: a second trainer with the same name resumes it from its
    latest checkpoint (a retried sweep trial, ``acl-ray pretrain --resume``). The worker group is
    restarted up to ``max_failures`` times; ``num_to_keep`` checkpoints are kept.
    """
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling.to_ray(),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=list(callbacks),
        ),
    )


def check_request(workers: int, cpus_per_worker: float, gpus_per_worker: float, batch_size: int) -> None:
    """Reject worker requests that make no sense, before any Ray process starts."""
    if workers < 1:
        raise ValueError(f"Illegal --workers={workers}: must be an integer >= 1")
    if cpus_per_worker <= 0:
        raise ValueError(f"Illegal --cpus-per-worker={cpus_per_worker}: must be > 0")
    if gpus_per_worker < 0:
        raise ValueError(f"Illegal --gpus-per-worker={gpus_per_worker}: must be >= 0")
    if batch_size % workers:
        raise ValueError(f"Illegal data.batch_size={batch_size}: must be divisible by --workers={workers}")


def cluster_check(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Fail before ``fit()`` when the cluster can never place the worker group (no silent wait)."""
    have = ray.cluster_resources()
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    missing = [f"{need[k]:g} {k} (have {have.get(k, 0):g})" for k in need if need[k] > have.get(k, 0)]
    if missing:
        raise ValueError(
            f"The cluster cannot place {workers} workers x {cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU: "
            f"needs {', '.join(missing)}"
        )


DASHBOARD_ENV = "ACL_RAY_DASHBOARD"  # 0: a local Ray starts without its dashboard


def local_dashboard() -> bool:
    """Whether a local Ray this process starts gets Ray's dashboard (``ACL_RAY_DASHBOARD``, default 1).

    The dashboard and its agent cost a local Ray about 4 s of start-up and a share of a core while
    it runs (measured on 2 cores); the test suite, which starts Ray a few dozen times, turns it off.
    """
    value = os.environ.get(DASHBOARD_ENV, "1").strip().lower()
    if value not in ("0", "1"):
        raise ValueError(f"{DASHBOARD_ENV}={value!r}: must be 0 (no dashboard) or 1 (default)")
    return value == "1"


def ensure_ray(address: str | None, num_cpus: int | None = None, quiet: bool = False) -> bool:
    """Connect to ``address`` (a running cluster) or start a local Ray; True if this call started it.

    ``quiet``: the output of Ray's worker processes (trials, Train controllers and workers, tasks)
    stays in Ray's log files instead of being forwarded to this terminal (``log_to_driver``), and
    this process logs only Ray's errors. Neither can change once Ray is initialised. A local Ray
    gets the dashboard unless ``ACL_RAY_DASHBOARD=0`` (:func:`local_dashboard`).
    """
    if ray.is_initialized():
        return False
    verbosity: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR} if quiet else {}
    if address:
        ray.init(address=address, **verbosity)
    else:
        # TRAIN_DRIVER: a logical resource for sweep trial drivers, which only wait on their
        # TorchTrainer; it keeps them from taking the CPUs the workers need (as on cluster.yaml's head).
        # address="local": always a new local Ray, never one a `ray start` on this machine left behind.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            resources={"TRAIN_DRIVER": 64},
            include_dashboard=None if local_dashboard() else False,  # None: Ray's default, as before
            **verbosity,
        )
    return True


def run_pretrain_ray(
    cfg: Config,
    out: str | Path,
    workers: int,
    resume: bool = False,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
    max_failures: int = 2,
) -> list[dict[str, Any]]:
    """Pre-train under Ray Train into the local run directory ``out`` and return its metric rows.

    The Train run is named ``out.name`` under ``out.parent``, so running again with ``resume``
    continues it from its latest checkpoint (Ray's auto-resume). Afterwards ``out`` holds the
    same files as an in-process run (``checkpoint.pt``, ``metrics.jsonl``, ``config.yaml``).
    """
    check_request(workers, cpus_per_worker, gpus_per_worker, cfg.data.batch_size)
    started = ensure_ray(address)
    try:
        return _fit(cfg, Path(out).resolve(), workers, resume, gpus_per_worker, cpus_per_worker, max_failures)
    finally:
        if started:  # without an explicit shutdown the interpreter waits minutes at exit
            ray.shutdown()


def _fit(
    cfg: Config,
    out: Path,
    workers: int,
    resume: bool,
    gpus_per_worker: float,
    cpus_per_worker: float,
    max_failures: int,
) -> list[dict[str, Any]]:
    cluster_check(workers, cpus_per_worker, gpus_per_worker)
    out = prepare_run_dir(out, cfg, resume)
    trainer = build_trainer(
        {"acl": cfg.to_dict(), "metrics_path": str(out / METRICS)},
        Scaling(workers, cpus_per_worker, gpus_per_worker),
        name=out.name,
        storage_path=str(out.parent),
        max_failures=max_failures,
        num_to_keep=2,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {out} finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        shutil.copyfile(Path(d) / CHECKPOINT, out / f".{CHECKPOINT}.tmp")
    os.replace(out / f".{CHECKPOINT}.tmp", out / CHECKPOINT)
    history = load_checkpoint(out)["history"]
    (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))
    log(f"Ray Train: {workers} workers, {len(history)} epochs; run in {out}")
    return list(history)
