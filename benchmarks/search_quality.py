"""Searchers at an equal budget of training epochs: random, TPE, GP and TPE + ASHA, each pick confirmed.

On the enlarged digits space (``configs/sweep_digits_later.yaml``: ACL's attack, temperature, batch
and lr with DynACL's two schedules and AIR's two weights; base ``run.epochs`` = ``--epochs``), every
method x searcher seed is one real sweep through the product (``acl_ray.orchestration.tune.run_sweep``,
``sweep.seed`` = the searcher seed) that Tune ends once its trials have trained ``--budget-epochs``
epochs in all (``sweep.budget_epochs``, an experiment-level Stopper): ``random``, ``tpe`` and ``gp``
(Optuna's GPSampler) train every trial to full length (scheduler fifo, the proxy only at the last
epoch: nothing decides on it), ``tpe+asha`` uses the sweep's ASHA on the proxy. Every sweep starts
from the same reference points (paper ACL, DynACL, DynACL-AIR), then TPE and GP take two random
start-up trials (``sweep.startup_trials``, as the file's 10-trial sweep) before their model proposes
every trial; ``num_samples`` is left large enough that the budget ends the search. The sweep's pick
(its best ``val/robust_acc``, as the product selects) is then confirmed by the product's
confirmation (``sweep.confirm``: top 1, ``--confirm-seeds`` fresh seeds, full length) beside the
DynACL control at the same seeds, so the difference is paired.

Written to ``--out`` after every sweep (a killed run keeps what it did; the same command again skips
finished method/seed pairs and resumes a killed sweep or confirmation):

- ``search_quality.json``: per method and seed, best-so-far val RA against cumulative epochs spent,
  the pick, its confirmed val/test RA (mean ± std over the confirmation seeds) and the paired
  difference to DynACL; per method, the means over seeds;
- ``search_quality.md``: the table; ``search_quality.png``: the curves (mean per method, thin lines
  per seed, DynACL's confirmed val RA as a horizontal line);
- ``sweeps/<method>-seed<k>/``: the sweep folders (``acl-ray analyze`` reads each).

Epochs spent are ordered by Tune's report ``timestamp`` (whole seconds, ties by trial and epoch); a
trial's val RA (final, or post hoc from its last checkpoint when ASHA or the budget stopped it)
counts from its last report on.

    # 5 seeds x 4 methods, budget 400 epochs, 40-epoch trials: about 12,800 training epochs in all
    # (8,000 searching, 4,800 confirming): some 16 h on 2 CPU cores, where 40-epoch digits runs
    # cost about 4.5 s of wall time an epoch, two at a time (benchmarks/results/confirm_later40.md:
    # its confirmation, 6 runs x 40 epochs, took about 18 min); meant for a GPU machine or a cluster
    python benchmarks/search_quality.py --out benchmarks/results/search_quality
    python benchmarks/search_quality.py --out /tmp/sq --smoke    # 1.5-3 min: synthetic, 2 methods x 1 seed
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_digits_later.yaml"
# method -> (sweep.searcher, sweep.scheduler)
METHODS = {"random": ("random", "fifo"), "tpe": ("tpe", "fifo"), "gp": ("gp", "fifo"),
           "tpe+asha": ("tpe", "asha")}
SMOKE_METHODS = ["gp", "tpe+asha"]
CONTROL = "dynacl"
# --smoke: synthetic 8x8 images (210 to train on), a tiny proxy and SLF, small batches, 1-2 step attacks.
SMOKE = ["data.name=synthetic", "data.synthetic_size=300", "proxy.train_size=100", "proxy.val_size=30",
         "proxy.epochs=2", "proxy.steps=2", "final.epochs=1", "final.val_size=30", "eval.steps=2"]
SMOKE_SPACE = {"data.batch_size": {"choice": [16, 32]}, "attack.steps": {"int": [1, 2]}}
RA = ("val/robust_acc", "eval/robust_acc")


def pair_name(method: str, seed: int) -> str:
    return f"{method.replace('+', '_')}-seed{seed}"


def sweep_spec(method: str, seed: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The sweep file's dict (smoke: a smaller space) and the ``--set`` overrides of one sweep."""
    from acl_ray.config.fields import read_yaml_mapping
    from acl_ray.config.space import warm_start_points
    from acl_ray.config.sweep import Sweep

    d = dict(read_yaml_mapping(CONFIG, "Sweep file"))
    if args.smoke:
        d["space"] = {**d["space"], **SMOKE_SPACE}
    searcher, scheduler = METHODS[method]
    plain = Sweep.from_dict(d, [f"run.epochs={args.epochs}", *(SMOKE if args.smoke else [])])
    refs = len(warm_start_points(plain.space, plain.base))
    shortest = min(plain.sweep.grace_period, args.epochs) if scheduler == "asha" else args.epochs
    overrides = [
        f"run.epochs={args.epochs}", f"sweep.searcher={searcher}", f"sweep.scheduler={scheduler}",
        f"sweep.seed={seed}", f"sweep.budget_epochs={args.budget_epochs}",
        # enough trials that the budget, not the count, ends the search (a trial trains >= shortest)
        f"sweep.num_samples={args.budget_epochs // shortest + 2}",
        # the points, then 2 random trials (as the file's 10-trial sweep), whatever num_samples is
        f"sweep.startup_trials={refs + 2}",
        "sweep.confirm.top_k=1", f"sweep.confirm.seeds={args.confirm_seeds}",
        f"sweep.confirm.controls={CONTROL}",
        *([f"sweep.proxy_every={args.epochs}"] if scheduler == "fifo" else []),
        *(SMOKE if args.smoke else []),
    ]
    return d, overrides


