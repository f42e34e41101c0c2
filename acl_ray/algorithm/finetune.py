"""Finetuning a pre-trained encoder on labels (SLF, ALF, AFF) and evaluating the classifier.

Protocols (ACL, Jiang et al. 2020; named SLF/ALF/AFF by AdvCL and DynACL), all keeping one BN
route of the encoder (default "adv", the official ``--bnNameCnt 1``):
* ``slf``: linear head on frozen features, clean data; features are computed once (eval mode).
* ``alf``: linear head trained on PGD-10 (cross-entropy) examples of the whole classifier.
* ``aff``: the whole network with TRADES (beta 6, 10 steps): :func:`aff_loss`.
The head or network kept is the one with the best validation robust accuracy (the paper's
selection, :func:`acl_ray.algorithm.fit.fit`); the test split is only reported. Training-time
augmentation (``finetune.augment=crop_flip``, the published CIFAR protocols) is drawn on the device
per batch; without it (digits), SLF computes the frozen features once.

:func:`finetune` runs the protocol on a pre-training run directory and writes a classifier run;
:func:`finetune_state` runs the same code on an in-memory pre-training state (sweep trials).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from acl_ray.algorithm.attacks import AttackSpec, pgd_classifier, trades_attack
from acl_ray.algorithm.augment import crop_flip
from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.classifier import (
    Classifier,
    encoder_from_state,
    eval_outputs,
    resolve_route,
    split_tensors,
)
from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.fit import fit
from acl_ray.algorithm.losses import trades_loss
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.robustness import accuracy, pgd_name, robust_accuracy
from acl_ray.algorithm.run_dir import require_empty
from acl_ray.algorithm.runtime import resolve_device, set_threads
from acl_ray.config.pretrain import Config, OptimConfig
from acl_ray.config.protocols import FinetuneConfig

METRICS = "metrics.json"


def aff_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, beta: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One AFF step's loss: the TRADES attack, then :func:`~acl_ray.algorithm.losses.trades_loss`.

    Two forward passes, natural then adversarial, as the official code: in train mode each batch
    has its own BN statistics.

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,) -> scalar loss with gradients to the parameters
    """
    x_adv = trades_attack(model, x, spec, generator)
    nat, adv = model(x).float(), model(x_adv).float()  # (N, K) each
    return trades_loss(nat, adv, y, beta)


