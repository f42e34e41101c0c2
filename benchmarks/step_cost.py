"""Cost of one ACL optimiser step per variant and PGD step count, side by side in one process.

For simclr, a2a, a2s and ds at K in {1, 3, 5, 10} it times ``Pretrainer.step`` (augmentation,
attack, training forward/backward, optimiser and schedule: what an epoch runs per batch) and
reports images/s and the ratio of each step to the SimCLR step, next to the method's floor. Counting
a forward pass as 1 and a full backward as 2 (issue 7): SimCLR on 2B views costs 6B; a PGD step
needs only the input gradient (forward + input backward, about 2 per view), so

* ds  (attack 2B views, train on 4B):  (4KB + 12B) / 6B = (2K + 6) / 3
* a2a, a2s (attack 2B views, train 2B): (4KB + 6B) / 6B = (2K + 3) / 3
* ds_air (ds + AIR, the un-augmented batch in the training forward, 5B rows): (4KB + 15B) / 6B

(A2S attacks one view but the attack's forward and backward still run over both.) The official
code also computes weight gradients inside its attack and pays K + 2 for ds.

Method: every variant is built once (same seed, same data on the device); each gets ``--warmup``
untimed steps, then ``--repeats`` rounds in which every variant runs ``--steps`` timed steps, the
variant order shuffled per round so that background load falls on all of them alike; the
per-step time of a variant is the median over rounds. On CUDA the clock is read after
``torch.cuda.synchronize()``. Batch indices are drawn on the device beforehand.

    python benchmarks/step_cost.py          # all variants, digits default (small_cnn, batch 128): ~2 min
    python benchmarks/step_cost.py --variants simclr ds --ks 3 5 --repeats 15 --steps 10  # acceptance
    python benchmarks/step_cost.py --threads 1 --clock cpu    # on a machine shared with other jobs
    python benchmarks/step_cost.py --arch resnet18 --batch 512 --variants simclr ds --ks 5 --fp32-baseline

The last is the GPU run: ResNet-18 at the paper's batch on random CIFAR-shaped data, the fast path
(bf16 autocast, channels_last; add ``--compile``) next to plain fp32. Results go to
``benchmarks/results/step_cost_<device>[_resnet18].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acl_ray.algorithm.data import DatasetInfo, Datasets, Split, load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.runtime import resolve_device
from acl_ray.config.pretrain import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("simclr", "a2a", "a2s", "ds", "ds_air")  # ds_air: DS + AIR's regularisers (0.5 / 0.5)
BOUND = 1.15  # acceptance: ds step <= 1.15 x floor at K = 3 and 5 (issue 7)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def floor_ratio(variant: str, k: int) -> float:
    """Step cost in SimCLR steps when forward = 1, full backward = 2, input-only backward = 1."""
    if variant == "simclr":
        return 1.0
    if variant == "ds_air":  # + the un-augmented batch in the training forward (5B rows): + 3B
        return (4 * k + 15) / 6
    return (2 * k + 6) / 3 if variant == "ds" else (2 * k + 3) / 3


@dataclass
class Case:
    label: str
    variant: str
    k: int
    precision: str
    trainer: Pretrainer
    times: list[float]  # seconds per step, one per round


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_").lower()
    return f"cpu{torch.get_num_threads()}t"


def random_cifar(n: int, device: torch.device, seed: int) -> Datasets:
    """CIFAR-shaped uint8 images: step time does not depend on content, and no download is needed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (n,), generator=g)
    split = Split(images, labels)
    return Datasets(split, split, split, DatasetInfo("cifar10", 10, 3, 32, 32, CIFAR_MEAN, CIFAR_STD))


