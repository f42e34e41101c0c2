"""Rungs that rank like full runs: Spearman rho of each early-stopping signal against full-length val RA.

Over the enlarged digits space (``configs/sweep_digits_later.yaml``: ACL's attack, temperature, batch
and lr with DynACL's two schedules and AIR's two weights), configurations drawn with a fixed seed,
plus the paper point and DynACL at the base config, are each trained the way a sweep trial is
(``Pretrainer`` + ``epochs.run_epochs``: the sweep's proxy ``proxy/robust_acc`` at the final eval eps
after EVERY epoch, the ``final`` protocol, SLF, on the validation split at the last epoch), in-process,
no Ray, one thread per process. Signals, each ranked against the full-length ``val/robust_acc``:

- ``proxy@e``: the proxy after epoch e of the full-length run (what ASHA sees at a rung e);
- ``short<r> proxy`` / ``short<r> val``: a faithful short version, trained from scratch with
  ``run.epochs = r`` (DynACL's schedules and the cosine LR compressed into r epochs): its last proxy
  and its full SLF val RA;
- ``seed 1 val``: the full-length val RA at another seed (the noise ceiling).

The schedule keys are drawn stratified (every pair of ``augment.schedule`` x
``loss.adv_weight_schedule`` values equally often, in a seeded order), the others independently from
the space's distributions. Writes ``rung_fidelity.{json,md}`` to ``--out``.

    python benchmarks/rung_fidelity.py --out benchmarks/results --configs 12 --epochs 20 --jobs 2
    python benchmarks/rung_fidelity.py --out /tmp/rf --smoke        # seconds: 3 configs, 2 epochs
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep_digits_later.yaml"
SCHEDULES = ("augment.schedule", "loss.adv_weight_schedule")
DYNACL = {"augment.schedule": "dynacl", "loss.adv_weight_schedule": "dynacl"}
# --smoke: synthetic 8x8 images (210 to train on), small batches, 1-step attacks, a tiny proxy and SLF.
SMOKE = ["data.name=synthetic", "data.synthetic_size=300", "proxy.train_size=100", "proxy.val_size=30",
         "proxy.epochs=2", "proxy.steps=2", "final.epochs=1", "final.val_size=30", "eval.steps=2"]
SMOKE_PARAMS = {"data.batch_size": 32, "attack.steps": 1}


def draw_configs(space: dict[str, Any], base: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """The paper point, DynACL at the base config, the base config, then ``n`` seeded draws."""
    from acl_ray.config.pretrain import Config
    from acl_ray.config.space import paper_point

    cfg = Config.from_dict(base)
    at_base = {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in space}
    out = [{"name": "paper", **paper_point(space, cfg)}, {"name": "dynacl", **at_base, **DYNACL},
           {"name": "base", **at_base}]  # base and dynacl differ in the two schedules only
    rng = np.random.default_rng(seed)
    pairs = list(itertools.product(*(space[k]["choice"] for k in SCHEDULES)))
    order = [pairs[i % len(pairs)] for i in rng.permutation(max(n, len(pairs)))[:n]]
    for i in range(n):
        p: dict[str, Any] = {"name": f"r{i:02d}"}
        for key, dist in space.items():
            kind, a = next(iter(dist.items()))
            if key in SCHEDULES:
                p[key] = order[i][SCHEDULES.index(key)]
            elif kind == "int":
                p[key] = int(rng.integers(a[0], a[1] + 1))
            elif kind == "uniform":
                p[key] = float(rng.uniform(a[0], a[1]))
            elif kind == "loguniform":
                p[key] = float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
            else:
                p[key] = a[int(rng.integers(len(a)))]
        out.append(p)
    return out


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Train one config as a sweep trial does (no Ray), in this process on one thread."""
    import torch

    from acl_ray.algorithm.data import load_datasets
    from acl_ray.algorithm.pretrain import Pretrainer
    from acl_ray.algorithm.runtime import set_threads
    from acl_ray.config.sweep import Sweep
    from acl_ray.orchestration.epochs import Evals, run_epochs

    start, started = time.perf_counter(), time.time()
    set_threads(1)
    s = Sweep.from_dict(task["sweep"])
    params = {k: v for k, v in task["params"].items() if k != "name"}
    cfg = s.base.override({**params, "run.epochs": task["epochs"], "run.seed": task["seed"],
                           "run.progress": False, "run.threads": 1, "run.device": "cpu"})
    data = load_datasets(cfg.data)
    trainer = Pretrainer(cfg, data, torch.device("cpu"))
    # As acl_ray.orchestration.trial.trial_evals: the proxy at the final evaluation's eps.
    evals = Evals({**s.proxy.to_dict(), "eps": s.final.eval.eps}, s.final.to_dict(), task["proxy_every"])
    rows: list[dict[str, Any]] = []
    run_epochs(trainer, data, evals, lambda row, _state: rows.append(row), {})
    last = rows[-1]
    return {
        **{k: task[k] for k in ("key", "kind", "epochs", "seed")},
        "config": task["params"]["name"],
        "proxy": [r.get("proxy/robust_acc") for r in rows],  # None where no proxy ran
        **{k: v for k, v in last.items() if k.startswith(("val/", "eval/")) and k.endswith("_acc")},
        "train_s": sum(r["time/train_s"] for r in rows),
        "proxy_s": sum(r.get("time/proxy_s", 0.0) for r in rows),
        "wall_s": time.perf_counter() - start,
        "started": started,  # unix times: the benchmark's wall time is the span over all tasks
        "ended": time.time(),
    }


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rho with ties rank-averaged (scipy); None when either side is constant."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def bootstrap_rho(x: list[float], y: list[float], reps: int = 2000, seed: int = 0) -> list[float] | None:
    """90% percentile interval of rho over configurations resampled with replacement."""
    if spearman(x, y) is None:
        return None
    idx = np.random.default_rng(seed).integers(len(x), size=(reps, len(x)))
    rx, ry = rankdata(np.asarray(x)[idx], axis=1), rankdata(np.asarray(y)[idx], axis=1)  # (reps, n)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))  # (reps,), nan when constant
    lo, hi = np.nanpercentile(rho, [5, 95])
    return [float(lo), float(hi)]


