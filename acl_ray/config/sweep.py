"""Sweep settings: the base ACL config, the search space, the searcher/scheduler and the evaluation.

A sweep file is YAML with up to five sections; every one is optional::

    base:   {attack: {eps: 0.1}, run: {epochs: 20}}   # the ACL config every trial starts from
    space:  {attack.steps: {int: [1, 5]}, ...}        # acl_ray.config.space; default per dataset
    sweep:  {num_samples: 10, searcher: tpe, ...}     # SweepConfig below
    proxy:  {train_size: 600, ...}                    # acl_ray.config.protocols.ProxyConfig (per epoch)
    final:  {protocol: slf, eval: {eps: 0.1}}         # acl_ray.config.protocols.FinetuneConfig (at the end)

``--set`` keys address the same: ``sweep.num_samples=8``, ``final.protocol=alf``,
``eval.eps=0.05`` (the final evaluation's attack), ``proxy.val_size=200``, ``attack.eps=0.05``
(the base config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml

from acl_ray.config.fields import Settings, check, choice, parse_set, read_yaml_mapping
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig, ProxyConfig
from acl_ray.config.schedule import SCHEDULABLE
from acl_ray.config.space import REFERENCES, default_space

SEARCHERS = ("tpe", "random", "nsga2", "gp")
POPULATION = ("pbt", "pb2")  # schedulers that change a trial's values while it trains (no searcher)
SCHEDULERS = ("asha", "fifo", *POPULATION)
RUNNERS = ("auto", "train")
TRACKERS = ("mlflow", "wandb")  # sweep.tracking: Ray Tune's MLflow / Weights & Biases logger callbacks
SWEEP_FILE = "sweep.yaml"
STUDY_FILE = "study.db"  # the Optuna study of a sweep with a searcher, unless sweep.study_storage says


def names(value: str | Iterable[str]) -> tuple[str, ...]:
    """A tuple of names from a list or a comma-separated string (``--set sweep.mutable=a,b``)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class ConfirmConfig(Settings):
    """After the search: the top trials and named controls trained again from scratch at full length
    (``run.epochs``) with fresh seeds, as Tune trials (``acl-ray confirm DIR`` for a finished sweep)."""

    prefix: ClassVar[str] = "sweep.confirm"

    top_k: int = 0  # the best trials by the sweep's metric to confirm; 0 = no confirmation
    seeds: int = 3  # fresh seeds per configuration (run.seed = 1000, 1001, ...: the same for all)
    # (paper: the ACL paper's attack and batch; acl: the base config; dynacl; dynacl-air)
    controls: tuple[str, ...] = ("paper", "dynacl")  # reference configs trained beside them (REFERENCES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "controls", names(self.controls))
        check(self.top_k >= 0, "sweep.confirm.top_k", "an integer >= 0", self.top_k)
        check(self.seeds >= 2, "sweep.confirm.seeds", "an integer >= 2 (a spread needs two)", self.seeds)
        for c in self.controls:
            choice("sweep.confirm.controls", c, tuple(REFERENCES))
        check(len(set(self.controls)) == len(self.controls), "sweep.confirm.controls", "without repeats",
              ",".join(self.controls))


