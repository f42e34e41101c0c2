"""The sweep's Tuner (:func:`build_tuner`): its trainable with resources, Tune's search space, Optuna
(or a population's draws) and ASHA (or FIFO, PBT, PB2), and its callbacks: the post-hoc evaluations,
the live table, the trackers and the result files. :mod:`acl_ray.orchestration.tune` runs it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher

from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.epochs import PROXY_METRIC
from acl_ray.orchestration.live_table import TrialTable
from acl_ray.orchestration.population import population_scheduler
from acl_ray.orchestration.posthoc import Notify, Posthoc
from acl_ray.orchestration.resources import concurrency, experiment_path, trial_resources
from acl_ray.orchestration.result_files import CsvLogger, JsonLogger
from acl_ray.orchestration.search import build_searcher, reference_points
from acl_ray.orchestration.study import PosthocToStudy, new_study_storage, study_name
from acl_ray.orchestration.trial import in_process, make_trainable

# Tune writes each trial's result.json in a staging folder on the driver and copies it into the sweep
# folder at most every sync_period (300 s by default): a live sweep folder (acl-ray analyze, the fault
# benchmarks) lagged a whole trial behind on a slow machine. Copied at every experiment save instead.
LIVE_SYNC = ray.tune.SyncConfig(sync_period=5)
# The searcher's metric is only reported at a trial's last epoch (the full protocol); per-epoch
# results carry the proxy instead. Tune would otherwise reject those results.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Tune's legacy console output, which verbose=0 silences; the new one prints its experiment box and
# a TensorBoard hint whatever the verbosity. The sweep draws its own table (live_table.TrialTable).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


class EpochBudget(ray.tune.Stopper):
    """Ends the sweep once its trials have trained ``budget`` epochs in all (``sweep.budget_epochs``).

    Each trial counts its highest reported ``epoch`` once: a row reported again (``replayed`` after a
    restore) or epochs trained again from an older checkpoint add nothing. Tune saves the stopper
    with its experiment state, so a resumed sweep keeps the count.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.epochs: dict[str, int] = {}  # trial id -> highest epoch reported

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.epochs[trial_id] = max(self.epochs.get(trial_id, 0), int(result.get("epoch") or 0))
        return False  # no single trial is stopped; stop_all ends them all

    @property
    def spent(self) -> int:
        return sum(self.epochs.values())

    def stop_all(self) -> bool:
        return self.spent >= self.budget


def to_tune(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Tune domains for a validated spec (``int`` is inclusive of its upper end)."""
    out: dict[str, Any] = {}
    for key, dist in spec.items():
        kind, args = next(iter(dist.items()))
        if kind == "int":
            out[key] = ray.tune.randint(int(args[0]), int(args[1]) + 1)
        elif kind == "uniform":
            out[key] = ray.tune.uniform(float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[key] = ray.tune.loguniform(float(args[0]), float(args[1]))
        else:
            out[key] = ray.tune.choice(list(args))
    return out


def search_and_scheduler(s: Sweep, out: Path) -> tuple[Searcher | SearchAlgorithm, Any]:
    """Optuna (its study in ``s.study_url(out)``) and ASHA (or FIFO); for a population sweep, Tune's
    random draws (the reference points first) and PBT / PB2."""
    if not s.mutated:
        return build_searcher(s, new_study_storage(s, out), study_name(out)), asha(s)
    draws = BasicVariantGenerator(points_to_evaluate=reference_points(s), random_state=s.sweep.seed)
    return draws, population_scheduler(s)


def asha(s: Sweep) -> Any:
    sw = s.sweep
    if sw.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(
        metric=PROXY_METRIC,
        mode="max",
        time_attr="epoch",
        max_t=s.base.run.epochs,
        grace_period=min(sw.grace_period, s.base.run.epochs),
        reduction_factor=sw.reduction_factor,
        stop_last_trials=False,
    )


def build_tuner(
    s: Sweep,
    out: Path,
    restore: bool = False,
    data: ray.ObjectRef | None = None,
    callbacks: Sequence[Any] = (),
    reuse_actors: bool = True,
) -> ray.tune.Tuner:
    """The sweep's Tuner (or the restored one); ``data``: the base datasets in the object store.

    ``reuse_actors``: a finished or stopped 1-worker trial's process (torch and acl_ray imported)
    runs the next trial; Tune ends such a trial at its report, so the actor can be reset. (A
    TorchTrainer's driver waits in ``fit()``, which Tune cannot end: those actors are not reused.)
    """
    sw = s.sweep
    storage = experiment_path(s, out)
    own, _ = trial_resources(s)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(make_trainable(s.to_dict(), storage), shared={"data": data}), own
    )
    if restore:
        return ray.tune.Tuner.restore(storage, trainable, resume_unfinished=True, resume_errored=True)
    table = TrialTable(list(s.space), PROXY_METRIC, s.base.run.epochs)
    search_alg, scheduler = search_and_scheduler(s, out)
    trackers: list[Any] = []
    if s.sweep.tracking:  # (importing the trackers imports mlflow and wandb)
        from acl_ray.orchestration.trackers import tracking_callbacks

        trackers = tracking_callbacks(s, out)
    url = s.study_url(out)
    # who hears of a post-hoc evaluation (its start, its numbers): the table, the study, the trackers
    listeners: list[Notify] = [table.posthoc, *([PosthocToStudy(url, study_name(out))] if url else [])]
    listeners += [t.posthoc for t in trackers]
    return ray.tune.Tuner(
        trainable,
        param_space=to_tune(s.space),
        tune_config=ray.tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=sw.num_samples,
            max_concurrent_trials=concurrency(s),
            reuse_actors=reuse_actors and in_process(s),
        ),
        run_config=ray.tune.RunConfig(
            name=out.name,
            storage_path=str(out.parent) if not sw.storage else sw.storage,
            verbose=0,  # the console is TrialTable's; Ray's worker output is in DIR/logs
            failure_config=ray.tune.FailureConfig(max_failures=sw.max_failures),
            sync_config=LIVE_SYNC,
            stop=EpochBudget(sw.budget_epochs) if sw.budget_epochs else None,
            # Posthoc first: when Tune ends it waits for the evaluations while the table still draws, and
            # a tracker hears that a stopped trial's evaluation runs before the trial's end reaches it.
            # (JsonLogger, CsvLogger: Tune's own, without losing rows when a trial starts again)
            callbacks=[
                Posthoc(s, out, listeners, data), table, *trackers, *callbacks, JsonLogger(), CsvLogger()
            ],
        ),
    )


def fit(tuner: ray.tune.Tuner) -> None:
    """``tuner.fit()``, with this process's Ctrl-C handler as it was before.

    Tune installs its own for the run (the first Ctrl-C ends the run gracefully: state saved, trials
    stopped) and leaves it there when the run ends on its own; a Ctrl-C in the work after the run
    (the last post-hoc evaluations, the analysis) would then only set the finished run's flag.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
    finally:
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)  # [Tune] may only be installed from the main thread
