"""Semi-supervised robust finetuning from an ACL checkpoint (ACL paper section 4.4, official code).

As ``train_trades_cifar10_semisupervised.py`` of the official repository:
1. A stratified fraction of the training split keeps its labels; the rest is unlabelled.
2. Teacher: the whole pre-trained network, clean BN route (official ``--bnNameCnt 0``), trained with
   cross-entropy on the clean labelled images; its logits give soft pseudo-labels for every image.
3. Student: the pre-trained network again (adv route by default) on labelled + unlabelled batches
   against PGD-10 (cross-entropy vs the true label or the teacher's argmax):
   :func:`acl_ray.algorithm.losses.semisup_loss`.
Both stages run :func:`acl_ray.algorithm.fit.fit` and keep the state with the best validation
accuracy (teacher: clean; student: robust, then clean); test is only reported. Unlike the official
code: per-step cosine lr, no best-model reloading.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from acl_ray.algorithm.attacks import AttackSpec, pgd_classifier
from acl_ray.algorithm.checkpoint import CHECKPOINT, save_checkpoint
from acl_ray.algorithm.classifier import (
    Classifier,
    encoder_from_state,
    eval_outputs,
    resolve_route,
    split_tensors,
)
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.finetune import METRICS, load_pretrained
from acl_ray.algorithm.fit import fit
from acl_ray.algorithm.losses import semisup_loss
from acl_ray.algorithm.robustness import accuracy, pgd_name, robust_accuracy
from acl_ray.algorithm.run_dir import require_empty
from acl_ray.algorithm.runtime import resolve_device, set_threads
from acl_ray.config.fields import check
from acl_ray.config.pretrain import Config, OptimConfig
from acl_ray.config.protocols import FinetuneConfig, SemisupConfig


def labelled_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A stratified random ``round(fraction * N)`` (>= 1) subset of ``range(N)``, sorted.

    Systematic stratified sampling: images are shuffled with ``seed``, each gets the key
    ``rank within its class / class size`` and the smallest keys are taken, so every class gets one
    image before any gets two (every class is present when the subset has at least as many images as
    there are classes: on digits, 1258 training images, a fraction >= 0.008) and then each class
    about its share. Shape: (N,) int64 labels -> (n,) int64.
    """
    n = len(labels)
    k = min(n, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (N,)
    y = labels.cpu()[perm]  # (N,) labels in shuffled order
    counts = torch.bincount(y)  # (K,)
    order = torch.argsort(y, stable=True)  # (N,) grouped by class, shuffled order kept inside
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[y[order]]  # (N,) rank in class
    key = rank.double() / counts[y].double()  # (N,) in [0, 1)
    return perm[torch.argsort(key, stable=True)[:k]].sort().values  # ties: shuffled order


def _cycle(n: int, k: int, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """``k`` indices into ``range(n)`` per draw, from reshuffled passes (a pass may span draws)."""
    buf = torch.empty(0, dtype=torch.long, device=device)
    while True:
        while len(buf) < k:
            buf = torch.cat([buf, torch.randperm(n, generator=gen, device=device)])
        yield buf[:k]
        buf = buf[k:]


def semisup(
    checkpoint_dir: str | Path, cfg: SemisupConfig, out_dir: str | Path, labelled: torch.Tensor | None = None
) -> dict[str, Any]:
    """Teacher on the labelled images, then TRADES + distillation; write metrics, classifier, config.

    ``labelled``: training-split indices that keep their labels (default: :func:`labelled_indices`).
    """
    start = time.perf_counter()
    out = require_empty(out_dir)
    state = load_pretrained(checkpoint_dir)
    routes, src = state["signature"]["routes"], str(checkpoint_dir)
    for name in ("teacher_route", "route"):  # "auto" resolves to adv when present
        v = getattr(cfg, name)
        check(v in (*routes, "auto"), f"semisup.{name}", f"a route of {src!r}: {', '.join(routes)}", v)
    t_route, route = (resolve_route(r, routes, src) for r in (cfg.teacher_route, cfg.route))
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)
    data = load_datasets(Config.from_dict(state["config"]).data)
    k = data.info.num_classes
    x, y = split_tensors(data.train, device)  # (N, C, H, W), (N,)
    if labelled is None:
        labelled = labelled_indices(data.train.labels, cfg.label_fraction, cfg.seed)
    lab = labelled.cpu().long().unique()  # (L,)
    ok = len(lab) > 0 and lab[0] >= 0 and lab[-1] < len(x)
    check(bool(ok), "labelled", f"non-empty indices in [0, {len(x)})", lab.tolist()[:5])
    lab = lab.to(device)
    unl = ~torch.isin(torch.arange(len(x), device=device), lab)  # (N,) bool
    x_lab, y_lab, x_unl = x[lab], y[lab], x[unl]
    del y  # the unlabelled images' labels are never read
    val = split_tensors(data.val, device, cfg.val_size)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def optim(name: str, lr: float) -> OptimConfig:  # both stages share momentum and weight decay
        return OptimConfig(name=name, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    # Stage 2: clean teacher on the labelled images; each step draws its batch from ``gen``.
    teacher = Classifier(encoder_from_state(state, data.info), k, t_route).to(device)
    t_batches = _cycle(len(lab), min(cfg.batch_size, len(lab)), gen, device)

    def teacher_loss(i: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(teacher(x_lab[i]), y_lab[i])

    t_steps = math.ceil(len(lab) / cfg.batch_size)
    t_best = fit(
        teacher, teacher.parameters(), optim(cfg.teacher_optimizer, cfg.teacher_lr),
        epochs=cfg.teacher_epochs, steps_per_epoch=t_steps,
        batches=lambda: itertools.islice(t_batches, t_steps), step_loss=teacher_loss,
        score=lambda: {"teacher/val_acc": accuracy(teacher, *val)},
        select_every=cfg.select_every,
    )
    soft_lab, soft_unl = eval_outputs(teacher, x_lab), eval_outputs(teacher, x_unl)  # (L, K), (U, K)
    teacher_s = time.perf_counter() - start

    # Stage 3: the pre-trained network again, TRADES with distillation.
    clf = Classifier(encoder_from_state(state, data.info), k, route).to(device)
    n_lab = cfg.labelled_batch or max(1, round(cfg.batch_size * len(lab) / len(x)))
    n_unl = cfg.batch_size - n_lab if len(x_unl) else 0
    pairs = zip(  # (i, j) per step, both endless
        _cycle(len(lab), n_lab, gen, device), _cycle(len(x_unl), n_unl, gen, device), strict=True
    )
    eps = cfg.train_eps or cfg.eval.eps
    spec = AttackSpec.quarter_step(eps, cfg.train_steps)

    def student_loss(ij: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        i, j = ij
        xb, tb = torch.cat([x_lab[i], x_unl[j]]), torch.cat([soft_lab[i], soft_unl[j]])  # (B, ...), (B, K)
        y_atk = torch.cat([y_lab[i], soft_unl[j].argmax(1)])  # (B,) true or pseudo labels
        x_adv = pgd_classifier(clf, xb, y_atk, spec, "ce", gen)
        return semisup_loss(clf(xb), clf(x_adv), y_lab[i], tb, cfg.alpha, cfg.temperature, cfg.beta)

    steps = math.ceil(len(x) / cfg.batch_size)
    best = fit(
        clf, clf.parameters(), optim(cfg.optimizer, cfg.lr), epochs=cfg.epochs, steps_per_epoch=steps,
        batches=lambda: itertools.islice(pairs, steps), step_loss=student_loss,
        score=lambda: {"val/robust_acc": robust_accuracy(clf, *val, cfg.eval),
                       "val/standard_acc": accuracy(clf, *val)},
        select_every=cfg.select_every,
    )
    train_s = time.perf_counter() - start
    xt, yt = split_tensors(data.test, device)
    metrics = {
        "protocol": "semisup", "route": route, "teacher/route": t_route, "checkpoint": src,
        "semisup/label_fraction": cfg.label_fraction, "semisup/labelled": len(lab),
        "semisup/unlabelled": len(x_unl), "semisup/batch": f"{n_lab}+{n_unl}",
        "teacher/val_acc": t_best["teacher/val_acc"], "teacher/select_epoch": t_best["select/epoch"],
        "teacher/standard_acc": accuracy(teacher, xt, yt), **best,
        "eval/standard_acc": accuracy(clf, xt, yt), "eval/robust_acc": robust_accuracy(clf, xt, yt, cfg.eval),
        "eval/eps": cfg.eval.eps, "eval/attack": pgd_name(cfg.eval),
        "time/teacher_s": teacher_s, "time/finetune_s": train_s,
        "time/eval_s": time.perf_counter() - start - train_s,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    # load_classifier reads "config" as a FinetuneConfig: store the student's settings in its terms
    # (AFF is the closest protocol) and the semi-supervised config beside it.
    names = [f.name for f in dataclasses.fields(FinetuneConfig)]
    shared = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
    ft = FinetuneConfig(**{**shared, "protocol": "aff", "route": route, "train_eps": eps})
    signature = {**state["signature"], "kind": "classifier", "route": route, "num_classes": k}
    save_checkpoint(out / CHECKPOINT, {
        "model": clf.state_dict(), "config": ft.to_dict(), "semisup_config": cfg.to_dict(),
        "pretrain_config": state["config"], "signature": signature, "labelled": lab.cpu(),
    })
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


__all__ = ["SemisupConfig", "labelled_indices", "semisup"]