@dataclasses.dataclass(frozen=True)
class SweepConfig(Settings):
    prefix: ClassVar[str] = "sweep"

    num_samples: int = 10  # trials in the sweep
    # (nsga2: val SA and RA, multi-objective; gp: Optuna's Gaussian-process sampler, Bayesian
    # optimisation, with TPE's start-up trials)
    searcher: str = "tpe"  # tpe (Optuna TPE) | random (baseline) | nsga2 | gp (see above)
    seed: int = 0  # searcher seed
    startup_trials: int = 0  # TPE / GP start-up trials, reference points included; 0 = points + 2 (README)
    metric: str = "val/robust_acc"  # what the searcher maximises (the final protocol on validation)
    cost_objective: bool = False  # nsga2: also minimise time/train_s
    # (the reference points: the paper's, DynACL / DynACL-AIR when the space holds their keys)
    paper_point: bool = True  # enqueue the reference points as the first trials (warm_start_points)
    # asha: stops weak trials on proxy/robust_acc per epoch | fifo | pbt, pb2: Population Based
    # Training / Bandits (Ray Tune): num_samples members train together; every perturbation_interval
    # epochs the worst copy the best ones' checkpoints and change the mutable keys (no searcher)
    scheduler: str = "asha"  # asha | fifo | pbt | pb2 (see above)
    grace_period: int = 4  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 3  # ASHA: keep the top 1/reduction_factor at each rung
    perturbation_interval: int = 4  # PBT / PB2: epochs between a member's exploit / explore steps
    # PBT / PB2: the space keys changed while training (acl_ray.config.schedule.SCHEDULABLE). Other space
    # keys are sampled once per member.
    mutable: tuple[str, ...] = ()  # () = every schedulable key of the space
    quantile_fraction: float = 0.25  # PBT / PB2: the bottom fraction copies the top fraction
    resample_probability: float = 0.25  # PBT: a mutated value is drawn anew (else times 0.8 or 1.2)
    # PBT / PB2, true: every member waits at each perturbation epoch until all are there, then the bottom
    # quantile copies the top one (generations); false: each member is compared when it gets there
    synch: bool = False  # synchronous generations (see above)
    workers: int = 1  # Ray Train workers per trial
    # auto: a 1-worker trial runs the epoch loop in its Tune trial process (no Train controller or
    # worker actors) and more workers use Ray Train; train: every trial runs a Ray Train TorchTrainer
    runner: str = "auto"  # auto | train (see above)
    cpus_per_worker: float = 1.0  # CPUs per worker
    gpus_per_worker: float = 0.0  # GPUs per worker (0 = CPU trials)
    max_concurrent: int = 0  # trials at once; 0 = what the cluster's resources allow
    max_failures: int = 1  # retries of a failed trial (Tune) and of a failed worker group (Train)
    proxy_every: int = 1  # epochs between proxy evaluations (also at the last epoch and ASHA rungs)
    storage: str = ""  # Ray storage for multi-node clusters (s3://..., NFS); "" = the --out folder
    # the searches compared at equal cost: Tune ends the sweep (every trial) once its trials have
    # trained this many epochs in all (each trial counts its highest reported epoch once)
    budget_epochs: int = 0  # total training epochs of the sweep; 0 = no budget (num_samples ends it)
    # the Optuna study (every trial, its state, values, proxy per epoch): an Optuna storage URL, e.g.
    # postgresql://user@db/acl for a cluster (a database server the head reaches; the study is named
    # after the sweep folder); "" = sqlite:///DIR/study.db. PBT / PB2 sweeps have no study
    study_storage: str = ""  # Optuna storage URL; "" = DIR/study.db (see above)
    # mlflow: one MLflow run per trial (into sqlite:///DIR/mlflow.db unless MLFLOW_TRACKING_URI is set);
    # wandb: one W&B run per trial (offline into DIR/wandb unless logged in or WANDB_MODE is set)
    tracking: tuple[str, ...] = ()  # mlflow, wandb or both: the trackers every trial logs to (see above)
    confirm: ConfirmConfig = ConfirmConfig()  # confirmation runs after the search (ConfirmConfig)

    def __post_init__(self) -> None:
        choice("sweep.searcher", self.searcher, SEARCHERS)
        choice("sweep.scheduler", self.scheduler, SCHEDULERS)
        choice("sweep.runner", self.runner, RUNNERS)
        check(self.num_samples >= 1, "sweep.num_samples", "an integer >= 1", self.num_samples)
        check(self.startup_trials >= 0, "sweep.startup_trials", ">= 0", self.startup_trials)
        check(self.grace_period >= 1, "sweep.grace_period", ">= 1", self.grace_period)
        check(self.reduction_factor >= 2, "sweep.reduction_factor", ">= 2", self.reduction_factor)
        check(self.workers >= 1, "sweep.workers", "an integer >= 1", self.workers)
        check(self.cpus_per_worker > 0, "sweep.cpus_per_worker", "> 0", self.cpus_per_worker)
        check(self.gpus_per_worker >= 0, "sweep.gpus_per_worker", ">= 0", self.gpus_per_worker)
        check(self.max_concurrent >= 0, "sweep.max_concurrent", ">= 0", self.max_concurrent)
        check(self.max_failures >= 0, "sweep.max_failures", ">= 0", self.max_failures)
        check(self.proxy_every >= 1, "sweep.proxy_every", ">= 1", self.proxy_every)
        check(self.budget_epochs >= 0, "sweep.budget_epochs", "an integer >= 0", self.budget_epochs)
        choice("sweep.metric", self.metric, ("val/robust_acc", "val/standard_acc"))
        object.__setattr__(self, "mutable", names(self.mutable))
        object.__setattr__(self, "tracking", names(self.tracking))
        for tracker in self.tracking:
            choice("sweep.tracking", tracker, TRACKERS)
        check(len(set(self.tracking)) == len(self.tracking), "sweep.tracking", "without repeats",
              ",".join(self.tracking))
        url = self.study_storage
        check(not url or "://" in url, "sweep.study_storage",
              "empty (DIR/study.db) or an Optuna storage URL such as sqlite:////path/study.db or "
              "postgresql://user@host/db", url)
        between = f"keys that can change between epochs: {', '.join(SCHEDULABLE)}"
        for key in self.mutable:
            check(key in SCHEDULABLE, "sweep.mutable", between, key)
        interval, quantile = self.perturbation_interval, self.quantile_fraction
        resample = self.resample_probability
        check(interval >= 1, "sweep.perturbation_interval", "an integer >= 1", interval)
        check(0 < quantile <= 0.5, "sweep.quantile_fraction", "in (0, 0.5]", quantile)
        check(0 <= resample <= 1, "sweep.resample_probability", "in [0, 1]", resample)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Everything a sweep needs, resolved; ``to_dict`` is what ``sweep.yaml`` holds."""

    base: Config
    space: dict[str, Any]
    sweep: SweepConfig
    proxy: ProxyConfig
    final: FinetuneConfig

    def __post_init__(self) -> None:
        """Checks across sections: a searched key the base config schedules would never train with
        its sampled value; a population sweep (``sweep.scheduler: pbt | pb2``) needs more."""
        both = [k for k, _ in self.base.schedule.items() if k in self.space]
        check(not both, "space", "keys that base.schedule does not set (its values would replace the"
              " sampled ones every epoch)", ",".join(both))
        sw = self.sweep
        if sw.scheduler not in POPULATION:
            return
        for key in sw.mutable:
            check(key in self.space, "sweep.mutable", f"keys of the space ({', '.join(self.space)})", key)
        mutated, name, epochs = self.mutated, sw.scheduler, self.base.run.epochs
        check(bool(mutated), "sweep.scheduler",
              f"used with a space key that can change between epochs ({', '.join(SCHEDULABLE)})", name)
        check(sw.workers == 1 and sw.runner == "auto", "sweep.workers",
              f"1 with sweep.runner=auto for sweep.scheduler={name} (members resume from copied checkpoints "
              "in their own process; Ray Train trials are not supported)", sw.workers)
        check(sw.perturbation_interval < epochs, "sweep.perturbation_interval",
              f"below run.epochs ({epochs}), or no member is ever perturbed", sw.perturbation_interval)
        check(not sw.study_storage, "sweep.study_storage",
              f"empty with sweep.scheduler={name} (a population has no searcher, so no Optuna study)",
              sw.study_storage)
        check(sw.confirm.top_k == 0, "sweep.confirm.top_k",
              f"0 with sweep.scheduler={name} (a member's config is its last values, not its schedule: "
              "replay DIR/best_schedule.yaml)", sw.confirm.top_k)
        for key in mutated if name == "pb2" else ():
            check(next(iter(self.space[key])) != "choice", f"space {key}",
                  "a range (int, uniform or loguniform): pb2 mutates ranges only", self.space[key])

    @property
    def mutated(self) -> list[str]:
        """The space keys a population sweep changes while training (``sweep.mutable``, or every
        ``SCHEDULABLE`` key of the space), in space order; [] for other schedulers."""
        if self.sweep.scheduler not in POPULATION:
            return []
        chosen = self.sweep.mutable or SCHEDULABLE
        return [k for k in self.space if k in chosen]

    def study_url(self, out: Path) -> str | None:
        """The Optuna storage of the sweep in folder ``out`` (``sweep.study_storage`` or
        ``sqlite:///out/study.db``); None for a population sweep, which has no searcher."""
        if self.sweep.scheduler in POPULATION:
            return None
        return self.sweep.study_storage or f"sqlite:///{Path(out).resolve() / STUDY_FILE}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "space": {k: dict(v) for k, v in self.space.items()},
            "sweep": self.sweep.to_dict(),
            "proxy": self.proxy.to_dict(),
            "final": self.final.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], overrides: Iterable[str] = ()) -> Sweep:
        known = {"base", "space", "sweep", "proxy", "final"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"Unknown sweep section(s) {sorted(unknown)}: sections are {', '.join(sorted(known))}"
            )
        base = Config.from_dict(d.get("base") or {})
        sweep = SweepConfig.from_dict(d.get("sweep") or {})
        proxy = ProxyConfig.from_dict(d.get("proxy") or {})
        space = dict(d["space"]) if d.get("space") else None
        groups: dict[str, dict[str, Any]] = {"sweep": {}, "proxy": {}, "final": {}, "base": {}}
        for key, value in parse_set(overrides).items():
            section, _, name = key.partition(".")
            if section in ("sweep", "proxy", "eval"):
                groups["final" if section == "eval" else section][key] = value
            elif section == "final":
                groups["final"][name] = value  # a path inside the finetuning config
            else:
                groups["base"][key] = value
        base = base.override(groups["base"])
        sweep = sweep.override(groups["sweep"])
        proxy = proxy.override(groups["proxy"])
        # the test attack follows the data (eps 8/255 on CIFAR) unless the final section says otherwise
        final_d = dict(d.get("final") or {})
        final_d.setdefault("threat_model", base.data.name)
        final = FinetuneConfig.from_dict(final_d).override(groups["final"])
        return cls(base, space or default_space(base.data.name), sweep, proxy, final)

    def save(self, folder: Path) -> None:
        (folder / SWEEP_FILE).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_sweep(path: str | Path | None, overrides: Iterable[str] = ()) -> Sweep:
    """Defaults, then a sweep YAML file, then ``--set`` overrides; validated."""
    d = {} if path is None else read_yaml_mapping(path, "Sweep file")
    return Sweep.from_dict(d, overrides)
