"""Optimisers (LARS as in the paper, SGD, Adam) and the per-iteration warm-up + cosine schedule.

The LR at a step is a base LR times the schedule's factor; the base can change between epochs
(:func:`set_base_lr`: a ``schedule`` section or PBT changing ``optim.lr``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from acl_ray.config.pretrain import OptimConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017), applied to every parameter.

    The official ACL code applies LARS to all parameters (BN and biases included); so does this.
    Per tensor: ``trust = eta * ||w|| / (||g|| + wd * ||w||)`` (1 when a norm is zero),
    ``buf = momentum * buf + lr * trust * (g + wd * w)``, ``w -= buf``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, eta, mom, lr = group["weight_decay"], group["eta"], group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                trust = torch.where(
                    (w_norm > 0) & (g_norm > 0),
                    eta * w_norm / (g_norm + wd * w_norm),
                    torch.ones_like(w_norm),
                )
                update = (g + wd * p) * (trust * lr)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(mom).add_(update)
                p.sub_(state["momentum_buffer"])
        return loss


def scaled_lr(cfg: OptimConfig, batch_size: int, global_batch_size: int) -> float:
    """Learning rate after the stated scaling rule: lr * (global / base)^p, p = 0, 1 or 1/2.

    ``base`` is ``optim.base_batch_size`` or, when 0, ``data.batch_size`` (so a run whose global
    batch equals its configured batch keeps ``optim.lr`` exactly).
    """
    base = cfg.base_batch_size or batch_size
    power = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}[cfg.lr_scaling]
    return cfg.lr * (global_batch_size / base) ** power


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.name == "lars":
        return LARS(params, lr, cfg.momentum, cfg.weight_decay, cfg.lars_eta)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr, weight_decay=cfg.weight_decay)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int, lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: linear warm-up over ``warmup_epochs``, then cosine to ``min_lr``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(epochs * steps_per_epoch, warm + 1)
    floor = min(cfg.min_lr / lr, 1.0)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(total - warm, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_base_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float) -> None:
    """Make ``lr`` the base of ``scheduler``: from the next step on, the LR is ``lr`` times its factor.

    Also sets the optimiser's current LR (the next step's), which the scheduler's last step computed
    from the old base. The base saved in a loaded scheduler state (``base_lrs``) is replaced, so the
    configured lr of the epoch decides, not the one of whoever wrote the checkpoint. Setting the
    base it already has changes nothing (the same product the scheduler computes).
    """
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = lr * factor(scheduler.last_epoch)
