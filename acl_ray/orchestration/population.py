"""Population Based Training (``sweep.scheduler: pbt``) and Bandits (``pb2``) over ACL's knobs.

Ray Tune's ``PopulationBasedTraining`` / ``PB2`` (Jaderberg et al. 2017; Parker-Holder et al. 2020)
train ``sweep.num_samples`` members at once. Every ``sweep.perturbation_interval`` epochs a member in
the bottom ``quantile_fraction`` by ``proxy/robust_acc`` is paused, given a copy of a top member's
latest Tune checkpoint and new values of the mutated keys (PBT: the donor's values times 0.8 / 1.2,
a neighbouring int or choice, or a fresh draw; PB2: a GP bandit's pick), and resumed (:mod:`trial`).
The space's other keys are drawn once per member, so the population starts from a random sample
(and the reference points when ``sweep.paper_point``); no Optuna searcher (Tune refuses one with PBT).

What Tune's schedulers do not know, this module adds:

- the declared ranges: every mutated value is clipped back into its space range (:class:`Clip`);
- the epochs where a decision can use a checkpoint: a member reports a Tune checkpoint at every
  multiple of the interval (the trial's ``Evals.rungs``), and only those reports can perturb (a
  sweep restored from a kill restarts Tune's perturbation clocks at 0); never at the last epoch,
  where a copy would throw the member's own final evaluation away.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import ray.tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.epochs import PROXY_METRIC


def perturbation_epochs(s: Sweep) -> tuple[int, ...]:
    """The epochs (1-based, before the last) where a member may exploit another: the interval's multiples."""
    if not s.mutated:
        return ()
    every = s.sweep.perturbation_interval
    return tuple(range(every, s.base.run.epochs, every))


class Clip:
    """PBT's ``custom_explore_fn``: each mutated value back into its declared range (ints rounded)."""

    def __init__(self, space: Mapping[str, Any], keys: list[str]) -> None:
        self.ranges = {k: next(iter(space[k].items())) for k in keys}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (kind, args) in self.ranges.items():
            if kind == "choice":
                continue  # PBT keeps a choice inside its list
            value = min(max(float(config[key]), float(args[0])), float(args[1]))
            config[key] = round(value) if kind == "int" else value
        return config


def mutations(s: Sweep) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: ints and choices as lists (a perturbation moves to a neighbour),
    ranges as Tune domains (a perturbation multiplies by 0.8 or 1.2; :class:`Clip` keeps it inside)."""
    out: dict[str, Any] = {}
    for key in s.mutated:
        kind, args = next(iter(s.space[key].items()))
        if kind == "int":
            out[key] = list(range(int(args[0]), int(args[1]) + 1))
        elif kind == "choice":
            out[key] = list(args)
        else:
            sample = ray.tune.loguniform if kind == "loguniform" else ray.tune.uniform
            out[key] = sample(float(args[0]), float(args[1]))
    return out


def bounds(s: Sweep) -> dict[str, Any]:
    """PB2's ``hyperparam_bounds``. PB2 truncates a new value to the type of the old one, so an int
    range ``[a, b]`` is searched as ``[a, b + 1)`` to give ``b`` its share (then clipped to ``b``)."""
    out = {}
    for key in s.mutated:
        kind, args = next(iter(s.space[key].items()))
        out[key] = [float(args[0]), float(args[1]) + (0.999 if kind == "int" else 0.0)]
    return out


class _AtPerturbationEpochs:
    """Passes a result to the population scheduler only at a perturbation epoch (see the module).

    Synchronous mode: a restored sweep starts a new scheduler (its next sync point the first
    interval) with members already past it; Ray 2.60 then sets the next sync point to the epoch
    they all reached, which none is below, and every member stays paused (ray-project/ray#48616).
    The next sync point is moved up to the epoch a member reports at instead.
    """

    epochs: tuple[int, ...] = ()
    _synch: bool
    _next_perturbation_sync: float

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch = int(result.get("epoch") or 0)
        if epoch not in self.epochs or result.get("replayed"):
            return TrialScheduler.CONTINUE
        if self._synch and epoch > self._next_perturbation_sync:
            self._next_perturbation_sync = epoch
        return super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]


class EpochPBT(_AtPerturbationEpochs, PopulationBasedTraining):
    pass


@functools.cache
def _epoch_pb2() -> type:
    """``EpochPB2``, made on first use: PB2 imports scikit-learn and SciPy's stats (about 1.5-2 s), which
    every trial and evaluation process of a sweep that is not PB2 would pay for at start-up."""
    from ray.tune.schedulers.pb2 import PB2

    names = {"__module__": __name__, "__qualname__": "EpochPB2"}
    return type("EpochPB2", (_AtPerturbationEpochs, PB2), names)


def __getattr__(name: str) -> Any:  # PEP 562: ``population.EpochPB2`` (how pickle finds the class)
    if name == "EpochPB2":
        return _epoch_pb2()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def population_scheduler(s: Sweep) -> PopulationBasedTraining:
    """The sweep's PBT or PB2 scheduler (``time_attr="epoch"``, maximising the proxy)."""
    sw = s.sweep
    common: dict[str, Any] = {
        "time_attr": "epoch",
        "metric": PROXY_METRIC,
        "mode": "max",
        "perturbation_interval": sw.perturbation_interval,
        "quantile_fraction": sw.quantile_fraction,
        "synch": sw.synch,
        "custom_explore_fn": Clip(s.space, s.mutated),
    }
    scheduler: PopulationBasedTraining
    if sw.scheduler == "pb2":
        scheduler = _epoch_pb2()(hyperparam_bounds=bounds(s), **common)
    else:
        scheduler = EpochPBT(
            hyperparam_mutations=mutations(s), resample_probability=sw.resample_probability, **common
        )
    assert isinstance(scheduler, _AtPerturbationEpochs)
    scheduler.epochs = perturbation_epochs(s)
    return scheduler
