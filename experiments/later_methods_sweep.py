"""Today's digits sweep vs the sweep that also searches the later methods' knobs, at equal cost.

Runs ``configs/sweep_digits.yaml`` and ``configs/sweep_digits_later.yaml`` once per searcher seed
(same trials, epochs, searcher and scheduler; one sweep at a time on local Ray), then writes
``OUT/comparison.md`` and ``OUT/comparison.json``: the best validation robust accuracy of each sweep
(SLF, PGD-20 at eps 0.1, the searcher's metric) and that trial's test numbers and knobs::

    python experiments/later_methods_sweep.py --out results/later_sweeps --seeds 0 1 2

Finished sweeps (those with a ``summary.json``) are reused; an interrupted one is resumed. ``--smoke``
runs both sweep files with 2 one-epoch trials on synthetic data and searcher seed 0 (about a minute).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

from _common import run, sets

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {"acl": ROOT / "configs/sweep_digits.yaml", "later": ROOT / "configs/sweep_digits_later.yaml"}
SMOKE = [
    "data.name=synthetic", "data.synthetic_size=1000", "run.epochs=1", "run.threads=1", "sweep.num_samples=2",
    "proxy.train_size=100", "proxy.val_size=50", "proxy.epochs=2", "proxy.steps=2",
    "final.epochs=1", "final.threads=1", "final.val_size=50", "eval.steps=2", "sweep.confirm.top_k=0",
]
KNOBS = ("augment.schedule", "loss.adv_weight_schedule", "loss.air_weight", "loss.sir_weight")


def best_of(folder: Path) -> dict[str, Any]:
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["best"] or {}
    cfg = best.get("resolved_config", {})
    knobs = {k: cfg.get(k.split(".")[0], {}).get(k.split(".")[1]) for k in KNOBS}
    keys = ("val/robust_acc", "val/standard_acc", "eval/robust_acc", "eval/standard_acc")
    return {"trials": len(summary["trials"]), **{k: best.get(k) for k in keys}, **knobs}


def importances(folders: list[Path]) -> dict[str, float]:
    """Mean fANOVA importance per key over the sweeps' ``analysis/importance.csv`` (written by each sweep)."""
    sums: dict[str, list[float]] = {}
    for folder in folders:
        path = folder / "analysis" / "importance.csv"
        if path.exists():
            for row in csv.DictReader(path.open()):
                sums.setdefault(row["param"], []).append(float(row["importance"]))
    means = {k: statistics.mean(v) for k, v in sums.items()}
    return dict(sorted(means.items(), key=lambda kv: -kv[1]))


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="2 one-epoch synthetic trials per sweep, seed 0")
    args = parser.parse_args()
    if args.smoke:
        args.seeds = [0]
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        for name, config in SWEEPS.items():
            folder = out / f"{name}_s{seed}"
            if not (folder / "summary.json").exists():
                if folder.exists():
                    run(["sweep", "--resume", str(folder)])
                else:
                    new = ["--out", str(folder), "--config", str(config), "--set", f"sweep.seed={seed}"]
                    run(["sweep", *new, *sets(SMOKE if args.smoke else [])])
            rows.append({"sweep": name, "seed": seed, **best_of(folder)})
    lines = [
        f"Best validation RA (SLF, PGD-20, eps 0.1) of each sweep, {rows[0]['trials']} trials,"
        f" searcher seeds {args.seeds}.",
        "",
        "| sweep | seed | best val RA | its val SA | its test RA | its test SA | " + " | ".join(KNOBS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(KNOBS),
    ]
    for r in rows:
        nums = [f"{r[k]:.4f}" if r[k] is not None else "—" for k in
                ("val/robust_acc", "val/standard_acc", "eval/robust_acc", "eval/standard_acc")]
        knobs = [str(r[k]) if r["sweep"] == "later" else "(not searched)" for k in KNOBS]
        lines.append(f"| {r['sweep']} | {r['seed']} | " + " | ".join(nums + knobs) + " |")
    means = {}
    for name in SWEEPS:
        vals = [r["val/robust_acc"] for r in rows if r["sweep"] == name and r["val/robust_acc"] is not None]
        if vals:
            means[name] = statistics.mean(vals)
            lines.append(f"- {name}: mean best val RA {means[name]:.4f} over {len(vals)} sweeps")
    imp = importances([out / f"later_s{seed}" for seed in args.seeds])
    if imp:
        n = len(args.seeds)
        lines += ["", f"fANOVA importance for val RA in the enlarged sweep (mean over {n} sweeps):", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in imp.items()]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    result = {"rows": rows, "mean_best_val_ra": means, "later_importance": imp}
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
