"""Sweep analysis figures (matplotlib Agg) and importance.csv. Called by
``acl_ray.results.analyze.analyze``; report.md and the terminal tables are in ``report.py``.

The parameter and importance figures compare trials at one budget (``acl_ray.results.budget``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI backend on a cluster node
import matplotlib.pyplot as plt
from matplotlib import ticker
from matplotlib.axes import Axes

from acl_ray.config.sweep import Sweep
from acl_ray.results.budget import Budget, budgets, count, measured_at
from acl_ray.results.importance import Ranking, rank, write_csv
from acl_ray.results.schedules import Lineage

STYLE = {"completed": "-", "asha": "--", "error": ":", "killed/unfinished": ":"}
MARKERS = "os^vDP"


def metric_label(metric: str) -> str:
    split, name = metric.split("/")
    return f"{ {'eval': 'test'}.get(split, split) } {name.replace('_acc', ' accuracy')}"


def trial_name(r: dict[str, Any]) -> str:
    return f"#{r['trial_index']} {r['trial_id']}"


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A legend only when something is labelled (else matplotlib warns "No artists with labels")."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


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
        xlabel=metric_label(sa),
        ylabel=metric_label(ra),
        title=f"Pareto front, {metric_label(sa).split()[0]} split ({len(line)} of {len(pts)} trials)",
    )
    ax.grid(alpha=0.3)
    _legend(ax, loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _x_axis(ax: Axes, kind: str, args: list[Any], categories: list[Any] | None) -> None:
    if categories is not None:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)
    elif kind == "loguniform":  # the searched range, ticks at 1-2-5 without minor labels
        ax.set_xscale("log")
        ax.set_xlim(args[0] / 1.15, args[1] * 1.15)
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    elif kind == "choice":
        ax.set_xticks(list(args))
    else:
        pad = 0.05 * (args[1] - args[0])
        ax.set_xlim(args[0] - pad, args[1] + pad)
        if kind == "int":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


# One set of points in a parameter panel: (trial rows, the value's key, legend text, colour, marker).
Group = tuple[list[dict[str, Any]], str, str, str, str]


def _panel(ax: Axes, s: Sweep, key: str, groups: list[Group], confirmed: Sequence[Mapping[str, Any]]) -> None:
    kind, args = next(iter(s.space[key].items()))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in args)
    cats = list(args) if kind == "choice" and not numeric else None  # strings: one slot each

    def at(v: Any) -> Any:
        return cats.index(v) if cats is not None else v

    def shown(r: Mapping[str, Any]) -> bool:
        return r.get(key) is not None and (cats is None or r[key] in cats)

    for pts, value, text, colour, marker in groups:
        xy = [(at(r[key]), r[value]) for r in pts if shown(r)]
        ax.scatter([a for a, _ in xy], [b for _, b in xy], c=colour, marker=marker, alpha=0.8, label=text)
    conf = [c for c in confirmed if shown(c)]
    if conf:
        seeds = ", ".join(sorted({str(c["seeds"]) for c in conf}))
        xs, ys = [at(c[key]) for c in conf], [c["mean"] for c in conf]
        errs = [c["std"] or 0.0 for c in conf]
        label = f"confirmed: mean ± std over {seeds} seeds"
        ax.errorbar(xs, ys, yerr=errs, fmt="D", c="k", ms=5, capsize=3, zorder=4, label=label)
    _x_axis(ax, kind, args, cats)
    ax.set(xlabel=f"{key} ({kind} {list(args)})", title=key)
    ax.grid(alpha=0.3)


def plot_params(
    path: Path,
    s: Sweep,
    rows: list[dict[str, Any]],
    metric: str,
    rung: Budget,
    measured: Mapping[str, int],
    confirmed: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Top row: the proxy at the common rung (one budget). Bottom row: ``metric`` coloured and marked
    by the epoch each value was measured at (``measured``: trial id -> epoch), so that only points of
    one colour are compared. ``confirmed``: configurations re-trained over seeds at full length, each
    a mapping with the searched keys and ``mean``, ``std`` (None: one seed), ``seeds`` (how many) of
    ``metric``, drawn with error bars."""
    keys, total = list(s.space), s.base.run.epochs
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get(metric) is not None and r["trial_id"] in measured:
            by_epoch.setdefault(measured[r["trial_id"]], []).append(r)
    top: list[Group] = [(rung.rows, rung.metric, f"epoch {rung.epoch}: {count(len(rung.rows))}", "C0", "o")]
    top = top if rung.rows else []
    bottom: list[Group] = []
    for i, e in enumerate(sorted(by_epoch, reverse=True)):
        how = "" if metric.startswith("proxy/") else ", final" if e == total else ", posthoc"
        text = f"epoch {e}{' = run.epochs' if e == total else ''}: {count(len(by_epoch[e]))}{how}"
        bottom.append((by_epoch[e], metric, text, f"C{i}", MARKERS[i % len(MARKERS)]))
    fig, axes = plt.subplots(2, len(keys), figsize=(3.6 * len(keys) + 2.4, 7.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        _panel(ax, s, key, top, ())
    if not rung.rows:
        axes[0][0].text(
            0.5, 0.5, rung.skipped, ha="center", va="center", wrap=True, transform=axes[0][0].transAxes
        )
    for ax, key in zip(axes[1], keys, strict=True):
        _panel(ax, s, key, bottom, confirmed)
    for ax_row, ylabel, title in (
        (axes[0], rung.metric, "common rung (one budget)"),
        (axes[1], metric, "measured at (compare one colour only)"),
    ):
        ax_row[0].set_ylabel(metric_label(ylabel))
        _legend(
            ax_row[-1], title=title, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1)
        )
    fig.suptitle(
        f"Top: {rung.title}. Bottom: {metric_label(metric)} by the epoch it was measured at;\n"
        "values from different epochs (ASHA stopped trials early) are not comparable",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(
    path: Path, rows: list[dict[str, Any]], epochs: list[dict[str, Any]], total: int, rung: int | None = None
) -> None:
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    cmap = plt.get_cmap("tab20" if len(rows) > 10 else "tab10")
    for i, r in enumerate(rows):
        pts = [e for e in epochs if e["trial_id"] == r["trial_id"] and e.get("proxy/robust_acc") is not None]
        label = f"{trial_name(r)} ({r['stop_reason']})" if len(rows) <= 20 else None
        ax.plot(
            [e["epoch"] for e in pts],
            [e["proxy/robust_acc"] for e in pts],
            STYLE[r["stop_reason"]],
            marker=".",
            color=cmap(i % cmap.N),
            label=label,
        )
    if rung is not None:
        ax.axvline(rung, c="0.3", lw=1, ls="-.", label=f"common rung (epoch {rung})")
    ax.set(
        xlabel=f"pre-training epoch (of {total})",
        ylabel="proxy robust accuracy (linear probe, PGD)",
        title="Learning curves (dashed: stopped by ASHA; dotted: error or unfinished)",
    )
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7, ncol=2 if len(rows) > 10 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_importance(path: Path, rankings: Sequence[Ranking]) -> None:
    """One panel per budget, titled with its metric, epoch and number of trials."""
    heights = [max(len(r.importance), 2) for r in rankings]
    fig, axes = plt.subplots(
        len(rankings),
        1,
        figsize=(6.4, 0.45 * sum(heights) + 1.6 * len(rankings)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, r in zip(axes[:, 0], rankings, strict=True):
        if r.importance:
            names = [k for k, _ in r.importance][::-1]
            ax.barh(names, [v for _, v in r.importance][::-1], color="C0")
            ax.set_xlim(0, 1)
        else:
            ax.text(0.5, 0.5, r.note, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"{r.budget.title}\n{r.note if r.importance else 'not computed'}", fontsize=9)
    axes[-1, 0].set_xlabel("importance (Optuna fANOVA; fractions sum to 1 per budget)")
    fig.suptitle("Parameter importance at one budget each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_schedule(path: Path, s: Sweep, members: Mapping[str, Lineage], chosen: dict[str, Any]) -> None:
    """One panel per mutated key: its value at each epoch along the chosen member's lineage, one
    colour per trial that trained a stretch of it (its ancestors, then itself); other members in grey."""
    keys, best = s.mutated, members[chosen["trial_id"]]
    stretches = [*best.ancestors, (len(best.trained_by) + 1, "")]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7.2, 1.9 * len(keys) + 1.2), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for tid, m in members.items():
            if tid != chosen["trial_id"]:
                ax.stairs(m.values[key], range(len(m.values[key]) + 1), color="0.8", lw=1, baseline=None)
        for i, ((start, tid), (end, _)) in enumerate(itertools.pairwise(stretches)):
            label = f"epochs {start}-{end - 1}: {tid}"
            ax.stairs(best.values[key][start - 1 : end - 1], range(start - 1, end), color=f"C{i}", lw=2.2,
                      label=label, baseline=None)
            if i:
                ax.axvline(start - 1, c="0.4", lw=0.8, ls=":")
        kind, args = next(iter(s.space[key].items()))
        if kind == "loguniform":
            ax.set_yscale("log")
        if kind != "choice":  # the declared range: mutations stay inside it
            ax.axhspan(args[0], args[1], color="C0", alpha=0.05, lw=0)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    _legend(axes[0, 0], title="trained by (exploits dotted)", fontsize=7, title_fontsize=7, loc="best")
    axes[-1, 0].set_xlabel(f"pre-training epochs done (of {s.base.run.epochs}); shaded: the declared range")
    axes[-1, 0].xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    fig.suptitle(
        f"Learned schedule: {trial_name(chosen)} and its ancestors (grey: the other members)", fontsize=10
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
    confirmed: Sequence[Mapping[str, Any]] = (),
    members: Mapping[str, Lineage] | None = None,
) -> dict[str, Any]:
    """Every PNG and importance.csv; returns what the report needs (rankings, front, plot warnings).
    ``confirmed``: as :func:`plot_params` takes them. ``members``: the lineages of a population
    sweep's members, drawn in schedule.png when the chosen trial has one.

    Warnings raised while drawing are kept for report.md, not printed in the terminal.
    """
    total = s.base.run.epochs
    rung, full = budgets(rows, epochs, metric, total)
    rankings = rank(s, [rung, full])
    write_csv(out / "importance.csv", rankings)
    measured = measured_at(rows, epochs, metric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_pareto(out / "pareto.png", rows, front, metric, chosen)
        plot_params(out / "params.png", s, rows, metric, rung, measured, confirmed)
        plot_curves(out / "curves.png", rows, epochs, total, rung.epoch)
        plot_importance(out / "importance.png", rankings)
        if members and chosen["trial_id"] in members:
            plot_schedule(out / "schedule.png", s, members, chosen)
    seen = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    schedule = bool(members) and chosen["trial_id"] in (members or {})
    return {"rankings": rankings, "front": front, "measured": measured, "warnings": seen,
            "schedule": schedule}
