"""Trials compared at one training budget, for parameter importance and the parameter plots.

ASHA ends a sweep with trials stopped at different epochs, and a stopped trial's full protocol runs
post hoc on its last checkpoint: the sweep's ``val/robust_acc`` values mix 4-, 12- and 20-epoch
models. Importance computed over that mix ranks parameters by which trials survived, not by what
they do at equal training (DESIGN.md, "What a sweep must answer"). So every ranking and parameter
plot uses values measured at one epoch, from one of two budgets:

- ``rung`` (the common rung): ``E`` = the largest epoch at which every trial that ended by the
  schedule (completed, or stopped by ASHA) reported the proxy, normally ASHA's first rung (the grace
  period); each trial's ``proxy/robust_acc`` reported at exactly epoch ``E``. Failed or unfinished
  trials that reached ``E`` are in; those that did not are left out (and counted), so a trial that
  failed at epoch 1 does not pull the budget down to epoch 1.
- ``full`` (full length): the metric (``val/robust_acc``) of the trials that ran to ``run.epochs``
  (``eval_source`` final), when at least ``MIN_FULL`` did; else skipped with a note.

Only files: no torch, no Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

RUNG, FULL = "rung", "full"
NAMES = {RUNG: "common rung", FULL: "full length"}
MIN_FULL = 3  # trials run to run.epochs needed to rank parameters at full length
ENDED = ("completed", "asha")  # stop reasons of trials the schedule ended (they set the common rung)


def count(n: int) -> str:
    """``1 trial``, ``5 trials``."""
    return f"{n} trial{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Trials whose values of ``metric`` were all measured at ``epoch``."""

    name: str  # RUNG | FULL
    metric: str  # the compared value: the proxy at the rung, the selection metric at full length
    epoch: int | None  # where every value was measured; None when no epoch is common to the trials
    rows: list[dict[str, Any]]  # trial rows whose ``metric`` is the value at ``epoch``
    note: str  # who is in and who is left out
    skipped: str = ""  # why the budget is not used for importance ("" when it is)

    @property
    def title(self) -> str:
        """E.g. ``common rung: proxy/robust_acc at epoch 4 (10 trials)``."""
        at = f" at epoch {self.epoch}" if self.epoch is not None else ""
        return f"{NAMES[self.name]}: {self.metric}{at} ({count(len(self.rows))})"


def per_epoch(epochs: Sequence[dict[str, Any]], key: str) -> dict[str, dict[int, float]]:
    """trial id -> {epoch: value of ``key``} for the epoch rows that report it."""
    out: dict[str, dict[int, float]] = {}
    for e in epochs:
        if e.get(key) is not None:
            out.setdefault(e["trial_id"], {})[int(e["epoch"])] = e[key]
    return out


def measured_at(
    rows: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], metric: str
) -> dict[str, int]:
    """trial id -> the epoch its value of ``metric`` (as in trials.parquet) was measured at: the
    last epoch reporting a proxy metric, ``eval_epoch`` for the full protocol (val/*, eval/*)."""
    if metric.startswith("proxy/"):
        return {tid: max(values) for tid, values in per_epoch(epochs, metric).items()}
    return {r["trial_id"]: r["eval_epoch"] for r in rows if r.get(metric) is not None and r.get("eval_epoch")}


def common_rung(rows: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], metric: str) -> Budget:
    """The proxy (``metric`` when it is a proxy, else ``proxy/robust_acc``) at the common rung."""
    key = metric if metric.startswith("proxy/") else "proxy/robust_acc"
    values = per_epoch(epochs, key)
    reported = [r for r in rows if values.get(r["trial_id"])]
    ended = [r for r in reported if r["stop_reason"] in ENDED] or reported  # a killed sweep: all
    if not ended:
        return Budget(RUNG, key, None, [], f"no trial reported {key}", f"skipped: no trial reported {key}")
    common = set.intersection(*(set(values[r["trial_id"]]) for r in ended))
    if not common:
        why = f"skipped: no epoch at which every completed or ASHA-stopped trial reported {key}"
        return Budget(RUNG, key, None, [], why, why)
    epoch = max(common)
    inside = [{**r, key: values[r["trial_id"]][epoch]} for r in reported if epoch in values[r["trial_id"]]]
    note = f"the largest epoch every completed or ASHA-stopped trial reported {key}: {count(len(inside))}"
    if len(inside) < len(reported):
        note += f"; {len(reported) - len(inside)} failed or unfinished trial(s) ended before it, left out"
    return Budget(RUNG, key, epoch, inside, note)


def full_length(
    rows: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], metric: str, total: int
) -> Budget:
    """``metric`` of the trials that ran to ``total`` (= run.epochs); skipped under ``MIN_FULL``."""
    if metric.startswith("proxy/"):
        values = per_epoch(epochs, metric)
        ran = [r for r in rows if total in values.get(r["trial_id"], {})]
        inside = [{**r, metric: values[r["trial_id"]][total]} for r in ran]
    else:
        inside = [
            r
            for r in rows
            if r.get(metric) is not None and r["eval_source"] == "final" and r["eval_epoch"] == total
        ]
    note = f"the trials that ran to run.epochs = {total}: {count(len(inside))}"
    skipped = ""
    if len(inside) < MIN_FULL:
        skipped = (
            f"skipped: {len(inside)} trial(s) ran to run.epochs = {total} with {metric}, need {MIN_FULL}"
        )
    return Budget(FULL, metric, total, inside, note, skipped)


def budgets(
    rows: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], metric: str, total: int
) -> list[Budget]:
    """[the common rung, full length] of the trial rows (trials.parquet) and epoch rows (epochs.parquet)."""
    return [common_rung(rows, epochs, metric), full_length(rows, epochs, metric, total)]
