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


def paper_point(spec: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """The paper's defaults for the searched keys (others take the base config's value).

    Values outside a searched range are clipped into it so the point is a legal sample.
    """
    point: dict[str, Any] = {}
    for key, dist in spec.items():
        section, name = key.split(".")
        value = PAPER_POINT.get(key, getattr(getattr(base, section), name))
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if value not in args:  # the nearest number, or the first value of other kinds
                numeric = all(isinstance(a, int | float) and not isinstance(a, bool) for a in [*args, value])
                value = min(args, key=lambda a: abs(float(a) - float(value))) if numeric else args[0]
        else:
            value = min(max(value, args[0]), args[1])
        point[key] = int(value) if kind == "int" else value
    return point
