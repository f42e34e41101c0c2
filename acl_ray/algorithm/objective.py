"""The ACL pre-training objective for each variant (Jiang et al. 2020, Sec. 3).

- ``simclr``: NT-Xent between two clean views through the single "clean" BN (baseline).
- ``a2a``: both views attacked jointly, training through the single "adv" BN.
- ``a2s``: the first view attacked, paired with the clean second view; adversarial rows use the
  "adv" BN and clean rows the "clean" BN.
- ``ds``: dual stream: NT-Xent(clean views, "clean" BN) and NT-Xent(adversarial views,
  "adv" BN), weighted ``(1 - w, w)`` (w = 0.5: the paper's mean; DynACL ramps it per epoch, see
  :mod:`acl_ray.algorithm.schedules`), plus AIR's two invariance regularisers when their weights are > 0.

The training forward is one pass with a BN *split* (clean rows first), which equals separate
passes per route and gives DDP one forward per backward.
"""

from __future__ import annotations

import torch
from torch import nn

from acl_ray.algorithm.attacks import AttackSpec, pgd_contrastive
from acl_ray.algorithm.losses import invariance_regularisers, nt_xent
from acl_ray.config.pretrain import Config


def acl_loss(
    model: nn.Module,
    attack_model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    cfg: Config,
    generator: torch.Generator | None = None,
    gather: bool = False,
    *,
    x0: torch.Tensor | None = None,
    adv_weight: float | None = None,
) -> torch.Tensor:
    """Loss of one ACL step on a batch of view pairs.

    Args:
        model: the encoder used for the training forward (may be DDP-wrapped).
        attack_model: the same encoder, unwrapped, used by the attack.
        gather: use every worker's views as negatives (distributed training).
        x0: the un-augmented images, needed by DS when ``loss.air_weight`` or ``loss.sir_weight`` > 0:
            they go through the clean BN in the same forward as their own segment (their own batch
            statistics, as the official code's separate clean pass), so DDP sees one forward.
        adv_weight: DS weight of the adversarial loss this epoch; None = ``cfg.loss.adv_weight``.

    Shape:
        x1, x2, x0: (n, C, H, W) in [0, 1] -> scalar
    """
    variant, a, t = cfg.model.variant, cfg.attack, cfg.loss.temperature
    n = x1.shape[0]
    if variant == "simclr":
        z = model(torch.cat([x1, x2]), route="clean")  # (2n, d)
        return nt_xent(z[:n], z[n:], t, gather)
    perturb = (True, variant != "a2s")
    x1a, x2a = pgd_contrastive(
        attack_model, x1, x2, AttackSpec.of(a), temperature=t, generator=generator, perturb=perturb,
        route="adv", gather=gather,
    )
    if variant == "a2a":
        z = model(torch.cat([x1a, x2a]), route="adv")  # (2n, d)
        return nt_xent(z[:n], z[n:], t, gather)
    if variant == "a2s":
        z = model(torch.cat([x2, x1a]), route="split", split=n)  # (2n, d): clean x2, then adv x1
        return nt_xent(z[n:], z[:n], t, gather)
    w = cfg.loss.adv_weight if adv_weight is None else adv_weight
    lam_sir, lam_air = cfg.loss.sir_weight, cfg.loss.air_weight
    air_on = lam_sir > 0 or lam_air > 0
    if air_on and x0 is None:
        raise ValueError("loss.air_weight / loss.sir_weight need the un-augmented images (x0)")
    clean_rows = [x1, x2, x0] if air_on else [x1, x2]  # the originals: a clean segment of their own
    split = (2 * n, 3 * n) if air_on else 2 * n
    z = model(torch.cat([*clean_rows, x1a, x2a]), route="split", split=split)  # (4n or 5n, d)
    parts = z.split(n)
    z1, z2, z1a, z2a = parts[0], parts[1], parts[-2], parts[-1]
    loss = (1 - w) * nt_xent(z1, z2, t, gather) + w * nt_xent(z1a, z2a, t, gather)
    if air_on:
        sir, air = invariance_regularisers(z1, z2, z1a, z2a, parts[2], t, gather)
        loss = loss + lam_sir * sir + lam_air * air
    return loss