def base_config(args: argparse.Namespace) -> tuple[Config, Datasets]:
    sets: dict[str, Any] = {"run.progress": False, "run.epochs": 1000, "run.threads": args.threads}
    sets.update({"run.compile": args.compile, "run.channels_last": not args.no_channels_last})
    if args.arch == "resnet18":  # the paper's setting on CIFAR-shaped data
        cfg = load_config(ROOT / "configs" / "paper_cifar10.yaml").override(sets)
        cfg = cfg.override({"data.batch_size": args.batch or 512})
        device = resolve_device(args.device)
        return cfg, random_cifar(max(4 * cfg.data.batch_size, 2048), device, args.seed)
    cfg = Config().override({**sets, "data.batch_size": args.batch or 128})  # digits default
    return cfg, load_datasets(cfg.data)


def build_cases(args: argparse.Namespace) -> list[Case]:
    cfg, data = base_config(args)
    device = resolve_device(args.device)
    precisions = [args.precision] + (["fp32"] if args.fp32_baseline and args.precision != "fp32" else [])
    cases = []
    for precision in precisions:
        for variant in args.variants:
            for k in [0] if variant == "simclr" else args.ks:
                sets = {
                    "model.variant": variant.removesuffix("_air"), "run.precision": precision,
                    "run.device": args.device,
                }
                if variant == "ds_air":
                    sets.update({"loss.air_weight": 0.5, "loss.sir_weight": 0.5})
                if k:
                    sets["attack.steps"] = k
                if precision == "fp32" and args.fp32_baseline:  # the plain path: no NHWC, no compile
                    sets.update({"run.channels_last": False, "run.compile": False})
                label = variant if not k else f"{variant} K={k}"
                label += f" [{precision}]" if len(precisions) > 1 else ""
                trainer = Pretrainer(cfg.override(sets), data, device)
                cases.append(Case(label, variant, k, precision, trainer, []))
    return cases


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run_steps(case: Case, idx: torch.Tensor, device: torch.device, clock: str = "wall") -> float:
    """Seconds per step over the batches in ``idx`` (steps, batch)."""
    now = CLOCKS[clock]
    sync_device(device)
    start = now()
    for i in range(idx.shape[0]):
        case.trainer.step(idx[i])
    sync_device(device)
    return (now() - start) / idx.shape[0]


def measure(cases: list[Case], args: argparse.Namespace) -> None:
    device = cases[0].trainer.device
    n_train, batch = cases[0].trainer.images.shape[0], cases[0].trainer.local_batch
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def batches(steps: int) -> torch.Tensor:
        perms = [torch.randperm(n_train, generator=gen, device=device)[:batch] for _ in range(steps)]
        return torch.stack(perms)  # (steps, batch), on the device: no host-to-device copy per step

    for case in cases:  # warm-up: allocator, autotuning, torch.compile, first-touch
        run_steps(case, batches(args.warmup), device)
    order = list(cases)
    rng = random.Random(args.seed)
    for r in range(args.repeats):
        rng.shuffle(order)  # interleaved: every round runs all variants, in a fresh order
        idx = batches(args.steps)  # the same images for every variant in this round
        for case in order:
            case.times.append(run_steps(case, idx, device, args.clock))
        if args.verbose:
            times = ", ".join(f"{c.label} {c.times[-1] * 1e3:.1f}ms" for c in cases)
            print(f"round {r + 1}/{args.repeats}: {times}", flush=True)


