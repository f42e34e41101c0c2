"""The sweep's trackers: Ray Tune's MLflow and W&B logger callbacks, adapted to a sweep.

What they log, where, and the defaults: :mod:`acl_ray.orchestration.tracking`. Importing this module
imports mlflow and wandb: only a sweep that tracks does (:func:`tracking_callbacks`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node

from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.tracking import CONFIG_FILE, MLFLOW_ARTIFACTS, check_extras, mlflow_uri, wandb_mode


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _epoch(result: dict[str, Any] | None) -> int:
    return int((result or {}).get("epoch") or 0)


class _EndsAfterPosthoc:
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
            self._log_final(trial, {k: v for k, v in metrics.items() if _number(v)})
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


def _trial_config(s: Sweep, trial: Any) -> str:
    return yaml.safe_dump(s.base.override(dict(trial.config)).to_dict(), sort_keys=False)


class MlflowTracker(_EndsAfterPosthoc, MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback`` for a sweep (module docstring). Each row is one ``log_batch``
    (one transaction), not one call per metric."""

    def __init__(self, s: Sweep, out: Path) -> None:
        super().__init__(tracking_uri=mlflow_uri(out), experiment_name=out.name, tags={"sweep": str(out)})
        self.s = s
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
        self.mlflow_util.setup_mlflow(self.tracking_uri, experiment_name=name, artifact_location=artifacts)
        super().setup(*args, **kwargs)
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
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in trial.config.items()])
            client.log_text(run_id, _trial_config(self.s, trial), CONFIG_FILE)
        self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get("replayed"):
            return
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        self._log(trial, {k: v for k, v in result.items() if _number(v)}, _epoch(result))

    def _log(self, trial: Any, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self._trial_runs[trial], metrics=batch)

    def _log_final(self, trial: Any, metrics: dict[str, float]) -> None:
        self._log(trial, metrics, _epoch(trial.last_result))
        self._client.set_tag(self._trial_runs[trial], "eval/source", "posthoc")

    def _end(self, trial: Any, failed: bool) -> None:
        if trial in self._trial_runs:
            self._client.set_terminated(self._trial_runs[trial], "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._end_held()
        super().on_experiment_end(trials, **info)


class _WandbRun(_WandbLoggingActor):
    """Ray's W&B logging actor, one per trial, logging each row at its ``epoch`` and saving the
    trial's config file with the run."""

    def run(self) -> None:
        os.environ["WANDB_START_METHOD"] = "thread"  # as Ray's: a thread of this actor, no fork
        run = self._wandb.init(*self.args, **self.kwargs)
        while True:
            kind, item = self.queue.get()
            if kind == _QueueItem.END:
                break
            if kind == CONFIG_FILE:  # files in the run's folder are saved with it (synced later offline)
                Path(run.dir, CONFIG_FILE).write_text(item)
            elif kind == _QueueItem.RESULT:
                log, config = self._handle_result(item)
                run.config.update(config, allow_val_change=True)
                run.log(log, step=_epoch(item))
        run.finish()


class WandbTracker(_EndsAfterPosthoc, WandbLoggerCallback):
    """Ray's ``WandbLoggerCallback`` for a sweep (module docstring)."""

    _logger_actor_cls = _WandbRun

    def __init__(self, s: Sweep, out: Path) -> None:
        super().__init__(
            project=os.environ.get("WANDB_PROJECT") or "acl-ray",
            group=out.name,
            mode=wandb_mode(),
            dir=str(out),  # runs in DIR/wandb/
            resume="allow",  # a resumed sweep's trial continues its run (online)
            # The logging actor runs on the driver's node, in the trial folder: the machine's metrics
            # it would sample every few seconds are not the trial's, it has no git repository, code or
            # console of its own to record.
            settings={"x_disable_stats": True, "disable_git": True, "disable_code": True, "console": "off"},
        )
        self.s = s
        self._hold_init()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.kwargs["mode"] != "offline":  # Ray's set-up looks for an API key: offline needs none
            super().setup(*args, **kwargs)
        # The logging actor as Ray makes it, but not restarted by Ray: its constructor takes the trial's
        # queue (an actor handle), with which Ray prints an error line on the terminal for a restartable
        # actor (ray-project/ray#53727). One that dies leaves its run unfinished; the trial goes on.
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, **dict(_force_on_current_node())}  # type: ignore[arg-type]
        if os.environ.get("WANDB_API_KEY"):  # (none: the default worker environment, which Ray may reuse)
            options["runtime_env"] = {"env_vars": {"WANDB_API_KEY": os.environ["WANDB_API_KEY"]}}
        self._remote_logger_class = ray.remote(**options)(self._logger_actor_cls)  # type: ignore[assignment]

    def log_trial_start(self, trial: Any) -> None:
        new = trial not in self._trial_logging_futures
        super().log_trial_start(trial)
        if new:
            self._trial_queues[trial].put((CONFIG_FILE, _trial_config(self.s, trial)))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if not result.get("replayed"):
            super().log_trial_result(iteration, trial, result)

    def _log_final(self, trial: Any, metrics: dict[str, float]) -> None:
        if trial in self._trial_queues:
            final = {**metrics, "epoch": _epoch(trial.last_result)}
            self._trial_queues[trial].put((_QueueItem.RESULT, final))

    def _end(self, trial: Any, failed: bool) -> None:
        if trial in self._trial_queues:
            WandbLoggerCallback.log_trial_end(self, trial, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._end_held()
        super().on_experiment_end(trials, **info)  # waits for the runs to finish writing (uploading)


def tracking_callbacks(s: Sweep, out: Path) -> list[Any]:
    """The trackers ``sweep.tracking`` names, in its order (Tune callbacks)."""
    check_extras(s)
    trackers = {"mlflow": MlflowTracker, "wandb": WandbTracker}
    return [trackers[name](s, out) for name in s.sweep.tracking]
