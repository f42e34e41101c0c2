"""The console of a running sweep: a Tune ``Callback`` drawing one rich table, updated in place.

A header line (trials done / running / pending, the best validation robust accuracy so far and its
trial, elapsed and estimated time left) above one row per trial. Off a terminal (CI, pipes) it
prints plain lines instead: a trial starting, ending (done, stopped by ASHA, failed) and its
post-hoc evaluation. A failed trial is one line with its reason and the path of its error log.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import ray.tune
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from acl_ray.console import console
from acl_ray.results.summary import fmt
from acl_ray.results.trials import error_reason

MAX_ROWS = 24  # beyond this the table keeps running trials and the best finished ones


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TrialTable(ray.tune.Callback):
    """Live trial table (config, epoch, proxy RA, val RA, status) with a progress header."""

    def __init__(self, keys: list[str], proxy_metric: str, epochs: int) -> None:
        self.keys, self.proxy, self.epochs = keys, proxy_metric, epochs
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.total, self.start = 0, time.monotonic()
        self.live: Live | None = None
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # pickled with the Tuner: configuration only
        return {"keys": self.keys, "proxy": self.proxy, "epochs": self.epochs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- what the header says ---------------------------------------------------------------
    def best(self) -> dict[str, Any] | None:
        rows = [r for r in self.rows.values() if r.get("val") is not None]
        return max(rows, key=lambda r: r["val"], default=None)

    def eta_s(self) -> float | None:
        """Epochs still to train (ASHA's average stop so far) over the epochs per second so far."""
        trained = sum(r["epoch"] for r in self.rows.values())
        finished = [r["epoch"] for r in self.rows.values() if r["status"] not in ("running", "error")]
        if not trained:
            return None
        per_trial = sum(finished) / len(finished) if finished else self.epochs
        running = [r["epoch"] for r in self.rows.values() if r["status"] == "running"]
        left = sum(max(per_trial, e) - e for e in running) + self.pending() * per_trial
        return left / (trained / max(time.monotonic() - self.start, 1e-9))

    def pending(self) -> int:
        return max(self.total - len(self.rows), 0)

    def header(self) -> str:
        running = sum(r["status"] == "running" for r in self.rows.values())
        best = self.best()
        top = f"best val RA {best['val']:.4f} ({best['name']})" if best else "best val RA -"
        elapsed = clock(time.monotonic() - self.start)
        return (
            f"{len(self.rows) - running} done, {running} running, {self.pending()} pending | {top} | "
            f"elapsed {elapsed}, ~{clock(self.eta_s())} left"
        )

    # -- drawing ----------------------------------------------------------------------------
    def render(self) -> Group:
        with self.lock:
            t = Table(show_edge=False, pad_edge=False)
            for col in ("trial", *self.keys, "epoch", "proxy RA", "val RA", "status"):
                left = col in ("trial", "status")
                t.add_column(col, justify="left" if left else "right", no_wrap=left)
            rows = list(self.rows.values())
            if len(rows) > MAX_ROWS:
                live = [r for r in rows if r["status"] == "running"]
                best = sorted((r for r in rows if r not in live), key=lambda r: -(r.get("val") or -1))
                shown = {id(r) for r in (live + best)[:MAX_ROWS]}
                rows = [r for r in rows if id(r) in shown]
            for r in rows:
                t.add_row(
                    r["name"],
                    *(fmt(r["config"].get(k)) for k in self.keys),
                    f"{r['epoch']}/{self.epochs}",
                    fmt(r.get("proxy")),
                    fmt(r.get("val")),
                    r["status"],
                )
            more = len(self.rows) - len(rows)
            caption = [Text(f"... {more} more finished trials in the summary")] if more else []
            return Group(Text(f"sweep: {self.header()}", style="bold"), t, *caption)

    def say(self, line: str) -> None:
        """One plain line (above the live table on a terminal)."""
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _row(self, trial: Any) -> dict[str, Any]:
        tag = str(getattr(trial, "experiment_tag", "") or "")
        index = tag.split("_")[0]
        name = f"#{index} {trial.trial_id}" if index.isdigit() else trial.trial_id
        return self.rows.setdefault(
            trial.trial_id, {"name": name, "config": dict(trial.config), "epoch": 0, "status": "running"}
        )

    def _draw(self) -> None:
        if console.is_terminal and self.live is None:
            self.live = Live(
                get_renderable=self.render, console=console, refresh_per_second=2, transient=True
            )
            self.live.start()
        elif self.live is not None:
            self.live.refresh()

    # -- Tune events ------------------------------------------------------------------------
    def setup(
        self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any
    ) -> None:
        self.total, self.start = int(total_num_samples or num_samples or 0), time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        with self.lock:
            again = trial.trial_id in self.rows  # retried, or a PBT member resumed (maybe with new values)
            r = self._row(trial)
            r["status"], r["config"] = "running", dict(trial.config)
        if not console.is_terminal:
            cfg = ", ".join(f"{k}={fmt(r['config'].get(k))}" for k in self.keys)
            self.say(f"trial {r['name']} {'resumed' if again else 'started'}: {cfg}")
        self._draw()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        with self.lock:
            r = self._row(trial)
            r["epoch"] = int(result.get("epoch", r["epoch"]) or 0)
            r["proxy"] = result.get(self.proxy, r.get("proxy"))
            r["val"] = result.get("val/robust_acc", r.get("val"))
        self._draw()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        with self.lock:
            r = self._row(trial)
            stopped = r["epoch"] < self.epochs and r.get("val") is None
            r["status"] = "eval (asha)" if stopped else "done"
        what = f"stopped by ASHA at epoch {r['epoch']}" if stopped else f"done at epoch {r['epoch']}"
        self._event(r, f"{what}: proxy RA {fmt(r.get('proxy'))}, val RA {fmt(r.get('val'))}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = self._row(trial)["name"]
        self.say(f"trial {name} failed, retrying from its last checkpoint: {self._why(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        with self.lock:
            r = self._row(trial)
            r["status"] = "error"
        self._event(r, f"failed at epoch {r['epoch']}: {self._why(trial)}", always=True)

    def posthoc(self, trial_id: str, metrics: dict[str, Any] | None) -> None:
        """From :class:`acl_ray.orchestration.posthoc.Posthoc`: started (None) or finished."""
        with self.lock:
            r = self.rows.get(trial_id)
            if r is None or metrics is None:
                return
            r["val"], r["status"] = metrics.get("val/robust_acc"), "done (asha)"
        self._event(r, f"post-hoc evaluation: val RA {fmt(r['val'])}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.say(f"sweep: {self.header()}")

    def _event(self, r: dict[str, Any], text: str, always: bool = False) -> None:
        if always or not console.is_terminal:
            line = f"trial {r['name']} {text}"
            self.say(line if console.is_terminal else f"{line} | {self.header()}")
        self._draw()

    @staticmethod
    def _why(trial: Any) -> str:
        """The trial's last exception line and where its traceback is (``error.txt``)."""
        staged = getattr(trial, "error_file", None)
        reason = error_reason(Path(staged).parent) if staged else None
        log = Path(trial.path) / "error.txt" if getattr(trial, "path", None) else staged
        return f"{reason or 'unknown error'} (log: {log})"
