"""Frozen dataclass configuration: one source of truth for CLI flags, YAML, Tune keys and metrics.

Every field is addressed by a dotted path (``attack.eps``, ``data.batch_size``) in YAML files,
``--set`` overrides, the Tune search space and the saved ``config.yaml``. Defaults are the
embedded digits setting measured in DESIGN.md; ``configs/paper_cifar10.yaml`` holds the paper's.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")
AUGMENTS = ("auto", "digits", "simclr", "none")
ARCHS = ("small_cnn", "resnet18")
VARIANTS = ("simclr", "a2a", "a2s", "ds")
OPTIMIZERS = ("lars", "sgd", "adam")
LR_SCALINGS = ("none", "linear", "sqrt")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def _check(ok: bool, field: str, allowed: str, value: object) -> None:
    if not ok:
        raise ValueError(f"Illegal {field}={value!r}: must be {allowed}")


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, field, f"one of {', '.join(allowed)}", value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits (bundled, offline) | cifar10 | cifar100 | synthetic (tests)
    root: str = "~/.cache/acl_ray/data"  # where torchvision keeps CIFAR archives
    download: bool = True  # fetch CIFAR when absent; offline it fails with a clear message
    batch_size: int = 128  # global images per step; each image gives two views
    val_fraction: float = 0.1  # digits/synthetic: share of all images held out for validation
    test_fraction: float = 0.2  # digits/synthetic: share held out for test (CIFAR has its own)
    split_seed: int = 0  # seed of the fixed train/val/test split, independent of run.seed
    synthetic_size: int = 600  # synthetic: number of images in all splits together
    augment: str = "auto"  # auto (digits preset for digits, simclr otherwise) | digits | simclr | none
    crop_min_scale: float = 0.0  # lower bound of random-resized-crop area; 0 = preset (0.5 / 0.1)

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        _choice("data.augment", self.augment, AUGMENTS)
        _check(self.batch_size >= 2, "data.batch_size", "an integer >= 2", self.batch_size)
        _check(0 < self.val_fraction < 1, "data.val_fraction", "in (0, 1)", self.val_fraction)
        _check(0 < self.test_fraction < 1, "data.test_fraction", "in (0, 1)", self.test_fraction)
        _check(
            self.val_fraction + self.test_fraction < 1,
            "data.val_fraction + data.test_fraction",
            "below 1",
            self.val_fraction + self.test_fraction,
        )
        _check(self.synthetic_size >= 20, "data.synthetic_size", ">= 20", self.synthetic_size)
        _check(0 <= self.crop_min_scale <= 1, "data.crop_min_scale", "in [0, 1]", self.crop_min_scale)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn (digits, 4 conv layers) | resnet18 (CIFAR stem, no max-pool)
    variant: str = "ds"  # simclr (no attack) | a2a | a2s | ds (dual stream, the paper's best)
    proj_hidden_dim: int = 128  # projection head hidden width (official ResNet-18 code: 512)
    proj_out_dim: int = 64  # projection output width (official: 512)
    proj_layers: int = 2  # linear layers in the head, BN+ReLU between (official: 3)
    sync_bn: bool = True  # convert every BN (both routes) to SyncBatchNorm when workers > 1

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ARCHS)
        _choice("model.variant", self.variant, VARIANTS)
        _check(self.proj_hidden_dim >= 1, "model.proj_hidden_dim", ">= 1", self.proj_hidden_dim)
        _check(self.proj_out_dim >= 1, "model.proj_out_dim", ">= 1", self.proj_out_dim)
        _check(self.proj_layers >= 1, "model.proj_layers", ">= 1", self.proj_layers)

    @property
    def routes(self) -> tuple[str, ...]:
        """Batch-norm routes this variant trains: two for A2S/DS, one otherwise."""
        return {"simclr": ("clean",), "a2a": ("adv",)}.get(self.variant, ("clean", "adv"))


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Pre-training PGD on NT-Xent (L-inf, pixel space [0, 1])."""

    eps: float = 0.1  # L-inf radius (paper, CIFAR: 8/255)
    alpha: float = 0.0  # step size; 0 = eps / 4 (paper: 2/255 for eps 8/255)
    steps: int = 3  # PGD iterations (paper: 5)
    random_start: bool = True  # uniform start in the eps ball, as the official code

    def __post_init__(self) -> None:
        _check(0 < self.eps <= 1, "attack.eps", "in (0, 1]", self.eps)
        _check(0 <= self.alpha <= 1, "attack.alpha", "in [0, 1] (0 = eps/4)", self.alpha)
        _check(self.steps >= 1, "attack.steps", "an integer >= 1", self.steps)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha > 0 else self.eps / 4


