"""A sweep's summary: one row per trial, ``summary.json``, ``best_config.yaml`` and a rich table.

Rows come from :func:`acl_ray.results.trials.read_trials`; trials that ASHA stopped carry the full
protocol from ``posthoc/<trial_id>.json`` once it has been run (``acl_ray.orchestration.posthoc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from acl_ray.config.pretrain import Config
from acl_ray.config.sweep import Sweep
from acl_ray.console import console
from acl_ray.results.schedules import lineage, replay_config
from acl_ray.results.trials import Trial, write_json

# The full protocol, reported at a trial's last epoch: val = selection split, eval = test split.
FINAL_KEYS = ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc")
SUMMARY_FILE = "summary.json"
BEST_CONFIG_FILE = "best_config.yaml"
FINISHED = ("TERMINATED", "ERROR")  # Tune statuses of a trial that will not train again


class Interrupted(RuntimeError):
    """A search or confirmation that Tune ended before its trials finished (Ctrl-C, SIGUSR1): what it
    wrote is kept and can be continued, and nothing was concluded from it."""


def unfinished(statuses: list[str], expected: int = 0) -> int:
    """How many trials of a run may still train: saved as running, pending or paused (Tune stopped
    by a signal saves them so), plus those of the ``expected`` count it never created.

    ``expected``: the trials the run creates when it ends on its own (``num_samples``, the
    confirmation's plan); 0 when a budget may end it earlier (every trial is then terminated).
    """
    return sum(status not in FINISHED for status in statuses) + max(0, expected - len(statuses))


def expected_trials(s: Sweep) -> int:
    """The trials a search creates unless it is stopped: ``num_samples``, or 0 with an epoch budget."""
    return 0 if s.sweep.budget_epochs else s.sweep.num_samples


def unfinished_search(s: Sweep, rows: list[dict[str, Any]]) -> int:
    """:func:`unfinished` for a search from its summary rows: 0 once it has ended on its own."""
    return unfinished([r["status"] for r in rows], expected_trials(s))


def fmt(v: Any) -> str:
    """A table cell: ``-`` for missing values, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_row(s: Sweep, t: Trial) -> dict[str, Any]:
    """One trial's summary row (the keys of ``summary.json``'s ``trials``).

    ``eval/source``: ``final`` when the last report carries the full protocol, ``posthoc`` when its
    cached post-hoc evaluation was merged in, else None (still to run). ``resolved_config``: the config
    that trains the trial again; for a PBT member, its whole schedule (``results.schedules``).
    """
    last, epoch = t.last, t.epoch
    member = lineage(t, s.mutated) if s.mutated else None
    resolved = replay_config(s, t.config, member) if member else s.base.override(t.config)
    row: dict[str, Any] = {
        "trial_id": t.trial_id,
        "trial_index": t.trial_index,
        "status": t.status,
        "error": t.error is not None or t.status == "ERROR",
        **{k: t.config.get(k) for k in s.space},
        "epoch": epoch,
        "stopped_early": t.status == "TERMINATED" and 0 < epoch < s.base.run.epochs,
        "proxy/robust_acc": last.get("proxy/robust_acc"),
        "proxy/standard_acc": last.get("proxy/standard_acc"),
        **{k: last.get(k) for k in FINAL_KEYS},
        "eval/source": "final" if last.get("val/robust_acc") is not None else None,
        "time/total_s": last.get("time_total_s"),
        "checkpoint_path": t.latest("checkpoint_path"),  # epochs without a checkpoint report none
        "resolved_config": resolved.to_dict(),
    }
    if row["eval/source"] is None and t.posthoc is not None:
        row.update(t.posthoc, **{"eval/source": "posthoc"})
    return row


def summary_rows(s: Sweep, trials: list[Trial]) -> list[dict[str, Any]]:
    return [summary_row(s, t) for t in trials]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the highest ``val/robust_acc`` (the first of equals), or None when none has it."""
    return max(
        (r for r in rows if r.get("val/robust_acc") is not None),
        key=lambda r: r["val/robust_acc"],
        default=None,
    )


def write_summary(s: Sweep, out: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Write ``out/summary.json`` (and ``out/best_config.yaml`` when a trial finished), print the
    table, return the best row."""
    best = best_row(rows)
    summary = {"trials": rows, "best": best, "metric": s.sweep.metric, "config": s.to_dict()}
    write_json(out / SUMMARY_FILE, summary)
    if best is not None:
        Config.from_dict(best["resolved_config"]).to_yaml(out / BEST_CONFIG_FILE)
    print_summary(rows, best, list(s.space))
    return best


def print_summary(rows: list[dict[str, Any]], best: dict[str, Any] | None, keys: list[str]) -> None:
    t = Table(title="sweep results (val = selection split, eval = test split)")
    for col in ("trial", *keys, "epochs", "status", "val SA", "val RA", "test SA", "test RA", "source"):
        t.add_column(col)
    for r in sorted(rows, key=lambda r: -(r.get("val/robust_acc") or -1)):
        mark = "*" if best is not None and r["trial_id"] == best["trial_id"] else ""
        t.add_row(
            r["trial_id"] + mark,
            *(fmt(r.get(k)) for k in keys),
            str(r["epoch"]),
            r["status"].lower() + (" (asha)" if r["stopped_early"] else ""),
            *(fmt(r.get(k)) for k in FINAL_KEYS),
            fmt(r.get("eval/source")),
        )
    console.print(t)
    if best is not None:
        cfg = ", ".join(f"{k}={fmt(best.get(k))}" for k in keys)
        console.print(f"best (val robust acc {best['val/robust_acc']:.4f}): {cfg}")
