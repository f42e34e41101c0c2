"""TPE against random search at the same budget, over a few seeds, on digits.

Both searchers are Optuna's, driven with the sweep's own search space (configs/sweep_digits.yaml),
objective (``val/robust_acc`` of the full SLF protocol) and paper-default first trial. To fit a
laptop budget the trials run in-process (no Ray start-up per trial) and for ``--epochs`` epochs
each; the sweep itself uses the same samplers through Ray Tune's OptunaSearch. Writes the best
validation robust accuracy after each trial to ``benchmarks/results/searchers.{json,md}``.

    python benchmarks/searchers.py                              # 2 seeds x 8 trials x 8 epochs
    python benchmarks/searchers.py --seeds 0 1 2 --trials 12 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import optuna
import torch

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.finetune import finetune_state
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.runtime import set_threads
from acl_ray.config.space import paper_point
from acl_ray.config.sweep import load_sweep

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep_digits.yaml"


def distributions(space: dict[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, dist in space.items():
        kind, a = next(iter(dist.items()))
        if kind == "int":
            out[key] = optuna.distributions.IntDistribution(int(a[0]), int(a[1]))
        elif kind in ("uniform", "loguniform"):
            out[key] = optuna.distributions.FloatDistribution(
                float(a[0]), float(a[1]), log=kind == "loguniform"
            )
        else:
            out[key] = optuna.distributions.CategoricalDistribution(list(a))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads(0)
    s = load_sweep(CONFIG, [f"run.epochs={args.epochs}"])
    data = load_datasets(s.base.data)
    dists = distributions(s.space)
    cache: dict[str, float] = {}  # the paper point is the same trial for every run

    def objective(params: dict[str, Any]) -> float:
        key = json.dumps(params, sort_keys=True)
        if key not in cache:
            cfg = s.base.override({**params, "run.progress": False})
            trainer = Pretrainer(cfg, data, torch.device("cpu"))
            while trainer.epoch < cfg.run.epochs:
                trainer.train_epoch()
            cache[key] = finetune_state(trainer.state_dict(), data, s.final, torch.device("cpu"))[
                "val/robust_acc"
            ]
        return cache[key]

    curves: dict[str, list[list[float]]] = {"tpe": [], "random": []}
    for seed in args.seeds:
        for name in curves:
            sampler = (
                optuna.samplers.TPESampler(n_startup_trials=max(2, args.trials // 3), seed=seed)
                if name == "tpe"
                else optuna.samplers.RandomSampler(seed=seed)
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.enqueue_trial(paper_point(s.space, s.base))
            best: list[float] = []
            for _ in range(args.trials):
                trial = study.ask(dists)
                value = objective(trial.params)
                study.tell(trial, value)
                best.append(max(best[-1] if best else 0.0, value))
                print(
                    json.dumps({"seed": seed, "searcher": name, "trial": len(best), "value": value}),
                    flush=True,
                )
            curves[name].append(best)
    mean = {k: [statistics.mean(c[i] for c in v) for i in range(args.trials)] for k, v in curves.items()}
    result = {
        "args": vars(args),
        "curves": curves,
        "mean_best_by_trial": mean,
        "paper_point_value": cache[json.dumps(paper_point(s.space, s.base), sort_keys=True)],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "searchers.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# TPE vs random search (digits, best val robust accuracy after n trials)",
        "",
        f"{len(args.seeds)} seeds, {args.trials} trials of {args.epochs} epochs each, SLF PGD-20 CE+CW "
        f"at eps "
        f"{s.final.eval.eps}; trial 1 is the paper-default point (val RA {result['paper_point_value']:.3f}).",
        "",
        "| trials | " + " | ".join(mean) + " |",
        "| --- | " + " | ".join("---" for _ in mean) + " |",
        *[f"| {i + 1} | " + " | ".join(f"{mean[k][i]:.3f}" for k in mean) + " |" for i in range(args.trials)],
    ]
    (out / "searchers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