def top_third(values: list[float]) -> list[int]:
    """Indices of the top ceil(n/3) values (ASHA's keep at reduction factor 3); ties by position."""
    return sorted(range(len(values)), key=lambda i: -values[i])[: math.ceil(len(values) / 3)]


def top_third_regret(signal: list[float], target: list[float]) -> float:
    """Best target minus the best target among the top third by signal."""
    return max(target) - max(target[i] for i in top_third(signal))


def signal(name: str, budget: int, values: list[float], target: list[float],
           mean2: list[float] | None) -> dict[str, Any]:
    """One signal's values over the configurations and how they rank against the target."""
    top = sorted(range(len(target)), key=lambda i: -target[i])[: math.ceil(len(target) / 2)]
    return {
        "signal": name,
        "budget_epochs": budget,
        "values": values,
        "rho": spearman(values, target),
        "rho_90": bootstrap_rho(values, target),
        "rho_vs_seed_mean": spearman(values, mean2) if mean2 is not None else None,
        # Among the better half by full val RA: the order a sweep's winner is chosen from.
        "rho_top_half": spearman([values[i] for i in top], [target[i] for i in top]),
        "top_third_regret": top_third_regret(values, target),
        "top_third_shared": len(set(top_third(values)) & set(top_third(target))),  # of ceil(n/3)
    }


def signals(configs: list[dict[str, Any]], res: dict[str, dict[str, Any]], epochs: int,
            shorts: list[int], seeds: bool) -> list[dict[str, Any]]:
    names = [c["name"] for c in configs]
    full = [res[f"{n}/full"] for n in names]
    target = [f["val/robust_acc"] for f in full]
    other = [res[f"{n}/seed1"]["val/robust_acc"] for n in names] if seeds else None
    mean2 = [(x + y) / 2 for x, y in zip(target, other, strict=True)] if other else None
    out = [signal(f"proxy@{e}", e, [f["proxy"][e - 1] for f in full], target, mean2)
           for e in range(1, epochs + 1)]
    for r in shorts:
        short = [res[f"{n}/short{r}"] for n in names]
        out.append(signal(f"short{r} proxy", r, [s["proxy"][-1] for s in short], target, mean2))
        out.append(signal(f"short{r} val", r, [s["val/robust_acc"] for s in short], target, mean2))
    if other:
        out.append(signal("seed 1 val (ceiling)", epochs, other, target, None))
    return out


def tasks_for(configs: list[dict[str, Any]], sweep: dict[str, Any], epochs: int, shorts: list[int],
              seeds: bool) -> list[dict[str, Any]]:
    """Full-length runs first, then the short runs (longest first), then the second seed."""
    kinds = [("full", epochs, 0, 1)] + [(f"short{r}", r, 0, r) for r in sorted(shorts, reverse=True)]
    kinds += [("seed1", epochs, 1, epochs)] if seeds else []  # optional: last, so it may be left out
    return [{"key": f"{c['name']}/{kind}", "kind": kind, "epochs": e, "seed": seed, "proxy_every": every,
             "params": c, "sweep": sweep} for kind, e, seed, every in kinds for c in configs]


