"""Frozen dataclass configuration: one source of truth for CLI flags, YAML, Tune keys and metrics.

Every field is addressed by a dotted path (``attack.eps``, ``data.batch_size``) in YAML files,
``--set`` overrides, the Tune search space and the saved ``config.yaml``. Defaults are the
embedded digits setting measured in DESIGN.md; ``configs/paper_cifar10.yaml`` holds the paper's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from acl_ray.config.fields import Settings, check, choice, parse_set, read_yaml_mapping
from acl_ray.config.schedule import ScheduleConfig

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")
AUGMENTS = ("auto", "digits", "simclr", "none")
ARCHS = ("small_cnn", "resnet18")
VARIANTS = ("simclr", "a2a", "a2s", "ds")
OPTIMIZERS = ("lars", "sgd", "adam")
LR_SCALINGS = ("none", "linear", "sqrt")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("constant", "dynacl")


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
        choice("data.name", self.name, DATASETS)
        choice("data.augment", self.augment, AUGMENTS)
        check(self.batch_size >= 2, "data.batch_size", "an integer >= 2", self.batch_size)
        check(0 < self.val_fraction < 1, "data.val_fraction", "in (0, 1)", self.val_fraction)
        check(0 < self.test_fraction < 1, "data.test_fraction", "in (0, 1)", self.test_fraction)
        check(
            self.val_fraction + self.test_fraction < 1,
            "data.val_fraction + data.test_fraction",
            "below 1",
            self.val_fraction + self.test_fraction,
        )
        check(self.synthetic_size >= 20, "data.synthetic_size", ">= 20", self.synthetic_size)
        check(0 <= self.crop_min_scale <= 1, "data.crop_min_scale", "in [0, 1]", self.crop_min_scale)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """How the view augmentation changes over pre-training (DynACL, Luo et al. ICLR 2023).

    ``dynacl`` scales the preset (``data.augment``) by a strength ``s = 1 - k floor(i / k) / E``
    (0-based epoch ``i``, ``E = run.epochs``, ``k = step_epochs``): crop area low end ``1 - (1 - low) s``,
    colour jitter strengths, jitter / grayscale probabilities, rotation, translation, noise and erasing
    all times ``s``; flips are kept. On the SimCLR preset this is DynACL's schedule exactly.
    """

    schedule: str = "constant"  # constant (ACL: the preset every epoch) | dynacl (annealed strength)
    step_epochs: int = 0  # epochs between strength steps; 0 = max(1, run.epochs // 20) (DynACL: 50 of 1000)
    strength: float = 1.0  # scales the preset's magnitudes like s above (times DynACL's s when it is on)

    def __post_init__(self) -> None:
        choice("augment.schedule", self.schedule, SCHEDULES)
        check(0 < self.strength <= 1, "augment.strength", "in (0, 1]", self.strength)
        check(self.step_epochs >= 0, "augment.step_epochs", ">= 0 (0 = run.epochs // 20)", self.step_epochs)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn (digits, 4 conv layers) | resnet18 (CIFAR stem, no max-pool)
    variant: str = "ds"  # simclr (no attack) | a2a | a2s | ds (dual stream, the paper's best)
    proj_hidden_dim: int = 128  # projection head hidden width (official ResNet-18 code: 512)
    proj_out_dim: int = 64  # projection output width (official: 512)
    proj_layers: int = 2  # linear layers in the head, BN+ReLU between (official: 3)
    sync_bn: bool = True  # convert every BN (both routes) to SyncBatchNorm when workers > 1

    def __post_init__(self) -> None:
        choice("model.arch", self.arch, ARCHS)
        choice("model.variant", self.variant, VARIANTS)
        check(self.proj_hidden_dim >= 1, "model.proj_hidden_dim", ">= 1", self.proj_hidden_dim)
        check(self.proj_out_dim >= 1, "model.proj_out_dim", ">= 1", self.proj_out_dim)
        check(self.proj_layers >= 1, "model.proj_layers", ">= 1", self.proj_layers)

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
        check(0 < self.eps <= 1, "attack.eps", "in (0, 1]", self.eps)
        check(0 <= self.alpha <= 1, "attack.alpha", "in [0, 1] (0 = eps/4)", self.alpha)
        check(self.steps >= 1, "attack.steps", "an integer >= 1", self.steps)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha > 0 else self.eps / 4


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The pre-training loss. The schedule and the two regularisers act on the DS variant only."""

    temperature: float = 0.5  # NT-Xent temperature (paper: 0.5)
    adv_weight: float = 0.5  # DS: loss = (1 - w) * clean + w * adv; 0.5 is the paper's mean
    # dynacl: w = min(adv_weight + adv_weight_ramp * k floor(e / k) / E, 1) at 1-based epoch e, k steps
    # (DynACL's (2 - w') clean + w' adv with swap 2/3 is adv_weight 0.5, ramp 1/3)
    adv_weight_schedule: str = "constant"  # constant (ACL) | dynacl (stepped ramp towards the adv loss)
    adv_weight_ramp: float = 1 / 3  # rise of the weight over the whole run (DynACL: 1/3)
    adv_weight_step_epochs: int = 0  # epochs between steps; 0 = max(1, run.epochs // 20) (DynACL: 50)
    # AIR (Xu et al. NeurIPS 2023): invariance regularisers on the un-augmented images, 0 = off (paper 0.5)
    air_weight: float = 0.0  # lambda2: KL between the two adversarial views' causal distributions
    sir_weight: float = 0.0  # lambda1: KL between the two clean views' distributions

    def __post_init__(self) -> None:
        check(self.temperature > 0, "loss.temperature", "> 0", self.temperature)
        check(0 <= self.adv_weight <= 1, "loss.adv_weight", "in [0, 1]", self.adv_weight)
        choice("loss.adv_weight_schedule", self.adv_weight_schedule, SCHEDULES)
        check(0 <= self.adv_weight_ramp <= 1, "loss.adv_weight_ramp", "in [0, 1]", self.adv_weight_ramp)
        check(
            self.adv_weight_step_epochs >= 0,
            "loss.adv_weight_step_epochs",
            ">= 0 (0 = run.epochs // 20)",
            self.adv_weight_step_epochs,
        )
        check(self.air_weight >= 0, "loss.air_weight", ">= 0 (0 = off)", self.air_weight)
        check(self.sir_weight >= 0, "loss.sir_weight", ">= 0 (0 = off)", self.sir_weight)


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
        choice("optim.name", self.name, OPTIMIZERS)
        choice("optim.lr_scaling", self.lr_scaling, LR_SCALINGS)
        check(self.lr > 0, "optim.lr", "> 0", self.lr)
        check(0 <= self.momentum < 1, "optim.momentum", "in [0, 1)", self.momentum)
        check(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        check(self.lars_eta > 0, "optim.lars_eta", "> 0", self.lars_eta)
        check(self.warmup_epochs >= 0, "optim.warmup_epochs", ">= 0", self.warmup_epochs)
        check(self.min_lr >= 0, "optim.min_lr", ">= 0", self.min_lr)
        check(self.base_batch_size >= 0, "optim.base_batch_size", ">= 0", self.base_batch_size)


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
        choice("run.device", self.device, DEVICES)
        choice("run.precision", self.precision, PRECISIONS)
        check(self.epochs >= 1, "run.epochs", "an integer >= 1", self.epochs)
        check(self.threads >= 0, "run.threads", ">= 0", self.threads)
        check(self.checkpoint_every >= 1, "run.checkpoint_every", ">= 1", self.checkpoint_every)


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """The pre-training config; keys are ``<section>.<field>`` (``attack.eps``)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    # per-epoch values of augment.strength, loss.adv_weight, attack.eps / steps, optim.lr and
    # loss.temperature (acl_ray.config.schedule); epochs: [] = none (every epoch the values above)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        loss, variant = self.loss, self.model.variant
        for key, on, off in (
            ("loss.adv_weight_schedule", loss.adv_weight_schedule != "constant", "constant"),
            ("loss.air_weight", loss.air_weight > 0, "0"),
            ("loss.sir_weight", loss.sir_weight > 0, "0"),
        ):
            value = getattr(loss, key.split(".")[1])
            check(not on or variant == "ds", key, f"{off} unless model.variant=ds (it is {variant})", value)
        scheduled = dict(self.schedule.items())
        weights = list(scheduled.get("loss.adv_weight", ()))
        check(not weights or variant == "ds", "schedule.loss.adv_weight",
              f"[] unless model.variant=ds (it is {variant})", weights)
        for key, values in scheduled.items():  # each value must be legal for its own field
            section, name = key.split(".")
            for i, v in enumerate(values):
                try:
                    dataclasses.replace(getattr(self, section), **{name: v})
                except ValueError as e:
                    named = str(e).replace(f"Illegal {key}=", f"Illegal schedule.{key}[{i}]=", 1)
                    raise ValueError(named) from None

    def at_epoch(self, epoch: int) -> Config:
        """This config with the schedule's values in effect at 0-based ``epoch`` (itself without one)."""
        values = self.schedule.at(epoch)
        return self.override(values) if values else self


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then a YAML file, then ``--set`` overrides; validated at every stage."""
    cfg = Config() if path is None else Config.from_dict(read_yaml_mapping(path, "Config file"))
    return cfg.override(parse_set(overrides))
