"""The later methods' knobs on digits: ACL-DS defaults vs each knob alone vs all together.

Every method pre-trains the default digits ACL-DS (40 epochs) with its overrides, then runs SLF and
ALF with the default finetune settings; test robust accuracy is PGD-20 (CE + CW, worst case per point)
at eps 0.1. Rows (``--methods``):

- ``acl``: today's ACL-DS defaults;
- ``dynaug``: DynACL's annealed augmentation (``augment.schedule=dynacl``);
- ``ramp``: DynACL's clean/adversarial weight ramp (``loss.adv_weight_schedule=dynacl``);
- ``air``: AIR's regularisers at the paper's weights (``loss.air_weight=0.5``, ``loss.sir_weight=0.5``);
- ``dynacl``: both DynACL schedules; ``all``: DynACL-AIR (all three).

Finished runs are reused, so the script resumes; ``--jobs`` runs (method, seed) pairs side by side::

    python experiments/later_methods_table.py --out results/later --jobs 2
    python experiments/later_methods_table.py --out /tmp/later --smoke   # seconds: synthetic, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from pathlib import Path
from typing import Any

from acl_ray.algorithm.finetune import finetune
from acl_ray.algorithm.pretrain import run_pretrain
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig

DYNAUG = {"augment.schedule": "dynacl"}
RAMP = {"loss.adv_weight_schedule": "dynacl"}
AIR = {"loss.air_weight": 0.5, "loss.sir_weight": 0.5}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "acl": ("ACL-DS (defaults)", {}),
    "dynaug": ("+ DynACL augmentation schedule", DYNAUG),
    "ramp": ("+ DynACL adv-weight ramp", RAMP),
    "air": ("+ AIR (0.5 / 0.5)", AIR),
    "dynacl": ("DynACL (both schedules)", {**DYNAUG, **RAMP}),
    "all": ("DynACL-AIR (all three)", {**DYNAUG, **RAMP, **AIR}),
}
PROTOCOLS = ("slf", "alf")
SMOKE_PRETRAIN = {
    "data.name": "synthetic", "data.synthetic_size": 300, "data.batch_size": 32, "run.epochs": 2,
    "attack.steps": 1,
}
SMOKE_FINETUNE = {"epochs": 1, "train_steps": 1, "eval.steps": 2, "val_size": 50}
KEYS = ("eval/standard_acc", "eval/robust_acc")


def run_one(out: Path, method: str, seed: int, threads: int, smoke: bool = False) -> list[dict[str, Any]]:
    """Pre-train (or reuse) ``OUT/runs/{method}_s{seed}`` and finetune it with every protocol."""
    run = out / "runs" / f"{method}_s{seed}"
    if not (run / "metrics.json").exists():
        cfg = Config().override(
            {**METHODS[method][1], "run.seed": seed, "run.threads": threads, "run.progress": False}
            | (SMOKE_PRETRAIN if smoke else {})
        )
        pre = run / "pretrain"
        history = run_pretrain(cfg, pre, resume=(pre / "config.yaml").exists())  # an interrupted run resumes
        train_s = sum(r["time/train_s"] for r in history)
        (run / "metrics.json").write_text(json.dumps({"pretrain/train_s": train_s}))
    pre = json.loads((run / "metrics.json").read_text())
    rows = []
    for protocol in PROTOCOLS:
        ft = run / protocol
        if not (ft / "metrics.json").exists():
            ft_cfg = FinetuneConfig(protocol=protocol, seed=seed, threads=threads)
            finetune(run / "pretrain", ft_cfg.override(SMOKE_FINETUNE if smoke else {}), ft)
        row = {"method": method, "protocol": protocol, "seed": seed, **pre}
        row.update(json.loads((ft / "metrics.json").read_text()))
        rows.append(row)
    return rows


def _cell(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}"


def summarise(rows: list[dict[str, Any]], seeds: list[int]) -> tuple[str, dict[str, Any]]:
    """Markdown table (mean ± std over seeds, RA change vs ACL-DS) and the same numbers as a dict."""
    lines = [
        "Digits, 40 pre-training epochs (the default), test PGD-20 (CE + CW worst case) at eps 0.1;"
        f" mean ± std over seeds {seeds}.",
        "",
        "| method | SLF SA | SLF RA | ALF SA | ALF RA | SLF RA − ACL | ALF RA − ACL | pre-train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    acl = [r for r in rows if r["method"] == "acl"]
    base = {p: [r["eval/robust_acc"] for r in acl if r["protocol"] == p] for p in PROTOCOLS}
    for method, (name, overrides) in METHODS.items():
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        cells, deltas = [], []
        entry: dict[str, Any] = {"overrides": overrides}
        for p in PROTOCOLS:
            for key in KEYS:
                vals = [r[key] for r in sel if r["protocol"] == p]
                cells.append(_cell(vals))
                entry[f"{p}/{key}"] = {"mean": statistics.mean(vals), "values": vals}
            ra = [r["eval/robust_acc"] for r in sel if r["protocol"] == p]
            deltas.append(f"{statistics.mean(ra) - statistics.mean(base[p]):+.3f}" if base[p] else "—")
        train_s = [r["pretrain/train_s"] for r in sel if r["protocol"] == PROTOCOLS[0]]
        entry["pretrain/train_s"] = statistics.mean(train_s)
        summary[method] = entry
        lines.append(f"| {name} | " + " | ".join(cells + deltas) + f" | {statistics.mean(train_s):.0f} |")
    return "\n".join(lines) + "\n", summary


def _task(args: tuple[str, str, int, int, bool]) -> list[dict[str, Any]]:
    out, method, seed, threads, smoke = args
    return run_one(Path(out), method, seed, threads, smoke)


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", required=True, help="directory for table.md, results.json and runs/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="(method, seed) pairs run at once")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, 2 epochs, seed 0, acl and all")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.methods = [0], ["acl", "all"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(str(out), m, s, args.threads, args.smoke) for s in args.seeds for m in args.methods]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            parts = pool.map(_task, tasks, chunksize=1)
    else:
        parts = [_task(t) for t in tasks]
    rows = [r for part in parts for r in part]
    table, summary = summarise(rows, args.seeds)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
