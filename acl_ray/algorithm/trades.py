"""TRADES (Zhang et al., ICML 2019), the adversarial full finetuning (AFF) loss of ACL.

As the official ``trades.py`` used by ACL's ``train_trades.py``: the attack starts at
``x + 0.001 * N(0, 1)``, ascends ``KL(p(x_adv) || p(x))`` by signed gradient steps with the model in
eval mode, then the loss is ``CE(f(x), y) + beta * KL(p(x_adv) || p(x))`` (batch mean) with the model
in whatever mode the caller set (training: BN in train mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.attacks import frozen_state


def _kl(logits_adv: torch.Tensor, p_nat: torch.Tensor) -> torch.Tensor:
    """Summed KL(p_nat || softmax(logits_adv)) as ``nn.KLDivLoss(reduction='sum')``. Shape: (N, K) -> ()."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_nat, reduction="sum")


def trades_attack(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial examples maximising the KL term, in eval mode; input-only gradients.

    Shape:
        x: (N, C, H, W) in [0, 1] -> x_adv (N, C, H, W), ``||x_adv - x||_inf <= eps``, in [0, 1]
    """
    x = x.detach()
    with frozen_state(model):
        with torch.no_grad():
            p_nat = F.softmax(model(x).float(), dim=1)  # (N, K)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = x + 0.001 * noise
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(_kl(model(x_adv).float(), p_nat), x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def trades_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    beta: float = 6.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``CE(f(x), y) + beta / N * sum KL(p(x) || p(x_adv))`` (TRADES eq. 5, official code).

    Shape:
        x: (N, C, H, W) in [0, 1], y: (N,) -> scalar loss with gradients to the parameters
    """
    x_adv = trades_attack(model, x, eps, alpha, steps, generator)
    # Two forward passes, as the official code: in train mode each batch has its own BN statistics.
    nat, adv = model(x).float(), model(x_adv).float()  # (N, K) each
    return F.cross_entropy(nat, y) + beta * _kl(adv, F.softmax(nat, dim=1)) / len(x)


__all__ = ["trades_attack", "trades_loss"]
