"""The live trial table of a running sweep: a Tune ``Callback`` that redraws a rich table (plain lines
when the output is not a terminal) as trials start, report and end."""

from __future__ import annotations

from typing import Any

import ray.tune
from rich.live import Live
from rich.table import Table

from acl_ray.console import console
from acl_ray.results.summary import fmt


class TrialTable(ray.tune.Callback):
    """A live rich table of trials (config, epoch, proxy RA, status); plain lines off a terminal."""

    def __init__(self, keys: list[str], proxy_metric: str, epochs: int) -> None:
        self.keys, self.proxy, self.epochs = keys, proxy_metric, epochs
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None

    def _render(self) -> Table:
        t = Table(title="acl_ray sweep", show_lines=False)
        for col in ("trial", *self.keys, "epoch", "proxy RA", "val RA", "status"):
            t.add_column(col)
        for tid, r in self.rows.items():
            t.add_row(
                tid,
                *(fmt(r["config"].get(k)) for k in self.keys),
                f"{r['epoch']}/{self.epochs}",
                fmt(r.get("proxy")),
                fmt(r.get("val")),
                r["status"],
            )
        return t

    def _update(self, trial: Any, status: str, result: dict | None = None) -> None:
        r = self.rows.setdefault(trial.trial_id, {"config": trial.config, "epoch": 0, "status": status})
        r["status"] = status
        if result:
            r["epoch"] = result.get("epoch", r["epoch"])
            r["proxy"] = result.get(self.proxy, r.get("proxy"))
            r["val"] = result.get("val/robust_acc", r.get("val"))
        if console.is_terminal:
            if self.live is None:
                self.live = Live(self._render(), console=console, refresh_per_second=2)
                self.live.start()
            self.live.update(self._render())
        elif result is not None or status != "RUNNING":
            console.print(
                f"trial {trial.trial_id} {status.lower():<10} epoch {r['epoch']}/{self.epochs} "
                f"proxy RA {fmt(r.get('proxy'))} val RA {fmt(r.get('val'))}"
            )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, "RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._update(trial, "RUNNING", result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, "DONE")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, "ERROR")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.stop()
