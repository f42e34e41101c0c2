"""The sweep's W&B tracker: every trial's run written by one logging actor for the whole sweep
(Ray's callback starts two actors per trial): :class:`WandbTracker`. What it logs and where:
:mod:`acl_ray.orchestration.tracking`. wandb itself is imported by the logging actor, and by the
log-in check of a sweep that logs online."""

from __future__ import annotations

import logging
import os
from numbers import Number
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
from ray.air.util.node import _force_on_current_node
from ray.tune.logger import LoggerCallback

from acl_ray.config.fields import flatten
from acl_ray.config.sweep import Sweep
from acl_ray.console import log
from acl_ray.orchestration.tracker_base import EndsAfterPosthoc, Trained, epoch_of
from acl_ray.orchestration.tracking import CONFIG_FILE, wandb_mode
from acl_ray.results.confirm import CONFIRM_DIR

_log = logging.getLogger(__name__)

_NOT_LOGGED = ("done", "should_checkpoint", "config")  # as Ray's W&B callback: not in the rows
# what Ray's W&B callback puts in the run's config rather than its rows (less the row's date)
_TO_CONFIG = ("trial_id", "experiment_tag", "node_ip", "experiment_id", "hostname", "pid")
FINISH_TIMEOUT_S = 1800  # the sweep's end waits this long for the runs to finish (upload), as Ray's


def _wandb_row(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Tune result as W&B takes it: the row (numbers, nested keys joined by "/"), the run's config."""
    rest = {k: v for k, v in result.items() if k not in _NOT_LOGGED and k not in _TO_CONFIG}
    row = {k: v for k, v in flatten(rest, sep="/") if isinstance(v, Number)}
    config = {k: v for k, v in (result.get("config") or {}).items() if k != "callbacks"}
    return row, {**config, **{k: result[k] for k in _TO_CONFIG if k in result}}


class _WandbRuns:
    """The sweep's W&B logging actor: one run per trial, several open at once (``wandb.init(reinit=
    "create_new")``), each call of the driver's :class:`WandbTracker` in the order it made them. Its
    methods never raise: a run that fails to start or log is left as it is, the sweep goes on."""

    def __init__(self) -> None:
        import wandb

        self._wandb = wandb
        self._runs: dict[str, Any] = {}  # trial id -> its open run

    def start(self, trial_id: str, init: dict[str, Any], config_file: str) -> None:
        if trial_id in self._runs:
            return
        try:
            self._runs[trial_id] = run = self._wandb.init(**init, reinit="create_new")
            # the files in the run's folder are saved with it (uploaded later when offline)
            Path(run.dir, CONFIG_FILE).write_text(config_file)
        except Exception:
            _log.exception("W&B run of trial %s", trial_id)

    def log(self, trial_id: str, row: dict[str, Any], step: int, config: dict[str, Any] | None) -> None:
        run = self._runs.get(trial_id)
        if run is None:
            return
        try:
            if config:
                run.config.update(config, allow_val_change=True)
            run.log(row, step=step)
        except Exception:  # a row lost (Ray's callback: an upload error, a missing file)
            _log.exception("W&B row of trial %s at step %s", trial_id, step)

    def finish(self, trial_id: str, failed: bool) -> None:
        run = self._runs.pop(trial_id, None)
        if run is None:
            return
        try:
            run.finish(exit_code=1 if failed else 0)
        except Exception:
            _log.exception("W&B run of trial %s", trial_id)

    def finish_all(self) -> int:
        """Finishes the runs still open (and wandb's service): their files are on disk when it returns;
        the number of runs it finished."""
        left = list(self._runs)
        for trial_id in left:
            self.finish(trial_id, failed=False)
        try:
            self._wandb.teardown()
        except Exception:
            _log.exception("W&B teardown")
        return len(left)


def _start_logging_actor() -> Any:
    """A :class:`_WandbRuns` actor on this (the driver's) node; its handle."""
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, **_force_on_current_node()}  # type: ignore[dict-item]
    if os.environ.get("WANDB_API_KEY"):  # (none: the default worker environment, which Ray may reuse)
        options["runtime_env"] = {"env_vars": {"WANDB_API_KEY": os.environ["WANDB_API_KEY"]}}
    return ray.remote(**options)(_WandbRuns).remote()


