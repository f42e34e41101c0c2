"""Learned schedules on digits: DynACL's hand-made schedule vs what PBT / PB2 learn, each replayed.

Rows (SLF and ALF test accuracy; RA: PGD-20 CE+CW worst case at eps 0.1; AA: AutoAttack):

- ``dynacl``: DynACL's two hand-made schedules at the digits defaults, ``--seeds`` runs;
- ``<sched>-member``: the population sweep's best member (``configs/sweep_digits_pbt.yaml``,
  ``sweep.scheduler`` = pbt or pb2, ``run.epochs`` = ``--epochs``, ``--population`` members), its own
  final checkpoint: one run;
- ``<sched>-replay``: its ``best_schedule.yaml`` trained again from scratch by a plain pre-training
  run (no Tune) at ``--seeds`` (at the sweep's seed the replay is the member itself, trained again).

Compute is counted in training epochs: a hand-made row costs ``seeds x epochs``, a population sweep
``population x epochs`` (its members train in parallel). Paired differences to ``dynacl`` (same seeds)
with a 95% t interval. Finished parts are reused, so the same command resumes::

    python benchmarks/learned_schedules.py --out /tmp/ls --jobs 2     # 40 epochs, 3 seeds, pbt and pb2
    python benchmarks/learned_schedules.py --out /tmp/ls --smoke      # synthetic, 2 epochs, minutes

Writes ``learned_schedules.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_digits_pbt.yaml"
DYNACL = {"augment.schedule": "dynacl", "loss.adv_weight_schedule": "dynacl"}
PROTOCOLS = ("slf", "alf")
METRICS = ("eval/standard_acc", "eval/robust_acc", "aa/robust_acc")
SMOKE_DATA = {"data.name": "synthetic", "data.synthetic_size": 300, "data.batch_size": 32}
SMOKE_SWEEP = ["proxy.train_size=100", "proxy.val_size=30", "proxy.epochs=2", "final.epochs=1",
               "final.val_size=30", "eval.steps=2", "sweep.perturbation_interval=1"]
SMOKE_FINETUNE = {"epochs": 1, "train_steps": 1, "eval.steps": 2, "val_size": 50}


def population_sweep(out: Path, sched: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume, or reuse) the pbt / pb2 sweep; its best member's checkpoint and schedule."""
    from acl_ray.config.sweep import SWEEP_FILE, load_sweep
    from acl_ray.orchestration.tune import resume_sweep, run_sweep

    folder = out / "sweeps" / sched
    smoke = [f"{k}={v}" for k, v in SMOKE_DATA.items()] + SMOKE_SWEEP if args.smoke else []
    overrides = [f"sweep.scheduler={sched}", f"run.epochs={args.epochs}",
                 f"sweep.num_samples={args.population}", *smoke]
    if not (folder / "summary.json").is_file():
        started = time.time()
        if (folder / SWEEP_FILE).is_file():
            resume_sweep(folder)
        else:
            run_sweep(load_sweep(CONFIG, overrides), folder)
        (folder / "wall_s.json").write_text(json.dumps({"wall_s": time.time() - started}))
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["best"]
    schedules = json.loads((folder / "schedules.json").read_text())
    return {
        "folder": str(folder),
        "overrides": overrides,
        "best": best["trial_id"],
        "checkpoint": best["checkpoint_path"],
        "schedule": schedules["members"][best["trial_id"]]["schedule"],
        "epochs": sum(int(r.get("epoch") or 0) for r in summary["trials"]),
        "wall_s": json.loads((folder / "wall_s.json").read_text())["wall_s"]
        if (folder / "wall_s.json").is_file() else None,
    }


