"""What the sweep's trackers share (:mod:`acl_ray.orchestration.trackers` for MLflow,
:mod:`acl_ray.orchestration.wandb_tracker` for W&B): a stopped trial's run kept open for its post-hoc
numbers, and what a trial trains (a search trial's searched values, a confirmation run's plan entry)."""

from __future__ import annotations

from typing import Any

import yaml

from acl_ray.config.sweep import Sweep
from acl_ray.results.confirm import RUN_KEY


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def epoch_of(result: dict[str, Any] | None) -> int:
    return int((result or {}).get("epoch") or 0)


class EndsAfterPosthoc:
    """A tracker whose run of an ASHA-stopped trial stays open until the trial's post-hoc numbers
    arrive. :meth:`posthoc` is a listener of :class:`~acl_ray.orchestration.posthoc.Posthoc`, which
    runs before the trackers (it is the first callback): it is told of the evaluation as the trial
    stops, then of its numbers."""

    def _hold_init(self) -> None:
        self._awaiting: set[str] = set()  # trial ids whose post-hoc evaluation runs
        self._held: dict[str, Any] = {}  # trial id -> the Trial whose run waits for it

    def posthoc(self, trial_id: str, metrics: dict[str, Any] | None) -> None:
        if metrics is None:
            self._awaiting.add(trial_id)
            return
        self._awaiting.discard(trial_id)
        trial = self._held.pop(trial_id, None)
        if trial is not None:
            self._log_final(trial, {k: v for k, v in metrics.items() if number(v)})
            self._end(trial, failed=False)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial.trial_id in self._awaiting and not failed:
            self._held[trial.trial_id] = trial
            return
        self._end(trial, failed)

    def _end_held(self) -> None:
        """The runs still waiting when the sweep ends (their post-hoc evaluation failed)."""
        for trial in list(self._held.values()):
            self._end(trial, failed=False)
        self._held.clear()

    def _log_final(self, trial: Any, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def _end(self, trial: Any, failed: bool) -> None:
        raise NotImplementedError


class Trained:
    """What a tracker's trials train: the search's trials their searched values; a confirmation's
    (``plan``: its ``plan.json``) the overrides of their plan entry (``RUN_KEY`` in their config)."""

    def __init__(self, s: Sweep, plan: list[dict[str, Any]] | None) -> None:
        self.s, self.plan = s, plan

    def _entry(self, trial: Any) -> dict[str, Any] | None:
        """A confirmation trial's plan entry; None for a search trial."""
        return None if self.plan is None else self.plan[int(trial.config[RUN_KEY])]

    def overrides(self, trial: Any) -> dict[str, Any]:
        entry = self._entry(trial)
        return dict(trial.config) if entry is None else dict(entry["overrides"])

    def params(self, trial: Any) -> dict[str, Any]:
        """The run's parameters: the overrides, and a confirmation run's labels (``trial #3 ...``)."""
        entry = self._entry(trial)
        if entry is None:
            return dict(trial.config)
        return {**entry["overrides"], "confirm/labels": ", ".join(entry["labels"])}

    def config_file(self, trial: Any) -> str:
        """The trial's resolved pre-training config (``acl-ray pretrain --config`` takes it)."""
        return yaml.safe_dump(self.s.base.override(self.overrides(trial)).to_dict(), sort_keys=False)
