"""Peak memory of ACL pre-training steps per batch size (bounds the sweep's ``data.batch_size`` range).

Each (variant, batch size) runs in a fresh subprocess, so one measurement cannot inherit another's
peak or allocator cache: it builds the trainer, runs ``--warmup`` steps, then measures ``--steps``
more. How:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only;
  the caching allocator reserves a little more, reported as ``reserved``), minus the memory
  allocated before the measured steps (model, optimiser state, dataset): the step's own peak.
* CPU: the process's peak resident set size, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
  after the warm-up and measured steps, minus the current RSS (``/proc/self/statm``) once the
  trainer is built, before any step. The baseline is taken before the warm-up because the C
  allocator keeps freed pages: after one step the RSS already holds most of the step's peak. It
  counts everything the steps touch (allocator slack, oneDNN scratch and primitive caches), so it
  bounds the tensors' need from above. ``ru_maxrss`` never decreases, so a set-up peak above the
  steps' would mask them: ``setup_peak_bytes`` (ru_maxrss at the baseline minus the baseline)
  says how much room that leaves.

A least-squares line ``peak = fixed + per_image * batch`` over the batch sizes gives the largest
batch that fits a memory budget (``--budget-gib``; default: the GPU's memory, or the machine's RAM).

    python benchmarks/memory.py                                         # digits default, CPU, ~1-2 min
    python benchmarks/memory.py --arch resnet18 --batches 128 256 512 1024 --variants simclr ds   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns bytes."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from step_cost import base_config  # the same model, data and settings as the step-cost benchmark

    from acl_ray.algorithm.pretrain import Pretrainer
    from acl_ray.algorithm.runtime import resolve_device

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    args.compile, args.no_channels_last = False, False  # what base_config reads besides the above
    cfg, data = base_config(args)
    device = resolve_device(args.device)
    sets = {"model.variant": args.variant, "attack.steps": args.k, "run.precision": args.precision}
    trainer = Pretrainer(cfg.override(sets), data, device)
    gen = torch.Generator(device=device).manual_seed(0)
    n = trainer.images.shape[0]

    def steps(k: int) -> None:
        for _ in range(k):
            trainer.step(torch.randperm(n, generator=gen, device=device)[: trainer.local_batch])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type != "cuda":
        before = _rss_bytes()
        setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # KiB on Linux
        steps(args.warmup + args.steps)
        return {
            "method": "ru_maxrss after the steps - RSS before the first step",
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
            "resident_bytes": before,
            "setup_peak_bytes": setup_peak,
            "device": "cpu",
            "total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        }
    steps(args.warmup)  # CUDA from here
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    steps(args.steps)
    return {
        "method": "torch.cuda.max_memory_allocated - memory_allocated before the steps",
        "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
        "resident_bytes": before,
        "reserved_bytes": torch.cuda.max_memory_reserved(device),
        "device": torch.cuda.get_device_name(device),
        "total_bytes": torch.cuda.get_device_properties(device).total_memory,
    }


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x``; returns (a, b)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("small_cnn", "resnet18"), default="small_cnn")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    ap.add_argument("--variants", nargs="+", default=["simclr", "ds"], choices=["simclr", "a2a", "a2s", "ds"])
    ap.add_argument("--k", type=int, default=0, help="PGD steps (0: the config's: 3 digits, 5 paper)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all this process may use)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--budget-gib", type=float, default=0.0, help="budget for the max batch (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="ds", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if not args.k:
            args.k = 5 if args.arch == "resnet18" else 3
        print(json.dumps(child(args)))
        return

    rows: list[dict[str, Any]] = []
    for variant in args.variants:
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--child", "--arch", args.arch, "--batch", str(batch),
                   "--variant", variant, "--k", str(args.k), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
                   "--precision", args.precision, "--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:  # e.g. out of memory, or a batch larger than the training split
                reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
                rows.append({"variant": variant, "batch": batch, "error": reason})
                print(f"{variant} batch {batch}: failed: {reason}")
                continue
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"variant": variant, "batch": batch, **m})
            print(f"{variant} batch {batch}: step peak {m['peak_bytes'] / MIB:.1f} MiB "
                  f"(resident {m['resident_bytes'] / MIB:.0f} MiB)", flush=True)
    ok = [r for r in rows if "error" not in r]
    if not ok:
        sys.exit("no measurement succeeded")
    total = ok[0]["total_bytes"]
    budget = args.budget_gib * 2**30 or total
    fits = {}
    for variant in args.variants:
        pts = [(r["batch"], float(r["peak_bytes"])) for r in ok if r["variant"] == variant]
        if len(pts) < 2:
            continue
        a, b = fit(pts)
        resident = max(r["resident_bytes"] for r in ok if r["variant"] == variant)
        fits[variant] = {
            "fixed_mib": a / MIB, "per_image_kib": b / 1024,
            "max_batch_in_budget": int((budget - resident - a) / b) if b > 0 else None,
        }
    k = args.k or (5 if args.arch == "resnet18" else 3)
    res = {"arch": args.arch, "k": k, "device": ok[0]["device"], "method": ok[0]["method"],
           "budget_gib": budget / 2**30, "rows": rows, "fits": fits}
    tag = "cuda" if ok[0]["device"] != "cpu" else "cpu"
    stem = f"memory_{tag}" + ("" if args.arch == "small_cnn" else f"_{args.arch}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    lines = [
        f"# Peak step memory: {args.arch}, K={k}, {res['device']}",
        "",
        f"Method: {res['method']} (fresh process per row; "
        + (f"peak over the first {args.warmup + args.steps} steps)." if tag == "cpu" else
           f"peak over {args.steps} steps after {args.warmup} warm-up steps)."),
        "",
        "| variant | batch | step peak MiB | resident MiB |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['batch']} | failed: {r['error'][:60]} | |")
        else:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['peak_bytes'] / MIB:.1f} | "
                         f"{r['resident_bytes'] / MIB:.0f} |")
    lines.append("")
    for v, f in fits.items():
        lines.append(f"- {v}: about {f['fixed_mib']:.0f} MiB + {f['per_image_kib']:.0f} KiB per image; "
                     f"largest batch in {budget / 2**30:.0f} GiB: {f['max_batch_in_budget']}")
    md = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(md)
    print(md + f"\nwrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
