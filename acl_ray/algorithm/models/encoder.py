"""The ACL encoder: input normalisation, a routed-BN backbone and a routed-BN projection head.

Inputs are images in [0, 1]; normalisation happens inside the model so attacks work in pixel
space (as the official code's ``NormalizeByChannelMeanStd``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from acl_ray.algorithm.models.backbones import build_backbone
from acl_ray.algorithm.models.routed_bn import RoutedBatchNorm, Split, set_route
from acl_ray.config.pretrain import ModelConfig


def projection_head(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int, routes: tuple[str, ...]
) -> nn.Sequential:
    """Linear + BN (+ ReLU except after the last), as the official head; bias only on the first."""
    mods: list[nn.Module] = []
    dim = in_dim
    for i in range(layers):
        last = i == layers - 1
        nxt = out_dim if last else hidden_dim
        mods += [nn.Linear(dim, nxt, bias=i == 0), RoutedBatchNorm(nxt, routes, dims=1)]
        if not last:
            mods.append(nn.ReLU(inplace=True))
        dim = nxt
    return nn.Sequential(*mods)


class Encoder(nn.Module):
    """Backbone + projection head. ``forward`` returns projections z, ``features`` the backbone output."""

    def __init__(
        self,
        cfg: ModelConfig,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        routes: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.routes = routes or cfg.routes
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.backbone = build_backbone(cfg.arch, in_channels, self.routes)
        self.feature_dim: int = self.backbone.out_dim
        self.head = projection_head(
            self.feature_dim, cfg.proj_hidden_dim, cfg.proj_out_dim, cfg.proj_layers, self.routes
        )

    def features(self, x: torch.Tensor, route: str | None = None, split: Split = None) -> torch.Tensor:
        """Backbone features. Shape: (N, C, H, W) in [0, 1] -> (N, feature_dim)."""
        if route is not None:
            set_route(self, route, split)
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor, route: str | None = None, split: Split = None) -> torch.Tensor:
        """Projections. Shape: (N, C, H, W) in [0, 1] -> (N, proj_out_dim)."""
        return self.head(self.features(x, route, split))


def build_encoder(cfg: ModelConfig, in_channels: int, mean: Sequence[float], std: Sequence[float]) -> Encoder:
    return Encoder(cfg, in_channels, mean, std)


def count_routed_bns(model: nn.Module) -> int:
    return sum(isinstance(m, RoutedBatchNorm) for m in model.modules())