def summarise(cases: list[Case], args: argparse.Namespace) -> dict[str, Any]:
    batch = cases[0].trainer.cfg.data.batch_size
    rows: list[dict[str, Any]] = []
    for c in cases:
        med = statistics.median(c.times)
        simclr = next(s for s in cases if s.variant == "simclr" and s.precision == c.precision)
        ratio = med / statistics.median(simclr.times)
        fl = floor_ratio(c.variant, c.k)
        # per-round ratios (same round, same images): their spread is the measurement's noise
        per_round = [t / s for t, s in zip(c.times, simclr.times, strict=True)]
        q1_q3 = per_round
        if len(per_round) > 1:
            q1_q3 = statistics.quantiles(per_round, n=4, method="inclusive")[::2]
        rows.append({
            "label": c.label, "name": c.label.split(" [")[0], "variant": c.variant, "K": c.k,
            "precision": c.precision,
            "step_ms": med * 1e3, "step_ms_min": min(c.times) * 1e3, "step_ms_max": max(c.times) * 1e3,
            "images_per_s": batch / med, "ratio_to_simclr": ratio, "floor": fl,
            "ratio_over_floor": ratio / fl, "ratio_round_q1_q3": q1_q3,
        })
    device = cases[0].trainer.device
    checks = {
        f"{r['label']}: ratio {r['ratio_to_simclr']:.2f} <= {BOUND} x {r['floor']:.2f}"
        f" = {BOUND * r['floor']:.2f}": r["ratio_over_floor"] <= BOUND
        for r in rows if r["variant"] == "ds" and r["K"] in (3, 5)
    }
    plain = {r["name"]: r for r in rows if r["precision"] == "fp32"} if args.fp32_baseline else {}
    speedups = {  # the fast path (bf16 autocast, channels_last, compile) over plain fp32, same step
        r["name"]: r["images_per_s"] / plain[r["name"]]["images_per_s"]
        for r in rows if r["precision"] != "fp32" and r["name"] in plain
    }
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "load_avg_start": list(args.load_start),
        "load_avg_end": list(os.getloadavg()),
        "arch": cases[0].trainer.cfg.model.arch,
        "batch": batch,
        "precision": args.precision,
        "channels_last": not args.no_channels_last,
        "compile": args.compile,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "rows": rows,
        "checks": checks,
        "fast_path_speedup": speedups,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# Step cost: {res['arch']}, batch {res['batch']}, {res['device']} (torch {res['torch']})",
        "",
        f"Median of {res['repeats']} interleaved rounds x {res['steps']} steps after {res['warmup']} warm-up "
        f"steps, {res['clock']} clock, {res['threads']} threads; precision {res['precision']}, "
        f"channels_last {res['channels_last']}, compile {res['compile']}; "
        f"load average {res['load_avg_start'][0]:.1f} -> {res['load_avg_end'][0]:.1f} on "
        f"{res['cpu_count']} CPUs.",
        "",
        "| step | ms | images/s | x SimCLR | floor | / floor | per-round ratio q1-q3 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        q = "-".join(f"{v:.2f}" for v in r["ratio_round_q1_q3"])
        lines.append(
            f"| {r['label']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {r['ratio_to_simclr']:.2f} | "
            f"{r['floor']:.2f} | {r['ratio_over_floor']:.2f} | {q} |"
        )
    lines += ["", "Floor: ds (2K+6)/3, ds_air (4K+15)/6, a2a and a2s (2K+3)/3 SimCLR steps (forward 1,"
              " backward 2, input-only backward 1).", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in res["checks"].items()]
    for label, s in res["fast_path_speedup"].items():
        lines.append(f"- fast path ({res['precision']}) over plain fp32, {label}: {s:.2f}x images/s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("small_cnn", "resnet18"), default="small_cnn",
                    help="small_cnn: digits default; resnet18: paper config on random CIFAR-shaped data")
    ap.add_argument("--batch", type=int, default=0, help="global batch (0: 128 small_cnn, 512 resnet18)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 3, 5, 10], help="PGD steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median over them)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core it may use)")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (CPU only; robust to other "
                    "processes on a shared machine when --threads 1, since idle OpenMP threads spin)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: bf16 autocast on CUDA, fp32 on CPU")
    ap.add_argument("--no-channels-last", action="store_true", help="NCHW on CUDA")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    ap.add_argument("--fp32-baseline", action="store_true",
                    help="also time every case in plain fp32 (NCHW, no compile): the fast path's speed-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--verbose", action="store_true", help="print every round")
    args = ap.parse_args(argv)
    args.load_start = os.getloadavg()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    args.threads = torch.get_num_threads()  # Pretrainer's set_threads sees the same number
    cases = build_cases(args)
    measure(cases, args)
    res = summarise(cases, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"step_cost_{res['device']}" + ("" if res["arch"] == "small_cnn" else f"_{res['arch']}")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (out / f"{stem}.md").write_text(md)
    print(md + f"\nwrote {out / stem}.json and .md")
    return res


if __name__ == "__main__":
    main()
