"""Robustness evaluation of a classifier ``model(x) -> logits`` on images in [0, 1].

* :func:`robust_accuracy`: L-inf PGD with several losses and restarts; a point counts as robust only
  if it survives every one (worst case per point). Cross-entropy PGD alone is not enough: on digits
  it reported 48% for a model that CW-margin PGD brought to 0.2% (DESIGN.md).
* :func:`autoattack_accuracy`: the independent number, through the optional ``pyautoattack``
  package (Croce & Hein 2020).
* :func:`masking_checks`: warnings in the spirit of AutoAttack's ``checks.py`` when the numbers look
  like gradient masking (Athalye et al. 2018): more steps or restarts lowering robust accuracy a lot,
  AutoAttack far below PGD, zero input gradients.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.attacks import AttackSpec, cw_margin, frozen_state, pgd_classifier
from acl_ray.algorithm.classifier import load_classifier, split_tensors
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.runtime import resolve_device, set_threads
from acl_ray.config.fields import check, choice
from acl_ray.config.protocols import AA_ATTACKS, AA_VERSIONS, ATTACKS, LOSSES, EvalConfig


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted classes in eval mode. Shape: (N, C, H, W) -> (N,)."""
    if len(x) == 0:  # a legal subset (no clean-correct point left to attack): nothing to run
        return torch.empty(0, dtype=torch.long, device=x.device)
    with frozen_state(model):
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])  # (N,)


def _share(mask: torch.Tensor) -> float:
    """Mean of a boolean mask; an empty split is an error, never a silent nan."""
    if len(mask) == 0:
        raise ValueError("Cannot measure accuracy on 0 images: the split or subset is empty")
    return float(mask.float().mean().item())


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Standard (clean) accuracy. Shape: x (N, C, H, W) in [0, 1], y (N,)."""
    return _share(predict(model, x, batch_size) == y)


def robust_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: EvalConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which points are classified correctly and survive every PGD loss and restart (worst case).

    Every attack draws its random starts for the same clean-correct points, batch by batch; without
    ``generator`` each (restart, loss) draws from its own seed derived from ``cfg.seed``, so the mask
    is the AND of the single-loss masks and adding a loss or a restart can only lower it. A point an
    earlier attack broke is not attacked again (its start is still drawn, so every other point gets
    the start it would get in the full batch): no point's outcome changes but for the float effects of
    a smaller batch (the default sweep's numbers were equal to the last digit), and the work is saved.

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,) -> (N,) bool
    """
    robust = predict(model, x, cfg.batch_size) == y  # (N,)
    idx = robust.nonzero().squeeze(1)  # (M,) attacked points
    if len(idx) == 0:  # no point is classified correctly: none can be robust
        return robust
    spec = AttackSpec.of(cfg)
    for restart in range(cfg.restarts):
        for loss in cfg.losses:
            seed = cfg.seed + 1000 * restart + LOSSES.index(loss)
            gen = generator or torch.Generator(device=x.device).manual_seed(seed)
            for chunk in idx.split(cfg.batch_size):
                alive = robust[chunk]  # a point broken by an earlier attack stays broken: not attacked
                x_adv = pgd_classifier(model, x[chunk], y[chunk], spec, loss, gen, only=alive)
                hit = chunk[alive]
                robust[hit] = predict(model, x_adv[alive], cfg.batch_size) == y[hit]
    return robust


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: EvalConfig,
    generator: torch.Generator | None = None,
) -> float:
    """Share of points that survive PGD with every loss in ``cfg.losses`` and every restart."""
    return _share(robust_mask(model, x, y, cfg, generator))


def _autoattack_cls() -> type:
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ValueError(
            "AutoAttack needs the pyautoattack package: pip install 'acl-ray[autoattack]'"
        ) from None
    return AutoAttack


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    n_classes: int,
    seed: int = 0,
    version: str = "fast",
    batch_size: int = 250,
    warnings: list[str] | None = None,
) -> float:
    """Robust accuracy under AutoAttack (L-inf) from ``pyautoattack``; see ``AA_ATTACKS[version]``.

    AutoAttack's own check warnings (randomness, probability outputs, Square below the gradient
    attacks) are appended to ``warnings`` when given.
    """
    check(0 < eps <= 1, "eval.eps", "in (0, 1]", eps)
    choice("eval.aa_version", version, AA_VERSIONS)
    auto_attack = _autoattack_cls()
    if version == "standard":
        aa = auto_attack(model, device=x.device, eps=eps, norm="Linf", seed=seed, version="standard")
    else:
        aa = auto_attack(
            model, attacks=list(AA_ATTACKS[version]), device=x.device, eps=eps, norm="Linf", seed=seed,
            version="custom",
        )
        aa.apgd.n_restarts = 1  # as in the standard version
    targets = max(1, min(9, n_classes - 1))  # the standard suite targets the top 9 other classes
    aa.apgd_targeted.n_target_classes = targets
    aa.fab.n_target_classes = targets
    handler = _Collect()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    try:
        with frozen_state(model):
            _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
    if warnings is not None:
        warnings.extend(f"AutoAttack: {m}" for m in dict.fromkeys(handler.messages))  # once each
    return float((y_adv.to(y.device) == y).float().mean().item())


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    """Share of points whose input gradient of the attack loss is exactly zero (AutoAttack's check).

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,)
    """
    with frozen_state(model):
        x = x.detach().clone().requires_grad_(True)
        logits = model(x).float()  # (N, K)
        per_point = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else cw_margin(logits, y)
        (grad,) = torch.autograd.grad(per_point.sum(), x)
    return float((grad.flatten(1).abs().sum(1) == 0).float().mean().item())


