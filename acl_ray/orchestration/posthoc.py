"""The full protocol for trials that ASHA stopped, from their last checkpoint, as Ray tasks.

Every trial of a sweep ends with ``eval/standard_acc`` and ``eval/robust_acc``: those that ran to
the last epoch reported them; the others are evaluated here, once, and cached in
``<sweep>/posthoc/<trial_id>.json`` (which :mod:`acl_ray.results.trials` reads back).

:class:`Posthoc` (a Tune callback) launches a trial's evaluation as soon as the trial stops, so it
runs while other trials still train. On CPU sweeps the task reserves no CPU: it starts at once,
with ``cpus_per_worker`` threads, sharing the cores with the running trials for the seconds it takes
(it is short next to a trial). Reserving a CPU made it wait for the end of the sweep: Tune keeps
the stopped trial's process for the next trial (``reuse_actors``), so a CPU never came free while
trials were pending. On GPU sweeps it asks for ``gpus_per_worker`` GPUs (a device cannot be shared
through Ray's logical resources) and so waits for one. The sweep waits for the outstanding ones
when Tune is done; :func:`complete_missing`
covers what is left (trials stopped in an earlier run of a resumed sweep).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
import ray.tune

from acl_ray.config.sweep import Sweep
from acl_ray.console import log
from acl_ray.orchestration.ray_train import local_dashboard
from acl_ray.orchestration.trial import shares_data
from acl_ray.results.summary import FINISHED
from acl_ray.results.trials import POSTHOC_DIR, write_json

# (trial id, None when its evaluation starts / metrics when they are in): how the live table, the
# Optuna study and the trackers hear of it
Notify = Callable[[str, dict[str, Any] | None], None]


def _posthoc(
    checkpoint_path: str, final: dict[str, Any], data_cfg: dict[str, Any], data: Any, threads: int
) -> dict[str, Any]:
    from ray.train import Checkpoint

    from acl_ray.algorithm.checkpoint import load_checkpoint
    from acl_ray.algorithm.data import load_datasets
    from acl_ray.algorithm.finetune import finetune_state
    from acl_ray.algorithm.runtime import resolve_device, set_threads
    from acl_ray.config.pretrain import DataConfig
    from acl_ray.config.protocols import FinetuneConfig

    set_threads(threads)
    device = resolve_device("auto")
    with Checkpoint(checkpoint_path).as_directory() as d:  # local folder, S3 or GCS
        state = load_checkpoint(d, map_location=device)
    if data is None:
        data = load_datasets(DataConfig(**data_cfg))
    return finetune_state(state, data, FinetuneConfig.from_dict(final), device)


def _reachable(path: str | None) -> bool:
    return bool(path) and ("://" in str(path) or Path(str(path)).exists())  # remote: checked when loaded


def _launch(
    s: Sweep, checkpoint_path: str, config: dict[str, Any], data: ray.ObjectRef | None
) -> ray.ObjectRef:
    """The evaluation task of the trial with (searched) ``config``; ``data``: the base datasets."""
    cfg = s.base.override(config)
    shared = data if shares_data(s.base, cfg) else None  # else the task loads the trial's own
    sw = s.sweep
    cpus = sw.cpus_per_worker if sw.gpus_per_worker else 0  # see the module docstring
    task = ray.remote(num_cpus=cpus, num_gpus=sw.gpus_per_worker)(_posthoc)
    threads = max(1, int(sw.cpus_per_worker))
    return task.remote(checkpoint_path, s.final.to_dict(), cfg.to_dict()["data"], shared, threads)


def _write(out: Path, trial_id: str, metrics: dict[str, Any]) -> None:
    cache = out / POSTHOC_DIR
    cache.mkdir(exist_ok=True)
    write_json(cache / f"{trial_id}.json", metrics)  # atomic: the live table and analyze read it


def complete_missing(
    s: Sweep, out: Path, rows: list[dict[str, Any]], data: ray.ObjectRef | None = None
) -> list[dict[str, Any]]:
    """Run the final protocol for summary rows without it (stopped early), cached in ``out/posthoc``.

    Rows whose cached result was already merged (``eval/source`` = ``posthoc``) are left alone, and
    so are trials that may train on (saved as running or pending by an interrupted sweep).
    ``data``: the base config's datasets in the object store (else each task loads them).
    """
    todo = [r for r in rows if r["eval/source"] is None and r["status"] in FINISHED
            and _reachable(r["checkpoint_path"])]  # not a trial a Ctrl-C left running: it goes on
    if todo:
        if not ray.is_initialized():
            ray.init(address="local", include_dashboard=None if local_dashboard() else False)
        refs = [
            _launch(s, r["checkpoint_path"], {k: r[k] for k in s.space if r.get(k) is not None}, data)
            for r in todo
        ]
        for r, metrics in zip(todo, ray.get(refs), strict=True):
            _write(out, r["trial_id"], metrics)
            r.update(metrics, **{"eval/source": "posthoc"})
    return rows


class Posthoc(ray.tune.Callback):
    """Launches the full protocol for each trial that completes without it (stopped by ASHA).

    Results are written to ``out/posthoc/`` as they arrive (checked at every Tune step) and all
    outstanding ones are awaited when the experiment ends. Run-time state (``data``, tasks in
    flight) is not pickled with the Tuner: a restored sweep puts the datasets again on first use.
    """

    def __init__(
        self, s: Sweep, out: Path, notify: Sequence[Notify] = (), data: ray.ObjectRef | None = None
    ) -> None:
        self.s, self.out, self.notify = s, out, list(notify)
        self._ckpt: dict[str, str] = {}  # trial id -> latest reported checkpoint
        self._pending: dict[str, ray.ObjectRef] = {}
        self._stopped: dict[str, float] = {}  # trial id -> monotonic time it stopped (for the lag)
        self._data = data  # the base datasets in the object store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ckpt": {}, "_pending": {}, "_stopped": {}, "_data": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        notify = state.get("notify")  # one listener (or None) in sweeps started before there were more
        state["notify"] = [notify] if callable(notify) else list(notify or ())
        self.__dict__.update(state)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("checkpoint_path"):
            self._ckpt[trial.trial_id] = result["checkpoint_path"]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        path = self._ckpt.get(trial.trial_id) or last.get("checkpoint_path")
        if last.get("val/robust_acc") is not None or not _reachable(path):
            return
        if self._data is None:
            from acl_ray.algorithm.data import load_datasets

            self._data = ray.put(load_datasets(self.s.base.data))
        self._pending[trial.trial_id] = _launch(self.s, str(path), dict(trial.config), self._data)
        self._stopped[trial.trial_id] = time.monotonic()
        for notify in self.notify:
            notify(trial.trial_id, None)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._pending:
            ready, _ = ray.wait(list(self._pending.values()), num_returns=len(self._pending), timeout=0)
            self._collect(ready)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._collect(list(self._pending.values()))  # blocks until every evaluation is done

    def _collect(self, refs: list[ray.ObjectRef]) -> None:
        for tid, ref in [(t, r) for t, r in self._pending.items() if r in refs]:
            del self._pending[tid]
            try:
                metrics = ray.get(ref)
            except ray.exceptions.RayError as e:  # left to complete_missing at the end
                log(f"post-hoc evaluation of trial {tid} failed: {' '.join(str(e).split())[:300]}")
                continue
            # seconds from the trial's stop to its numbers reaching the table and posthoc/
            metrics["time/posthoc_lag_s"] = round(time.monotonic() - self._stopped.pop(tid), 2)
            if self.out.is_dir():
                _write(self.out, tid, metrics)
            for notify in self.notify:
                notify(tid, metrics)