def task_id(task: dict[str, Any]) -> str:
    """What decides a task's result: its config and run, and the sweep's base, proxy and final (not
    the searcher's or the scheduler's settings, which do not change how one config trains)."""
    ident = {k: v for k, v in task.items() if k != "sweep"}
    ident |= {k: task["sweep"][k] for k in ("base", "proxy", "final")}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def run_all(tasks: list[dict[str, Any]], jobs: int, cache: Path | None) -> dict[str, dict[str, Any]]:
    """Every task in ``jobs`` spawned processes; with ``cache``, finished tasks are kept and reused."""
    res: dict[str, dict[str, Any]] = {}
    todo = []
    for t in tasks:
        f = cache / f"{task_id(t)}.json" if cache else None
        if f is not None and f.is_file():
            res[t["key"]] = json.loads(f.read_text())
        else:
            todo.append((t, f))
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_task, t): (t, f) for t, f in todo}
        for fut in cf.as_completed(futures):
            t, f = futures[fut]
            r = res[t["key"]] = fut.result()
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_suffix(".tmp")
                tmp.write_text(json.dumps(r))
                tmp.replace(f)  # atomic: a killed run leaves no half-written result
            print(f"[{time.perf_counter() - start:7.1f}s] {len(res)}/{len(tasks)} {t['key']}: "
                  f"val RA {r['val/robust_acc']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    return res


def fmt(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def rho_cell(s: dict[str, Any]) -> str:
    interval = "-" if s["rho_90"] is None else f"{s['rho_90'][0]:.2f} .. {s['rho_90'][1]:.2f}"
    return (f"| {s['signal']} | {s['budget_epochs']} | {fmt(s['rho'])} | {interval} | "
            f"{fmt(s['rho_top_half'])} | {fmt(s['rho_vs_seed_mean'])} | {s['top_third_regret']:.3f} | "
            f"{s['top_third_shared']} |")


def by_schedule(result: dict[str, Any], columns: list[tuple[str, Any]]) -> list[str]:
    """Mean of each column per value of each schedule key: does a signal see the schedules' gain?"""
    lines = ["| key | value | configs | " + " | ".join(name for name, _ in columns) + " |",
             "| --- " * (3 + len(columns)) + "|"]
    for key in SCHEDULES:
        for v in ("constant", "dynacl"):
            g = [c for c in result["configs"] if c[key] == v]
            if g:
                means = [fmt(float(np.mean([get(c) for c in g]))) for _, get in columns]
                lines.append(f"| {key} | {v} | {len(g)} | " + " | ".join(means) + " |")
    return lines


def report(result: dict[str, Any]) -> str:
    a, sigs, configs = result["args"], result["signals"], result["configs"]
    e, by = a["epochs"], {s["signal"]: s for s in sigs}
    base, final = result["sweep"]["base"], result["sweep"]["final"]
    threat = f"{final['protocol'].upper()} (PGD-{final['eval']['steps']} CE+CW, eps {final['eval']['eps']})"
    epochs = set(range(1, e + 1))
    rungs = sorted({4, 12, e} & epochs)
    shown = [by[f"proxy@{r}"] for r in sorted({1, 2, 4, 6, 8, 12, 16, e} & epochs)]
    shown += [s for s in sigs if not s["signal"].startswith("proxy@")]
    columns: list[tuple[str, Any]] = [("full val RA", lambda c: c["val/robust_acc"])]
    columns += [(f"proxy@{r}", lambda c, r=r: c["proxy"][r - 1]) for r in rungs]
    columns += [(f"short{r} val", lambda c, r=r: c[f"short{r}/val/robust_acc"]) for r in a["shorts"]]
    lines = [
        f"# Rungs that rank like full runs ({base['data']['name']}, enlarged space)",
        "",
        f"`{result['command']}`: {len(configs)} configurations of `configs/sweep_digits_later.yaml` "
        f"(the paper point, DynACL and the base config, {a['configs']} seeded draws), each trained {e} "
        f"epochs with the sweep's proxy after every epoch and {threat} on the validation split at the "
        f"end, plus short runs of {', '.join(map(str, a['shorts']))} epochs"
        + (" and a second seed" if not a["no_seed"] else "")
        + f"; wall time {result['wall_s'] / 60:.1f} min with {a['jobs']} processes of 1 thread "
        f"({sum(result['task_s_by_kind'].values()) / 60:.0f} min of task time in all; load average "
        f"{result['load_average'][0]:.1f} at the end, on {os.cpu_count()} CPUs). Spearman rho "
        "against the full-length val RA (seed 0) with a 90% bootstrap interval over configurations, and "
        "over the better half of the configurations by that val RA only; "
        "regret: best val RA minus the best val RA among the top third by the signal (what ASHA keeps at "
        "reduction factor 3); shared: how many of that top third are in the top third by full val RA.",
        "",
        "| signal | budget (epochs per config) | rho vs full val RA | 90% interval | rho, better half "
        f"| rho vs 2-seed mean | top-third regret | top third shared (of {math.ceil(len(configs) / 3)}) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[rho_cell(s) for s in shown],
        "",
        "Per epoch of the full-length run (rho of proxy@e): "
        + ", ".join(f"{r}: {fmt(by[f'proxy@{r}']['rho'], 2)}" for r in range(1, e + 1)) + ".",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in result["findings"]],
        "",
        "## By schedule (means over configurations)",
        "",
        *by_schedule(result, columns),
        "",
        "## Configurations",
        "",
        "| config | aug sched | adv-w sched | air | sir | steps | eps | temp | batch | lr | "
        + " | ".join(f"proxy@{r}" for r in rungs) + " | val RA | val RA s1 | "
        + " | ".join(f"short{r} val" for r in a["shorts"]) + " |",
        "| --- " * (12 + len(rungs) + len(a["shorts"])) + "|",
    ]
    for c in configs:
        lines.append(
            f"| {c['name']} | {c['augment.schedule']} | {c['loss.adv_weight_schedule']} | "
            f"{c['loss.air_weight']} | {c['loss.sir_weight']} | {c['attack.steps']} | "
            f"{c['attack.eps']:.3f} | {c['loss.temperature']:.2f} | {c['data.batch_size']} | "
            f"{c['optim.lr']:.1e} | "
            + " | ".join(fmt(c["proxy"][r - 1]) for r in rungs)
            + f" | {fmt(c['val/robust_acc'])} | {fmt(c.get('seed1/val/robust_acc'))} | "
            + " | ".join(fmt(c[f"short{r}/val/robust_acc"]) for r in a["shorts"]) + " |"
        )
    return "\n".join(lines) + "\n"


def findings(result: dict[str, Any]) -> list[str]:
    a, by = result["args"], {s["signal"]: s for s in result["signals"]}
    e, out = a["epochs"], []

    def rho(name: str) -> str:
        return fmt(by[name]["rho"], 2)

    rungs = [r for r in (4, 12) if r < e]  # ASHA's rungs in the sweep (grace 4, factor 3, 20 epochs)
    if rungs:
        at = ", ".join(f"proxy@{r} rho {rho(f'proxy@{r}')}" for r in rungs)
        out.append(f"ASHA's signal at its rungs: {at}; the same proxy at the last epoch {e}: "
                   f"rho {rho(f'proxy@{e}')}.")
    n3 = math.ceil(len(result["configs"]) / 3)
    kept = [by[f"proxy@{r}"] for r in sorted({4, 8, 12, e} & set(range(1, e + 1)))]
    keep = ", ".join(f"epoch {s['budget_epochs']}: {s['top_third_shared']} (regret "
                     f"{s['top_third_regret']:.3f})" for s in kept)
    out.append(f"The top third by the proxy (what ASHA keeps) holds, of the {n3} best by full val RA: "
               f"{keep}.")
    proxies = [s for s in result["signals"] if s["signal"].startswith("proxy@")]

    def reach(field: str, bound: float) -> str:
        hit = [s["budget_epochs"] for s in proxies if s[field] is not None and s[field] >= bound]
        return f"epoch {hit[0]}" if hit else "no epoch"

    out.append(f"The full-length run's proxy first reaches rho >= 0.9 at {reach('rho', 0.9)}, and rho >= 0.8 "
               f"over the better half of the configurations at {reach('rho_top_half', 0.8)}.")
    for r in a["shorts"]:
        out.append(f"A {r}-epoch run with the schedules and LR compressed into it: "
                   f"rho {rho(f'short{r} proxy')} (its last proxy), {rho(f'short{r} val')} (its SLF val RA), "
                   f"against {rho(f'proxy@{r}')} for the proxy at epoch {r} of the full-length run.")
    if "seed 1 val (ceiling)" in by:
        out.append(f"Noise ceiling: the full-length val RA of seeds 0 and 1 agree with rho "
                   f"{rho('seed 1 val (ceiling)')}.")
    first = rungs[0] if rungs else e
    named = {c["name"]: c for c in result["configs"]}
    if {"dynacl", "base"} <= set(named):
        d, b = named["dynacl"], named["base"]
        short = "".join(f"; short{r} val RA {d[f'short{r}/val/robust_acc']:.3f} vs "
                        f"{b[f'short{r}/val/robust_acc']:.3f}" for r in a["shorts"])
        out.append(f"DynACL vs the base config (the two schedules alone): full val RA "
                   f"{d['val/robust_acc']:.3f} vs {b['val/robust_acc']:.3f}; proxy@{first} "
                   f"{d['proxy'][first - 1]:.3f} vs {b['proxy'][first - 1]:.3f}{short}.")
    for key in SCHEDULES:
        grp = {v: [c for c in result["configs"] if c[key] == v] for v in ("constant", "dynacl")}
        if all(grp.values()):
            ra = {v: float(np.mean([c["val/robust_acc"] for c in g])) for v, g in grp.items()}
            px = {v: float(np.mean([c["proxy"][first - 1] for c in g])) for v, g in grp.items()}
            out.append(f"{key} constant ({len(grp['constant'])} configs) vs dynacl ({len(grp['dynacl'])}): "
                       f"mean full val RA {ra['constant']:.3f} vs {ra['dynacl']:.3f}; mean proxy@{first} "
                       f"{px['constant']:.3f} vs {px['dynacl']:.3f}.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--configs", type=int, default=12, help="seeded draws (plus paper, dynacl and base)")
    ap.add_argument("--epochs", type=int, default=20, help="full length (the sweep's run.epochs)")
    ap.add_argument("--shorts", type=int, nargs="*", default=[4, 8, 12], help="epochs of the short runs")
    ap.add_argument("--no-seed", action="store_true", help="skip the second-seed full runs (noise ceiling)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the configuration draws")
    ap.add_argument("--cache", default=None, help="folder keeping each finished run (a rerun resumes)")
    ap.add_argument("--smoke", action="store_true", help="3 configs, 2 epochs, tiny proxy and SLF: seconds")
    args = ap.parse_args()
    if args.smoke:
        args.configs, args.epochs, args.shorts = 0, 2, [1]  # the three named points
    from acl_ray.config.sweep import load_sweep

    s = load_sweep(CONFIG, SMOKE if args.smoke else [])
    sweep = s.to_dict()
    configs = draw_configs(s.space, sweep["base"], args.configs, args.seed)
    if args.smoke:
        configs = [{**c, **SMOKE_PARAMS} for c in configs]
    seeds = not args.no_seed
    started = time.time()
    res = run_all(tasks_for(configs, sweep, args.epochs, args.shorts, seeds), args.jobs,
                  Path(args.cache) if args.cache else None)
    rows = []
    for c in configs:
        f = res[f"{c['name']}/full"]
        row = {**c, "proxy": f["proxy"], **{k: f[k] for k in f if k.startswith(("val/", "eval/"))}}
        for kind in [f"short{r}" for r in args.shorts] + (["seed1"] if seeds else []):
            row |= {f"{kind}/{k}": v for k, v in res[f"{c['name']}/{kind}"].items()
                    if k.startswith(("val/", "eval/")) or k == "proxy"}
        rows.append(row)
    flags = [f"--out {args.out}", f"--configs {args.configs}", f"--epochs {args.epochs}",
             f"--jobs {args.jobs}", *(["--smoke"] if args.smoke else [])]
    kinds = sorted({r["kind"] for r in res.values()})
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/rung_fidelity.py", *flags]),
        "args": vars(args),
        # From this run's start (or the first cached task's) to the last task's end: with --cache, the
        # span over every invocation that computed a task.
        "wall_s": max(r["ended"] for r in res.values()) - min(started, *(r["started"] for r in res.values())),
        "task_s_by_kind": {k: sum(r["wall_s"] for r in res.values() if r["kind"] == k) for k in kinds},
        "threads_per_process": 1,
        "load_average": list(os.getloadavg()),  # the machine may be shared: timings are not costs
        "sweep": sweep,
        "configs": rows,
        "signals": signals(configs, res, args.epochs, args.shorts, seeds),
    }
    result["findings"] = findings(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("rung_fidelity.json", json.dumps(result, indent=2)),
                       ("rung_fidelity.md", report(result))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    print(report(result).split("## By schedule")[0])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the spawned workers inherit it: one thread each
    main()
