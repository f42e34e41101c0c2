"""The sweep's searcher: Optuna through Tune, told the reference points first, its study stored
(:mod:`acl_ray.orchestration.study`) and continued when the sweep is resumed."""

from __future__ import annotations

import contextlib
import typing
import warnings
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from acl_ray.config.space import warm_start_points
from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.epochs import PROXY_METRIC
from acl_ray.orchestration.study import TRIAL_ID, final_numbers


class ProxyOptunaSearch(OptunaSearch):
    """OptunaSearch whose intermediate values are the per-epoch proxy, with the final numbers as user
    attributes, and that continues a stored study when the sweep is resumed.

    A trial without the final metric (stopped by ASHA) is told to Optuna as PRUNED with those
    intermediate values, not as a finished trial with a low-fidelity value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_step: dict[str, int] = {}  # trial id -> the last epoch told as an intermediate value

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # A resumed sweep sets up its (restored) searcher again: the stored study already holds the
        # reference points (enqueued, maybe run); enqueued again, they would be run again.
        if self._storage is not None and self._study_name in optuna.study.get_all_study_names(self._storage):
            self._points_to_evaluate = []
        if not super().set_search_properties(metric, mode, config, **spec):
            return False
        study = typing.cast(optuna.Study, self._ot_study)
        if not study.metric_names:  # optuna-dashboard's axes say "val/robust_acc", not "Objective 0"
            with warnings.catch_warnings():  # (set_metric_names is marked experimental)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metric if isinstance(self.metric, list) else [self.metric])
        return True

    def restore(self, checkpoint_path: str) -> None:
        """The state saved with the experiment, then: a trial the stored study holds as running but
        this state never asked for was started after the last save by a driver that was killed; Tune
        will not resume it (it does not know it either), so the study records it as failed."""
        super().restore(checkpoint_path)
        self.__dict__.setdefault("_last_step", {})  # a searcher saved before it had one
        if self._storage is None:
            return
        study = typing.cast(optuna.Study, self._ot_study)  # set up before Tune restores a searcher
        asked = {t.number for t in self._ot_trials.values()}
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for lost in [t for t in running if t.number not in asked]:
            study.tell(lost.number, state=optuna.trial.TrialState.FAIL)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(TRIAL_ID, trial_id)  # Optuna's trial -> Tune's trial
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or PROXY_METRIC not in result or trial_id not in self._ot_trials:
            return
        if result.get("replayed"):  # a restored trial's earlier rows again: Optuna has their steps
            return
        epoch = int(result.get("epoch", 0))
        if epoch <= self._last_step.get(trial_id, -1):  # trained again after a restore: reported already
            return
        self._last_step[trial_id] = epoch
        # (UpdateFinishedTrialError: the study has it finished, told before the sweep was killed but
        # after the searcher's state was last saved)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._ot_trials[trial_id].report(result[PROXY_METRIC], epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if trial_id in self._ot_trials and trial_id not in self._completed_trials and result:
            # The result ASHA stops a trial on reaches the searcher here, not through on_trial_result:
            # its proxy is the pruned trial's last intermediate value (the one Optuna ranks it by).
            self.on_trial_result(trial_id, result)
            try:
                for key, value in {**final_numbers(result), "epoch": result.get("epoch")}.items():
                    self._ot_trials[trial_id].set_user_attr(key, value)
            except optuna.exceptions.UpdateFinishedTrialError:  # as in on_trial_result: told already
                self._completed_trials.add(trial_id)
                return
        if result and any(m not in result for m in metrics):
            result = None  # -> PRUNED (or FAIL on error) in OptunaSearch
        super().on_trial_complete(trial_id, result, error)


def startup_trials(s: Sweep) -> int:
    """TPE's start-up trials: the enqueued reference points, then a few random ones (2 up to 100
    trials, 10 from 100 on, Optuna's default) before the model proposes every trial."""
    refs = len(warm_start_points(s.space, s.base)) if s.sweep.paper_point else 0
    return s.sweep.startup_trials or refs + max(2, min(10, s.sweep.num_samples // 10))


def reference_points(s: Sweep) -> list[dict[str, Any]] | None:
    """The first trials of a sweep with ``sweep.paper_point`` (``warm_start_points``), else None."""
    return [p for _, p in warm_start_points(s.space, s.base)] if s.sweep.paper_point else None


def build_searcher(
    s: Sweep, storage: optuna.storages.BaseStorage | None = None, name: str | None = None
) -> OptunaSearch:
    """Optuna through Tune, told the reference points first (``sweep.paper_point``): the paper's,
    and DynACL / DynACL-AIR where the space holds their keys, clipped into it. ``storage`` and
    ``name``: where the study is kept (None: in memory, pickled with the searcher only)."""
    sw = s.sweep
    points = reference_points(s)
    where: dict[str, Any] = {"storage": storage, "study_name": name, "points_to_evaluate": points}
    if sw.searcher == "nsga2":
        metrics = ["val/standard_acc", "val/robust_acc"] + (["time/train_s"] if sw.cost_objective else [])
        modes = ["max", "max"] + (["min"] if sw.cost_objective else [])
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(
            population_size=max(4, sw.num_samples // 3), seed=sw.seed
        )
        return ProxyOptunaSearch(metric=metrics, mode=modes, sampler=sampler, **where)
    if sw.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=sw.seed)
    elif sw.searcher == "gp":  # Bayesian optimisation (needs torch, which the trials need anyway)
        sampler = optuna.samplers.GPSampler(n_startup_trials=startup_trials(s), seed=sw.seed)
    else:
        sampler = optuna.samplers.TPESampler(n_startup_trials=startup_trials(s), seed=sw.seed)
    return ProxyOptunaSearch(metric=sw.metric, mode="max", sampler=sampler, **where)
