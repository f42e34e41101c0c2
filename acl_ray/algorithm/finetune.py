"""Finetuning a pre-trained encoder on labels (SLF, ALF, AFF) and evaluating the classifier.

Protocols (ACL, Jiang et al. 2020; named SLF/ALF/AFF by AdvCL and DynACL), all keeping one BN
route of the encoder (default "adv", the official ``--bnNameCnt 1``):
* ``slf``: linear head on frozen features, clean data; features are computed once (eval mode).
* ``alf``: linear head trained on PGD-10 (cross-entropy) examples of the whole classifier.
* ``aff``: the whole network with TRADES (beta 6, 10 steps), see :mod:`acl_ray.algorithm.trades`.
The head or network kept is the one with the best validation robust accuracy (the paper's
selection); the test split is only reported. No augmentation: digits are 8x8.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from acl_ray.algorithm.attacks import frozen_state, pgd_classifier
from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import DatasetInfo, Split, load_datasets
from acl_ray.algorithm.models import Encoder
from acl_ray.algorithm.pretrain import Pretrainer, resolve_device, set_threads
from acl_ray.algorithm.robustness import (
    accuracy,
    pgd_name,
    robust_accuracy,
)
from acl_ray.algorithm.trades import trades_loss
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig

METRICS = "metrics.json"


class Classifier(nn.Module):
    """Pre-trained backbone through one fixed BN route + a linear head (the projection head dropped)."""

    def __init__(self, encoder: Encoder, num_classes: int, route: str) -> None:
        super().__init__()
        encoder.head = nn.Sequential()  # unused: the official code drops it too
        self.encoder, self.route = encoder, route
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        nn.init.zeros_(self.fc.weight)  # as the official code's fresh fc
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits. Shape: (N, C, H, W) in [0, 1] -> (N, num_classes)."""
        return self.fc(self.encoder.features(x, self.route))


def resolve_route(route: str, available: Iterable[str], source: str) -> str:
    have = tuple(available)
    if route == "auto":
        return "adv" if "adv" in have else "clean"
    if route not in have:
        raise ValueError(
            f"Illegal finetune.route={route!r}: checkpoint {source!r} has only the routes: {', '.join(have)}"
        )
    return route


def _encoder(state: dict[str, Any], info: DatasetInfo) -> Encoder:
    pre = Config.from_dict(state["config"])
    enc = Encoder(pre.model, info.channels, info.mean, info.std, routes=tuple(state["signature"]["routes"]))
    enc.load_state_dict(state["model"])
    return enc


def split_tensors(
    split: Split, device: torch.device, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images in [0, 1] and labels on ``device``. Shape: (n, C, H, W), (n,)."""
    return split.images[:n].to(device).float() / 255, split.labels[:n].to(device)  # (N, C, H, W), (N,)


@torch.no_grad()
def _features(clf: Classifier, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with frozen_state(clf):
        return torch.cat([clf.encoder.features(x[i : i + batch], clf.route) for i in range(0, len(x), batch)])


def _step_loss(
    clf: Classifier, cfg: FinetuneConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    alpha = cfg.train_eps / 4
    if cfg.protocol == "aff":
        clf.train()
        return trades_loss(clf, x, y, cfg.train_eps, alpha, cfg.train_steps, cfg.beta, gen)
    x_adv = pgd_classifier(clf, x, y, cfg.train_eps, alpha, cfg.train_steps, "ce", True, gen)  # ALF
    return F.cross_entropy(clf.fc(_features(clf, x_adv)), y)


def _train(clf: Classifier, cfg: FinetuneConfig, train: tuple[torch.Tensor, torch.Tensor],
           val: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Train per ``cfg.protocol``; keep the state with the best (val RA, val SA). Returns its metrics."""
    device = train[0].device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    linear = cfg.protocol != "aff"
    clf.encoder.requires_grad_(not linear)
    params = list((clf.fc if linear else clf).parameters())
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, cfg.lr, weight_decay=cfg.weight_decay) if cfg.optimizer == "adam"
        else torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    )
    n = len(train[1])
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps)
    feats = _features(clf, train[0]) if cfg.protocol == "slf" else None  # frozen encoder: once
    best: dict[str, float] = {}
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, cfg.epochs + 1):
        for idx in torch.randperm(n, generator=gen, device=device).split(cfg.batch_size):
            x, y = train[0][idx], train[1][idx]
            if feats is not None:  # SLF
                loss = F.cross_entropy(clf.fc(feats[idx]), y)
            else:
                loss = _step_loss(clf, cfg, x, y, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % cfg.select_every and epoch != cfg.epochs:
            continue
        sa, ra = accuracy(clf, *val), robust_accuracy(clf, *val, cfg.eval)
        if not best or (ra, sa) > (best["val/robust_acc"], best["val/standard_acc"]):
            best = {"val/standard_acc": sa, "val/robust_acc": ra, "select/epoch": epoch}
            best_state = copy.deepcopy(clf.state_dict())
    clf.load_state_dict(best_state)
    return best


def finetune(checkpoint_dir: str | Path, cfg: FinetuneConfig, out_dir: str | Path) -> dict[str, Any]:
    """Finetune the encoder in ``checkpoint_dir`` by ``cfg.protocol``; write metrics, classifier, config."""
    cfg = cfg.resolved()
    start = time.perf_counter()
    state = load_checkpoint(checkpoint_dir)
    if state["signature"].get("kind") == "classifier":
        raise ValueError(f"{str(checkpoint_dir)!r} holds a finetuned classifier: pass a pre-training run")
    route = resolve_route(cfg.route, state["signature"]["routes"], str(checkpoint_dir))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"Output directory {str(out)!r} is not empty: choose another --out")
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)
    data = load_datasets(Config.from_dict(state["config"]).data)
    torch.manual_seed(cfg.seed)
    clf = Classifier(_encoder(state, data.info), data.info.num_classes, route).to(device)
    best = _train(clf, cfg, split_tensors(data.train, device), split_tensors(data.val, device, cfg.val_size))
    train_s = time.perf_counter() - start
    x, y = split_tensors(data.test, device)
    metrics = {
        "protocol": cfg.protocol, "route": route, "checkpoint": str(checkpoint_dir), **best,
        "eval/standard_acc": accuracy(clf, x, y), "eval/robust_acc": robust_accuracy(clf, x, y, cfg.eval),
        "eval/eps": cfg.eval.eps, "eval/attack": pgd_name(cfg.eval),
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


def load_classifier(path: str | Path) -> tuple[Classifier, FinetuneConfig, Config]:
    """A finetuned classifier from ``path`` (its run directory or checkpoint file), CPU, eval mode."""
    state = load_checkpoint(path)
    sig = state["signature"]
    if sig.get("kind") != "classifier":
        raise ValueError(f"{str(path)!r} is a pre-training checkpoint: run acl-ray finetune on it first")
    pre = Config.from_dict(state["pretrain_config"])
    c = sig["in_channels"]  # mean and std are buffers: the state dict brings the real ones
    enc = Encoder(pre.model, c, (0.0,) * c, (1.0,) * c, routes=tuple(sig["routes"]))
    clf = Classifier(enc, sig["num_classes"], sig["route"])
    clf.load_state_dict(state["model"])
    return clf.eval(), FinetuneConfig.from_dict(state["config"]), pre


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
