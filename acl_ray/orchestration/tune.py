"""Ray Tune + Optuna sweeps over ACL's knobs, reporting standard and robust accuracy per trial.

Each trial is a Tune function (:mod:`acl_ray.orchestration.trial`): a 1-worker trial trains in that
process, a multi-worker one runs a TorchTrainer named after the trial id. Every epoch with a proxy
reports ``proxy/robust_acc`` (ASHA's signal, ``time_attr="epoch"``) and the last epoch reports the
full protocol (``val/*`` for selection, ``eval/*`` on test). Trials that ASHA stops get the same
full protocol from their last checkpoint, as Ray tasks started while the other trials still train
(:mod:`acl_ray.orchestration.posthoc`), so every trial ends with ``eval/standard_acc`` and
``eval/robust_acc``. When the sweep ends, ``DIR/summary.json`` and ``DIR/analysis/`` are written.

``sweep.scheduler: pbt | pb2`` replaces Optuna and ASHA by a population that changes its values while
it trains (:mod:`acl_ray.orchestration.population`); such a sweep also writes its learned schedules,
``DIR/schedules.json`` and ``DIR/best_schedule.yaml`` (:mod:`acl_ray.results.schedules`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.run_dir import require_empty
from acl_ray.config.space import validate_space
from acl_ray.config.sweep import SWEEP_FILE, Sweep
from acl_ray.console import console, log
from acl_ray.orchestration.cluster import reclaim_orphaned_placement_groups
from acl_ray.orchestration.confirm import run_confirmation
from acl_ray.orchestration.epochs import PROXY_METRIC
from acl_ray.orchestration.experiment import local_experiment
from acl_ray.orchestration.live_table import TrialTable
from acl_ray.orchestration.population import population_scheduler
from acl_ray.orchestration.posthoc import Notify, Posthoc, complete_missing
from acl_ray.orchestration.ray_train import ensure_ray
from acl_ray.orchestration.resources import concurrency, experiment_path, trial_resources
from acl_ray.orchestration.result_files import CsvLogger, JsonLogger

# ProxyOptunaSearch: also for the tuner.pkl of sweeps started when it was defined here (--resume)
from acl_ray.orchestration.search import ProxyOptunaSearch, build_searcher, reference_points  # noqa: F401
from acl_ray.orchestration.study import (
    PosthocToStudy,
    new_study_storage,
    record_posthoc,
    stored_study,
    study_name,
)
from acl_ray.orchestration.sweep_logs import keep_logs, link_logs
from acl_ray.orchestration.tracking import check_extras, hints
from acl_ray.orchestration.trial import in_process, make_trainable
from acl_ray.results.confirm import CONFIRM_DIR, PLAN_FILE
from acl_ray.results.schedules import BEST_SCHEDULE_FILE, write_schedules
from acl_ray.results.summary import SUMMARY_FILE, summary_rows, write_summary
from acl_ray.results.trials import POSTHOC_DIR, read_trials

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


def run_sweep(
    s: Sweep, out: str | Path, address: str | None = None, verbose: bool = False, analysis: bool = True
) -> list[dict[str, Any]]:
    """Run a new sweep into ``out`` (refused if it exists) and return one summary row per trial.

    ``verbose``: Ray's worker output on the terminal too (else only in ``out/logs``). ``analysis``:
    write ``out/analysis/`` (``acl-ray analyze`` with its default selection) at the end.
    """
    check_extras(s)
    out = require_empty(Path(out).resolve(), "use --resume or another --out")
    data = load_datasets(s.base.data)
    validate_space(s.space, s.base, len(data.train))
    started = ensure_ray(address, quiet=not verbose)
    _quiet(verbose)
    try:
        concurrency(s)  # fails here, before anything is written, if no trial fits
        if s.sweep.study_storage:  # likewise a shared storage that holds this sweep's study name already
            new_study_storage(s, out)
        out.mkdir(parents=True, exist_ok=True)
        s.save(out)
        ref = ray.put(data)
        return _fit(s, out, build_tuner(s, out, data=ref), analysis, ref)
    finally:
        _end(out, started)


def resume_sweep(
    out: str | Path, address: str | None = None, verbose: bool = False, analysis: bool = True
) -> list[dict[str, Any]]:
    """Continue a killed sweep: finished trials are kept, unfinished ones resume from checkpoints."""
    out = Path(out).resolve()
    if not (out / SWEEP_FILE).is_file():
        raise ValueError(f"{str(out)!r} is not a sweep folder (no {SWEEP_FILE})")
    from acl_ray.config.sweep import load_sweep

    s = load_sweep(out / SWEEP_FILE)
    if not ray.tune.Tuner.can_restore(experiment_path(s, out)):
        raise ValueError(f"{str(out)!r} is not a sweep folder (no Tune experiment state)")
    check_extras(s)
    started = ensure_ray(address, quiet=not verbose)
    _quiet(verbose)
    try:
        if address:  # a cluster that stayed up may still hold the killed driver's reservations
            freed = reclaim_orphaned_placement_groups()
            if freed:
                log(f"gave back {len(freed)} placement group(s) left by the killed sweep driver")
        data = ray.put(load_datasets(s.base.data))
        return _fit(s, out, build_tuner(s, out, restore=True, data=data), analysis, data)
    finally:
        _end(out, started)


def _quiet(verbose: bool) -> None:
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "[I ...] A new study created" lines


def _fit(
    s: Sweep, out: Path, tuner: ray.tune.Tuner, analysis: bool, data: ray.ObjectRef | None
) -> list[dict[str, Any]]:
    logs = link_logs(out)
    log(f"sweep {out}: Ray's worker logs in {logs or 'the Ray session folder'}")
    tuner.fit()
    study = _study_url(s, out)
    rows = summarize(s, out, study)
    watch = [f"Optuna study {study_name(out)!r} in {study}: acl-ray dashboard {out}"] if study else []
    for line in [*watch, *hints(s, out)]:
        console.print(line, markup=False, soft_wrap=True)  # commands to copy: verbatim, never wrapped
    if s.sweep.confirm.top_k or _confirming(out):
        run_confirmation(s, out, rows, data)
    if analysis:
        _analyze(out)
    return rows


def _confirming(out: Path) -> bool:
    """A confirmation was started in ``out`` (by ``acl-ray confirm``): a resumed sweep finishes it."""
    return (out / CONFIRM_DIR / PLAN_FILE).is_file()


def confirm_sweep(
    out: str | Path,
    address: str | None = None,
    verbose: bool = False,
    overrides: Sequence[str] = (),
    analysis: bool = True,
) -> dict[str, Any]:
    """``acl-ray confirm DIR``: confirm a finished sweep (or finish an interrupted confirmation).

    ``overrides``: ``sweep.confirm.*`` settings (``--set``) for a confirmation not started yet; a
    started one keeps its plan.
    """
    out = Path(out).resolve()
    if not (out / SWEEP_FILE).is_file():
        raise ValueError(f"{str(out)!r} is not a sweep folder (no {SWEEP_FILE})")
    from acl_ray.config.sweep import load_sweep

    bad = [o for o in overrides if not o.startswith("sweep.confirm.")]
    if bad:
        raise ValueError(f"Illegal --set {bad[0]!r}: acl-ray confirm takes sweep.confirm.* keys only")
    s = load_sweep(out / SWEEP_FILE, overrides)
    if not s.sweep.confirm.top_k and not s.sweep.confirm.controls and not _confirming(out):
        raise ValueError("Illegal sweep.confirm: top_k is 0 and there are no controls; nothing to confirm")
    if not (out / SUMMARY_FILE).is_file():
        raise ValueError(f"{str(out)!r} has no {SUMMARY_FILE}: finish it first (acl-ray sweep --resume)")
    started = ensure_ray(address, quiet=not verbose)
    _quiet(verbose)
    try:
        rows = json.loads((out / SUMMARY_FILE).read_text())["trials"]
        conf = run_confirmation(s, out, rows, ray.put(load_datasets(s.base.data)))
        if analysis:
            _analyze(out)
        return conf
    finally:
        _end(out, started)


def _analyze(out: Path) -> None:
    from acl_ray.results.analyze import analyze

    try:
        chosen = analyze(out, show=False)
        log(f"analysis (selected trial {chosen['trial_id']}): {out / 'analysis' / 'report.md'}")
    except ValueError as e:  # e.g. no trial finished: the summary says why
        log(f"no analysis: {e}")


def _end(out: Path, started: bool) -> None:
    if out.is_dir():
        keep_logs(out)
    if started:
        ray.shutdown()


def _study_url(s: Sweep, out: Path) -> str | None:
    """The storage URL of the sweep's Optuna study, if it holds one (not a population sweep's, nor
    one started before studies were kept)."""
    url = s.study_url(out)
    return url if url and stored_study(url, study_name(out)) else None


def summarize(s: Sweep, out: Path, study: str | None) -> list[dict[str, Any]]:
    """One row per trial (final protocol for every trial), written to ``out/summary.json``; the post-hoc
    numbers also into the Optuna study at ``study`` (:func:`_study_url`).

    Called once ``Tuner.fit()`` has returned, so Tune's saved experiment state is final: trial
    folders it does not list (lost when a killed sweep was restored) are not trials of the sweep.
    """
    with local_experiment(experiment_path(s, out)) as experiment:
        trials = read_trials(experiment, posthoc=out / POSTHOC_DIR, unsaved=False)
    rows = complete_missing(s, out, summary_rows(s, trials))
    if study:  # also those evaluated by complete_missing
        record_posthoc(study, study_name(out), [r for r in rows if r["eval/source"] == "posthoc"])
    best = write_summary(s, out, rows)
    if s.mutated:
        write_schedules(s, out, trials, best)
        if (out / BEST_SCHEDULE_FILE).is_file() and best is not None:
            log(f"learned schedule of trial {best['trial_id']}: {out / BEST_SCHEDULE_FILE} (replay: acl-ray"
                " pretrain --config)")
    return rows