def masking_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: EvalConfig,
    pgd_acc: float | None = None,
    aa_acc: float | None = None,
    threshold: float = 0.05,
    zero_grad_fraction: float = 0.1,
) -> list[str]:
    """Warnings that robust accuracy may be inflated by gradient masking; empty when none fired.

    Runs PGD again with 5x the steps and with 4 more restarts (a sound evaluation barely moves),
    compares AutoAttack with PGD when ``aa_acc`` is given, and counts zero input gradients per loss.
    Pass a subset of the test split: this costs about 10x one evaluation.
    """
    warnings: list[str] = []
    if pgd_acc is None:
        pgd_acc = robust_accuracy(model, x, y, cfg)
    for what, stronger in (
        (f"{5 * cfg.steps} steps", dataclasses.replace(cfg, steps=5 * cfg.steps)),
        (f"{cfg.restarts + 4} restarts", dataclasses.replace(cfg, restarts=cfg.restarts + 4)),
    ):
        acc = robust_accuracy(model, x, y, stronger)
        if pgd_acc - acc > threshold:
            warnings.append(
                f"PGD with {what} lowers robust accuracy from {pgd_acc:.3f} to {acc:.3f}: "
                "the attack has not converged or gradients are masked"
            )
    if aa_acc is not None and pgd_acc - aa_acc > threshold:
        warnings.append(
            f"AutoAttack robust accuracy {aa_acc:.3f} is far below PGD's {pgd_acc:.3f}: "
            "PGD is unreliable here"
        )
    for loss in cfg.losses:
        frac = zero_gradient_fraction(model, x, y, loss)
        if frac > zero_grad_fraction:
            warnings.append(
                f"{frac:.0%} of points have a zero input gradient of the {loss} loss: "
                "gradient-based attacks are unreliable (masked or saturated logits)"
            )
    return warnings


def evaluate_checkpoint(
    path: str | Path, attack: str | None = None, eps: float | None = None,
    overrides: Mapping[str, Any] | None = None, checks: int = 200,
) -> dict[str, Any]:
    """Test-split SA and RA of a finetuned classifier (``acl-ray finetune`` output): ``acl-ray evaluate``.

    The classifier's own eval settings apply, then ``overrides`` (``eval.<field>``), ``attack`` and
    ``eps``. PGD always runs (AutoAttack is compared with it); the first ``checks`` test points get
    :func:`masking_checks`, whose warnings land in ``eval/warnings``. A classifier saved before
    finetuning followed the data, still at the digits eps 0.1 on CIFAR, is tested at its dataset's
    threat model (:meth:`~acl_ray.config.protocols.FinetuneConfig.follow_data`) unless an eps is given.
    """
    values = dict(overrides or {})
    values.update({k: v for k, v in (("eval.attack", attack), ("eval.eps", eps)) if v is not None})
    clf, ft, pre = load_classifier(path)
    warnings: list[str] = []
    if not any(k.removeprefix("finetune.") == "eval.eps" for k in values):
        followed = ft.follow_data(pre.data.name)
        if followed.eval != ft.eval:
            warnings.append(
                f"{str(path)!r} was finetuned at the digits default eps {eps_name(ft.eval.eps)} on "
                f"{pre.data.name}: tested at {pre.data.name}'s eps {eps_name(followed.eval.eps)} "
                f"(--eps {ft.eval.eps} keeps the old radius)"
            )
        ft = followed
    ft = ft.override(values)
    device = resolve_device(ft.device)
    set_threads(ft.threads)
    clf.to(device)
    data = load_datasets(pre.data)
    ev = ft.eval
    x, y = split_tensors(data.test, device)
    start = time.perf_counter()
    pgd_acc = robust_accuracy(clf, x, y, ev)
    metrics: dict[str, Any] = {
        "eval/standard_acc": accuracy(clf, x, y), "eval/pgd_robust_acc": pgd_acc, "eval/robust_acc": pgd_acc,
        "eval/eps": ev.eps, "eval/attack": pgd_name(ev),
    }
    aa_acc = None
    if ev.attack == "autoattack":
        aa_acc = autoattack_accuracy(
            clf, x, y, ev.eps, data.info.num_classes, ev.seed, ev.aa_version, ev.batch_size, warnings
        )
        attacks = "+".join(AA_ATTACKS[ev.aa_version])
        metrics.update({"eval/robust_acc": aa_acc, "eval/attack": f"autoattack-{ev.aa_version} ({attacks})"})
    if checks:
        sub = slice(0, checks)
        warnings += masking_checks(clf, x[sub], y[sub], ev, robust_accuracy(clf, x[sub], y[sub], ev))
        if aa_acc is not None and pgd_acc - aa_acc > 0.05:  # on the whole split
            warnings.append(f"AutoAttack robust accuracy {aa_acc:.3f} is far below PGD's {pgd_acc:.3f}")
    metrics.update({"eval/warnings": warnings, "time/eval_s": time.perf_counter() - start})
    return metrics


def pgd_name(cfg: EvalConfig) -> str:
    """What a PGD evaluation ran, e.g. ``pgd-20 ce+cw x1``."""
    return f"pgd-{cfg.steps} {'+'.join(cfg.losses)} x{cfg.restarts}"


def eps_name(eps: float) -> str:
    """An L-inf radius as people write it: ``0.1`` or ``0.05`` when three digits say it exactly,
    else ``8/255`` for a whole number of 8-bit levels, else four significant digits (``0.0314``)."""
    short, levels = f"{eps:.3g}", eps * 255
    if float(short) == eps:
        return short
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{eps:.4g}"


__all__ = [
    "AA_ATTACKS", "ATTACKS", "EvalConfig", "accuracy", "autoattack_accuracy", "eps_name",
    "evaluate_checkpoint", "masking_checks", "pgd_name", "predict", "robust_accuracy", "robust_mask",
    "zero_gradient_fraction",
]
