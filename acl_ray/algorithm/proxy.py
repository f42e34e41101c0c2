"""A cheap robust-accuracy proxy for per-epoch reporting during sweeps (ASHA's signal).

A linear head on frozen features of a fixed training subset (features computed once), then
PGD-10 on cross-entropy and CW margin (worst case) on a fixed validation subset. Fixed subsets
and seeds make the numbers of different epochs and trials comparable; ``time_budget_s`` caps the
head's training. How well it ranks checkpoints against the full SLF protocol is measured by
``benchmarks/proxy_rank.py`` (README).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from acl_ray.algorithm.classifier import Classifier, eval_outputs, split_tensors
from acl_ray.algorithm.data import Datasets
from acl_ray.algorithm.models import Encoder
from acl_ray.algorithm.robustness import accuracy, robust_accuracy
from acl_ray.config.protocols import EvalConfig, ProxyConfig


def proxy_eval(encoder: Encoder, data: Datasets, cfg: ProxyConfig, seed: int = 0) -> dict[str, float]:
    """Standard and robust accuracy of a quick linear probe; the encoder's state is left as found."""
    start = time.perf_counter()
    device = encoder.mean.device
    route = "adv" if "adv" in encoder.routes else "clean"
    torch.manual_seed(seed)  # the head's default init: the live encoder is borrowed, never changed
    probe = Classifier(encoder, data.info.num_classes, route, drop_head=False, zero_init=False)
    xt, yt = split_tensors(data.train, device, cfg.train_size)  # (n, C, H, W), (n,)
    xv, yv = split_tensors(data.val, device, cfg.val_size)
    feats = eval_outputs(probe, xt, probe.features)  # (n, D)
    opt = torch.optim.Adam(probe.fc.parameters(), cfg.lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(yt), generator=gen, device=device).split(128):
            loss = F.cross_entropy(probe.fc(feats[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if time.perf_counter() - start > cfg.time_budget_s:
            break
    probe.fc.requires_grad_(False)
    ev = EvalConfig(eps=cfg.eps, steps=cfg.steps)
    return {
        "proxy/standard_acc": accuracy(probe, xv, yv),
        "proxy/robust_acc": robust_accuracy(probe, xv, yv, ev),
        "time/proxy_s": time.perf_counter() - start,
    }
