"""The sweep's search space: a plain mapping from config keys to distributions, validated.

Keys are the config's dotted names (``attack.eps``), so a trial's sampled values are overrides
of the base config, exactly like ``--set``. A spec is YAML-friendly::

    attack.steps: {int: [1, 5]}            # integers, both ends included
    attack.eps: {loguniform: [0.03, 0.3]}
    loss.temperature: {uniform: [0.1, 1.0]}
    data.batch_size: {choice: [64, 128, 256]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acl_ray.config.fields import keys
from acl_ray.config.pretrain import Config

KINDS = ("int", "uniform", "loguniform", "choice")

# Per dataset: what the sweep searches when the YAML names no space. Digits ranges come from the
# one-factor landscape in DESIGN.md (eps optimum inside 0.03-0.3, steps 1-5, batch 64-512).
DEFAULT_SPACES: dict[str, dict[str, dict[str, list[Any]]]] = {
    "digits": {
        "attack.steps": {"int": [1, 5]},
        "attack.eps": {"loguniform": [0.03, 0.3]},
        "loss.temperature": {"uniform": [0.1, 1.0]},
        "data.batch_size": {"choice": [64, 128, 256, 512]},
        "optim.lr": {"loguniform": [3e-4, 3e-3]},
    },
    "cifar": {
        "attack.steps": {"int": [1, 10]},
        "attack.eps": {"loguniform": [2 / 255, 16 / 255]},
        "loss.temperature": {"uniform": [0.1, 1.0]},
        "data.batch_size": {"choice": [256, 512]},
        "optim.lr": {"loguniform": [0.5, 8.0]},
    },
}

# The paper's pre-training attack and batch (eps 8/255, 5 steps, t 0.5, batch 512), enqueued first.
PAPER_POINT: dict[str, Any] = {
    "attack.steps": 5,
    "attack.eps": 8 / 255,
    "loss.temperature": 0.5,
    "data.batch_size": 512,
}
_DYNACL = {"augment.schedule": "dynacl", "loss.adv_weight_schedule": "dynacl"}  # ICLR 2023
# Named reference points, as overrides of the base config: the rows a sweep has to beat. They are
# the searcher's first trials (clipped into the space) and the confirmation's controls (as is).
REFERENCES: dict[str, dict[str, Any]] = {
    "paper": PAPER_POINT,  # the ACL paper's attack, temperature and batch
    "acl": {},  # the base config itself (on digits: the tuned digits defaults)
    "dynacl": _DYNACL,  # DynACL's two schedules at the base config
    "dynacl-air": {**_DYNACL, "loss.air_weight": 0.5, "loss.sir_weight": 0.5},  # + AIR (NeurIPS 2023)
}
# Enqueued as first trials when the space holds every key the point sets (the paper point always).
WARM_START = ("paper", "dynacl", "dynacl-air")


def default_space(dataset: str) -> dict[str, dict[str, list[Any]]]:
    return DEFAULT_SPACES["digits" if dataset in ("digits", "synthetic") else "cifar"]


def validate_space(spec: Mapping[str, Any], base: Config, max_batch: int | None = None) -> None:
    """Raise a one-line ``ValueError`` for unknown keys, kinds, empty ranges or unusable values."""
    if not spec:
        raise ValueError("Illegal space: it is empty; give at least one key to search")
    known = set(keys(Config))
    for key, dist in spec.items():
        if key not in known:
            raise ValueError(f"Unknown search-space key {key!r}: must be a config key such as attack.eps")
        if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in KINDS:
            raise ValueError(
                f"Illegal space {key}={dist!r}: must be {{kind: [values]}} with kind in {', '.join(KINDS)}"
            )
        kind, args = next(iter(dist.items()))
        values = list(args) if isinstance(args, list | tuple) else [args]
        if kind == "choice":
            if not values:
                raise ValueError(f"Illegal space {key}: choice needs at least one value")
        else:
            if len(values) != 2 or values[0] >= values[1]:
                raise ValueError(
                    f"Illegal space {key}: {kind} needs [low, high] with low < high, got {values}"
                )
            if kind == "loguniform" and values[0] <= 0:
                raise ValueError(f"Illegal space {key}: loguniform needs low > 0, got {values[0]}")
        ends = values if kind == "choice" else [values[0], values[1]]
        for v in ends:
            base.override({key: v})  # every reachable end must be a valid config value
        if key == "data.batch_size" and max_batch is not None and max(ends) > max_batch:
            raise ValueError(
                f"Illegal space data.batch_size: {max(ends)} exceeds the training split ({max_batch} images)"
            )


def _clipped(key: str, value: Any, dist: Mapping[str, Any]) -> Any:
    """``value`` moved into the searched range (numbers to the nearest end or choice, others to the
    first choice), so a reference point is a legal sample."""
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        if value not in args:  # the nearest number, or the first value of other kinds
            numeric = all(isinstance(a, int | float) and not isinstance(a, bool) for a in [*args, value])
            value = min(args, key=lambda a: abs(float(a) - float(value))) if numeric else args[0]
    else:
        value = min(max(value, args[0]), args[1])
    return int(value) if kind == "int" else value


def reference_point(name: str, spec: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """The named reference (``REFERENCES``) for the searched keys (others take the base config's
    value), clipped into the space."""
    ref = REFERENCES[name]
    point: dict[str, Any] = {}
    for key, dist in spec.items():
        section, name_ = key.split(".")
        point[key] = _clipped(key, ref.get(key, getattr(getattr(base, section), name_)), dist)
    return point


def paper_point(spec: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """The paper's defaults for the searched keys (others take the base config's value), clipped."""
    return reference_point("paper", spec, base)


def warm_start_points(spec: Mapping[str, Any], base: Config) -> list[tuple[str, dict[str, Any]]]:
    """The reference points a sweep enqueues as its first trials, in order: the paper point always,
    DynACL and DynACL-AIR when the space holds every key they set (a duplicate point is left out)."""
    points: list[tuple[str, dict[str, Any]]] = []
    for name in WARM_START:
        if name != "paper" and not set(REFERENCES[name]) <= set(spec):
            continue
        point = reference_point(name, spec, base)
        if all(point != p for _, p in points):
            points.append((name, point))
    return points