def evaluate(run: Path, checkpoint: Path, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """SLF and ALF on ``checkpoint`` (a pre-training run or checkpoint), each with AutoAttack."""
    from acl_ray.algorithm.finetune import finetune
    from acl_ray.algorithm.robustness import evaluate_checkpoint
    from acl_ray.config.protocols import FinetuneConfig

    rows = []
    for protocol in PROTOCOLS:
        ft = run / protocol
        if not (ft / "metrics.json").is_file():
            cfg = FinetuneConfig(protocol=protocol, seed=seed, threads=args.threads)
            finetune(checkpoint, cfg.override(SMOKE_FINETUNE if args.smoke else {}), ft)
        row = json.loads((ft / "metrics.json").read_text())
        aa_file = ft / f"autoattack_{args.aa_version}.json"
        if not aa_file.is_file():
            aa = evaluate_checkpoint(ft, attack="autoattack", overrides={"eval.aa_version": args.aa_version})
            aa_file.write_text(json.dumps(aa))
        row["aa/robust_acc"] = json.loads(aa_file.read_text())["eval/robust_acc"]
        rows.append({"protocol": protocol, **{k: row[k] for k in METRICS}})
    return rows


def _task(task: tuple[str, str, int, str, dict[str, Any], argparse.Namespace]) -> dict[str, Any]:
    """One model: pre-train ``config`` (unless ``kind`` is member: the checkpoint exists) and evaluate."""
    from acl_ray.algorithm.pretrain import run_pretrain
    from acl_ray.config.pretrain import Config

    out, name, seed, kind, spec, args = task
    run = Path(out) / "runs" / f"{name}_s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if kind == "member":
        checkpoint = Path(spec["checkpoint"])
    else:
        checkpoint = run / "pretrain"
        if not (run / "pretrained.json").is_file():
            cfg = Config.from_dict(spec).override({"run.seed": seed, "run.threads": args.threads,
                                                   "run.progress": False})
            run_pretrain(cfg, checkpoint, resume=(checkpoint / "config.yaml").is_file())
            (run / "pretrained.json").write_text(json.dumps({"pretrain_s": time.time() - started}))
    rows = evaluate(run, checkpoint, seed, args)
    return {"name": name, "seed": seed, "rows": rows}


def stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def summarise(
    results: list[dict[str, Any]], sweeps: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Per row and protocol: mean ± std of each metric over seeds, the paired difference to dynacl."""
    from acl_ray.results.confirm import paired_difference

    by: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for r in results:
        by.setdefault(r["name"], {})[r["seed"]] = {row["protocol"]: row for row in r["rows"]}
    table: dict[str, Any] = {}
    for name, seeds in by.items():
        entry: dict[str, Any] = {"seeds": sorted(seeds)}
        for p in PROTOCOLS:
            for m in METRICS:
                entry[f"{p} {m}"] = stats([seeds[s][p][m] for s in sorted(seeds)])
            if name != "dynacl" and "dynacl" in by:
                for m in ("eval/robust_acc", "aa/robust_acc"):
                    a = {s: v[p][m] for s, v in seeds.items()}
                    b = {s: v[p][m] for s, v in by["dynacl"].items()}
                    entry[f"{p} {m} - dynacl"] = paired_difference(a, b)
        sched = name.split("-")[0]
        runs = 1 if name.endswith("-member") else len(seeds)
        entry["epochs"] = sweeps[sched]["epochs"] if name.endswith("-member") else runs * args.epochs
        table[name] = entry
    return table


def markdown(res: dict[str, Any]) -> str:
    a = res["args"]
    lines = [
        f"# Learned schedules on digits ({a['epochs']} epochs, population {a['population']})", "",
        f"`{res['command']}`; wall time {res['wall_s'] / 60:.1f} min. Test split, eps 0.1: RA = PGD-20 CE+CW"
        f" worst case, AA = AutoAttack {a['aa_version']}. Mean ± std over the seeds of each row; a member"
        " row is one run. Compute: training epochs (a population sweep: all its members' epochs).", "",
        "| row | seeds | epochs | SLF SA | SLF RA | SLF AA | ALF SA | ALF RA | ALF AA"
        " | SLF RA − DynACL (95%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(s: dict[str, Any]) -> str:
        return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["std"] is not None else "")

    for name, e in res["table"].items():
        d = e.get("slf eval/robust_acc - dynacl")
        diff = ""
        if d and d["mean"] is not None:
            interval = f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] is not None else ""
            diff = f"{d['mean']:+.3f}{interval} {d['verdict']}"
        cells = [cell(e[f"{p} {m}"]) for p in PROTOCOLS for m in METRICS]
        lines.append(f"| {name} | {','.join(map(str, e['seeds']))} | {e['epochs']} | " + " | ".join(cells)
                     + f" | {diff} |")
    for sched, sw in res["sweeps"].items():
        lines += ["", f"## What {sched} learned (best member {sw['best']})", ""]
        sch = sw["schedule"]
        lines.append("| from epoch | " + " | ".join(k for k in sch if k != "epochs") + " |")
        lines.append("|---" * (len(sch)) + "|")
        for i, ep in enumerate(sch["epochs"]):
            vals = [sch[k][i] for k in sch if k != "epochs"]
            shown = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals]
            lines.append(f"| {ep} | " + " | ".join(shown) + " |")
        wall = f"{sw['wall_s'] / 60:.1f} min" if sw["wall_s"] else "n/a"
        lines.append(f"\nSweep: {sw['epochs']} training epochs, wall {wall}; folder `{sw['folder']}`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--schedulers", nargs="+", choices=("pbt", "pb2"), default=["pbt", "pb2"])
    ap.add_argument("--aa-version", choices=("fast", "standard"), default="standard")
    ap.add_argument("--jobs", type=int, default=1, help="models pre-trained and evaluated at once")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="synthetic data, 2 epochs, 2 members, 2 seeds, pbt")
    args = ap.parse_args()
    if args.smoke:
        args.epochs, args.population, args.seeds, args.schedulers = 2, 2, [0, 1], ["pbt"]
        args.aa_version = "fast"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    sweeps = {sched: population_sweep(out, sched, args) for sched in args.schedulers}
    from acl_ray.config.pretrain import Config, load_config

    base = Config().override({**DYNACL, "run.epochs": args.epochs, **(SMOKE_DATA if args.smoke else {})})
    tasks = [(str(out), "dynacl", s, "pretrain", base.to_dict(), args) for s in args.seeds]
    for sched, sw in sweeps.items():
        tasks.append((str(out), f"{sched}-member", 0, "member", sw, args))
        replay = load_config(Path(sw["folder"]) / "best_schedule.yaml")
        tasks += [(str(out), f"{sched}-replay", s, "pretrain", replay.to_dict(), args) for s in args.seeds]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(_task, tasks, chunksize=1)
    else:
        results = [_task(t) for t in tasks]
    res = {
        "command": "python benchmarks/learned_schedules.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "smoke")),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "wall_s": time.time() - started,
        "sweeps": sweeps,
        "table": summarise(results, sweeps, args),
        "results": results,
    }
    (out / "learned_schedules.json").write_text(json.dumps(res, indent=2))
    (out / "learned_schedules.md").write_text(markdown(res))
    print((out / "learned_schedules.md").read_text())


if __name__ == "__main__":
    main()
