"""What Ray Train costs around the training steps, and 1 vs 2 workers throughput, on digits.

Runs the same small pre-training (digits default, ``--epochs`` epochs) under Ray Train with 1 and
with 2 workers (``acl_ray.orchestration.ray_train.run_pretrain_ray``, the code behind ``acl-ray pretrain
--workers N``) on a local Ray started once beforehand, and reports for each:

* ``wall_s``: the whole ``run_pretrain_ray`` call (controller and worker-group start, data
  loading, every epoch with its report and checkpoint, teardown, copying the checkpoint back);
* ``train_s``: the sum of ``time/train_s`` over the epochs (the training steps only, as each
  epoch's metrics report them);
* ``overhead_share`` = 1 - train_s / wall_s: the share of the wall time outside training steps;
* ``images_per_s``: training throughput (images / train_s), and ``end_to_end_images_per_s``
  (images / wall_s).

Starting Ray itself (``ray.init``) is timed separately. Each worker gets ``--cpus-per-worker`` CPUs
(and as many torch threads), so on 2 cores 1 worker uses one core and 2 workers use both.
``--repeats`` alternates the order (1, 2, 2, 1, ...) so background load falls on both alike.

    python benchmarks/ray_overhead.py                     # ~1-2 min on 2 CPU cores
    python benchmarks/ray_overhead.py --epochs 20 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from acl_ray.config.fields import parse_set
from acl_ray.config.pretrain import Config
from acl_ray.orchestration.ray_train import run_pretrain_ray

ROOT = Path(__file__).resolve().parent.parent


def one_run(cfg: Config, workdir: Path, workers: int, cpus: float) -> dict[str, Any]:
    out = workdir / f"w{workers}-{time.monotonic_ns()}"
    start = time.perf_counter()
    rows = run_pretrain_ray(cfg, out, workers, cpus_per_worker=cpus, max_failures=0)
    wall = time.perf_counter() - start
    train = sum(r["time/train_s"] for r in rows)
    images = sum(r["train/images_per_s"] * r["time/train_s"] for r in rows)
    return {
        "workers": workers, "epochs": len(rows), "wall_s": wall, "train_s": train,
        "overhead_s": wall - train, "overhead_share": 1 - train / wall,
        "images_per_s": images / train, "end_to_end_images_per_s": images / wall,
        "final_loss": rows[-1]["train/loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run (digits: 9 steps of 128 each)")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1, help="runs per worker count, order alternating")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. data.batch_size=256")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    cfg = Config().override({"run.epochs": args.epochs, "run.progress": False, **parse_set(args.overrides)})
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    init_s = time.perf_counter() - t0
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(args.repeats):
                order = args.workers if r % 2 == 0 else args.workers[::-1]
                for w in order:
                    runs.append(one_run(cfg, Path(d), w, args.cpus_per_worker))
                    x = runs[-1]
                    print(f"{w} worker(s): wall {x['wall_s']:.1f}s, train {x['train_s']:.1f}s, overhead "
                          f"{x['overhead_share']:.0%}, {x['images_per_s']:.0f} img/s", flush=True)
    finally:
        ray.shutdown()
    summary = {}
    for w in args.workers:
        mine = [x for x in runs if x["workers"] == w]
        summary[str(w)] = {k: statistics.median(x[k] for x in mine)
                           for k in ("wall_s", "train_s", "overhead_share", "images_per_s",
                                     "end_to_end_images_per_s")}
    base = summary[str(args.workers[0])]["images_per_s"]
    for s in summary.values():
        s["speedup"] = s["images_per_s"] / base
    res: dict[str, Any] = {
        "config": {"epochs": args.epochs, "batch_size": cfg.data.batch_size, "dataset": cfg.data.name,
                   "variant": cfg.model.variant, "attack.steps": cfg.attack.steps,
                   "cpus_per_worker": args.cpus_per_worker, "overrides": args.overrides},
        "cpu_count": os.cpu_count(), "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "ray_version": ray.__version__, "ray_init_s": init_s, "runs": runs, "summary": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_overhead.json").write_text(json.dumps(res, indent=2))
    lines = [
        f"# Ray Train overhead: {cfg.data.name}, {cfg.model.variant} K={cfg.attack.steps}, batch "
        f"{cfg.data.batch_size}, {args.epochs} epochs, {args.cpus_per_worker:g} CPU per worker",
        "",
        f"Ray {ray.__version__}; `ray.init` took {init_s:.1f} s (not counted below); {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.1f} -> {res['load_avg_end'][0]:.1f}; median of {args.repeats} "
        "run(s) each.",
        "",
        "| workers | wall s | train s | outside training steps | images/s (train) | images/s (end to end) |"
        " speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w, s in summary.items():
        lines.append(f"| {w} | {s['wall_s']:.1f} | {s['train_s']:.1f} | {s['overhead_share']:.0%} | "
                     f"{s['images_per_s']:.0f} | {s['end_to_end_images_per_s']:.0f} | {s['speedup']:.2f}x |")
    lines += ["", "wall: the whole `run_pretrain_ray` call; train: the sum of the epochs' `time/train_s`."]
    md = "\n".join(lines) + "\n"
    (out / "ray_overhead.md").write_text(md)
    print(md + f"\nwrote {out}/ray_overhead.json and .md")


if __name__ == "__main__":
    main()
