"""Sweep console output (a live trial table) and the per-trial summary rows.

The live table is a Tune ``Callback``; the summary reads the experiment folder through
``ray.tune.ExperimentAnalysis`` (works offline on finished, failed or killed sweeps) and fills
in the full protocol for trials that ASHA stopped, from their last checkpoint, as Ray tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray
import ray.tune
from rich.live import Live
from rich.table import Table

from acl_ray.console import console

FINAL_KEYS = ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


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
                *(_fmt(r["config"].get(k)) for k in self.keys),
                f"{r['epoch']}/{self.epochs}",
                _fmt(r.get("proxy")),
                _fmt(r.get("val")),
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
                f"proxy RA {_fmt(r.get('proxy'))} val RA {_fmt(r.get('val'))}"
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


def trial_rows(out: Path, keys: list[str], experiment: str | None = None) -> list[dict[str, Any]]:
    """One row per trial from the Tune experiment (in ``out``, or at ``experiment``: S3, NFS)."""
    from acl_ray.config.sweep import load_sweep

    s = load_sweep(out / "sweep.yaml")
    analysis = ray.tune.ExperimentAnalysis(experiment or str(out))
    rows = []
    # In creation order: Tune's experiment tag starts with the trial's running number.
    ordered = sorted(analysis.trials, key=lambda t: int(str(t.experiment_tag).split("_")[0] or 0))
    for trial in ordered:
        last = dict(trial.last_result or {})
        config = {k: trial.config.get(k) for k in keys}
        epoch = int(last.get("epoch", 0) or 0)
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "trial_index": int(str(trial.experiment_tag).split("_")[0] or 0),
            "status": trial.status,
            "error": (trial.error_file is not None) or trial.status == "ERROR",
            **config,
            "epoch": epoch,
            "stopped_early": trial.status == "TERMINATED" and 0 < epoch < s.base.run.epochs,
            "proxy/robust_acc": last.get("proxy/robust_acc"),
            "proxy/standard_acc": last.get("proxy/standard_acc"),
            **{k: last.get(k) for k in FINAL_KEYS},
            "eval/source": "final" if last.get("val/robust_acc") is not None else None,
            "time/total_s": last.get("time_total_s"),
            "checkpoint_path": last.get("checkpoint_path"),
            "resolved_config": s.base.override(trial.config).to_dict(),
        }
        rows.append(row)
    return rows


def _posthoc(checkpoint_path: str, final: dict[str, Any], data_cfg: dict[str, Any]) -> dict[str, Any]:
    from ray.train import Checkpoint

    from acl_ray.algorithm.checkpoint import load_checkpoint
    from acl_ray.algorithm.data import load_datasets
    from acl_ray.algorithm.final_eval import final_eval
    from acl_ray.algorithm.pretrain import resolve_device, set_threads
    from acl_ray.config.pretrain import DataConfig
    from acl_ray.config.protocols import FinetuneConfig

    set_threads(0)
    device = resolve_device("auto")
    with Checkpoint(checkpoint_path).as_directory() as d:  # local folder, S3 or GCS
        state = load_checkpoint(d, map_location=device)
    return final_eval(state, load_datasets(DataConfig(**data_cfg)), FinetuneConfig.from_dict(final), device)


def _reachable(path: str) -> bool:
    return "://" in path or Path(path).exists()  # remote checkpoints are checked when loaded


def complete_missing(s: Any, out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the final protocol for trials without it (stopped early), cached in ``out/posthoc``."""
    cache = out / "posthoc"
    todo = []
    for r in rows:
        path = cache / f"{r['trial_id']}.json"
        if r["eval/source"] is None and path.exists():
            r.update(json.loads(path.read_text()), **{"eval/source": "posthoc"})
        elif r["eval/source"] is None and r["checkpoint_path"] and _reachable(r["checkpoint_path"]):
            todo.append(r)
    if todo:
        if not ray.is_initialized():
            ray.init(num_cpus=None)
        task = ray.remote(num_cpus=s.sweep.cpus_per_worker, num_gpus=s.sweep.gpus_per_worker)(_posthoc)
        final = s.final.to_dict()
        data_cfg = s.base.to_dict()["data"]
        refs = [task.remote(r["checkpoint_path"], final, data_cfg) for r in todo]
        cache.mkdir(exist_ok=True)
        for r, metrics in zip(todo, ray.get(refs), strict=True):
            (cache / f"{r['trial_id']}.json").write_text(json.dumps(metrics, indent=2))
            r.update(metrics, **{"eval/source": "posthoc"})
    return rows


def print_summary(rows: list[dict[str, Any]], best: dict[str, Any] | None, keys: list[str]) -> None:
    t = Table(title="sweep results (val = selection split, eval = test split)")
    for col in ("trial", *keys, "epochs", "status", "val SA", "val RA", "test SA", "test RA", "source"):
        t.add_column(col)
    for r in sorted(rows, key=lambda r: -(r.get("val/robust_acc") or -1)):
        mark = "*" if best is not None and r["trial_id"] == best["trial_id"] else ""
        t.add_row(
            r["trial_id"] + mark,
            *(_fmt(r.get(k)) for k in keys),
            str(r["epoch"]),
            r["status"].lower() + (" (asha)" if r["stopped_early"] else ""),
            *(_fmt(r.get(k)) for k in FINAL_KEYS),
            _fmt(r.get("eval/source")),
        )
    console.print(t)
    if best is not None:
        cfg = ", ".join(f"{k}={_fmt(best.get(k))}" for k in keys)
        console.print(f"best (val robust acc {best['val/robust_acc']:.4f}): {cfg}")
