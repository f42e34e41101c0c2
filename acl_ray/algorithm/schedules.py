"""DynACL's per-epoch schedules (Luo et al. ICLR 2023) as closed forms of the epoch.

Both are step functions, constant for ``k`` epochs at a time, so a resumed run needs no schedule
state: the epoch alone gives the augmentation and the loss weight. Both start from the values in
effect at the epoch (``augment.strength``, ``loss.adv_weight``), which a ``schedule`` section or PBT
may change between epochs (``Config.at_epoch``).

- :func:`aug_strength`: ``s = 1 - k floor(i / k) / E`` at 0-based epoch ``i`` of ``E`` (DynACL rebuilds
  its loader at epochs 1, k + 1, ... with ``1 - (epoch - 1) / E``); :func:`scaled_spec` applies it.
- :func:`adv_weight`: ``min(w0 + r k floor(e / k) / E, 1)`` at 1-based epoch ``e`` (DynACL's
  ``min(1 + (e // k) (k / E) swap, 2)`` in its ``((2 - w) clean + w adv) / 2``, halved).
"""

from __future__ import annotations

import dataclasses

from acl_ray.algorithm.augment import AugmentSpec
from acl_ray.config.pretrain import Config


def step_epochs(k: int, epochs: int) -> int:
    """The step length ``k`` of a schedule: as configured, or ``max(1, epochs // 20)`` for 0."""
    return k if k > 0 else max(1, epochs // 20)


def aug_strength(cfg: Config, epoch: int) -> float:
    """Augmentation strength in (0, 1] for the 0-based ``epoch``: ``augment.strength`` times DynACL's
    strength (1 for the constant schedule)."""
    if cfg.augment.schedule == "constant":
        return cfg.augment.strength
    k, total = step_epochs(cfg.augment.step_epochs, cfg.run.epochs), cfg.run.epochs
    return cfg.augment.strength * (1.0 - k * (epoch // k) / total)


def adv_weight(cfg: Config, epoch: int) -> float:
    """The DS weight ``w`` of the adversarial loss for the 0-based ``epoch`` (``(1 - w) clean + w adv``)."""
    loss = cfg.loss
    if loss.adv_weight_schedule == "constant":
        return loss.adv_weight
    k, total = step_epochs(loss.adv_weight_step_epochs, cfg.run.epochs), cfg.run.epochs
    return min(loss.adv_weight + loss.adv_weight_ramp * k * ((epoch + 1) // k) / total, 1.0)


def scaled_spec(spec: AugmentSpec | None, strength: float) -> AugmentSpec | None:
    """``spec`` with every augmentation's magnitude times ``strength`` (1 returns ``spec`` itself).

    Crop area ``(low, high)`` becomes ``(1 - (1 - low) s, high)``; colour-jitter strengths, the
    jitter, grayscale and erasing probabilities, rotation, translation and noise scale by ``s``; the
    flip, aspect-ratio and erased-area ranges are kept. On the SimCLR preset this gives DynACL's
    ``RandomResizedCrop(scale=(1 - 0.9 s, 1))``, ``ColorJitter(0.4 s, 0.4 s, 0.4 s, 0.1 s)`` with
    probability ``0.8 s`` and ``RandomGrayscale(0.2 s)``.
    """
    if spec is None or strength == 1.0:
        return spec
    s = strength
    low, high = spec.crop_scale
    return dataclasses.replace(
        spec,
        crop_scale=(min(1 - (1 - low) * s, high), high),
        jitter=(spec.jitter[0] * s, spec.jitter[1] * s, spec.jitter[2] * s, spec.jitter[3] * s),
        jitter_p=spec.jitter_p * s,
        grayscale_p=spec.grayscale_p * s,
        translate=spec.translate * s,
        rotate_deg=spec.rotate_deg * s,
        noise_std=spec.noise_std * s,
        erase_p=spec.erase_p * s,
    )
