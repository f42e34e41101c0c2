"""Per-epoch schedules of ACL's knobs: a config value that a plain ``acl-ray pretrain`` replays.

A schedule is piecewise constant. ``epochs`` lists 0-based start epochs (0 first, strictly
increasing) and each scheduled key lists one value per start epoch, in effect from that epoch until
the next one::

    schedule:
      epochs: [0, 8, 16]
      attack.eps: [0.1, 0.08, 0.06]
      optim.lr: [1.0e-3, 1.0e-3, 5.0e-4]

A key not listed keeps the config's own value every epoch. Only ``SCHEDULABLE`` keys can be
scheduled: what the trainer can change between two epochs without rebuilding the model, the data or
the optimiser (so not ``data.batch_size`` or ``model.*``). Population Based Training
(``sweep.scheduler: pbt``) mutates the same keys, and a member's history written as a schedule
replays it from scratch. The epoch alone decides the values, so a resumed run needs no schedule state.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from acl_ray.config.fields import coerce, field_types

# What a schedule (and PBT) can change between epochs. augment.strength scales the augmentation
# preset's magnitudes (times DynACL's strength when that schedule is on); loss.adv_weight is the DS
# weight of the adversarial loss (the start of DynACL's ramp when that is on).
SCHEDULABLE = (
    "augment.strength",
    "loss.adv_weight",
    "attack.eps",
    "attack.steps",
    "optim.lr",
    "loss.temperature",
)
SCHED = "sched/"  # metric rows record the values in effect as sched/<key> (sched/attack.eps)


class _Section:
    """A section's scheduled keys: every field a tuple of values, one per schedule segment."""

    section: ClassVar[str]

    def __post_init__(self) -> None:  # YAML gives lists: coerce them to tuples of the field's type
        for name, tp in field_types(type(self)).items():
            key, scalar = f"schedule.{self.section}.{name}", typing.get_args(tp)[0]
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Sequence):
                listed = "a list, a value per schedule.epochs entry"
                raise ValueError(f"Illegal {key}={values!r}: must be {listed}")
            object.__setattr__(self, name, tuple(coerce(key, v, scalar) for v in values))


@dataclasses.dataclass(frozen=True)
class ScheduledAugment(_Section):
    section: ClassVar[str] = "augment"
    strength: tuple[float, ...] = ()  # augment.strength per segment


@dataclasses.dataclass(frozen=True)
class ScheduledAttack(_Section):
    section: ClassVar[str] = "attack"
    eps: tuple[float, ...] = ()  # attack.eps per segment
    steps: tuple[int, ...] = ()  # attack.steps per segment


@dataclasses.dataclass(frozen=True)
class ScheduledLoss(_Section):
    section: ClassVar[str] = "loss"
    adv_weight: tuple[float, ...] = ()  # loss.adv_weight per segment
    temperature: tuple[float, ...] = ()  # loss.temperature per segment


@dataclasses.dataclass(frozen=True)
class ScheduledOptim(_Section):
    section: ClassVar[str] = "optim"
    lr: tuple[float, ...] = ()  # optim.lr per segment (times the warm-up / cosine factor)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Values of ``SCHEDULABLE`` keys per epoch segment; ``epochs == ()`` means no schedule."""

    # the keys an unknown schedule key's error lists (acl_ray.config.fields)
    keys_shown: ClassVar[str] = f"schedule.epochs and schedule.KEY for KEY in {', '.join(SCHEDULABLE)}"

    epochs: tuple[int, ...] = ()  # 0-based start epoch of each segment: 0 first, strictly increasing
    augment: ScheduledAugment = dataclasses.field(default_factory=ScheduledAugment)
    attack: ScheduledAttack = dataclasses.field(default_factory=ScheduledAttack)
    loss: ScheduledLoss = dataclasses.field(default_factory=ScheduledLoss)
    optim: ScheduledOptim = dataclasses.field(default_factory=ScheduledOptim)

    def __post_init__(self) -> None:
        epochs = self.epochs
        if isinstance(epochs, str) or not isinstance(epochs, Sequence):
            raise ValueError(f"Illegal schedule.epochs={epochs!r}: must be a list of 0-based start epochs")
        epochs = tuple(coerce("schedule.epochs", e, int) for e in epochs)
        object.__setattr__(self, "epochs", epochs)
        if epochs and (epochs[0] != 0 or any(b <= a for a, b in itertools.pairwise(epochs))):
            raise ValueError(f"Illegal schedule.epochs={list(epochs)}: must start at 0 and increase strictly")
        listed = self.items()
        if epochs and not listed:
            raise ValueError(
                f"Illegal schedule: epochs are given but no key is; keys are {', '.join(SCHEDULABLE)}"
            )
        for key, values in listed:
            if len(values) != len(epochs):
                raise ValueError(
                    f"Illegal schedule.{key}={list(values)}: must have one value per schedule.epochs entry"
                    f" ({len(epochs)})"
                )

    def items(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(key, values)`` of every scheduled key, in ``SCHEDULABLE`` order."""
        out = []
        for key in SCHEDULABLE:
            section, name = key.split(".")
            values = getattr(getattr(self, section), name)
            if values:
                out.append((key, values))
        return out

    def at(self, epoch: int) -> dict[str, Any]:
        """The scheduled keys' values in effect at 0-based ``epoch`` ({} without a schedule)."""
        if not self.epochs:
            return {}
        segment = bisect.bisect_right(self.epochs, epoch) - 1
        return {key: values[max(segment, 0)] for key, values in self.items()}


def schedule_overrides(per_epoch: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The shortest schedule, as ``schedule.*`` overrides, that gives ``per_epoch[i]`` at epoch ``i``.

    ``per_epoch``: one ``{key: value}`` per 0-based epoch, every one with the same ``SCHEDULABLE``
    keys. A segment starts wherever any value changes.
    """
    if not per_epoch:
        return {}
    keys = list(per_epoch[0])
    starts = [i for i, v in enumerate(per_epoch) if i == 0 or dict(v) != dict(per_epoch[i - 1])]
    out: dict[str, list[Any]] = {"schedule.epochs": starts}
    for key in keys:
        out[f"schedule.{key}"] = [per_epoch[i][key] for i in starts]
    return out
