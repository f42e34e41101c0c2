"""L-inf PGD (Madry et al. 2018) on NT-Xent for pre-training and on CE / CW margin for evaluation.

Both attacks take gradients with respect to the perturbation only (``torch.autograd.grad``),
never touch parameter ``.grad``, run with every module in eval mode (BN uses running
statistics, so they are not updated) and restore each module's training flag and BN route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.losses import nt_xent
from acl_ray.algorithm.models.routed_bn import bn_eval, routed_bns


@contextmanager
def frozen_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and BN routes for the block; afterwards both are as they were."""
    routes = [(m, m.route, m.split) for m in routed_bns(model)]
    with bn_eval(model):
        try:
            yield
        finally:
            for m, route, split in routes:
                m.route, m.split = route, split


def _start(
    x: torch.Tensor, eps: float, random_start: bool, generator: torch.Generator | None
) -> torch.Tensor:
    if not random_start:
        return torch.zeros_like(x)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    delta = (2 * u - 1) * eps
    return (x + delta).clamp(0, 1) - x  # start inside [0, 1] as well as inside the ball


def pgd(
    loss_fn: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    xs: Sequence[torch.Tensor],
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    perturb: Sequence[bool] | None = None,
) -> list[torch.Tensor]:
    """Signed-gradient ascent on ``loss_fn`` over the inputs ``xs`` jointly.

    Args:
        loss_fn: maps the list of (perturbed) inputs to a scalar loss to maximise.
        xs: inputs in [0, 1]; those with ``perturb[i] == False`` stay clean.
    Returns:
        Adversarial inputs, each with ``||x_adv - x||_inf <= eps`` and values in [0, 1], detached.
    """
    perturb = list(perturb) if perturb is not None else [True] * len(xs)
    xs = [x.detach() for x in xs]
    deltas = [
        _start(x, eps, random_start, generator) if p else None for x, p in zip(xs, perturb, strict=True)
    ]
    for _ in range(steps):
        live = [d.requires_grad_(True) for d in deltas if d is not None]
        inputs = [x if d is None else x + d for x, d in zip(xs, deltas, strict=True)]
        grads = torch.autograd.grad(loss_fn(inputs), live)
        it = iter(grads)
        new: list[torch.Tensor | None] = []
        for x, d in zip(xs, deltas, strict=True):
            if d is None:
                new.append(None)
                continue
            d = (d.detach() + alpha * next(it).sign()).clamp(-eps, eps)  # ascend, project onto the ball
            new.append((x + d).clamp(0, 1) - x)  # and onto the image box
        deltas = new
    return [x if d is None else (x + d).detach() for x, d in zip(xs, deltas, strict=True)]


def pgd_contrastive(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    temperature: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    perturb: tuple[bool, bool] = (True, True),
    route: str = "adv",
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD that maximises NT-Xent between the two views, through ``route`` with BN in eval mode.

    ``perturb=(True, False)`` attacks only the first view (A2S). ``gather`` uses the negatives of
    all workers, so a distributed attack ascends the same global loss as one process would.

    Shape:
        x1, x2: (N, C, H, W) in [0, 1] -> two tensors of the same shape
    """

    def loss_fn(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        n = inputs[0].shape[0]
        z = model(torch.cat(list(inputs), dim=0), route=route)  # (2N, d)
        return nt_xent(z[:n], z[n:], temperature, gather=gather)

    with frozen_state(model):
        a, b = pgd(loss_fn, [x1, x2], eps, alpha, steps, random_start, generator, perturb)
    return a, b


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus true logit, per sample. Shape: (N, K), (N,) -> (N,)."""
    true = logits.gather(1, y[:, None]).squeeze(1)  # (N,)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)  # (N,)
    return wrong - true


def pgd_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    loss: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD on a classifier ``model(x) -> logits`` with cross-entropy or CW-margin loss, eval mode.

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,) -> x_adv (N, C, H, W)
    """
    if loss not in ("ce", "cw"):
        raise ValueError(f"Illegal attack loss {loss!r}: must be one of ce, cw")

    def loss_fn(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        logits = model(inputs[0]).float()  # (N, K)
        if loss == "ce":
            return F.cross_entropy(logits, y, reduction="sum")
        return cw_margin(logits, y).clamp(max=50.0).sum()  # clamped: no gain from overshooting

    with frozen_state(model):
        (x_adv,) = pgd(loss_fn, [x], eps, alpha, steps, random_start, generator)
    return x_adv


__all__ = ["cw_margin", "frozen_state", "pgd", "pgd_classifier", "pgd_contrastive"]
