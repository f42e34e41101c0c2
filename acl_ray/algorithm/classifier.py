"""The one classifier on a pre-trained encoder: a linear head over one BN route of its backbone.

Built from a pre-training checkpoint by finetuning (:mod:`acl_ray.algorithm.finetune`) and
semi-supervised finetuning (:mod:`acl_ray.algorithm.semisup`), over the live training encoder by
the sweep proxy (:mod:`acl_ray.algorithm.proxy`), and loaded back from a finetuned checkpoint by
evaluation (:func:`load_classifier`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acl_ray.algorithm.attacks import frozen_state
from acl_ray.algorithm.checkpoint import load_checkpoint
from acl_ray.algorithm.data import DatasetInfo, Split
from acl_ray.algorithm.models import Encoder
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig


class Classifier(nn.Module):
    """Pre-trained backbone through one fixed BN route + a linear head (the projection head unused).

    Args:
        encoder: the pre-trained encoder; the fc is created on its device.
        num_classes: outputs of the linear head.
        route: the BN route every forward uses ("clean" or "adv").
        drop_head: replace ``encoder.head`` by an empty module, as the official code does (finetuned
            checkpoints hold no ``encoder.head.*`` keys). False leaves the encoder untouched: the
            sweep proxy borrows the live training encoder.
        zero_init: start the fc at zero, as the official code's fresh fc; False keeps ``nn.Linear``'s
            default initialisation, drawn from the global RNG (seed it first).
    """

    def __init__(
        self, encoder: Encoder, num_classes: int, route: str, *, drop_head: bool = True,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if drop_head:
            encoder.head = nn.Sequential()
        self.encoder, self.route = encoder, route
        self.fc = nn.Linear(encoder.feature_dim, num_classes, device=encoder.mean.device)
        if zero_init:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features through ``route``. Shape: (N, C, H, W) in [0, 1] -> (N, feature_dim)."""
        return self.encoder.features(x, self.route)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits. Shape: (N, C, H, W) in [0, 1] -> (N, num_classes)."""
        return self.fc(self.features(x))


@torch.no_grad()
def eval_outputs(
    model: nn.Module, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch: int = 500,
) -> torch.Tensor:
    """``fn`` (default ``model``) over ``x`` in chunks, without gradients, ``model`` in eval mode.

    Training flags and BN routes are restored afterwards; outputs are float32. Pass
    ``fn=clf.features`` for features, nothing for logits.

    Shape:
        x: (N, C, H, W), N may be 0 -> (N, D)
    """
    f = fn if fn is not None else model
    with frozen_state(model):
        return torch.cat([f(chunk).float() for chunk in x.split(batch)])  # one empty chunk when N == 0


def resolve_route(route: str, available: Iterable[str], source: str) -> str:
    """``auto`` -> "adv" when ``available`` has it, else "clean"; a named route must be available."""
    have = tuple(available)
    if route == "auto":
        return "adv" if "adv" in have else "clean"
    if route not in have:
        raise ValueError(
            f"Illegal finetune.route={route!r}: checkpoint {source!r} has only the routes: {', '.join(have)}"
        )
    return route


def encoder_from_state(state: dict[str, Any], info: DatasetInfo) -> Encoder:
    """The pre-trained encoder of a pre-training checkpoint ``state`` (config, routes, weights), CPU."""
    pre = Config.from_dict(state["config"])
    enc = Encoder(pre.model, info.channels, info.mean, info.std, routes=tuple(state["signature"]["routes"]))
    enc.load_state_dict(state["model"])
    return enc


def split_tensors(
    split: Split, device: torch.device, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images in [0, 1] and labels on ``device``. Shape: (n, C, H, W), (n,)."""
    return split.images[:n].to(device).float() / 255, split.labels[:n].to(device)  # (N, C, H, W), (N,)


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


__all__ = [
    "Classifier", "encoder_from_state", "eval_outputs", "load_classifier", "resolve_route", "split_tensors",
]
