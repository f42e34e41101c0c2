"""The one epoch loop of Ray-run pre-training: train, evaluate on rank 0, checkpoint when useful, report.

A Ray Train worker (``ray_train.train_loop_per_worker``) and a 1-worker sweep trial that trains in
its own Tune process (``trial.run_in_process``) differ only in how a row and a checkpoint reach Ray:
each passes its ``report`` function. Which epochs get the robust-accuracy proxy and a checkpoint is
decided here, once: a checkpoint is written only where it can be used (every
``run.checkpoint_every`` epochs to resume from, at ASHA's rungs where a trial may be stopped and
evaluated post hoc, at PBT's perturbations where another member may copy it, and at the end).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from acl_ray.algorithm.data import Datasets
from acl_ray.algorithm.pretrain import Pretrainer

PROXY_METRIC = "proxy/robust_acc"  # the per-epoch proxy that ASHA, PBT and PB2 decide on
# (metric row, state to checkpoint or None): every rank calls it once per epoch (Ray Train's report
# is a barrier); the state is only ever given on rank 0.
Report = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclasses.dataclass(frozen=True)
class Evals:
    """What a sweep trial evaluates (a plain pre-training run evaluates nothing)."""

    proxy: dict[str, Any] | None = None  # ProxyConfig dict: the per-epoch proxy (ASHA's signal)
    final: dict[str, Any] | None = None  # FinetuneConfig dict: the full protocol at the last epoch
    proxy_every: int = 1  # epochs between proxies; the last epoch and the rungs always have one
    rungs: tuple[int, ...] = ()  # where a scheduler decides (ASHA, PBT): proxy and checkpoint there

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rungs": list(self.rungs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Evals:
        d = dict(d or {})
        return cls(d.get("proxy"), d.get("final"), int(d.get("proxy_every", 1)), tuple(d.get("rungs", ())))


def proxy_due(evals: Evals, epoch: int, epochs: int) -> bool:
    if evals.proxy is None:
        return False
    return epoch == epochs or epoch % evals.proxy_every == 0 or epoch in evals.rungs


def checkpoint_due(evals: Evals, epoch: int, epochs: int, every: int) -> bool:
    return epoch == epochs or epoch % every == 0 or epoch in evals.rungs


def evaluate(trainer: Pretrainer, data: Datasets, evals: Evals) -> dict[str, Any]:
    """Proxy (when due) and, at the last epoch, the full protocol, on rank 0's copy of the encoder."""
    from acl_ray.algorithm.finetune import finetune_state
    from acl_ray.algorithm.proxy import proxy_eval
    from acl_ray.config.protocols import FinetuneConfig, ProxyConfig

    out: dict[str, Any] = {}
    epochs = trainer.cfg.run.epochs
    if evals.proxy is not None and proxy_due(evals, trainer.epoch, epochs):
        out.update(proxy_eval(trainer.encoder, data, ProxyConfig(**evals.proxy), trainer.cfg.run.seed))
    if trainer.epoch == epochs and evals.final:
        ft = FinetuneConfig.from_dict(evals.final)
        out.update(finetune_state(trainer.state_dict(), data, ft, trainer.device))
    return out


def run_epochs(
    trainer: Pretrainer,
    data: Datasets,
    evals: Evals,
    report: Report,
    extra: Mapping[str, Any],
    after_report: Callable[[dict[str, Any]], None] | None = None,
    replay: bool = False,
) -> None:
    """Train ``trainer`` to ``run.epochs``, reporting each epoch's row (``extra`` added) through ``report``.

    A trainer restored from a complete run trains nothing: its final row is reported again with its
    checkpoint (a sweep killed after a trial's last report, before Tune saved the trial as done).
    With ``replay`` (sweep trials), a trainer restored mid-run first reports every row its checkpoint
    holds again, in order, marked ``replayed``: a sweep driver killed before Tune copied its newest
    results into the sweep folder (every few seconds; longer on a loaded machine) would otherwise leave
    those epochs out of Tune's results for good, also the one whose checkpoint was written just before
    its report (readers keep the last report of an epoch; ASHA decides a rung once; the searcher and
    the epoch budget skip or count such a row once).
    ``after_report`` sees each row once ``report`` has returned (its checkpoint is then persisted).
    """
    cfg, rank0 = trainer.cfg, trainer.rank == 0
    epochs = cfg.run.epochs
    if trainer.epoch >= epochs and trainer.history:
        report(trainer.history[-1], trainer.state_dict() if rank0 else None)
        return
    if replay and trainer.epoch > 0 and trainer.history:
        for row in trainer.history:  # on every rank: Train's report is a barrier
            report({**row, "replayed": True}, None)
    while trainer.epoch < epochs:
        row = {**trainer.train_epoch(), **extra}
        if rank0:
            row.update(evaluate(trainer, data, evals))
        trainer.history[-1] = row  # the checkpoint keeps the full row (resume re-reports it)
        due = rank0 and checkpoint_due(evals, trainer.epoch, epochs, cfg.run.checkpoint_every)
        report(row, trainer.state_dict() if due else None)
        if after_report is not None:
            after_report(row)
