"""Configs of everything after pre-training: evaluation attack, finetuning protocols (SLF / ALF /
AFF), semi-supervised finetuning and the per-epoch sweep proxy.

Keys: ``eval.<field>`` for the test attack; ``finetune.<field>`` / ``semisup.<field>`` /
``proxy.<field>`` for the others (see :class:`acl_ray.config.fields.Settings`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from acl_ray.config.fields import S, Settings, check, choice

ATTACKS = ("pgd", "autoattack")
LOSSES = ("ce", "cw")
# "fast": APGD-CE (1 restart) + APGD-T, the two gradient attacks of the standard suite; "standard"
# adds FAB-T and Square (5000 queries), which are slow on a CPU.
AA_VERSIONS = ("fast", "standard")
AA_ATTACKS = {"fast": ("apgd-ce", "apgd-t"), "standard": ("apgd-ce", "apgd-t", "fab-t", "square")}

# The test attack a dataset's robust accuracy is reported at, as ``eval.*`` keys; one per
# ``data.name``. Digits (and the synthetic test images): eps 0.1, PGD-20 (DESIGN.md), the EvalConfig
# defaults. CIFAR: eps 8/255, PGD-20, as the ACL paper and RobustSSL. Both step eps/4 (alpha 0;
# CIFAR: 2/255), so an eps given with --set keeps a quarter step. The training attacks of ALF, AFF
# and semisup follow ``eval.eps`` (``train_eps`` 0) with step train_eps/4: 8/255 and 2/255 on CIFAR.
_DIGITS_THREAT: dict[str, object] = {"eval.eps": 0.1, "eval.alpha": 0.0, "eval.steps": 20}
_CIFAR_THREAT: dict[str, object] = {"eval.eps": 8 / 255, "eval.alpha": 0.0, "eval.steps": 20}
THREAT_MODELS: dict[str, dict[str, object]] = {
    "digits": _DIGITS_THREAT, "synthetic": _DIGITS_THREAT,
    "cifar10": _CIFAR_THREAT, "cifar100": _CIFAR_THREAT,
}


def threat_model(dataset: str) -> dict[str, object]:
    """The default test attack of ``dataset`` (a ``data.name``) as ``eval.*`` override keys.

    ``acl-ray finetune`` / ``semisup`` apply it (as ``threat_model: <data.name>``) before a preset
    and ``--set``, so a CIFAR checkpoint is tested at 8/255 unless the user says otherwise.
    """
    check(dataset in THREAT_MODELS, "threat_model", f"one of {', '.join(THREAT_MODELS)}", dataset)
    return dict(THREAT_MODELS[dataset])


@dataclasses.dataclass(frozen=True)
class EvalConfig(Settings):
    """Test-time attack (L-inf, pixel space [0, 1]); CIFAR paper setting: eps 8/255, alpha 2/255."""

    prefix: ClassVar[str] = "eval"

    eps: float = 0.1  # L-inf radius (digits; a CIFAR checkpoint's default is 8/255: THREAT_MODELS)
    alpha: float = 0.0  # PGD step size; 0 = eps / 4
    steps: int = 20  # PGD iterations (paper: 20)
    restarts: int = 1  # random starts per loss; a point must survive all of them
    losses: tuple[str, ...] = ("ce", "cw")  # PGD losses; a point must survive every one
    batch_size: int = 500  # images per attack batch
    attack: str = "pgd"  # pgd | autoattack (needs the pyautoattack extra)
    aa_version: str = "fast"  # fast (APGD-CE + APGD-T) | standard (+ FAB-T + Square)
    seed: int = 1  # seed of the random starts (the official code: torch.manual_seed(1))

    def __post_init__(self) -> None:
        if isinstance(self.losses, str):  # "ce,cw" from a --set flag
            object.__setattr__(self, "losses", tuple(s.strip() for s in self.losses.split(",") if s.strip()))
        object.__setattr__(self, "losses", tuple(self.losses))
        check(0 < self.eps <= 1, "eval.eps", "in (0, 1]", self.eps)
        check(0 <= self.alpha <= 1, "eval.alpha", "in [0, 1] (0 = eps/4)", self.alpha)
        check(self.steps >= 1, "eval.steps", "an integer >= 1", self.steps)
        check(self.restarts >= 1, "eval.restarts", "an integer >= 1", self.restarts)
        check(
            len(self.losses) > 0 and all(s in LOSSES for s in self.losses),
            "eval.losses", f"a non-empty list of {', '.join(LOSSES)}", self.losses,
        )
        check(self.batch_size >= 1, "eval.batch_size", "an integer >= 1", self.batch_size)
        choice("eval.attack", self.attack, ATTACKS)
        choice("eval.aa_version", self.aa_version, AA_VERSIONS)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha > 0 else self.eps / 4


PROTOCOLS = ("slf", "alf", "aff")
ROUTES = ("auto", "clean", "adv")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("auto", "adam", "sgd")
LR_SCHEDULES = ("cosine", "step")
FINETUNE_AUGMENTS = ("none", "crop_flip")
# Defaults for fields left at 0 / "auto": per protocol (epochs, optimizer), per optimizer the lr.
DEFAULTS = {"slf": (40, "adam"), "alf": (20, "adam"), "aff": (20, "sgd")}
DEFAULT_LR = {"adam": 1e-2, "sgd": 0.05}

# Published CIFAR finetuning protocols (research/acl.md 1.5, 1.9), so that a number means what the
# tables mean. Test attack: PGD-20 at 8/255 with step 2/255, and AutoAttack standard through
# ``acl-ray evaluate`` (the RobustSSL leaderboard's number). Selection: validation robust accuracy
# every epoch on the whole 5,000-image validation split, as the official ``train_trades.py``.
_CIFAR_EVAL = {**_CIFAR_THREAT, "eval.alpha": 2 / 255, "eval.attack": "autoattack",
               "eval.aa_version": "standard"}
_CIFAR_FIT = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 2e-4, "lr_schedule": "step",
              "augment": "crop_flip", "select_every": 1, "val_size": 5000, "train_steps": 10, **_CIFAR_EVAL}
PRESETS: dict[str, dict[str, object]] = {
    # The official ACL repository's AFF (train_trades.py defaults): TRADES beta 6, SGD 0.1, batch 128,
    # 25 epochs, lr x0.1 after epochs 15 and 20.
    "acl-aff": {**_CIFAR_FIT, "protocol": "aff", "lr": 0.1, "batch_size": 128, "epochs": 25,
                "milestones": (15, 20), "beta": 6.0},
    # RobustSSL benchmark (Vanilla_Finetuning setup_hyperparameter, CIFAR-10): SLF / ALF SGD 0.01,
    # batch 512, 25 epochs, x0.1 after 10 and 20 (ALF on PGD-10); AFF SGD 0.1, batch 128, 100 epochs,
    # x0.1 after 40 and 60.
    "robustssl-slf": {**_CIFAR_FIT, "protocol": "slf", "lr": 0.01, "batch_size": 512, "epochs": 25,
                      "milestones": (10, 20)},
    "robustssl-alf": {**_CIFAR_FIT, "protocol": "alf", "lr": 0.01, "batch_size": 512, "epochs": 25,
                      "milestones": (10, 20)},
    "robustssl-aff": {**_CIFAR_FIT, "protocol": "aff", "lr": 0.1, "batch_size": 128, "epochs": 100,
                      "milestones": (40, 60), "beta": 6.0},
    # The embedded digits setting (DESIGN.md): today's defaults; its tables add AutoAttack standard.
    "digits": {**_DIGITS_THREAT, "eval.attack": "autoattack", "eval.aa_version": "standard"},
}


_Table = Mapping[str, Mapping[str, object]]  # name -> the override values it stands for (PRESETS)


def _layered(cfg: S, values: Mapping[str, Any], layers: Mapping[str, _Table]) -> S:
    """``Settings.override`` with named layers under the other keys: for each field of ``layers`` in
    its order (``threat_model``, then ``preset``) that ``values`` names, the table's values for that
    name apply first and the name is kept in the field as a record (``""``: none). The other keys
    apply last. ``field`` and ``<prefix>.field`` both work; the last one given wins.
    """
    rest = dict(values)
    for field, table in layers.items():
        given = [k for k in rest if k in (field, f"{cfg.prefix}.{field}")]
        if not given:
            continue
        name = str([rest.pop(k) for k in given][-1])
        check(name in ("", *table), f"{cfg.prefix}.{field}", f"one of {', '.join(table)} (or empty)", name)
        cfg = Settings.override(cfg, {**table.get(name, {}), field: name})
    return Settings.override(cfg, rest)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Settings):
    prefix: ClassVar[str] = "finetune"

    protocol: str = "slf"  # slf (linear, clean) | alf (linear, PGD-10) | aff (full network, TRADES)
    route: str = "auto"  # BN route kept: auto (adv when the checkpoint has it) | clean | adv
    epochs: int = 0  # 0 = protocol default (slf 40, alf 20, aff 20)
    optimizer: str = "auto"  # auto (slf/alf adam, aff sgd) | adam | sgd
    lr: float = 0.0  # 0 = protocol default (adam 1e-2; aff sgd 0.05; paper AFF: sgd 0.1)
    momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 2e-4  # paper (TRADES finetuning): 2e-4
    batch_size: int = 128  # paper: 128
    lr_schedule: str = "cosine"  # cosine (per step, to 0) | step (x0.1 after each of milestones)
    milestones: tuple[int, ...] = ()  # step schedule: epochs after which the lr drops 10x (ACL: 15, 20)
    augment: str = "none"  # none | crop_flip (4-pixel padded random crop + horizontal flip, CIFAR)
    beta: float = 6.0  # TRADES weight of the KL term (paper: 6)
    train_eps: float = 0.0  # ALF/AFF training attack radius; 0 = eval.eps
    train_steps: int = 10  # ALF PGD / AFF TRADES attack steps (paper: 10), step train_eps / 4
    seed: int = 0  # head initialisation, batch order, training attack starts
    select_every: int = 5  # epochs between validation evaluations (the last epoch always runs)
    val_size: int = 1000  # validation images used for selection (the first of the split)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = the CPUs this process may use
    preset: str = ""  # the published protocol these values came from (PRESETS), "" = none; a record
    threat_model: str = ""  # data.name whose eval.* defaults were applied first (THREAT_MODELS); a record
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)  # test attack, keys eval.*

    def __post_init__(self) -> None:
        if isinstance(self.milestones, str):  # "15,20" from a --set flag
            object.__setattr__(self, "milestones", tuple(x for x in self.milestones.split(",") if x.strip()))
        if isinstance(self.milestones, int):  # one epoch, read by YAML as a number
            object.__setattr__(self, "milestones", (self.milestones,))
        try:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        except (TypeError, ValueError):
            msg = f"Illegal finetune.milestones={self.milestones!r}: must be epoch numbers"
            raise ValueError(msg) from None
        check(all(m >= 1 for m in self.milestones), "finetune.milestones", "epochs >= 1", self.milestones)
        choice("finetune.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        choice("finetune.augment", self.augment, FINETUNE_AUGMENTS)
        check(self.preset in ("", *PRESETS), "finetune.preset", f"one of {', '.join(PRESETS)} (or empty)",
              self.preset)
        check(self.threat_model in ("", *THREAT_MODELS), "finetune.threat_model",
              f"one of {', '.join(THREAT_MODELS)} (or empty)", self.threat_model)
        choice("finetune.protocol", self.protocol, PROTOCOLS)
        choice("finetune.route", self.route, ROUTES)
        choice("finetune.optimizer", self.optimizer, OPTIMIZERS)
        choice("finetune.device", self.device, DEVICES)
        check(self.epochs >= 0, "finetune.epochs", "an integer >= 0 (0 = protocol default)", self.epochs)
        check(self.lr >= 0, "finetune.lr", ">= 0 (0 = protocol default)", self.lr)
        check(0 <= self.momentum < 1, "finetune.momentum", "in [0, 1)", self.momentum)
        check(self.weight_decay >= 0, "finetune.weight_decay", ">= 0", self.weight_decay)
        check(self.batch_size >= 1, "finetune.batch_size", "an integer >= 1", self.batch_size)
        check(self.beta >= 0, "finetune.beta", ">= 0", self.beta)
        check(0 <= self.train_eps <= 1, "finetune.train_eps", "in [0, 1] (0 = eval.eps)", self.train_eps)
        check(self.train_steps >= 1, "finetune.train_steps", "an integer >= 1", self.train_steps)
        check(self.select_every >= 1, "finetune.select_every", "an integer >= 1", self.select_every)
        check(self.val_size >= 1, "finetune.val_size", "an integer >= 1", self.val_size)
        check(self.threads >= 0, "finetune.threads", ">= 0", self.threads)

    def override(self, values: Mapping[str, Any]) -> FinetuneConfig:
        """As :meth:`Settings.override`, but a ``threat_model`` key applies that dataset's test attack
        first (:func:`threat_model`), then a ``preset`` key that published protocol, then the other
        keys; so ``{threat_model: cifar10, preset: acl-aff, epochs: 3}`` is the official AFF for 3
        epochs, in a sweep file's ``final`` section as on the command line.
        """
        return _layered(self, values, {"threat_model": THREAT_MODELS, "preset": PRESETS})

    def follow_data(self, dataset: str) -> FinetuneConfig:
        """This config, saved before ``threat_model`` was recorded, for a model of ``dataset``: when
        its ``eval.eps`` is still the default (0.1, digits'), the dataset's threat model replaces the
        ``eval.*`` values left at their defaults; such a config got the digits radius on CIFAR
        (25.5/255). A recorded threat model, a preset or a chosen eps is kept as it is.
        """
        default = EvalConfig()
        if self.threat_model or self.preset or self.eval.eps != default.eps:
            return self
        left = {k: v for k, v in threat_model(dataset).items()  # "eval.<field>" keys still at the default
                if getattr(self.eval, k[5:]) == getattr(default, k[5:])}
        return Settings.override(self, {**left, "threat_model": dataset})

    @classmethod
    def from_preset(cls, name: str) -> FinetuneConfig:
        """The finetuning config of a published protocol (``PRESETS``)."""
        return cls().override({"preset": name})

    def resolved(self) -> FinetuneConfig:
        """A copy with the protocol defaults filled in (what config.yaml records)."""
        epochs, opt = DEFAULTS[self.protocol]
        opt = opt if self.optimizer == "auto" else self.optimizer
        return dataclasses.replace(
            self, epochs=self.epochs or epochs, optimizer=opt, lr=self.lr or DEFAULT_LR[opt],
            train_eps=self.train_eps or self.eval.eps,
        )


SEMISUP_OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class SemisupConfig(Settings):
    prefix: ClassVar[str] = "semisup"

    label_fraction: float = 0.1  # share of the training split with labels, in (0, 1] (paper: 0.01, 0.1)
    seed: int = 0  # labelled draw, batch order, attack starts (official: 10)
    # Stage 2, the clean teacher on the labelled images only (official: sgd lr 0.1, 100 epochs).
    teacher_route: str = "clean"  # BN route: clean (official bnNameCnt 0) | adv | auto
    teacher_epochs: int = 100  # passes over the labelled images (one step each at 10% of digits)
    teacher_optimizer: str = "adam"  # adam | sgd
    teacher_lr: float = 1e-3  # cosine per step to 0
    # Stage 3, TRADES with distillation on labelled + unlabelled batches.
    route: str = "auto"  # BN route: auto (adv when the checkpoint has it) | clean | adv
    epochs: int = 10  # passes over the training split (official: 15)
    optimizer: str = "sgd"  # adam | sgd (official: sgd)
    lr: float = 0.05  # cosine per step to 0 (official: 0.1, decay at 5 and 10)
    momentum: float = 0.9  # SGD momentum, both stages (official: 0.9)
    weight_decay: float = 5e-4  # both stages (official: 5e-4)
    batch_size: int = 128  # images per step, labelled + unlabelled (official: 250 at 10%, 200 at 1%)
    labelled_batch: int = 0  # labelled images per step; 0 = proportional, >= 1 (official 25/250, 2/200)
    alpha: float = 0.5  # distillation share on labelled rows: (1 - alpha) CE + alpha T^2 KD (official 0.5)
    temperature: float = 1.0  # distillation temperature T (official: 1)
    beta: float = 6.0  # TRADES weight of KL(p(x) || p(x_adv)) (official: 6)
    train_eps: float = 0.0  # training PGD radius; 0 = eval.eps
    train_steps: int = 10  # training PGD steps, step train_eps / 4 (official: 10)
    select_every: int = 5  # epochs between validation evaluations (the last epoch always runs)
    val_size: int = 1000  # validation images used for selection (the first of the split)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = the CPUs this process may use
    threat_model: str = ""  # data.name whose eval.* defaults were applied first (THREAT_MODELS); a record
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)  # test attack, keys eval.*

    def __post_init__(self) -> None:
        check(0 < self.label_fraction <= 1, "semisup.label_fraction", "in (0, 1]", self.label_fraction)
        for name, allowed in (("teacher_route", ROUTES), ("route", ROUTES), ("device", DEVICES),
                              ("teacher_optimizer", SEMISUP_OPTIMIZERS), ("optimizer", SEMISUP_OPTIMIZERS)):
            choice(f"semisup.{name}", getattr(self, name), allowed)
        for name in ("teacher_epochs", "epochs", "batch_size", "train_steps", "select_every", "val_size"):
            check(getattr(self, name) >= 1, f"semisup.{name}", "an integer >= 1", getattr(self, name))
        for name in ("teacher_lr", "lr", "temperature"):
            check(getattr(self, name) > 0, f"semisup.{name}", "> 0", getattr(self, name))
        for name in ("weight_decay", "beta", "threads"):
            check(getattr(self, name) >= 0, f"semisup.{name}", ">= 0", getattr(self, name))
        check(0 <= self.momentum < 1, "semisup.momentum", "in [0, 1)", self.momentum)
        check(0 <= self.alpha <= 1, "semisup.alpha", "in [0, 1]", self.alpha)
        check(0 <= self.train_eps <= 1, "semisup.train_eps", "in [0, 1] (0 = eval.eps)", self.train_eps)
        check(0 <= self.labelled_batch <= self.batch_size, "semisup.labelled_batch",
               f"in [0, batch_size={self.batch_size}] (0 = proportional)", self.labelled_batch)
        check(self.threat_model in ("", *THREAT_MODELS), "semisup.threat_model",
              f"one of {', '.join(THREAT_MODELS)} (or empty)", self.threat_model)

    def override(self, values: Mapping[str, Any]) -> SemisupConfig:
        """As :meth:`Settings.override`, but a ``threat_model`` key applies that dataset's test attack
        (:func:`threat_model`) before the other keys."""
        return _layered(self, values, {"threat_model": THREAT_MODELS})


@dataclasses.dataclass(frozen=True)
class ProxyConfig(Settings):
    prefix: ClassVar[str] = "proxy"

    train_size: int = 600  # labelled training images for the head (the first of the split)
    val_size: int = 300  # validation images attacked (the first of the split)
    epochs: int = 30  # head epochs over the precomputed features
    lr: float = 1e-2  # Adam
    steps: int = 10  # PGD steps (CE and CW margin), step eps / 4
    eps: float = 0.1  # the sweep's fixed threat model (digits: 0.1; CIFAR: 8/255)
    time_budget_s: float = 30.0  # stop training the head after this long
