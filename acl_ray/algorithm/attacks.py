"""L-inf PGD (Madry et al. 2018) on NT-Xent for pre-training, on CE / CW margin for evaluation and
on the TRADES KL term for adversarial full finetuning, each configured by one :class:`AttackSpec`.

Every attack takes gradients with respect to the input only (``torch.autograd.grad``), never
touches parameter ``.grad``, runs with every module in eval mode (BN uses running statistics, so
they are not updated) and restores each module's training flag and BN route.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.losses import nt_xent, trades_kl
from acl_ray.algorithm.models.routed_bn import bn_eval, routed_bns
from acl_ray.config.pretrain import AttackConfig
from acl_ray.config.protocols import EvalConfig


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An L-inf attack's hyperparameters, bound once (torchattacks: ``PGD(model, eps, alpha, steps)``)."""

    eps: float  # L-inf radius, pixel space [0, 1]
    alpha: float  # step size of each signed-gradient step
    steps: int  # iterations
    random_start: bool = True  # uniform start in the eps ball (TRADES: always 0.001 * N(0, 1))

    @classmethod
    def of(cls, cfg: AttackConfig | EvalConfig) -> AttackSpec:
        """The pre-training (``attack.*``) or test (``eval.*``) attack of a config; alpha 0 = eps / 4."""
        random_start = cfg.random_start if isinstance(cfg, AttackConfig) else True
        return cls(cfg.eps, cfg.step_size, cfg.steps, random_start)

    @classmethod
    def quarter_step(cls, eps: float, steps: int) -> AttackSpec:
        """A training attack with step ``eps / 4`` (finetuning ALF/AFF, semi-supervised), random start."""
        return cls(eps, eps / 4, steps)


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
    spec: AttackSpec,
    generator: torch.Generator | None = None,
    perturb: Sequence[bool] | None = None,
    starts: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """Signed-gradient ascent on ``loss_fn`` over the inputs ``xs`` jointly.

    Args:
        loss_fn: maps the list of (perturbed) inputs to a scalar loss to maximise.
        xs: inputs in [0, 1]; those with ``perturb[i] == False`` stay clean.
        spec: radius, step size, steps and random start.
        starts: the initial perturbations (as :func:`_start` draws them), instead of drawing them.
    Returns:
        Adversarial inputs, each with ``||x_adv - x||_inf <= eps`` and values in [0, 1], detached.
    """
    eps, alpha = spec.eps, spec.alpha
    perturb = list(perturb) if perturb is not None else [True] * len(xs)
    xs = [x.detach() for x in xs]
    deltas = list(starts) if starts is not None else [
        _start(x, eps, spec.random_start, generator) if p else None for x, p in zip(xs, perturb, strict=True)
    ]
    for _ in range(spec.steps):
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
    spec: AttackSpec,
    *,
    temperature: float,
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
        a, b = pgd(loss_fn, [x1, x2], spec, generator, perturb)
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
    spec: AttackSpec,
    loss: str = "ce",
    generator: torch.Generator | None = None,
    only: torch.Tensor | None = None,
) -> torch.Tensor:
    """PGD on a classifier ``model(x) -> logits`` with cross-entropy or CW-margin loss, eval mode.

    ``only`` (bool, (N,)): attack these points and return the others clean. The random starts are
    drawn for all N points all the same, so a point's attack does not depend on which others run:
    it is the one it would get in the full batch (evaluation skips points already broken).

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,) -> x_adv (N, C, H, W)
    """
    if loss not in ("ce", "cw"):
        raise ValueError(f"Illegal attack loss {loss!r}: must be one of ce, cw")
    x = x.detach()
    start = _start(x, spec.eps, spec.random_start, generator)  # (N, C, H, W): drawn for every point
    if only is not None and not bool(only.any()):
        return x
    xa, ya, sa = (x, y, start) if only is None else (x[only], y[only], start[only])

    def loss_fn(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        logits = model(inputs[0]).float()  # (M, K)
        if loss == "ce":
            return F.cross_entropy(logits, ya, reduction="sum")
        return cw_margin(logits, ya).clamp(max=50.0).sum()  # clamped: no gain from overshooting

    with frozen_state(model):
        (x_adv,) = pgd(loss_fn, [xa], spec, starts=[sa])
    if only is None:
        return x_adv
    return x.index_put((only,), x_adv)  # the others clean


def trades_attack(
    model: nn.Module, x: torch.Tensor, spec: AttackSpec, generator: torch.Generator | None = None
) -> torch.Tensor:
    """TRADES' inner maximisation (Zhang et al. 2019, official ``trades.py``), in eval mode.

    Starts at ``x + 0.001 * N(0, 1)`` (``spec.random_start`` is not read) and ascends
    ``KL(p(x) || p(x_adv))`` by ``spec.steps`` signed-gradient steps of ``spec.alpha``.

    Shape:
        x: (N, C, H, W) in [0, 1] -> x_adv (N, C, H, W), ``||x_adv - x||_inf <= eps``, in [0, 1]
    """
    x, eps = x.detach(), spec.eps
    with frozen_state(model):
        with torch.no_grad():
            p_nat = F.softmax(model(x).float(), dim=1)  # (N, K)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = x + 0.001 * noise
        for _ in range(spec.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(trades_kl(model(x_adv).float(), p_nat), x_adv)
            x_adv = x_adv.detach() + spec.alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


__all__ = [
    "AttackSpec", "cw_margin", "frozen_state", "pgd", "pgd_classifier", "pgd_contrastive", "trades_attack",
]
