"""Where a sweep trial's start-up and per-epoch time go, before and after the fast 1-worker trial.

1. Components, each timed alone (median of ``--repeats``): importing torch and the trial module in a
   fresh Python, a gloo process group of one, starting a Ray worker process (an actor), a 1-worker
   TorchTrainer around a no-op loop (controller, placement group, worker, process group, teardown),
   loading the datasets (fresh process) against ``ray.get`` of the copy a sweep shares, building the
   model, the first epoch, the first proxy and writing a checkpoint.
2. End to end, the default sweep's base config for ``--epochs`` epochs, FIFO, 2 trials at once, timed
   by a Tune callback in the driver: ``before`` = every trial a TorchTrainer, data loaded by each
   worker, a checkpoint every epoch (``sweep.runner=train``, ``run.checkpoint_every=1``); ``after``
   = the default (the epoch loop in the Tune trial process, shared data, checkpoints every
   ``run.checkpoint_every`` epochs and at ASHA rungs). Per trial: first result after the trial
   started, start-up = that minus epoch 1's training and proxy, per-epoch overhead = the time
   between results beyond training and proxy (last epoch excluded: it runs the final protocol).
3. ``--full``: the default sweep itself (configs/sweep_digits.yaml, TPE + ASHA, 10 trials), with the
   share of trial wall time (trial start to end, in the driver) spent in training and proxy.

    python benchmarks/trial_start.py            # parts 1-2, ~3 min on 2 CPU cores
    python benchmarks/trial_start.py --full     # + the default sweep, ~5 min more
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.tune

from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.orchestration.ray_train import ensure_ray
from acl_ray.orchestration.tuner import build_tuner

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_digits.yaml"


def fresh(code: str) -> float:
    """Seconds a snippet reports from a fresh Python (it prints one float)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def median(fn: Callable[[], float], n: int) -> float:
    return statistics.median(fn() for _ in range(n))


def components(s: Sweep, n: int) -> dict[str, float]:
    import torch

    from acl_ray.algorithm.checkpoint import save_checkpoint
    from acl_ray.algorithm.data import load_datasets
    from acl_ray.algorithm.pretrain import Pretrainer
    from acl_ray.algorithm.proxy import proxy_eval
    from acl_ray.config.protocols import ProxyConfig

    t = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
    pg = (
        "import os, torch.distributed as dist; "
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29533'); "
        "dist.init_process_group('gloo', rank=0, world_size=1)"
    )
    res = {
        "torch import (fresh process)": median(lambda: fresh(t.format("import torch")), n),
        "trial module import (fresh process)": median(
            lambda: fresh(t.format("import acl_ray.orchestration.trial")), n
        ),
        "process group, gloo, 1 rank": median(lambda: fresh(f"import torch.distributed; {t.format(pg)}"), n),
        "data loading with its imports (fresh process)": median(
            lambda: fresh(
                t.format(
                    "from acl_ray.algorithm.data import load_datasets; "
                    "from acl_ray.config.pretrain import DataConfig; "
                    "load_datasets(DataConfig())"
                )
            ),
            n,
        ),
    }
    data = load_datasets(s.base.data)
    ref = ray.put(data)

    @ray.remote(num_cpus=1)
    class Probe:
        def get(self, r: list[ray.ObjectRef]) -> float:
            import acl_ray.algorithm.data  # noqa: F401 (the module the object unpickles into, as in a trial)

            start = time.perf_counter()
            ray.get(r[0])
            return time.perf_counter() - start

    gets: list[float] = []

    def actor() -> float:
        start = time.perf_counter()
        a = Probe.remote()  # type: ignore[attr-defined]
        ray.get(a.__ray_ready__.remote())
        took = time.perf_counter() - start
        gets.append(ray.get(a.get.remote([ref])))
        ray.kill(a)
        return took

    res["Ray worker process (an actor)"] = median(actor, n)
    res["shared data, ray.get in a trial"] = statistics.median(gets)
    res["TorchTrainer, 1 worker, no-op loop"] = median(lambda: noop_trainer(), n)
    torch.set_num_threads(1)
    cfg = s.base.override({"run.progress": False})
    start = time.perf_counter()
    trainer = Pretrainer(cfg, data, torch.device("cpu"))
    res["model and optimiser"] = time.perf_counter() - start
    res["first epoch, training"] = trainer.train_epoch()["time/train_s"]
    proxy = ProxyConfig(**{**s.proxy.to_dict(), "eps": s.final.eval.eps})
    res["first proxy"] = proxy_eval(trainer.encoder, data, proxy)["time/proxy_s"]
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        save_checkpoint(Path(d) / "checkpoint.pt", trainer.state_dict())
        res["checkpoint write (atomic, fsync)"] = time.perf_counter() - start
    return res


def noop_trainer() -> float:
    import ray.train
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        TorchTrainer(
            lambda c: None,
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(storage_path=d, name=f"noop-{time.monotonic_ns()}"),
        ).fit()
        return time.perf_counter() - start


