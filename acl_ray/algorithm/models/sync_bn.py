"""Cross-worker batch norm for every device: torch's SyncBatchNorm on GPUs, an all-reduce BN on CPU.

``torch.nn.SyncBatchNorm`` refuses CPU tensors and DDP refuses it on CPU modules, so gloo
(CPU) workers would silently train with per-worker statistics. :class:`AllReduceBatchNorm` sums
per-channel count, sum and sum of squares over the workers with a differentiable all-reduce,
which is the statistic a single process sees on the global batch; gradients flow through the
reduction as they do through SyncBatchNorm's.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from acl_ray.algorithm.models.routed_bn import RoutedBatchNorm


class AllReduceBatchNorm(_BatchNorm):
    """Batch norm over the union of all workers' batches (any input rank >= 2, channels on dim 1)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        local_n = torch.full((1,), input.numel() / c, device=x.device)
        with warnings.catch_warnings():  # deprecated for a private module; still the public API
            warnings.filterwarnings("ignore", category=FutureWarning)
            stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), local_n]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n  # (C,)
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # (C,), biased as in training BN
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                assert tracked is not None
                tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def _to_all_reduce(bn: _BatchNorm) -> AllReduceBatchNorm:
    new = AllReduceBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    new.train(bn.training)
    return new.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BN (both routes) synchronise statistics across workers on ``device``'s kind."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for routed in (m for m in model.modules() if isinstance(m, RoutedBatchNorm)):
        for route, bn in list(routed.bns.items()):
            assert isinstance(bn, _BatchNorm)
            routed.bns[route] = _to_all_reduce(bn)
    return model
