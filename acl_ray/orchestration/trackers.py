"""The sweep's trackers, Tune logger callbacks: Ray's MLflow one adapted to a sweep (here), and a W&B
one of our own that logs every trial's run through one actor for the whole sweep (Ray's starts two
actors per trial: :mod:`acl_ray.orchestration.wandb_tracker`); :func:`tracking_callbacks` makes them.

What they log, where, and the defaults: :mod:`acl_ray.orchestration.tracking`. Importing this module
imports mlflow (wandb is imported by the W&B logging actor, and by the log-in check of a sweep that
logs online): only a sweep that tracks does (:func:`tracking_callbacks`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.tracker_base import EndsAfterPosthoc, Trained, epoch_of, number
from acl_ray.orchestration.tracking import CONFIG_FILE, MLFLOW_ARTIFACTS, check_extras, mlflow_uri
from acl_ray.orchestration.wandb_tracker import WandbTracker
from acl_ray.results.confirm import CONFIRM_DIR

_Trained = Trained  # its name in the tuner.pkl of tracked sweeps started before tracker_base.py (--resume)


class MlflowTracker(EndsAfterPosthoc, MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback`` for a sweep (module docstring). Each row is one ``log_batch``
    (one transaction), not one call per metric."""

    def __init__(self, s: Sweep, out: Path, plan: list[dict[str, Any]] | None = None) -> None:
        # a confirmation's runs: an experiment of their own beside the search's, in the same store
        name = out.name if plan is None else f"{out.name}/{CONFIRM_DIR}"
        super().__init__(tracking_uri=mlflow_uri(out), experiment_name=name, tags={"sweep": str(out)})
        self.s, self.trained = s, Trained(s, plan)
        # artifacts beside the default store (else ./mlruns of the working directory); a server has its own
        local = not os.environ.get("MLFLOW_TRACKING_URI")
        self.artifacts = (out / MLFLOW_ARTIFACTS).as_uri() if local else None
        self._hold_init()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        # not "Creating initial MLflow database tables..." on the sweep's terminal (mlflow set its level
        # to INFO when it was imported)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        name, artifacts = self.experiment_name, self.artifacts
        users = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            util = self.mlflow_util
            util.setup_mlflow(self.tracking_uri, experiment_name=name, artifact_location=artifacts)
            super().setup(*args, **kwargs)
        finally:
            # mlflow.set_tracking_uri exports the store in MLFLOW_TRACKING_URI for subprocesses; left there,
            # the next sweep in this process (a confirmation, a notebook's next sweep) would take it for
            # the user's server: its runs in this sweep's store, its artifacts in ./mlruns
            if users is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = users
        self._client = MlflowClient(tracking_uri=self.tracking_uri)

    def log_trial_start(self, trial: Any) -> None:
        from mlflow.entities import Param

        if trial in self._trial_runs:
            return
        client, experiment = self._client, str(self.mlflow_util.experiment_id)
        found = client.search_runs([experiment], f"tags.trial_id = '{trial.trial_id}'", max_results=1)
        if found:  # a resumed sweep: the trial's run goes on
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            tags = {**(self.tags or {}), "trial_id": trial.trial_id, "trial_name": str(trial)}
            run_id = client.create_run(experiment, tags=tags, run_name=str(trial)).info.run_id
            params = [Param(k, str(v)) for k, v in self.trained.params(trial).items()]
            client.log_batch(run_id, params=params)
            client.log_text(run_id, self.trained.config_file(trial), CONFIG_FILE)
        self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get("replayed"):
            return
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        self._log(trial, {k: v for k, v in result.items() if number(v)}, epoch_of(result))

    def _log(self, trial: Any, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self._trial_runs[trial], metrics=batch)

    def _log_final(self, trial: Any, metrics: dict[str, float]) -> None:
        self._log(trial, metrics, epoch_of(trial.last_result))
        self._client.set_tag(self._trial_runs[trial], "eval/source", "posthoc")

    def _end(self, trial: Any, failed: bool) -> None:
        if trial in self._trial_runs:
            self._client.set_terminated(self._trial_runs[trial], "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._end_held()
        super().on_experiment_end(trials, **info)


def tracking_callbacks(s: Sweep, out: Path, plan: list[dict[str, Any]] | None = None) -> list[Any]:
    """The trackers ``sweep.tracking`` names, in its order (Tune callbacks): of the search, or, given
    its ``plan``, of the sweep's confirmation."""
    check_extras(s)
    trackers = {"mlflow": MlflowTracker, "wandb": WandbTracker}
    return [trackers[name](s, out, plan) for name in s.sweep.tracking]
