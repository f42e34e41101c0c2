"""Confirmation of a sweep's answer: the top trials and named controls trained again from scratch.

After the search, the ``sweep.confirm.top_k`` best trials by the sweep's metric and the controls in
``sweep.confirm.controls`` (reference configurations: the ACL paper's point, the base config,
DynACL, DynACL-AIR) are each trained ``sweep.confirm.seeds`` times at full length (``run.epochs``)
with fresh seeds (``run.seed`` = 1000, 1001, ...: the same seeds for every configuration, so that
differences are paired). They run as Tune trials of their own experiment, ``DIR/confirm/``, with the
sweep's trainable, resources and final protocol, and no early stopping; ``acl-ray confirm DIR``
resumes an interrupted confirmation (Tune's restore) or confirms a finished sweep.

What is written: ``DIR/confirm/plan.json`` (what each run trains), ``DIR/confirmation.json``
(:func:`acl_ray.results.confirm.summarize_confirmation`), ``summary.json``'s ``confirmation`` and
``confirmed_best``, and ``DIR/best_config.yaml`` = the confirmed winner's resolved config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray
import ray.tune

from acl_ray.config.space import REFERENCES
from acl_ray.config.sweep import Sweep
from acl_ray.console import console, log
from acl_ray.orchestration.experiment import local_experiment
from acl_ray.orchestration.resources import concurrency, experiment_path, trial_resources
from acl_ray.orchestration.trial import in_process, make_trainable
from acl_ray.orchestration.tuner import LIVE_SYNC, fit
from acl_ray.results.confirm import (
    CONFIRM_DIR,
    CONFIRMATION_FILE,
    PLAN_FILE,
    RUN_KEY,
    confirmation_markdown,
    read_confirmation,
)
from acl_ray.results.summary import BEST_CONFIG_FILE, SUMMARY_FILE, Interrupted, unfinished
from acl_ray.results.trials import read_json, read_trials, write_json

FIRST_SEED = 1000  # confirmation seeds: 1000, 1001, ... (the search trains with run.seed)


def _label(row: dict[str, Any]) -> str:
    return f"trial #{row['trial_index']} {row['trial_id']}"


def confirm_plan(s: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per confirmation run: the top ``top_k`` rows by the sweep's metric (ties to the
    earlier trial), then the controls; configurations that resolve to the same config share runs."""
    c = s.sweep.confirm
    metric = s.sweep.metric
    ranked = sorted((r for r in rows if r.get(metric) is not None),
                    key=lambda r: (-r[metric], r["trial_index"]))
    configs: list[tuple[str, str, dict[str, Any]]] = [
        (_label(r), "trial", {k: r[k] for k in s.space if r.get(k) is not None}) for r in ranked[: c.top_k]
    ]
    configs += [(name, "control", dict(REFERENCES[name])) for name in c.controls]
    groups: list[dict[str, Any]] = []  # one per distinct resolved config
    for label, kind, overrides in configs:
        resolved = s.base.override(overrides).to_dict()
        same = next((g for g in groups if g["resolved"] == resolved), None)
        if same is None:
            groups.append({"labels": [label], "kinds": [kind], "overrides": overrides, "resolved": resolved})
        else:
            same["labels"].append(label)
            same["kinds"].append(kind)
    return [
        {"labels": g["labels"], "kinds": g["kinds"], "seed": FIRST_SEED + k,
         "overrides": {**g["overrides"], "run.seed": FIRST_SEED + k}}
        for g in groups for k in range(c.seeds)
    ]


def confirm_sweep_spec(s: Sweep) -> Sweep:
    """The sweep as its confirmation runs it: every trial to ``run.epochs``, no ASHA, the proxy only
    at the last epoch (nothing decides on it)."""
    return dataclasses.replace(
        s, sweep=s.sweep.override({"scheduler": "fifo", "proxy_every": s.base.run.epochs})
    )


def _trainable(s: Sweep, plan: list[dict[str, Any]], storage: str, data: ray.ObjectRef | None) -> Any:
    inner = make_trainable(confirm_sweep_spec(s).to_dict(), storage)
    overrides = [run["overrides"] for run in plan]

    def confirm_driver(config: dict[str, Any], shared: dict[str, Any]) -> None:
        inner(overrides[int(config[RUN_KEY])], shared)

    own, _ = trial_resources(s)
    return ray.tune.with_resources(ray.tune.with_parameters(confirm_driver, shared={"data": data}), own)


