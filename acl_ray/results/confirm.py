"""A sweep's confirmation: mean ± std per configuration over fresh seeds and paired differences to the
controls with 95% intervals. Files only (``DIR/confirm/plan.json`` and Tune's trial folders), no
torch, no Ray.

The confirmation trains every configuration with the same seeds (``run.seed`` = 1000, 1001, ...),
so a configuration and a control share data order, augmentations and attack starts at each seed:
the difference at a seed is a paired sample, and its mean has the interval
``mean ± t(0.975, n - 1) · sd / sqrt(n)`` over the n seeds both finished. A configuration "beats" a
control when that interval lies above 0, is "worse" when it lies below, and is "within noise"
otherwise. Test accuracy is reported, never used to choose: the winner is the highest mean
validation metric.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from acl_ray.results.trials import read_json, read_trials

CONFIRM_DIR = "confirm"  # in the sweep folder: the Tune experiment of the confirmation runs
PLAN_FILE = "plan.json"  # in CONFIRM_DIR: what each confirmation trial trains
CONFIRMATION_FILE = "confirmation.json"  # in the sweep folder: the statistics below
METRICS = ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc")
RUN_KEY = "confirm/run"  # the Tune parameter of a confirmation trial: its index in the plan
MIN_VERDICT_SEEDS = 3  # fewer paired seeds: the interval is reported, no verdict is given


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile (scipy, which scikit-learn already brings)."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean and sample standard deviation (None below two values)."""
    n = len(values)
    return {
        "n": n,
        "mean": statistics.fmean(values) if n else None,
        "std": statistics.stdev(values) if n >= 2 else None,
    }


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """``a - b`` over the seeds both have: mean, 95% interval (t), the seeds used, and the verdict."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[k] - b[k] for k in seeds]
    out: dict[str, Any] = {"seeds": seeds, "n": len(diffs), "mean": None, "low": None, "high": None}
    if len(diffs) < 2:
        return {**out, "mean": diffs[0] if diffs else None, "verdict": "too few seeds"}
    mean = statistics.fmean(diffs)
    half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = "beats" if mean - half > 0 else "worse" if mean + half < 0 else "within noise"
    if len(diffs) < MIN_VERDICT_SEEDS:  # two equal differences give a zero-width interval
        verdict = "too few seeds"
    return {**out, "mean": mean, "low": mean - half, "high": mean + half, "verdict": verdict}


def summarize_confirmation(
    plan: list[dict[str, Any]], results: Mapping[int, Mapping[str, Any]], metric: str = "val/robust_acc"
) -> dict[str, Any]:
    """Statistics of a confirmation.

    ``plan``: one entry per run, ``{"labels": [...], "kinds": ["trial" | "control", ...], "seed": int,
    "overrides": {...}}`` (a run shared by a top trial and a control with the same config lists both).
    ``results``: run index -> its final metrics (runs not finished are missing).
    """
    by_label: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(plan):
        for label, kind in zip(run["labels"], run["kinds"], strict=True):
            new = {"label": label, "kind": kind, "overrides": run["overrides"], "runs": {}, "plan": set()}
            entry = by_label.setdefault(label, new)
            entry["plan"].add(i)
            if i in results and all(results[i].get(m) is not None for m in METRICS):
                entry["runs"][run["seed"]] = {m: float(results[i][m]) for m in METRICS}
    controls = [lab for lab, e in by_label.items() if e["kind"] == "control"]
    rows = []
    for label, e in by_label.items():
        per_metric = {m: {s: r[m] for s, r in e["runs"].items()} for m in METRICS}
        row: dict[str, Any] = {
            "label": label, "kind": e["kind"], "overrides": e["overrides"], "seeds": sorted(e["runs"]),
            **{m: mean_std(list(per_metric[m].values())) for m in METRICS},
            "vs": {},
        }
        for c in controls:
            if c == label or by_label[c]["plan"] == e["plan"]:  # itself, or the very same runs
                continue
            theirs = by_label[c]["runs"]
            row["vs"][c] = {m: paired_difference(per_metric[m], {s: r[m] for s, r in theirs.items()})
                            for m in METRICS}
        rows.append(row)
    ranked = [r for r in rows if r[metric]["mean"] is not None]
    ranked.sort(key=lambda r: -r[metric]["mean"])
    winner = ranked[0]["label"] if ranked else None
    expected = {lab: sum(lab in run["labels"] for run in plan) for lab in by_label}
    missing = {r["label"]: expected[r["label"]] - len(r["seeds"]) for r in rows
               if len(r["seeds"]) < expected[r["label"]]}
    return {"metric": metric, "rows": ranked + [r for r in rows if r not in ranked], "winner": winner,
            "controls": controls, "missing_runs": missing}


def _pm(stat: Mapping[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["std"] is not None else f"{stat['mean']:.3f}"


def _interval(d: Mapping[str, Any]) -> str:
    if d["low"] is None:
        return "-" if d["mean"] is None else f"{d['mean']:+.3f} (n={d['n']})"
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def verdicts(conf: Mapping[str, Any], split: str = "eval") -> list[str]:
    """One sentence per (winner or top trial, control) pair on robust accuracy of ``split``."""
    key = f"{split}/robust_acc"
    name = {"eval": "test", "val": "validation"}[split]
    lines = []
    for row in conf["rows"]:
        if row["kind"] != "trial" and row["label"] != conf["winner"]:
            continue
        for control, diffs in row["vs"].items():
            d = diffs[key]
            if d["verdict"] == "too few seeds":
                lines.append(f"{row['label']} vs {control} on {name} RA: {d['n']} paired seed(s), fewer than "
                             f"{MIN_VERDICT_SEEDS}: no verdict (sweep.confirm.seeds=3 or more).")
                continue
            words = {"beats": "beats", "worse": "is worse than", "within noise": "is within noise of"}
            lines.append(
                f"{row['label']} {words[d['verdict']]} {control} on {name} RA: {d['mean']:+.3f} "
                f"(95% interval {d['low']:+.3f} to {d['high']:+.3f}, {d['n']} paired seeds)."
            )
    return lines


def confirmation_markdown(conf: Mapping[str, Any]) -> str:
    """The confirmation as a markdown section (mean ± std per configuration, paired differences)."""
    head = "| configuration | kind | seeds | val SA | val RA | test SA | test RA |"
    lines = [
        "## Confirmation (fresh seeds, full length)",
        "",
        f"Winner by mean {conf['metric']}: **{conf['winner']}**." if conf["winner"] else "No run finished.",
        "",
        head,
        "|---|---|---|---|---|---|---|",
    ]
    for r in conf["rows"]:
        cells = " | ".join(_pm(r[m]) for m in METRICS)
        lines.append(f"| {r['label']} | {r['kind']} | {len(r['seeds'])} | {cells} |")
    if conf["controls"]:
        lines += ["", "Paired differences to each control (mean [95% interval], t over seeds):", "",
                  "| configuration | control | val RA | test RA | test SA |", "|---|---|---|---|---|"]
        for r in conf["rows"]:
            for c, d in r["vs"].items():
                lines.append(f"| {r['label']} | {c} | {_interval(d['val/robust_acc'])} | "
                             f"{_interval(d['eval/robust_acc'])} | {_interval(d['eval/standard_acc'])} |")
    lines += ["", *verdicts(conf, "eval"), *verdicts(conf, "val")]
    if conf["missing_runs"]:
        lines += ["", f"Runs not finished (resume with `acl-ray confirm DIR`): {conf['missing_runs']}"]
    return "\n".join(lines) + "\n"


def read_confirmation(
    sweep: Path, metric: str = "val/robust_acc", trials: Path | None = None
) -> dict[str, Any] | None:
    """The confirmation of the sweep folder ``sweep`` from its files, or None when it has none.

    ``trials``: a local copy of the confirmation's Tune experiment when it is not ``sweep/confirm``
    (remote ``sweep.storage``).
    """
    folder = sweep / CONFIRM_DIR
    plan = read_json(folder / PLAN_FILE)
    if not isinstance(plan, list):
        return None
    results: dict[int, dict[str, Any]] = {}
    for t in read_trials(trials or folder):
        index = t.config.get(RUN_KEY)
        if isinstance(index, int) and t.final is not None:
            results[index] = t.final
    return summarize_confirmation(plan, results, metric)