def _fit_protocol(
    clf: Classifier, cfg: FinetuneConfig, train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """Train per ``cfg.protocol``; keep the state with the best (val RA, val SA). Returns its metrics."""
    device = train[0].device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # batch order, then attack starts
    linear = cfg.protocol != "aff"
    clf.encoder.requires_grad_(not linear)
    params = list((clf.fc if linear else clf).parameters())
    n = len(train[1])
    augment = cfg.augment == "crop_flip"
    once = cfg.protocol == "slf" and not augment
    feats = eval_outputs(clf, train[0], clf.features) if once else None  # frozen features: once
    spec = AttackSpec.quarter_step(cfg.train_eps, cfg.train_steps)

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        x, y = train[0][idx], train[1][idx]
        if feats is not None:  # SLF, no augmentation
            return F.cross_entropy(clf.fc(feats[idx]), y)
        if augment:
            x = crop_flip(x, gen)
        if cfg.protocol == "slf":
            return F.cross_entropy(clf.fc(eval_outputs(clf, x, clf.features)), y)
        if cfg.protocol == "aff":
            return aff_loss(clf, x, y, spec, cfg.beta, gen)
        x_adv = pgd_classifier(clf, x, y, spec, "ce", gen)  # ALF
        return F.cross_entropy(clf.fc(eval_outputs(clf, x_adv, clf.features)), y)

    optim = OptimConfig(name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return fit(
        clf, params, optim, epochs=cfg.epochs, steps_per_epoch=(n + cfg.batch_size - 1) // cfg.batch_size,
        batches=lambda: torch.randperm(n, generator=gen, device=device).split(cfg.batch_size),
        step_loss=step_loss,
        score=lambda: {
            "val/standard_acc": accuracy(clf, *val), "val/robust_acc": robust_accuracy(clf, *val, cfg.eval)
        },
        select_every=cfg.select_every, rank=("val/robust_acc", "val/standard_acc"),
        lr_schedule=cfg.lr_schedule, milestones=cfg.milestones,
    )


def _trained(
    state: dict[str, Any], data: Datasets, cfg: FinetuneConfig, route: str, device: torch.device
) -> tuple[Classifier, dict[str, float]]:
    """The classifier of ``state``'s encoder on ``route``, trained and selected; its ``val/*`` metrics."""
    torch.manual_seed(cfg.seed)
    clf = Classifier(encoder_from_state(state, data.info), data.info.num_classes, route).to(device)
    train, val = split_tensors(data.train, device), split_tensors(data.val, device, cfg.val_size)
    return clf, _fit_protocol(clf, cfg, train, val)


def _tested(clf: Classifier, data: Datasets, cfg: FinetuneConfig, device: torch.device) -> dict[str, float]:
    """Standard and robust (``cfg.eval``) accuracy on the test split."""
    x, y = split_tensors(data.test, device)
    return {"eval/standard_acc": accuracy(clf, x, y), "eval/robust_acc": robust_accuracy(clf, x, y, cfg.eval)}


def finetune_state(
    state: dict[str, Any], data: Datasets, cfg: FinetuneConfig, device: torch.device
) -> dict[str, Any]:
    """The finetuning protocol on an in-memory pre-training state (sweep trials, re-runs).

    Same code as :func:`finetune`; returns ``val/*`` (selection split) and ``eval/*`` (test split)
    accuracies of ``state``'s encoder in the shared metric vocabulary, and writes nothing.
    """
    cfg = cfg.resolved()
    start = time.perf_counter()
    route = resolve_route(cfg.route, state["signature"]["routes"], "trial checkpoint")
    clf, best = _trained(state, data, cfg, route, device)
    return {
        **best, **_tested(clf, data, cfg, device),
        "eval/protocol": cfg.protocol, "eval/attack": pgd_name(cfg.eval), "eval/eps": cfg.eval.eps,
        "time/eval_s": time.perf_counter() - start,
    }


def load_pretrained(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The state of a pre-training run (its directory or checkpoint file); a classifier is refused."""
    state = load_checkpoint(checkpoint_dir)
    if state["signature"].get("kind") == "classifier":
        raise ValueError(f"{str(checkpoint_dir)!r} holds a finetuned classifier: pass a pre-training run")
    return state


def pretrained_dataset(checkpoint_dir: str | Path) -> str:
    """The ``data.name`` a pre-training run was trained on (its saved config): what its
    finetuning defaults follow (:func:`acl_ray.config.protocols.threat_model`)."""
    return Config.from_dict(load_pretrained(checkpoint_dir)["config"]).data.name


def finetune(checkpoint_dir: str | Path, cfg: FinetuneConfig, out_dir: str | Path) -> dict[str, Any]:
    """Finetune the encoder in ``checkpoint_dir`` by ``cfg.protocol``; write metrics, classifier, config.

    ``cfg`` runs as given: ``acl-ray finetune`` builds it with the checkpoint's dataset threat model
    first (``threat_model``), then the preset and ``--set`` values.
    """
    cfg = cfg.resolved()
    start = time.perf_counter()
    state = load_pretrained(checkpoint_dir)
    route = resolve_route(cfg.route, state["signature"]["routes"], str(checkpoint_dir))
    out = require_empty(out_dir)
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)
    data = load_datasets(Config.from_dict(state["config"]).data)
    clf, best = _trained(state, data, cfg, route, device)
    train_s = time.perf_counter() - start
    metrics = {
        "protocol": cfg.protocol, "route": route, "checkpoint": str(checkpoint_dir), **best,
        **_tested(clf, data, cfg, device), "eval/eps": cfg.eval.eps, "eval/attack": pgd_name(cfg.eval),
        "time/finetune_s": train_s, "time/eval_s": time.perf_counter() - start - train_s,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    signature = {**state["signature"], "kind": "classifier", "route": route}
    signature["num_classes"] = data.info.num_classes
    save_checkpoint(out / CHECKPOINT, {
        "model": clf.state_dict(), "config": cfg.to_dict(), "pretrain_config": state["config"],
        "signature": signature,
    })
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


def random_checkpoint(cfg: Config, out_dir: str | Path) -> Path:
    """An untrained encoder (``cfg``'s model, seed ``run.seed``) as a pre-training run: the baseline.

    BN running statistics are estimated on the clean training images for every route, so eval-mode
    features are on a sensible scale; no weight is trained.
    """
    data = load_datasets(cfg.data)
    trainer = Pretrainer(cfg, data, torch.device("cpu"))
    enc = trainer.encoder
    bns = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    x, _ = split_tensors(data.train, torch.device("cpu"))
    enc.train()
    with torch.no_grad():
        for route in enc.routes:
            for chunk in x.split(500):
                enc(chunk, route=route)
    for m in bns:
        m.momentum = 0.1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / "config.yaml")
    save_checkpoint(out / CHECKPOINT, trainer.state_dict())
    return out
