"""Sweep analysis output: PNG figures (matplotlib Agg), parameter importance, report.md and
the rich tables printed in the terminal. Called by ``acl_ray.results.analyze.analyze``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI backend on a cluster node
import matplotlib.pyplot as plt
from matplotlib import ticker
from rich.table import Table

from acl_ray.config.sweep import Sweep
from acl_ray.console import console
from acl_ray.results.importance import importance
from acl_ray.results.summary import FINAL_KEYS as FINAL

STYLE = {"completed": "-", "asha": "--", "error": ":", "killed/unfinished": ":"}
TOP = 10  # rows in the "top trials" table


def _label(metric: str) -> str:
    split, name = metric.split("/")
    return f"{ {'eval': 'test'}.get(split, split) } {name.replace('_acc', ' accuracy')}"


def _name(r: dict[str, Any]) -> str:
    return f"#{r['trial_index']} {r['trial_id']}"


def plot_pareto(
    path: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]], metric: str, chosen: dict[str, Any]
) -> None:
    split = metric.split("/")[0]
    sa, ra = f"{split}/standard_acc", f"{split}/robust_acc"
    pts = [r for r in rows if r.get(sa) is not None and r.get(ra) is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.scatter([r[sa] for r in pts], [r[ra] for r in pts], c="0.6", s=30, label="trials")
    line = sorted(front, key=lambda r: r[sa])
    ax.plot([r[sa] for r in line], [r[ra] for r in line], "o-", c="C3", ms=7, label="Pareto front")
    labels: dict[tuple[float, float], list[str]] = {}  # one label per position: ties share a point
    for r in line:
        labels.setdefault((r[sa], r[ra]), []).append(f"#{r['trial_index']}")
    for pos, names in labels.items():
        ax.annotate(",".join(names), pos, textcoords="offset points", xytext=(5, 5), fontsize=8)
    paper = [r for r in pts if r["paper_point"]]
    if paper:
        xy = [r[sa] for r in paper], [r[ra] for r in paper]
        ax.scatter(*xy, marker="*", s=220, c="gold", edgecolors="k", zorder=3, label="paper defaults")
    if chosen.get(sa) is not None and chosen.get(ra) is not None:
        xy = [chosen[sa]], [chosen[ra]]
        ax.scatter(*xy, s=260, facecolors="none", edgecolors="C0", linewidths=2, zorder=4, label="selected")
    ax.set(
        xlabel=_label(sa),
        ylabel=_label(ra),
        title=f"Pareto front, {_label(sa).split()[0]} split ({len(line)} of {len(pts)} trials)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_params(path: Path, s: Sweep, rows: list[dict[str, Any]], metric: str) -> None:
    keys = list(s.space)
    proxy = metric.startswith("proxy/")
    groups = [("proxy (last epoch)", "o")] if proxy else [("final", "o"), ("posthoc", "s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys, strict=True):
        kind, args = next(iter(s.space[key].items()))
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in args)
        categories = list(args) if kind == "choice" and not numeric else None  # strings: one slot each
        pts = [r for r in rows if r.get(metric) is not None and r.get(key) is not None]
        if categories is not None:
            pts = [r for r in pts if r[key] in categories]
        for source, marker in groups:  # the full protocol at the last epoch, or after ASHA stopped it
            xy = [
                (categories.index(r[key]) if categories is not None else r[key], r[metric])
                for r in pts if proxy or r["eval_source"] == source
            ]
            ax.scatter([x for x, _ in xy], [y for _, y in xy], marker=marker, alpha=0.8, label=source)
        if categories is not None:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif kind == "loguniform":  # the searched range, ticks at 1-2-5 without minor labels
            ax.set_xscale("log")
            ax.set_xlim(args[0] / 1.15, args[1] * 1.15)
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        elif kind == "choice" and all(isinstance(v, int | float) for v in args):
            ax.set_xticks(list(args))
        else:
            pad = 0.05 * (args[1] - args[0])
            ax.set_xlim(args[0] - pad, args[1] + pad)
            if kind == "int":
                ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set(xlabel=f"{key} ({kind} {list(args)})", title=key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(_label(metric))
    fig.legend(*axes[0][0].get_legend_handles_labels(), title="value from", fontsize=8, loc="upper right")
    fig.suptitle(f"{_label(metric)} vs each searched parameter")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(path: Path, rows: list[dict[str, Any]], epochs: list[dict[str, Any]], total: int) -> None:
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    cmap = plt.get_cmap("tab20" if len(rows) > 10 else "tab10")
    for i, r in enumerate(rows):
        pts = [e for e in epochs if e["trial_id"] == r["trial_id"] and e.get("proxy/robust_acc") is not None]
        label = f"{_name(r)} ({r['stop_reason']})" if len(rows) <= 20 else None
        ax.plot(
            [e["epoch"] for e in pts],
            [e["proxy/robust_acc"] for e in pts],
            STYLE[r["stop_reason"]],
            marker=".",
            color=cmap(i % cmap.N),
            label=label,
        )
    ax.set(
        xlabel=f"pre-training epoch (of {total})",
        ylabel="proxy robust accuracy (linear probe, PGD)",
        title="Learning curves (dashed: stopped by ASHA; dotted: error or unfinished)",
    )
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(rows) > 10 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_importance(path: Path, imp: list[tuple[str, float]], note: str, metric: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * max(len(imp), 3) + 1.5))
    if imp:
        names = [k for k, _ in imp][::-1]
        ax.barh(names, [v for _, v in imp][::-1], color="C0", label=note)
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set(
        xlabel=f"importance for {metric} (fractions sum to 1)",
        ylabel="searched parameter",
        title="Parameter importance (Optuna fANOVA)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(
    out: Path,
    s: Sweep,
    rows: list[dict[str, Any]],
    epochs: list[dict[str, Any]],
    metric: str,
    chosen: dict[str, Any],
    front: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every PNG and importance.csv; returns what the report needs (importances, note, front)."""
    plot_pareto(out / "pareto.png", rows, front, metric, chosen)
    plot_params(out / "params.png", s, rows, metric)
    plot_curves(out / "curves.png", rows, epochs, s.base.run.epochs)
    imp, note = importance(s, rows, metric)
    with (out / "importance.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("param", "importance"), *imp])
    plot_importance(out / "importance.png", imp, note, metric)
    return {"importance": imp, "note": note, "front": front}


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
    cols = ["trial", "stop", *keys, "epochs", *map(_short, accs), "source", "device-h"]

    def line(r: dict[str, Any]) -> list[str]:
        cells = [_fmt(r.get(k)) for k in [*keys, "epochs", *accs, "eval_source", "device_hours"]]
        return [_name(r) + (" (paper)" if r["paper_point"] else ""), r["stop_reason"], *cells]

    top = sorted((r for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])[:TOP]
    failed = [r for r in rows if r["stop_reason"] in ("error", "killed/unfinished")]
    epochs = s.base.run.epochs
    reasons = [
        [_name(r), r["status"], r["stop_reason"], f"{r['epochs']}/{epochs}", _reason(r)] for r in failed
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
    picked = f"Selected by `--select {rule}` on `{metric}`: trial {_name(chosen)} ({params}); {accs}"
    sw = s.sweep
    imp = [_md(["param", "importance"], [[k, f"{v:.3f}"] for k, v in notes["importance"]])]

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
        f"## {_label(metric)} vs searched parameters\n\n![parameters](params.png)",
        "## Learning curves\n\n![learning curves](curves.png)",
        f"## Parameter importance\n\n{notes['note']}.",
        *(imp if notes["importance"] else []),
        "![importance](importance.png)",
        *section(*failed),
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
    console.print(f"importance: {notes['note']}; analysis written to {out}")
