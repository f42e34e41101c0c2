"""report.md and the rich tables ``acl-ray analyze`` prints: the top trials, the Pareto set, the
failed trials, parameter importance per budget. Called by ``acl_ray.results.analyze.analyze`` after
``acl_ray.results.plots.write_all``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from acl_ray.config.sweep import Sweep
from acl_ray.console import console
from acl_ray.results.importance import Ranking
from acl_ray.results.plots import STYLE, metric_label, trial_name
from acl_ray.results.summary import FINAL_KEYS as FINAL

TOP = 10  # rows in the "top trials" table


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _short(metric: str) -> str:
    split, name = metric.split("/")
    return f"{ {'eval': 'test'}.get(split, split) } {'RA' if name == 'robust_acc' else 'SA'}"


def _reason(r: dict[str, Any]) -> str:
    if r["error"]:
        return str(r["error"])
    return "(no error.txt)" if r["stop_reason"] == "error" else "no final metrics: killed or still running"


def _tables(s: Sweep, rows: list[dict[str, Any]], metric: str, front: list[dict[str, Any]]) -> list[Any]:
    """(title, columns, rows of strings) for the top trials, the Pareto set and the failed trials."""
    keys, split = list(s.space), metric.split("/")[0]
    accs = list(dict.fromkeys([f"{split}/standard_acc", f"{split}/robust_acc", *FINAL]))
    cols = ["trial", "stop", *keys, "epochs", *map(_short, accs), "source", "at epoch", "device-h"]

    def line(r: dict[str, Any]) -> list[str]:
        cells = [
            _fmt(r.get(k)) for k in [*keys, "epochs", *accs, "eval_source", "eval_epoch", "device_hours"]
        ]
        return [trial_name(r) + (" (paper)" if r["paper_point"] else ""), r["stop_reason"], *cells]

    top = sorted((r for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])[:TOP]
    failed = [r for r in rows if r["stop_reason"] in ("error", "killed/unfinished")]
    epochs = s.base.run.epochs
    reasons = [
        [trial_name(r), r["status"], r["stop_reason"], f"{r['epochs']}/{epochs}", _reason(r)] for r in failed
    ]
    return [
        (f"Top trials by {metric}", cols, [line(r) for r in top]),
        (f"Pareto set ({_short(accs[0])} vs {_short(accs[1])})", cols, [line(r) for r in front]),
        ("Failed or unfinished trials", ["trial", "status", "stop", "epochs", "reason"], reasons),
    ]


def _md(cols: list[str], body: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in body]
    return "\n".join(
        [
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
            *("| " + " | ".join(r) + " |" for r in esc),
        ]
    )


def write_report(
    out: Path,
    folder: Path,
    s: Sweep,
    rows: list[dict[str, Any]],
    metric: str,
    rule: str,
    chosen: dict[str, Any],
    notes: dict[str, Any],
    show: bool = True,
) -> None:
    """report.md in ``out`` and (``show``) the same tables as rich tables on the console."""
    (top, pareto, failed) = tables = _tables(s, rows, metric, notes["front"])
    counts = ", ".join(f"{sum(r['stop_reason'] == k for r in rows)} {k}" for k in STYLE)
    hours = sum(r["device_hours"] or 0.0 for r in rows)
    params = ", ".join(f"{k}={_fmt(chosen[k])}" for k in s.space)
    accs = ", ".join(f"{_short(k)} {_fmt(chosen[k])}" for k in FINAL)
    picked = f"Selected by `--select {rule}` on `{metric}`: trial {trial_name(chosen)} ({params}); {accs}"
    sw = s.sweep
    rankings: list[Ranking] = notes["rankings"]
    at = Counter(notes["measured"].values())  # epoch -> trials whose metric was measured there
    spread = ", ".join(f"{n} at epoch {e}" for e, n in sorted(at.items(), reverse=True))
    warned = "; ".join(notes["warnings"])

    def section(title: str, cols: list[str], body: list[list[str]]) -> list[str]:
        return [f"## {title}", _md(cols, body) if body else "(none)"]

    head = f"`{folder}`: {len(rows)} trials ({counts}); searcher {sw.searcher}, scheduler {sw.scheduler}"
    md = [
        f"# Sweep analysis: {folder.name}",
        f"{head}, {s.base.run.epochs} epochs, final protocol {s.final.protocol}; {hours:.4f} device-hours.",
        picked + " -> `best_config.yaml`.",
        *section(*top),
        *section(*pareto),
        "![Pareto front](pareto.png)",
        f"## {metric_label(metric)} vs searched parameters",
        f"Top row: {rankings[0].budget.title}. Bottom row: `{metric}` of every trial that has it, marked by"
        f" the epoch it was measured at ({spread or 'none'}); compare points of one epoch only.",
        "![parameters](params.png)",
        "## Learning curves\n\n![learning curves](curves.png)",
        *(["## Learned schedule\n\n![learned schedule](schedule.png)"] if notes.get("schedule") else []),
        *_importance(rankings),
        *([notes["confirmation"].rstrip()] if notes.get("confirmation") else []),
        *section(*failed),
        *([f"Plot warnings (kept out of the terminal): {warned}"] if warned else []),
    ]
    (out / "report.md").write_text("\n\n".join(md) + "\n")
    if not show:
        return
    for title, cols, body in tables:
        t = Table(*cols, title=title)
        for r in body:
            t.add_row(*r)
        console.print(t if body else f"{title}: none")
    console.print(picked.replace("`", ""), soft_wrap=True)
    for r in rankings:
        console.print(f"importance, {r.budget.title}: {r.note}", soft_wrap=True)
    console.print(f"analysis written to {out}")


def _importance(rankings: list[Ranking]) -> list[str]:
    """The importance section: one paragraph (and table) per budget."""
    md = [
        "## Parameter importance",
        "Each ranking compares trials at one budget (every value measured at the same epoch): the"
        " final and post-hoc values of trials ASHA stopped at different epochs are never ranked together.",
    ]
    for r in rankings:
        md.append(f"**{r.budget.title}** ({r.budget.note}): {r.note}.")
        if r.importance:
            md.append(_md(["param", "importance"], [[k, f"{v:.3f}"] for k, v in r.importance]))
    return [*md, "![importance](importance.png)"]