def run_pair(folder: Path, d: dict[str, Any], overrides: list[str]) -> None:
    """Search and confirm into ``folder``, or finish what a killed run left there."""
    import ray.tune

    from acl_ray.config.sweep import SWEEP_FILE, Sweep, load_sweep
    from acl_ray.orchestration.tune import confirm_sweep, resume_sweep, run_sweep
    from acl_ray.results.confirm import CONFIRMATION_FILE
    from acl_ray.results.summary import SUMMARY_FILE, unfinished_search
    from acl_ray.results.trials import read_json

    s = Sweep.from_dict(d, overrides)
    if (folder / SWEEP_FILE).is_file() and load_sweep(folder / SWEEP_FILE).to_dict() != s.to_dict():
        raise ValueError(f"{folder} was started with other settings (sweep.yaml): use another --out")
    summary = read_json(folder / SUMMARY_FILE)  # also written by a search that a Ctrl-C cut short
    if isinstance(summary, dict) and not unfinished_search(s, summary["trials"]):
        if not (folder / CONFIRMATION_FILE).is_file():
            confirm_sweep(folder, overrides=[o for o in overrides if o.startswith("sweep.confirm.")],
                          analysis=False)
        return
    if folder.is_dir():
        if (folder / SWEEP_FILE).is_file() and ray.tune.Tuner.can_restore(str(folder)):
            resume_sweep(folder, analysis=False)  # the budget's count is in Tune's saved state
            return
        shutil.rmtree(folder)  # killed before Tune saved anything: start it again
    run_sweep(s, folder, analysis=False)