def run_confirmation(s: Sweep, out: Path, rows: list[dict[str, Any]], data: ray.ObjectRef | None) -> dict:
    """Train (or finish) the confirmation of the sweep in ``out`` on the connected Ray; returns the
    statistics and writes them (see the module docstring)."""
    folder = out / CONFIRM_DIR
    folder.mkdir(exist_ok=True)
    plan = read_json(folder / PLAN_FILE)
    if not isinstance(plan, list):  # a new confirmation; a resumed one keeps its plan
        plan = confirm_plan(s, rows)
        write_json(folder / PLAN_FILE, plan)
    storage = f"{experiment_path(s, out)}/{CONFIRM_DIR}"
    trainable = _trainable(s, plan, storage, data)
    labels = sorted({lab for run in plan for lab in run["labels"]})
    log(f"confirmation: {len(plan)} runs ({', '.join(labels)} x {s.sweep.confirm.seeds} seeds, "
        f"{s.base.run.epochs} epochs each) in {folder}")
    if ray.tune.Tuner.can_restore(storage):  # (with its trackers: the Tuner keeps its callbacks)
        tuner = ray.tune.Tuner.restore(storage, trainable, resume_unfinished=True, resume_errored=True)
    else:
        trackers: list[Any] = []
        if s.sweep.tracking:  # the confirmation's runs beside the search's (importing them imports mlflow)
            from acl_ray.orchestration.trackers import tracking_callbacks

            trackers = tracking_callbacks(s, out, plan)
        tuner = ray.tune.Tuner(
            trainable,
            param_space={RUN_KEY: ray.tune.grid_search(list(range(len(plan))))},
            tune_config=ray.tune.TuneConfig(
                num_samples=1, max_concurrent_trials=concurrency(s), reuse_actors=in_process(s)
            ),
            run_config=ray.tune.RunConfig(
                name=CONFIRM_DIR,
                storage_path=experiment_path(s, out),
                verbose=0,
                failure_config=ray.tune.FailureConfig(max_failures=s.sweep.max_failures),
                sync_config=LIVE_SYNC,  # the search's
                callbacks=trackers,
            ),
        )
    fit(tuner)  # Ctrl-C: Tune saves its state, stops the runs and returns
    return write_confirmation(s, out, len(plan))


def write_confirmation(s: Sweep, out: Path, runs: int) -> dict[str, Any]:
    """``confirmation.json``, the summary's ``confirmation`` / ``confirmed_best`` and the winner's
    ``best_config.yaml``, from the files of ``out/confirm``; prints the table. Raises
    :class:`Interrupted`, writing nothing, while any of its ``runs`` may still train."""
    with local_experiment(f"{experiment_path(s, out)}/{CONFIRM_DIR}") as local:  # (one download)
        left = unfinished([t.status for t in read_trials(local, unsaved=False)], runs)
        if left:  # a winner from some of the runs would be an answer the seeds do not support yet
            raise Interrupted(
                f"the confirmation in {out / CONFIRM_DIR} stopped with {left} of {runs} run(s) "
                f"unfinished, so nothing was concluded from it; continue it with: acl-ray confirm {out}"
            )
        conf = read_confirmation(out, s.sweep.metric, trials=local) or {}
    write_json(out / CONFIRMATION_FILE, conf)
    summary = read_json(out / SUMMARY_FILE)
    winner = next((r for r in conf["rows"] if r["label"] == conf["winner"]), None)
    if winner is not None:
        resolved = s.base.override(winner["overrides"])  # the config, without a confirmation seed
        resolved.to_yaml(out / BEST_CONFIG_FILE)
    if isinstance(summary, dict):
        summary["confirmation"] = conf
        summary["confirmed_best"] = winner and {"label": winner["label"], "overrides": winner["overrides"]}
        write_json(out / SUMMARY_FILE, summary)
    console.print(confirmation_markdown(conf), markup=False, highlight=False)
    return conf
