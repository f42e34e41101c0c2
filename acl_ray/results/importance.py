"""Parameter importance of a finished sweep: Optuna's fANOVA on an in-memory study of its trials,
one study per budget (:mod:`acl_ray.results.budget`), never over values of mixed epochs.

The one use of Optuna below the orchestration layer (Optuna imports neither Ray nor torch).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acl_ray.config.sweep import Sweep
from acl_ray.results.budget import Budget

CSV_HEAD = ("budget", "epoch", "metric", "trials", "param", "importance")  # importance.csv


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The importances of the searched keys at one budget."""

    budget: Budget
    importance: list[tuple[str, float]]  # (key, fraction), largest first; [] when not computed
    note: str  # how it was computed, or why not


def importance(s: Sweep, rows: list[dict[str, Any]], metric: str) -> tuple[list[tuple[str, float]], str]:
    """fANOVA importances (Optuna) of the searched keys for ``metric``, on an in-memory study
    rebuilt from the trials that have it (final or posthoc); ([], note) when it cannot be computed."""
    import optuna
    from optuna import distributions as od

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, od.BaseDistribution] = {}
    for key, spec in s.space.items():  # the spec acl_ray.orchestration.tuner.to_tune turns into Tune domains
        kind, args = next(iter(spec.items()))
        if kind == "int":
            dists[key] = od.IntDistribution(int(args[0]), int(args[1]))
        elif kind == "choice":
            dists[key] = od.CategoricalDistribution(list(args))
        else:
            dists[key] = od.FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
    study = optuna.create_study(direction="maximize")
    for r in rows:
        if r.get(metric) is None:
            continue
        params = {k: r.get(k) for k in dists}
        try:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r[metric]))
        except ValueError:  # a value outside the space (a hand-edited sweep.yaml): not comparable
            continue
    values = [t.value for t in study.trials]
    if len(values) < 2:
        return [], f"skipped: {len(values)} finished trial(s) with {metric} in the space, need at least 2"
    if len(set(values)) == 1:
        return [], f"skipped: all {len(values)} finished trials have the same {metric}"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return [(k, float(v)) for k, v in imp.items()], f"Optuna fANOVA (seed 0) on {len(values)} trials"


def rank(s: Sweep, budgets: Sequence[Budget]) -> list[Ranking]:
    """``importance`` at each budget (a skipped budget keeps its reason as the note)."""
    out = []
    for b in budgets:
        imp, note = ([], b.skipped) if b.skipped else importance(s, b.rows, b.metric)
        out.append(Ranking(b, imp, note))
    return out


def write_csv(path: Path, rankings: Sequence[Ranking]) -> None:
    """importance.csv: one row per (budget, key); a budget without importances has no row."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEAD)
        for r in rankings:
            b = r.budget
            w.writerows((b.name, b.epoch, b.metric, len(b.rows), k, v) for k, v in r.importance)
