"""One fit-and-select loop for every supervised stage: finetuning (SLF, ALF, AFF) and the
semi-supervised teacher and student.

``epochs`` passes of optimizer steps with a per-step cosine learning rate to 0 (or, for the
published protocols, a step schedule: x0.1 after each milestone epoch); the model is
scored on validation every ``select_every`` epochs and at the last, and the state with the best
score tuple is reloaded at the end (the paper's selection on validation robust accuracy). What a
step sees (``batches``) and what it minimises (``step_loss``) belong to the caller, so each keeps
its own random draws in its own order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch
from torch import nn

from acl_ray.algorithm.optim import build_optimizer
from acl_ray.config.pretrain import OptimConfig

Batch = TypeVar("Batch")


def fit(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    optim: OptimConfig,
    *,
    epochs: int,
    steps_per_epoch: int,
    batches: Callable[[], Iterable[Batch]],
    step_loss: Callable[[Batch], torch.Tensor],
    score: Callable[[], dict[str, float]],
    select_every: int = 1,
    rank: Sequence[str] = (),
    lr_schedule: str = "cosine",
    milestones: Sequence[int] = (),
) -> dict[str, float]:
    """Train ``model`` and keep its best-scoring state; returns that score and ``select/epoch``.

    Args:
        model: put in training mode before every step; its ``state_dict`` is what is selected.
        params: the parameters the optimizer updates (a head alone, or the whole model).
        optim: ``name`` (adam | sgd | lars), ``lr``, ``momentum`` and ``weight_decay`` are read.
        epochs: passes; ``steps_per_epoch``: steps per pass, the cosine schedule's length with it.
        batches: called once at the start of each epoch; one optimizer step per item it yields.
        step_loss: the loss of one item of ``batches``, with gradients to ``params``.
        score: validation metrics, e.g. ``{"val/standard_acc": ..., "val/robust_acc": ...}``.
        select_every: epochs between scorings (the last epoch is always scored).
        rank: the keys of ``score`` compared, most important first; empty = all, in ``score``'s order.
            A later scoring wins only with a strictly greater tuple (ties keep the earlier state).
        lr_schedule: ``cosine`` (per step, to 0) or ``step`` (the lr is multiplied by 0.1 after each
            epoch in ``milestones``: the official ACL and RobustSSL finetuning schedules).
    """
    opt = build_optimizer(params, optim, optim.lr)
    per_step = lr_schedule == "cosine"
    sched: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if per_step
        else torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1)
    )
    best: dict[str, float] = {}
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, epochs + 1):
        for batch in batches():
            model.train()
            loss = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()  # after the epoch: epochs 1..m at the full lr, m+1.. at a tenth
        if epoch % select_every and epoch != epochs:
            continue
        s = score()
        keys = tuple(rank) or tuple(s)
        if not best or tuple(s[k] for k in keys) > tuple(best[k] for k in keys):
            best, best_state = {**s, "select/epoch": epoch}, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best
