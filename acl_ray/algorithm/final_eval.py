"""The full evaluation protocol on an in-memory pre-training state (sweep trials, re-runs).

Same code path as ``acl-ray finetune``: a classifier on the chosen BN route, trained by the
configured protocol (SLF by default), selected on validation robust accuracy, then reported on
the test split. Returns the metric keys of the shared vocabulary.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from acl_ray.algorithm.data import Datasets
from acl_ray.algorithm.finetune import Classifier, _encoder, _train, resolve_route, split_tensors
from acl_ray.algorithm.robustness import accuracy, pgd_name, robust_accuracy
from acl_ray.config.protocols import FinetuneConfig


def final_eval(
    state: dict[str, Any], data: Datasets, cfg: FinetuneConfig, device: torch.device
) -> dict[str, Any]:
    """``val/*`` (selection split) and ``eval/*`` (test split) accuracies of ``state``'s encoder."""
    cfg = cfg.resolved()
    start = time.perf_counter()
    route = resolve_route(cfg.route, state["signature"]["routes"], "trial checkpoint")
    torch.manual_seed(cfg.seed)
    clf = Classifier(_encoder(state, data.info), data.info.num_classes, route).to(device)
    best = _train(clf, cfg, split_tensors(data.train, device), split_tensors(data.val, device, cfg.val_size))
    x, y = split_tensors(data.test, device)
    return {
        **best,
        "eval/standard_acc": accuracy(clf, x, y),
        "eval/robust_acc": robust_accuracy(clf, x, y, cfg.eval),
        "eval/protocol": cfg.protocol,
        "eval/attack": pgd_name(cfg.eval),
        "eval/eps": cfg.eval.eps,
        "time/eval_s": time.perf_counter() - start,
    }
