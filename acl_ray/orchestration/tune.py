"""Ray Tune + Optuna sweeps over ACL's knobs, reporting standard and robust accuracy per trial.

Each trial is a Tune function (:mod:`acl_ray.orchestration.trial`): a 1-worker trial trains in that
process, a multi-worker one runs a TorchTrainer named after the trial id. Every epoch with a proxy
reports ``proxy/robust_acc`` (ASHA's signal, ``time_attr="epoch"``) and the last epoch reports the
full protocol (``val/*`` for selection, ``eval/*`` on test); :mod:`acl_ray.orchestration.tuner`
builds the Tuner, this module runs it and writes the summary. Trials that ASHA stops get the same
full protocol from their last checkpoint, as Ray tasks started while the other trials still train
(:mod:`acl_ray.orchestration.posthoc`), so every trial ends with ``eval/standard_acc`` and
``eval/robust_acc``. When the sweep ends, ``DIR/summary.json`` and ``DIR/analysis/`` are written.

``sweep.scheduler: pbt | pb2`` replaces Optuna and ASHA by a population that changes its values while
it trains (:mod:`acl_ray.orchestration.population`); such a sweep also writes its learned schedules,
``DIR/schedules.json`` and ``DIR/best_schedule.yaml`` (:mod:`acl_ray.results.schedules`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.tune

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.run_dir import require_empty
from acl_ray.config.space import validate_space
from acl_ray.config.sweep import SWEEP_FILE, Sweep
from acl_ray.console import console, log
from acl_ray.orchestration.cluster import reclaim_orphaned_placement_groups
from acl_ray.orchestration.confirm import run_confirmation
from acl_ray.orchestration.experiment import local_experiment
from acl_ray.orchestration.posthoc import complete_missing
from acl_ray.orchestration.ray_train import ensure_ray
from acl_ray.orchestration.resources import concurrency, experiment_path

# ProxyOptunaSearch: also for the tuner.pkl of sweeps started when it was defined here (--resume)
from acl_ray.orchestration.search import ProxyOptunaSearch  # noqa: F401
from acl_ray.orchestration.study import (
    new_study_storage,
    record_posthoc,
    stored_study,
    study_name,
)
from acl_ray.orchestration.sweep_logs import keep_logs, link_logs
from acl_ray.orchestration.tracking import check_extras, hints

# EpochBudget: also for the experiment state of budgeted sweeps started when it was defined here
from acl_ray.orchestration.tuner import EpochBudget, build_tuner, fit  # noqa: F401
from acl_ray.results.confirm import CONFIRM_DIR, PLAN_FILE
from acl_ray.results.schedules import BEST_SCHEDULE_FILE, write_schedules
from acl_ray.results.summary import (
    SUMMARY_FILE,
    Interrupted,
    summary_rows,
    unfinished_search,
    write_summary,
)
from acl_ray.results.trials import POSTHOC_DIR, read_trials


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
    fit(tuner)  # Ctrl-C: Tune saves its state, stops the trials and returns
    study = _study_url(s, out)
    rows = summarize(s, out, study)
    watch = [f"Optuna study {study_name(out)!r} in {study}: acl-ray dashboard {out}"] if study else []
    for line in [*watch, *hints(s, out)]:
        console.print(line, markup=False, soft_wrap=True)  # commands to copy: verbatim, never wrapped
    left = unfinished_search(s, rows)
    if left:  # no confirmation, no analysis of a search cut short: minutes of work on a partial answer
        raise Interrupted(
            f"the search in {out} stopped with {left} trial(s) unfinished, so nothing was confirmed or "
            f"analysed; continue it with: acl-ray sweep --resume {out}"
        )
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
        left = unfinished_search(s, rows)
        if left:
            raise ValueError(
                f"{str(out)!r} has {left} unfinished trial(s): finish it first (acl-ray sweep --resume)"
            )
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
