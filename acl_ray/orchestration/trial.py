"""One sweep trial: the Tune function trainable ``train_driver`` and what it runs.

A 1-worker trial (``sweep.runner=auto``, ``sweep.workers=1``) trains in the Tune trial's own process:
the same :class:`~acl_ray.algorithm.pretrain.Pretrainer` and :func:`epochs.run_epochs` as a Ray
Train worker, without a Train controller, worker actors, a placement group of its own or a process
group. Anything else runs a TorchTrainer named ``trial-<id>`` (DDP, Train's fault tolerance) whose
rank 0 reports through ``TuneReportCallback``.

Both keep a trial's checkpoint under ``<storage>/trial-<id>/`` and write it before the report that
names it: a retried trial (``sweep.max_failures``) or a restored sweep resumes from the newest one,
even when the sweep was killed before Tune saved its own state (every ~10 s). The datasets come
from Ray's object store, put there once by the sweep (``shared["data"]``), unless a trial's config
changes how they load.

A PBT / PB2 member (:mod:`population`, 1-worker only) also hands each checkpoint to Tune
(``ray.tune.report(..., checkpoint=)``) and starts from the one Tune gives back
(``ray.tune.get_checkpoint()``), never from its own store: after an exploit that is the copied
donor's (its model, optimiser, epoch and history), with the member's new config; after a retry or a
restored sweep, its own latest as Tune saved it, consistent with the config Tune restores. Its rows
name the trial that trained them (``pbt/trial``) and record the values in effect (``sched/<key>``),
and its final row carries its whole lineage (``pbt/lineage``, :mod:`acl_ray.results.schedules`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.train
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.runtime import resolve_device, set_threads
from acl_ray.config.pretrain import Config
from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.epochs import Evals, run_epochs
from acl_ray.orchestration.population import perturbation_epochs
from acl_ray.orchestration.ray_train import Scaling, build_trainer
from acl_ray.results.schedules import LINEAGE, TRAINED_BY, lineage_json


def in_process(s: Sweep) -> bool:
    """True when a trial trains in its Tune process rather than under a TorchTrainer."""
    return s.sweep.runner == "auto" and s.sweep.workers == 1


def asha_rungs(s: Sweep) -> tuple[int, ...]:
    """The epochs where ASHA may stop a trial, by the formula of Tune's ``_Bracket`` (bracket 0)."""
    if s.sweep.scheduler != "asha":
        return ()
    max_t = s.base.run.epochs
    min_t, rf = min(s.sweep.grace_period, max_t), s.sweep.reduction_factor
    n = int(math.log(max_t / min_t) / math.log(rf) + 1)
    return tuple(min_t * rf**k for k in range(n))


def trial_evals(s: Sweep) -> Evals:
    """The proxy (at the final evaluation's eps) every ``proxy_every`` epochs and where a scheduler
    decides (ASHA's rungs, PBT's perturbations), and the full protocol at the last epoch."""
    proxy = {**s.proxy.to_dict(), "eps": s.final.eval.eps}
    rungs = tuple(sorted({*asha_rungs(s), *perturbation_epochs(s)}))
    return Evals(proxy, s.final.to_dict(), s.sweep.proxy_every, rungs)


def shares_data(base: Config, cfg: Config) -> bool:
    """The trial loads the same datasets as the base config (the batch size does not change them)."""
    return dataclasses.replace(cfg.data, batch_size=base.data.batch_size) == base.data


class TrialCheckpoint:
    """``<run_dir>/checkpoint/checkpoint.pt``, a local path or any URI pyarrow opens (s3://, gs://).

    Locally it is replaced atomically (``save_checkpoint``); object stores replace whole objects.
    """

    def __init__(self, run_dir: str) -> None:
        self.dir = f"{run_dir.rstrip('/')}/checkpoint"

    def save(self, state: dict[str, Any]) -> None:
        with self.saved(state):
            pass

    @contextlib.contextmanager
    def saved(self, state: dict[str, Any]) -> Iterator[Path]:
        """Save ``state`` and yield a local folder holding it (for a Tune checkpoint of the same state)."""
        if "://" not in self.dir:
            save_checkpoint(Path(self.dir) / CHECKPOINT, state)
            yield Path(self.dir)
            return
        fs, path = pafs.FileSystem.from_uri(self.dir)
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(Path(d) / CHECKPOINT, state)
            fs.create_dir(path, recursive=True)
            pafs.copy_files(str(Path(d) / CHECKPOINT), f"{path}/{CHECKPOINT}", destination_filesystem=fs)
            yield Path(d)

    def load(self, device: Any) -> dict[str, Any] | None:
        """The saved state, or None when the trial has not written one yet."""
        if "://" not in self.dir:
            f = Path(self.dir) / CHECKPOINT
            return load_checkpoint(f, map_location=device) if f.is_file() else None
        fs, path = pafs.FileSystem.from_uri(self.dir)
        if fs.get_file_info(f"{path}/{CHECKPOINT}").type == pafs.FileType.NotFound:
            return None
        with ray.train.Checkpoint(self.dir).as_directory() as d:  # [Ray] downloads from the URI
            return load_checkpoint(Path(d), map_location=device)