class WandbTracker(EndsAfterPosthoc, LoggerCallback):
    """The W&B runs of a sweep (module docstring), written by ONE logging actor for the whole sweep
    (:class:`_WandbRuns`, started at the first trial), to which this callback sends its calls and
    moves on: start a trial's run, log a row, finish the run.

    Not Ray's ``WandbLoggerCallback``: that starts two actors per trial (a ``Queue`` and a logging
    actor, two worker processes importing Ray, the second wandb and its service), which cost about
    5.5 s of CPU per trial on a 2-core machine (a 4-trial sweep: 68 s with it, 46 s without tracking).
    What it passes to ``wandb.init`` is kept: the trial's id and name, the sweep's group, the trial's
    config, the run's config updated from the rows (``trial_id``, ``hostname``, ``pid``, ...).

    The actor runs on the driver's node, takes no CPU, is not restarted: one that dies leaves its
    runs unfinished, the trials go on, the sweep's end says so in one line."""

    def __init__(self, s: Sweep, out: Path, plan: list[dict[str, Any]] | None = None) -> None:
        self.s, self.trained = s, Trained(s, plan)
        self.mode = wandb_mode()
        confirm = plan is not None  # a confirmation's runs: a group of their own, in DIR/confirm/wandb/
        self.init: dict[str, Any] = {  # wandb.init's arguments but the trial's
            "project": os.environ.get("WANDB_PROJECT") or "acl-ray",
            "group": f"{out.name}/{CONFIRM_DIR}" if confirm else out.name,
            "job_type": "confirm" if confirm else "search",
            "mode": self.mode,
            "dir": str(out / CONFIRM_DIR if confirm else out),  # runs in DIR/wandb/
            "resume": "allow",  # a resumed sweep's trial continues its run (online)
            "allow_val_change": True,
            # The logging actor runs on the driver's node: the machine's metrics it would sample every
            # few seconds are not a trial's, it has no git repository, code or console of its own.
            "settings": {
                "x_disable_stats": True, "disable_git": True, "disable_code": True, "console": "off"
            },
        }
        self._actor: Any = None  # the logging actor, from the first trial on
        self._open: set[str] = set()  # trial ids whose run the actor holds open
        self._configs: dict[str, dict[str, Any]] = {}  # trial id -> the run config it was last sent
        self._hold_init()

    def __getstate__(self) -> dict[str, Any]:  # (the Tuner is pickled: not the run-time state)
        return {**self.__dict__, "_actor": None, "_open": set(), "_configs": {}}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.mode not in ("offline", "disabled"):  # online: a one-line error now if not logged in
            from ray.air.integrations.wandb import _set_api_key

            _set_api_key()

    def _logging_actor(self) -> Any:
        if self._actor is None and self.mode != "disabled":
            self._actor = _start_logging_actor()
        return self._actor

    def log_trial_start(self, trial: Any) -> None:
        actor = self._logging_actor()
        if trial.trial_id in self._open or actor is None:  # (a paused trial starts again: its run goes on)
            return
        config = {k: v for k, v in self.trained.params(trial).items() if k != "callbacks"}
        init = {**self.init, "id": trial.trial_id, "name": str(trial), "config": config}
        actor.start.remote(trial.trial_id, init, self.trained.config_file(trial))
        self._open.add(trial.trial_id)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get("replayed"):
            return
        if trial.trial_id not in self._open:
            self.log_trial_start(trial)
        if trial.trial_id in self._open:
            row, config = _wandb_row(result)
            changed = config != self._configs.get(trial.trial_id)
            self._configs[trial.trial_id] = config
            self._actor.log.remote(trial.trial_id, row, epoch_of(result), config if changed else None)

    def _log_final(self, trial: Any, metrics: dict[str, float]) -> None:
        if trial.trial_id in self._open:
            self._actor.log.remote(trial.trial_id, metrics, epoch_of(trial.last_result), None)

    def _end(self, trial: Any, failed: bool) -> None:
        if trial.trial_id in self._open:
            self._open.discard(trial.trial_id)
            self._configs.pop(trial.trial_id, None)
            self._actor.finish.remote(trial.trial_id, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._end_held()
        actor, self._actor = self._actor, None
        if actor is None:
            return
        try:  # its calls run in order: when this one returns, every run is finished, on disk
            ray.get(actor.finish_all.remote(), timeout=FINISH_TIMEOUT_S)
        except ray.exceptions.RayError as e:
            log(f"W&B: runs left unfinished in {self.init['dir']}/wandb: {' '.join(str(e).split())[:200]}")
        finally:
            ray.kill(actor)
            self._open.clear()
