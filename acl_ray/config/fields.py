"""Checks, type coercion and the one typed override shared by every config dataclass.

Every config (pre-training, finetuning, evaluation, semi-supervised, proxy, sweep) inherits
:class:`Settings`; a field is addressed by a dotted path through nested dataclasses (``attack.eps``
in :class:`~acl_ray.config.pretrain.Config`, ``eval.eps`` in a finetuning config), optionally behind
the config's own prefix (``finetune.epochs``). Values from YAML or ``--set`` are coerced to the
field's declared type and the dataclass validates itself in ``__post_init__``; a bad key or value
is a one-line ``ValueError`` naming it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

S = TypeVar("S", bound="Settings")


def check(ok: bool, field: str, allowed: str, value: object) -> None:
    """Raise ``Illegal <field>=<value>: must be <allowed>`` unless ``ok``."""
    if not ok:
        raise ValueError(f"Illegal {field}={value!r}: must be {allowed}")


def choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    check(value in allowed, field, f"one of {', '.join(allowed)}", value)


def field_types(cls: type) -> dict[str, Any]:
    """Declared (resolved) type of every field of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> Iterable[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)`` (``sep`` joins the keys)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from flatten(v, key + sep, sep)
        else:
            yield key, v


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise naming the key."""
    if isinstance(tp, types.UnionType):  # only `X | None` style unions would land here
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if typing.get_origin(tp) is tuple:
        return value  # the dataclass normalises its tuples ("ce,cw" or a list) in __post_init__
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"Illegal {key}={value!r}: must be true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"Illegal {key}={value!r}: must be an integer")
        try:
            f = float(value)
        except ValueError:
            raise ValueError(f"Illegal {key}={value!r}: must be an integer") from None
        if not f.is_integer():
            raise ValueError(f"Illegal {key}={value!r}: must be an integer")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"Illegal {key}={value!r}: must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"Illegal {key}={value!r}: must be a number") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"Illegal {key}={value!r}: must be a string")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def keys(cls: type, prefix: str = "") -> list[str]:
    """Every leaf key of a config dataclass, e.g. ``attack.eps`` (nested dataclasses expanded)."""
    out = []
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            out.append(f"{prefix}{name}")
    return out


def _replace(cfg: Any, items: list[tuple[str, list[str], Any]], shown: str) -> Any:
    """Apply ``(full key, remaining path, value)`` items to ``cfg``; nested dataclasses recursively."""
    types_ = field_types(type(cfg))
    direct: dict[str, Any] = {}
    nested: dict[str, list[tuple[str, list[str], Any]]] = {}
    for key, path, value in items:
        name, rest = path[0], path[1:]
        tp = types_.get(name)
        if tp is None or bool(rest) != dataclasses.is_dataclass(tp):
            raise ValueError(f"Unknown config key {key!r}: keys are {shown}")
        if rest:
            nested.setdefault(name, []).append((key, rest, value))
        else:
            direct[name] = coerce(key, value, tp)
    for name, sub in nested.items():  # a section may name its own keys (the schedule's)
        direct[name] = _replace(getattr(cfg, name), sub, getattr(types_[name], "keys_shown", shown))
    return dataclasses.replace(cfg, **direct) if direct else cfg


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return list(v) if isinstance(v, tuple) else v


class Settings:
    """Mixin of every frozen config dataclass: typed override, dict/YAML round trip.

    ``prefix`` is the name the config answers to in ``--set`` keys (``finetune.epochs``); keys
    without it are paths from the config itself (``eval.eps``, ``attack.eps``).
    """

    prefix: ClassVar[str] = ""

    def override(self: S, values: Mapping[str, Any]) -> S:
        """A validated copy with dotted-path values replaced, e.g. ``{"attack.eps": 0.05}``."""
        items = []
        head = f"{self.prefix}." if self.prefix else ""
        for key, value in values.items():
            path = key[len(head) :] if head and key.startswith(head) else key
            items.append((key, path.split("."), value))
        shown = ", ".join(head + k for k in keys(type(self)))
        return typing.cast(S, _replace(self, items, shown))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists): YAML- and ``torch.load(weights_only=True)``-friendly."""
        return typing.cast(dict[str, Any], _plain(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any]) -> S:
        """Build and validate from a (possibly partial) nested dict, rejecting unknown keys."""
        return cls().override(dict(flatten(d)))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key.path=value`` strings; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Illegal --set {item!r}: must look like section.field=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"Illegal --set {item!r}: the value is not a YAML scalar or list") from None
    return out


def read_yaml_mapping(path: str | Path, what: str) -> Mapping[str, Any]:
    """A YAML file holding a mapping, or a one-line ``ValueError`` (missing, not YAML, not a mapping)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} is not a file")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ValueError(f"{what} {str(p)!r} is not valid YAML{at}") from None
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{what} {str(p)!r} must hold a mapping of sections")
    return loaded