def run_in_process(
    cfg: Config, data: Datasets, evals: Evals, run_dir: str, mutated: list[str] | None = None
) -> None:
    """Train a 1-worker trial in this (Tune trial) process, resuming from its own checkpoint;
    ``mutated``: the keys PBT changes, for a population member (see the module docstring)."""
    set_threads(cfg.run.threads)  # Ray sets OMP_NUM_THREADS to the trial's CPUs
    device = resolve_device(cfg.run.device)
    member = mutated is not None
    trainer = Pretrainer(cfg, data, device, record_schedule=member)
    store = TrialCheckpoint(run_dir)
    if member:
        given = ray.tune.get_checkpoint()  # [Ray] its own latest, or a copied donor's after an exploit
        if given is not None:
            with given.as_directory() as d:
                trainer.load_state_dict(load_checkpoint(Path(d), map_location=device), given.path)
    else:
        state = store.load(device)
        if state is not None:
            trainer.load_state_dict(state, store.dir)

    def report(row: dict[str, Any], state: dict[str, Any] | None) -> None:
        metrics = dict(row)
        if mutated is not None and trainer.epoch == cfg.run.epochs:
            metrics[LINEAGE] = lineage_json(trainer.history, mutated)
        with contextlib.ExitStack() as stack:
            checkpoint = None
            if state is not None:  # saved before the report: a reported checkpoint always exists
                folder = stack.enter_context(store.saved(state))
                metrics["checkpoint_path"] = store.dir
                checkpoint = ray.tune.Checkpoint.from_directory(str(folder)) if member else None
            # [Ray] to the Tune driver (the scheduler, the searcher, result.json); a member's
            # checkpoint is copied into its trial folder, where PBT finds it for an exploit
            ray.tune.report(metrics, checkpoint=checkpoint)

    trial_id = ray.tune.get_context().get_trial_id()
    where = {"worker/pid": os.getpid(), "worker/node_id": ray.get_runtime_context().get_node_id()}
    extra = {**where, "workers": 1, **({TRAINED_BY: trial_id} if member else {})}
    run_epochs(trainer, data, evals, report, extra, replay=not member)  # Tune checkpoints are reported


def make_trainable(spec: dict[str, Any], storage: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """The Tune trainable of a sweep (``spec``: ``Sweep.to_dict()``; ``storage``: the experiment path).

    Wrap it with ``ray.tune.with_parameters(..., shared={"data": ObjectRef | None})``.
    """

    def train_driver(config: dict[str, Any], shared: dict[str, Any]) -> None:
        s = Sweep.from_dict(spec)
        cfg = s.base.override(config).override({"run.progress": False})
        ref = shared.get("data") if shares_data(s.base, cfg) else None
        name = f"trial-{ray.tune.get_context().get_trial_id()}"
        evals = trial_evals(s)
        if in_process(s):
            data = ray.get(ref) if ref is not None else load_datasets(cfg.data)
            mutated = s.mutated or None  # a PBT / PB2 member
            run_in_process(cfg, data, evals, f"{storage.rstrip('/')}/{name}", mutated)
            return
        sw = s.sweep
        build_trainer(
            {"acl": cfg.to_dict(), "metrics_path": None, "eval": evals.to_dict(), "data": ref,
             "replay": True},
            Scaling(sw.workers, sw.cpus_per_worker, sw.gpus_per_worker),
            name=name,
            storage_path=storage,
            max_failures=sw.max_failures,
            num_to_keep=1,
            callbacks=[TuneReportCallback()],  # a Train UserCallback: forwards rank 0's reports to Tune
        ).fit()

    return train_driver