@dataclasses.dataclass(frozen=True)
class LossConfig:
    temperature: float = 0.5  # NT-Xent temperature (paper: 0.5)
    adv_weight: float = 0.5  # DS: loss = (1 - w) * clean + w * adv; 0.5 is the paper's mean

    def __post_init__(self) -> None:
        _check(self.temperature > 0, "loss.temperature", "> 0", self.temperature)
        _check(0 <= self.adv_weight <= 1, "loss.adv_weight", "in [0, 1]", self.adv_weight)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # lars (paper) | sgd | adam (digits default)
    lr: float = 1e-3  # base learning rate at data.batch_size (paper: LARS 5.0 at 512)
    momentum: float = 0.9  # LARS / SGD momentum
    weight_decay: float = 1e-6  # paper: 1e-6
    lars_eta: float = 1e-3  # LARS trust coefficient (official code)
    warmup_epochs: int = 0  # linear warm-up before cosine decay (paper: 10)
    min_lr: float = 0.0  # floor of the cosine schedule
    lr_scaling: str = "none"  # none | linear | sqrt: lr * (global_batch / data.batch_size)^p
    base_batch_size: int = 0  # batch size the lr was tuned at; 0 = data.batch_size

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _choice("optim.lr_scaling", self.lr_scaling, LR_SCALINGS)
        _check(self.lr > 0, "optim.lr", "> 0", self.lr)
        _check(0 <= self.momentum < 1, "optim.momentum", "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        _check(self.lars_eta > 0, "optim.lars_eta", "> 0", self.lars_eta)
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", ">= 0", self.warmup_epochs)
        _check(self.min_lr >= 0, "optim.min_lr", ">= 0", self.min_lr)
        _check(self.base_batch_size >= 0, "optim.base_batch_size", ">= 0", self.base_batch_size)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # seeds model init, augmentation and attack start
    epochs: int = 40  # pre-training epochs (paper: 1000)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = the CPUs this process may use
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 autocast
    channels_last: bool = True  # NHWC memory format on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the encoder
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always writes one)
    progress: bool = True  # rich progress bar on the console (rank 0)

    def __post_init__(self) -> None:
        _choice("run.device", self.device, DEVICES)
        _choice("run.precision", self.precision, PRECISIONS)
        _check(self.epochs >= 1, "run.epochs", "an integer >= 1", self.epochs)
        _check(self.threads >= 0, "run.threads", ">= 0", self.threads)
        _check(self.checkpoint_every >= 1, "run.checkpoint_every", ">= 1", self.checkpoint_every)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Build and validate from a (possibly partial) nested dict, rejecting unknown keys."""
        flat = dict(_flatten(d))
        return cls().override(flat)

    def override(self, values: Mapping[str, Any]) -> Config:
        """Return a copy with dotted-path values replaced, e.g. ``{"attack.eps": 0.05}``."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            section, _, name = key.partition(".")
            sub = getattr(self, section, None) if section in _SECTIONS else None
            if sub is None:
                raise ValueError(f"Unknown config key {key!r}: sections are {', '.join(_SECTIONS)}")
            if name not in _field_types(type(sub)):
                allowed = ", ".join(f"{section}.{f}" for f in _field_types(type(sub)))
                raise ValueError(f"Unknown config key {key!r}: {section} has {allowed}")
            sections.setdefault(section, {})[name] = _coerce(key, value, _field_types(type(sub))[name])
        return dataclasses.replace(
            self, **{s: dataclasses.replace(getattr(self, s), **kw) for s, kw in sections.items()}
        )

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def known_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(Config):
        keys += [f"{f.name}.{name}" for name in _field_types(typing.get_type_hints(Config)[f.name])]
    return keys


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise naming the key."""
    if isinstance(tp, types.UnionType):  # only `X | None` style unions would land here
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
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


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key.path=value`` strings; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Illegal --set {item!r}: must look like section.field=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then a YAML file, then ``--set`` overrides; validated at every stage."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"Config file {str(p)!r} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"Config file {str(p)!r} must hold a mapping of sections")
        cfg = Config.from_dict(loaded)
    return cfg.override(parse_set(overrides))
