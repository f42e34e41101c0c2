"""Batch norm with one real ``nn.BatchNorm`` child per route ("clean", "adv").

ACL's dual BN (Jiang et al. 2020, Sec. 3.3): convolution and linear weights are shared, each route
keeps its own affine parameters and running statistics. Unlike the official code's
``[tensor, bn_name]`` lists, the route is module state set by :func:`set_route`, so
``SyncBatchNorm.convert_sync_batchnorm``, DDP and ``torch.compile`` see ordinary modules.

A *split* route sends the first ``n`` rows of the batch through "clean" and the rest through
"adv". That is the same computation as two forward passes (BN statistics are per route and
per segment) but one pass through the shared convolutions, and one DDP forward per backward.
Several boundaries (``split=(a, b)``) cut the clean rows into segments that each get their own
batch statistics, as separate clean passes would (AIR's un-augmented images: ``[views | originals | adv]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ROUTES = ("clean", "adv")
Split = int | tuple[int, ...] | None  # leading clean rows, or boundaries of clean segments (see forward)


class RoutedBatchNorm(nn.Module):
    """Holds ``nn.BatchNorm{1,2}d`` children named after the routes; forwards through the active one."""

    def __init__(self, num_features: int, routes: tuple[str, ...], dims: int = 2) -> None:
        super().__init__()
        for r in routes:
            if r not in ROUTES:
                raise ValueError(f"Illegal route {r!r}: must be one of {', '.join(ROUTES)}")
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.bns = nn.ModuleDict({r: bn(num_features) for r in routes})
        self.route: str = routes[0]
        # rows [0, split) -> "clean", [split, N) -> "adv"; a tuple (a, b): [0, a) and [a, b) clean
        # (each with its own batch statistics), [b, N) adv
        self.split: Split = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split is None:
            return self.bns[self.route](x)
        ends = [0, *((self.split,) if isinstance(self.split, int) else self.split)]
        parts = [self.bns["clean"](x[a:b]) for a, b in itertools.pairwise(ends)]
        return torch.cat([*parts, self.bns["adv"](x[ends[-1]:])], dim=0)


def routed_bns(model: nn.Module) -> Iterator[RoutedBatchNorm]:
    return (m for m in model.modules() if isinstance(m, RoutedBatchNorm))


def model_routes(model: nn.Module) -> tuple[str, ...]:
    """Routes every routed BN in ``model`` has (the routes a checkpoint can be evaluated with)."""
    sets = [tuple(m.bns.keys()) for m in routed_bns(model)]
    return tuple(r for r in ROUTES if sets and all(r in s for s in sets))


def set_route(model: nn.Module, route: str, split: Split = None) -> None:
    """Select ``route`` ("clean" | "adv" | "split") for every routed BN in ``model``.

    Args:
        route: "clean", "adv", or "split" (first ``split`` rows clean, the rest adv).
        split: number of leading rows routed "clean", or increasing boundaries of clean segments
            (each normalised with its own batch statistics); required with route "split".
    """
    available = model_routes(model)
    needed = ("clean", "adv") if route == "split" else (route,)
    for r in needed:
        if r not in available:
            have = ", ".join(available) or "none"
            raise ValueError(f"Illegal route {r!r}: this model has the routes: {have}")
    if route == "split" and split is None:
        raise ValueError("route 'split' needs the number of leading clean rows (split=...)")
    for m in routed_bns(model):
        m.route = needed[0]
        m.split = split if route == "split" else None


@contextmanager
def bn_eval(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode for the block and restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