class Timer(ray.tune.Callback):
    """Driver-side clock of each trial: first seen (created, before its process starts), every result,
    end. ``on_trial_start`` would be too late: Tune calls it once the trial's actor is up."""

    def __init__(self) -> None:
        self.t: dict[str, dict[str, Any]] = {}

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:
            self.t.setdefault(trial.trial_id, {"start": time.monotonic(), "results": []})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.t.setdefault(trial.trial_id, {"start": time.monotonic(), "results": []})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.t[trial.trial_id]["results"].append((time.monotonic(), dict(result)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.t[trial.trial_id]["end"] = time.monotonic()


def work(r: dict[str, Any]) -> float:
    return float(r.get("time/train_s", 0.0) + (r.get("time/proxy_s") or 0.0))


def trial_times(timer: Timer) -> dict[str, Any]:
    """Start-up, per-epoch overhead and shares of trial wall time, from the driver's clock."""
    starts, inside, overheads, walls, works, evals = [], [], [], [], [], []
    for t in timer.t.values():
        res = t["results"]
        if not res:
            continue
        starts.append(res[0][0] - t["start"] - work(res[0][1]))
        inside.append(res[0][1]["time_total_s"] - work(res[0][1]))  # Tune's clock, in the trial process
        prev = res[0][0]
        for at, r in res[1:]:
            if r.get("val/robust_acc") is None:
                overheads.append(at - prev - work(r))
            prev = at
        walls.append(t.get("end", res[-1][0]) - t["start"])
        works.append(sum(work(r) for _, r in res))
        evals.append(sum(r.get("time/eval_s") or 0.0 for _, r in res))
    return {
        "trials": len(walls),
        "startup_s": statistics.median(starts),
        "startup_in_trial_process_s": statistics.median(inside),
        "per_epoch_overhead_s": statistics.median(overheads) if overheads else None,
        "trial_wall_s": sum(walls),
        "train_proxy_s": sum(works),
        "final_eval_s": sum(evals),
        "train_proxy_share": sum(works) / sum(walls),
    }


def sweep_run(s: Sweep, folder: Path, shared: bool, reuse: bool = True) -> dict[str, Any]:
    from acl_ray.algorithm.data import load_datasets

    timer = Timer()
    start = time.perf_counter()
    folder.mkdir(parents=True)
    s.save(folder)
    ref = ray.put(load_datasets(s.base.data)) if shared else None
    build_tuner(s, folder, data=ref, callbacks=[timer], reuse_actors=reuse).fit()
    return {"tune_fit_s": time.perf_counter() - start, **trial_times(timer)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per trial in part 2")
    ap.add_argument("--repeats", type=int, default=3, help="runs per component in part 1 (median)")
    ap.add_argument("--full", action="store_true", help="part 3: run the default sweep too")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    base = load_sweep(CONFIG)
    load_start = os.getloadavg()
    ensure_ray(None, quiet=True)
    res: dict[str, Any] = {"cpu_count": os.cpu_count(), "ray_version": ray.__version__}
    try:
        res["components_s"] = components(base, args.repeats)
        small = ["sweep.scheduler=fifo", "sweep.num_samples=2", f"run.epochs={args.epochs}"]
        before = [*small, "sweep.runner=train", "run.checkpoint_every=1"]
        with tempfile.TemporaryDirectory() as d:
            res["before"] = sweep_run(load_sweep(CONFIG, before), Path(d) / "before", False, reuse=False)
            res["after"] = sweep_run(load_sweep(CONFIG, small), Path(d) / "after", shared=True)
            if args.full:
                res["default_sweep"] = sweep_run(base, Path(d) / "full", shared=True)
    finally:
        ray.shutdown()
    res["load_avg"] = [load_start[0], os.getloadavg()[0]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trial_start.json").write_text(json.dumps(res, indent=2))
    md = report(res, args.epochs)
    (out / "trial_start.md").write_text(md)
    print(md + f"\nwrote {out}/trial_start.json and .md")


def report(res: dict[str, Any], epochs: int) -> str:
    lines = [
        "# Sweep trial start-up and per-epoch overhead (digits, ACL-DS, 1 CPU per trial)",
        "",
        f"Ray {res['ray_version']}, {res['cpu_count']} CPUs, load average {res['load_avg'][0]:.1f} -> "
        f"{res['load_avg'][1]:.1f}.",
        "",
        "## Components, each alone (median)",
        "",
        "| component | s |",
        "|---|---:|",
        *(f"| {k} | {v:.2f} |" for k, v in res["components_s"].items()),
        "",
        f"## End to end: 2 trials at once, {epochs} epochs each, FIFO (driver clock, median per trial)",
        "",
        "| | start-up s (first result - epoch 1 work) | of which in the trial function s | per-epoch "
        "overhead s | train + proxy share of trial wall | final eval share | Tune fit s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [(k, res[k]) for k in ("before", "after", "default_sweep") if k in res]
    for name, r in runs:
        lines.append(
            f"| {name} | {r['startup_s']:.1f} | {r['startup_in_trial_process_s']:.1f} | "
            f"{r['per_epoch_overhead_s'] or 0:.2f} | "
            f"{r['train_proxy_share']:.0%} | {r['final_eval_s'] / r['trial_wall_s']:.0%} | "
            f"{r['tune_fit_s']:.0f} |"
        )
    lines += [
        "",
        "before: every trial a 1-worker TorchTrainer (`sweep.runner=train`), data loaded by the worker, a "
        "checkpoint every epoch. after: the default (epoch loop in the Tune trial process, data from the "
        "object store, checkpoints every `run.checkpoint_every` epochs, at ASHA rungs and at the end). "
        "default_sweep: configs/sweep_digits.yaml as `./dev main` runs it (10 trials, TPE + ASHA).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