def best_so_far(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best val RA found against epochs spent, one point per trial end, in time order.

    ``trials``: ``{"trial_id", "trial_index", "value" (val RA or None), "reports": [{"timestamp",
    "epoch"}, ...]}``. A trial counts its highest epoch so far once (as ``EpochBudget``); its value
    counts from its last report on.
    """
    events = sorted((int(r["timestamp"]), t["trial_index"], int(r["epoch"]), k)
                    for k, t in enumerate(trials) for r in t["reports"])
    remaining = [len(t["reports"]) for t in trials]
    seen = [0] * len(trials)
    spent, best, points = 0, None, []
    for _, _, epoch, k in events:
        spent += max(0, epoch - seen[k])
        seen[k] = max(seen[k], epoch)
        remaining[k] -= 1
        if remaining[k] == 0:
            value = trials[k]["value"]
            if value is not None:
                best = value if best is None else max(best, value)
            points.append({"epochs": spent, "best_val_robust_acc": best, "trial_id": trials[k]["trial_id"],
                           "trial_val_robust_acc": value})
    return points


def on_grid(points: list[dict[str, Any]], grid: list[int]) -> list[float | None]:
    """The step function of ``points`` at each epoch of ``grid`` (None before the first value)."""
    out: list[float | None] = []
    for x in grid:
        known = [p["best_val_robust_acc"] for p in points
                 if p["epochs"] <= x and p["best_val_robust_acc"] is not None]
        out.append(known[-1] if known else None)
    return out


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) >= 2 else None}


def pair_record(folder: Path, method: str, seed: int, budget: int) -> dict[str, Any] | None:
    """What one finished sweep + confirmation says, or None while either is missing."""
    from acl_ray.results.trials import read_json, read_reports, read_trials

    summary, conf = read_json(folder / "summary.json"), read_json(folder / "confirmation.json")
    if not isinstance(summary, dict) or not isinstance(conf, dict):
        return None
    rows = {r["trial_id"]: r for r in summary["trials"]}
    trials = [{"trial_id": t.trial_id, "trial_index": t.trial_index, "reports": read_reports(t.dir),
               "value": rows.get(t.trial_id, {}).get("val/robust_acc")}
              for t in read_trials(folder, unsaved=False)]
    curve = best_so_far(trials)
    pick = summary["best"]
    confirmed = next((r for r in conf["rows"] if r["kind"] == "trial"), None)
    control = next((r for r in conf["rows"] if r["label"] == CONTROL), None)
    # sweep.yaml: the search starts; confirm/plan.json: its confirmation starts (summary.json is
    # written again at the end of the confirmation)
    stamp = {n: (folder / n).stat().st_mtime
             for n in ("sweep.yaml", "confirm/plan.json", "confirmation.json")}

    def stats(row: dict[str, Any] | None) -> dict[str, Any] | None:
        return row and {"label": row["label"], "seeds": row["seeds"], **{m: row[m] for m in
                        ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc")}}

    return {
        "method": method, "seed": seed, "folder": str(folder), "budget_epochs": budget,
        "epochs_spent": curve[-1]["epochs"] if curve else 0,
        "trials_run": sum(1 for r in summary["trials"] if (r.get("epoch") or 0) > 0),
        "trials_stopped_early": sum(1 for r in summary["trials"] if r.get("stopped_early")),
        "curve": curve,
        "best_val_robust_acc": pick and pick["val/robust_acc"],
        "pick": pick and {k: pick.get(k) for k in ("trial_id", "trial_index", "epoch", "eval/source",
                                                     "val/robust_acc", "eval/robust_acc", "val/standard_acc",
                                                     "eval/standard_acc")}
        | {"params": {k: pick.get(k) for k in summary["config"]["space"]}},
        "pick_is_control": bool(confirmed and control and confirmed["overrides"] == control["overrides"]),
        "confirmed": stats(confirmed),
        "control": stats(control),
        "vs_control": confirmed and {m: confirmed["vs"].get(CONTROL, {}).get(m) for m in RA},
        "missing_confirmation_runs": conf.get("missing_runs"),
        "search_s": round(stamp["confirm/plan.json"] - stamp["sweep.yaml"], 1),
        "confirm_s": round(stamp["confirmation.json"] - stamp["confirm/plan.json"], 1),
    }


def aggregate(records: list[dict[str, Any]], methods: list[str], budget: int) -> dict[str, Any]:
    """Per method: means over seeds and the mean curve; the DynACL control over all confirmations."""
    def mean_of(recs: list[dict[str, Any]], get: Any) -> dict[str, Any]:
        return mean_std([v for r in recs if (v := get(r)) is not None])

    def conf_mean(r: dict[str, Any], part: str, m: str) -> float | None:
        return r[part] and r[part][m]["mean"]

    def diff_mean(r: dict[str, Any], m: str) -> float | None:
        if r["pick_is_control"]:  # the same runs: the paired difference is 0 at every seed
            return 0.0
        return r["vs_control"] and r["vs_control"][m] and r["vs_control"][m]["mean"]

    step = max(1, budget // 200)
    grid = list(range(0, max([budget, *(r["epochs_spent"] for r in records)]) + 1, step))
    out: dict[str, Any] = {}
    for method in methods:
        recs = [r for r in records if r["method"] == method]
        curves = [on_grid(r["curve"], grid) for r in recs]
        at = [[c[i] for c in curves] for i in range(len(grid))]  # every seed's value at each epoch
        # the mean where every seed has found a value (before that, None)
        mean_curve = [statistics.fmean(x for x in v if x is not None) if v and None not in v else None
                      for v in at]
        out[method] = {
            "seeds": [r["seed"] for r in recs],
            "epochs_spent": mean_of(recs, lambda r: r["epochs_spent"]),
            "trials_run": mean_of(recs, lambda r: r["trials_run"]),
            "best_val_robust_acc": mean_of(recs, lambda r: r["best_val_robust_acc"]),
            **{f"confirmed {m}": mean_of(recs, lambda r, m=m: conf_mean(r, "confirmed", m)) for m in RA},
            **{f"vs_control {m}": mean_of(recs, lambda r, m=m: diff_mean(r, m)) for m in RA},
            "verdicts_test": ["is the control" if r["pick_is_control"] else r["vs_control"]
                              and r["vs_control"]["eval/robust_acc"]
                              and r["vs_control"]["eval/robust_acc"]["verdict"] for r in recs],
            "curve_mean": {"epochs": grid, "best_val_robust_acc": mean_curve},
        }
    control = {m: mean_of(records, lambda r, m=m: conf_mean(r, "control", m)) for m in RA}
    return {"methods": out, "control": control}


def pm(stat: dict[str, Any], nd: int = 3) -> str:
    if stat["mean"] is None:
        return "-"
    mean = f"{stat['mean']:.{nd}f}"
    return f"{mean} ± {stat['std']:.{nd}f}" if stat["std"] is not None else mean


def markdown(result: dict[str, Any]) -> str:
    a, agg = result["args"], result["aggregate"]
    c = agg["control"]
    lines = [
        "# Searchers at an equal budget of training epochs (digits, enlarged space)",
        "",
        f"Budget {a['budget_epochs']} training epochs per sweep (all trials together, Tune ends the sweep), "
        f"trials of at most {a['epochs']} epochs, searcher seeds {a['seeds']}; each pick (best val RA of its "
        f"sweep) retrained at full length with {a['confirm_seeds']} fresh seeds beside the DynACL control "
        f"(paired). RA = PGD CE+CW robust accuracy of the SLF protocol; val selects, test reports."
        + (" **Smoke run: synthetic data, numbers mean nothing.**" if a["smoke"] else ""),
        "",
        "| method | seeds | budget epochs | trials run (mean) | best val RA found "
        "| confirmed val RA of picks | confirmed test RA of picks | picks - DynACL, test RA (paired) "
        "| DynACL control test RA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in agg["methods"].items():
        trials = "-" if m["trials_run"]["mean"] is None else f"{m['trials_run']['mean']:.1f}"
        lines.append(
            f"| {method} | {len(m['seeds'])} | {a['budget_epochs']} | {trials} "
            f"| {pm(m['best_val_robust_acc'])} "
            f"| {pm(m['confirmed val/robust_acc'])} | {pm(m['confirmed eval/robust_acc'])} "
            f"| {pm(m['vs_control eval/robust_acc'])} | {pm(c['eval/robust_acc'])} |"
        )
    lines += ["", "mean ± std over searcher seeds (the confirmed values: each seed's mean over the "
              "confirmation seeds); DynACL: over every confirmation (same config and seeds each time).", "",
              "Per sweep:", "",
              "| method | seed | epochs spent | trials run | pick (trial, epochs, source) | val RA in sweep "
              "| confirmed val RA | confirmed test RA | - DynACL test RA [95%] | search / confirm s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        p, d = r["pick"] or {}, (r["vs_control"] or {}).get("eval/robust_acc") or {}
        diff = "-" if d.get("mean") is None else f"{d['mean']:+.3f}"
        diff = "0 (the same runs)" if r["pick_is_control"] else diff
        diff += f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d.get("low") is not None else ""
        pick = f"#{p.get('trial_index')} {p.get('trial_id')}, {p.get('epoch')}, {p.get('eval/source')}"
        pick += " (= DynACL)" if r["pick_is_control"] else ""
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['epochs_spent']} | {r['trials_run']} | {pick} "
            f"| {r['best_val_robust_acc']:.3f} | {pm(r['confirmed']['val/robust_acc'])} "
            f"| {pm(r['confirmed']['eval/robust_acc'])} | {diff} "
            f"| {r['search_s']:.0f} / {r['confirm_s']:.0f} |"
        )
    lines += ["", f"Wall time: {result['wall_s'] / 60:.1f} min in this invocation; "
              f"{sum(r['search_s'] + r['confirm_s'] for r in result['runs']) / 60:.1f} min of sweeps in all.",
              "", "![best-so-far val RA](search_quality.png)"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, m) in enumerate(result["aggregate"]["methods"].items()):
        color = f"C{i}"
        for r in (r for r in result["runs"] if r["method"] == method):
            pts = [p for p in r["curve"] if p["best_val_robust_acc"] is not None]
            ax.step([p["epochs"] for p in pts], [p["best_val_robust_acc"] for p in pts], where="post",
                    color=color, lw=0.7, alpha=0.35)
        cm = m["curve_mean"]
        ax.step(cm["epochs"], [float("nan") if v is None else v for v in cm["best_val_robust_acc"]],
                where="post", color=color, lw=2, label=f"{method} (mean of {len(m['seeds'])})")
    control = result["aggregate"]["control"]["val/robust_acc"]["mean"]
    if control is not None:
        ax.axhline(control, color="k", ls="--", lw=1, label="DynACL control (confirmed val RA)")
    ax.axvline(result["args"]["budget_epochs"], color="grey", ls=":", lw=1)
    ax.set_xlabel("training epochs spent (all trials of the sweep)")
    ax.set_ylabel("best val robust accuracy so far")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, args: argparse.Namespace, methods: list[str], started: float) -> dict[str, Any]:
    from acl_ray.results.trials import write_json

    records = [rec for seed in range(args.seeds) for m in methods
               if (rec := pair_record(out / "sweeps" / pair_name(m, seed), m, seed, args.budget_epochs))]
    result = {"args": {**vars(args), "methods": methods}, "runs": records, "wall_s": time.time() - started,
              "aggregate": aggregate(records, methods, args.budget_epochs)}
    write_json(out / "search_quality.json", result)
    (out / "search_quality.md").write_text(markdown(result))
    if records:
        plot(result, out / "search_quality.png")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=5, help="searcher seeds per method (sweep.seed 0, 1, ...)")
    ap.add_argument("--budget-epochs", type=int, default=None,
                    help="training epochs per sweep, all trials together; default 10 x --epochs")
    ap.add_argument("--epochs", type=int, default=40, help="full length (the sweep's run.epochs)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    ap.add_argument("--confirm-seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="synthetic, 2 methods x 1 seed, 2 epochs, budget 4")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.epochs, args.confirm_seeds = 1, 2, 2
        args.budget_epochs = args.budget_epochs or 4
    args.budget_epochs = args.budget_epochs or 10 * args.epochs  # the cost of the file's 10 full trials
    methods = args.methods or (SMOKE_METHODS if args.smoke else list(METHODS))
    started = time.time()
    out = Path(args.out).resolve()
    (out / "sweeps").mkdir(parents=True, exist_ok=True)
    pairs = [(seed, method) for seed in range(args.seeds) for method in methods]  # seed by seed: a killed
    todo = [p for p in pairs if not finished_pair(out / "sweeps" / pair_name(p[1], p[0]))]  # run has every
    ray_started = start_ray() if todo else False  # method at the same seeds; one local Ray for all
    try:
        for seed, method in pairs:
            d, overrides = sweep_spec(method, seed, args)
            print(json.dumps({"method": method, "seed": seed, "overrides": overrides}), flush=True)
            run_pair(out / "sweeps" / pair_name(method, seed), d, overrides)
            write(out, args, methods, started)
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    print((out / "search_quality.md").read_text())


def finished_pair(folder: Path) -> bool:
    from acl_ray.results.confirm import CONFIRMATION_FILE

    return (folder / CONFIRMATION_FILE).is_file()


def start_ray() -> bool:
    """One local Ray for every sweep (each would otherwise start and stop its own: seconds each)."""
    from acl_ray.orchestration.ray_train import ensure_ray

    return ensure_ray(None, quiet=True)


if __name__ == "__main__":
    main()
