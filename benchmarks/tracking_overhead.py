"""What watching a sweep costs: the default sweep's wall time with and without each integration.

Variants, each the default sweep (configs/sweep_digits.yaml; ``--set`` overrides apply to all) run as
``acl-ray sweep`` does, in a fresh Python process (imports, local Ray, the sweep, its summary):

- ``baseline``: the Optuna study in memory only, as before studies were kept on disk;
- ``study``: the default, the study in ``DIR/study.db``;
- ``mlflow``, ``wandb``, ``mlflow+wandb``: the study and ``sweep.tracking`` (W&B offline).

The variants run in turn, ``--repeats`` rounds (each round in a new order, so a slow spell of a shared
machine does not land on one variant); per variant: the median wall time of the process and of the
sweep itself (``run_sweep``, Ray start included), and the overhead against ``baseline``. Writes
``tracking_overhead.json`` and ``tracking_overhead.md`` to ``--out``.

Two sweeps' wall times on a shared 2-core machine differ by up to 10% with nothing changed, more
than the overhead sought, so each tracked run also accounts for what its trackers cost, which does
not depend on the machine's spell: the seconds the sweep's driver spent inside the trackers' Tune
hooks (Tune's loop, which hands the trials their next step, waits meanwhile; their construction,
which imports mlflow and wandb, included) and the CPU seconds of W&B's logging actor and the
wandb-core service it starts (beside 2 trials on 2 cores: CPU taken from them). Their sum against
the sweep's wall time (CPU seconds over the CPUs) bounds what tracking can add to it.

    python benchmarks/tracking_overhead.py --out benchmarks/results                # ~10 x 2 min on 2 cores
    python benchmarks/tracking_overhead.py --out /tmp/t --repeats 1 --variants baseline,mlflow+wandb \\
        --set sweep.num_samples=2 --set run.epochs=2                                 # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_digits.yaml"
VARIANTS = {  # name -> sweep.tracking (None: the study kept in memory only)
    "baseline": None,
    "study": [],
    "mlflow": ["mlflow"],
    "wandb": ["wandb"],
    "mlflow+wandb": ["mlflow", "wandb"],
}


# Tune's Callback hooks, which the trackers implement (LoggerCallback's log_* run inside them), and
# the post-hoc evaluation's call (acl_ray/orchestration/posthoc.py)
HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore", "on_trial_save",
         "on_trial_result", "on_trial_complete", "on_trial_error", "on_trial_recover", "on_checkpoint",
         "on_experiment_end", "posthoc")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and every process below it, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:  # fields after the command's closing parenthesis: state, ppid, ..., utime, stime
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total = [pid], 0.0
    while tree:
        p = tree.pop()
        total += stats.get(p, (0, 0.0))[1]
        tree += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def account_trackers(costs: dict[str, float]) -> None:
    """Adds to ``costs`` what the sweep's trackers cost (module docstring): ``driver_s``, the seconds
    inside their hooks and construction; ``actor_cpu_s``, W&B's logging actor's CPU, read when the
    sweep ends (before its last runs are finished). Wraps the classes' methods, not the instances:
    the Tuner pickles its callbacks."""
    import ray

    start = time.perf_counter()
    from acl_ray.orchestration import trackers  # (imports mlflow: a tracked sweep's driver does that too)

    costs["driver_s"] += time.perf_counter() - start

    def clock(f: Any) -> Any:
        def timed_hook(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                costs["driver_s"] += time.perf_counter() - start
        return timed_hook

    for cls in (trackers.MlflowTracker, trackers.WandbTracker):
        for hook in HOOKS:
            setattr(cls, hook, clock(getattr(cls, hook)))
    trackers.tracking_callbacks = clock(trackers.tracking_callbacks)  # type: ignore[assignment]
    ending = trackers.WandbTracker.on_experiment_end

    def on_experiment_end(self: Any, trials: list, **info: Any) -> None:
        if self._actor is not None:
            pid = ray.get(self._actor.__ray_call__.remote(lambda _: os.getpid()))
            costs["actor_cpu_s"] += cpu_seconds(pid)
        ending(self, trials, **info)

    trackers.WandbTracker.on_experiment_end = on_experiment_end  # type: ignore[method-assign]


def one(variant: str, out: Path, overrides: list[str]) -> None:
    """Run one sweep in this process and print its seconds (the child side of :func:`timed`)."""
    from acl_ray.config.sweep import load_sweep
    from acl_ray.orchestration import tune

    tracking = VARIANTS[variant]
    s = load_sweep(CONFIG, [*overrides, f"sweep.tracking=[{','.join(tracking or [])}]"])
    if tracking is None:  # the searcher's study in memory, as before it was stored
        tune.new_study_storage = lambda s, out: None  # type: ignore[assignment]
    costs = {"driver_s": 0.0, "actor_cpu_s": 0.0}
    if tracking:
        account_trackers(costs)
    start = time.perf_counter()
    tune.run_sweep(s, out, analysis=False)
    print(json.dumps({"sweep_s": time.perf_counter() - start, **costs}))


def timed(variant: str, folder: Path, overrides: list[str]) -> dict[str, float]:
    """Wall seconds of a fresh process running one variant, and of the sweep inside it."""
    cmd = [sys.executable, __file__, "--one", variant, "--sweep-dir", str(folder)]
    cmd += [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.setdefault("ACL_RAY_DASHBOARD", "0")  # Ray's dashboard off, as in the tests (README)
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store in the sweep folder
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {"process_s": round(total, 2), **{k: round(v, 2) for k, v in child.items()}}


def report(runs: dict[str, list[dict[str, float]]], overrides: list[str]) -> dict[str, Any]:
    """Medians per variant and the overhead against the reference: ``baseline``, else ``study`` (the
    default) when the baseline was not run; also per round, since one round's runs shared its spell of
    the machine (a shared machine's speed drifts between rounds more than the overhead sought)."""
    keys = ("process_s", "sweep_s", "driver_s", "actor_cpu_s")
    med = {v: {k: statistics.median(r.get(k, 0.0) for r in rs) for k in keys} for v, rs in runs.items()}
    ref = next((v for v in ("baseline", "study") if v in med), None)
    cpus = os.cpu_count() or 1
    rows = []
    for v, m in med.items():
        row: dict[str, Any] = {"variant": v, "runs": len(runs[v]), **{k: round(x, 2) for k, x in m.items()}}
        # what the trackers cost, against the sweep's own wall time: a bound on what they add to it
        row["accounted_pct"] = round(100 * (m["driver_s"] + m["actor_cpu_s"] / cpus) / m["sweep_s"], 2)
        if ref is not None and v != ref:
            base = med[ref]
            row["overhead_process_pct"] = round(100 * (m["process_s"] / base["process_s"] - 1), 1)
            row["overhead_sweep_pct"] = round(100 * (m["sweep_s"] / base["sweep_s"] - 1), 1)
            pairs = zip(runs[v], runs[ref], strict=False)
            row["overhead_sweep_pct_per_round"] = [
                round(100 * (a["sweep_s"] / b["sweep_s"] - 1), 1) for a, b in pairs
            ]
        rows.append(row)
    return {"config": str(CONFIG.relative_to(ROOT)), "set": overrides, "cpus": os.cpu_count(),
            "reference": ref, "rows": rows, "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    sets = " ".join(f"--set {o}" for o in result["set"]) or "(none)"
    lines = [
        "# What watching a sweep costs (benchmarks/tracking_overhead.py)",
        "",
        f"The default sweep (`{result['config']}`, overrides: {sets}), each variant in a fresh process;"
        f" median over the runs; {result['cpus']} CPUs. `baseline`: the Optuna study in memory only;"
        f" overhead against `{result.get('reference')}`, also per round (each round's runs in a row).",
        "",
        "Accounted: the seconds the driver spent in the trackers' hooks, plus W&B's logging actor's CPU"
        " seconds over the CPUs, against the sweep's wall time (a bound on what tracking adds, free of"
        " the machine's drift between runs).",
        "",
        "| variant | runs | process (s) | sweep (s) | overhead, process | overhead, sweep | sweep, per round"
        " | driver in trackers (s) | W&B actor CPU (s) | accounted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        pct = [f"{r[k]:+.1f}%" if k in r else "-" for k in ("overhead_process_pct", "overhead_sweep_pct")]
        rounds = ", ".join(f"{x:+.1f}%" for x in r.get("overhead_sweep_pct_per_round", [])) or "-"
        cells = [r["variant"], r["runs"], r["process_s"], r["sweep_s"], *pct, rounds, r["driver_s"],
                 r["actor_cpu_s"], f"{r['accounted_pct']:.2f}%"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for tracking_overhead.json / .md")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the variants")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="the order of the variants in each round")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    p.add_argument("--sweep-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args.one, Path(args.sweep_dir), args.overrides)
        return
    if not args.out:
        p.error("--out is required")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    rng = random.Random(args.seed)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="acl_ray_tracking_") as tmp:
        for r in range(args.repeats):
            order = rng.sample(variants, len(variants))
            for v in order:
                runs[v].append(timed(v, Path(tmp) / f"{v.replace('+', '_')}-{r}", args.overrides))
                print(f"round {r + 1}/{args.repeats} {v}: {runs[v][-1]}", flush=True)
    result = report(runs, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking_overhead.json").write_text(json.dumps(result, indent=2))
    (out / "tracking_overhead.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
