"""Fake sweep folders in Tune's layout (state, params.json, result.json, error.txt, posthoc/), for
the results tests: no Ray cluster, no training."""

import json
from pathlib import Path
from typing import Any

from acl_ray.config.sweep import Sweep

SPEC = {
    "base": {"data": {"name": "synthetic", "synthetic_size": 300, "batch_size": 32}, "run": {"epochs": 3}},
    "space": {
        "attack.steps": {"int": [1, 3]},
        "attack.eps": {"loguniform": [0.03, 0.3]},
        "data.batch_size": {"choice": [16, 32]},
    },
    "sweep": {"num_samples": 4, "workers": 2, "cpus_per_worker": 1.5},
}
FINAL = {"val/standard_acc": 0.8, "val/robust_acc": 0.32, "eval/standard_acc": 0.75, "eval/robust_acc": 0.28}


def _trial(
    folder: Path,
    index: int,
    config: dict[str, Any],
    epochs: int,
    final: dict[str, float] | None = None,
    status: str = "TERMINATED",
    proxy: dict[int, float] | None = None,
) -> dict[str, Any]:
    """One trial folder with result.json (a line per epoch, the full protocol on the last).

    ``proxy``: epoch -> ``proxy/robust_acc``, reported on those epochs only (default: every epoch,
    0.1 + 0.01 epoch + 0.02 index)."""
    tid = f"{index:04d}abcd"
    logdir = f"train_driver_{tid}_{index}_x=1_2026-01-01_00-00-00"
    d = folder / logdir
    d.mkdir()
    (d / "params.json").write_text(json.dumps(config))
    lines = []
    for e in range(1, epochs + 1):
        r = {
            "epoch": e,
            "train/loss": 4.0 - 0.1 * e,
            "train/lr": 1e-3,
            "time/train_s": 0.5,
            "train/images_per_s": 400.0,
            "proxy/standard_acc": 0.3 + 0.01 * e,
            "proxy/robust_acc": 0.1 + 0.01 * e + 0.02 * index,
            "checkpoint_path": f"/elsewhere/{folder.name}/trial-{tid}/checkpoint_{e}",
            "time_total_s": 10.0 * e,
            "trial_id": tid,
            "config": config,
        }
        if proxy is not None:
            r["proxy/robust_acc"] = proxy.get(e)
            r["proxy/standard_acc"] = None if e not in proxy else proxy[e] + 0.3
        if e == epochs and final:
            r.update(final)
        lines.append(json.dumps(r))
    (d / "result.json").write_text("".join(x + "\n" for x in lines))
    (folder / f"trial-{tid}" / f"checkpoint_{epochs}").mkdir(parents=True)
    meta = {"trial_id": tid, "experiment_tag": f"{index}_x=1", "status": status, "config": config}
    return {**meta, "relative_logdir": logdir}


def make_sweep(folder: Path, killed: bool = False, strings: bool = False) -> Path:
    """Four trials: paper point (completed), ASHA-stopped (posthoc), error, and one more that is
    completed, or, when ``killed``, running / missing from the saved state / with a torn line.
    ``strings`` also searches a string-valued key, ``augment.schedule``."""
    folder.mkdir()
    spec = SPEC
    if strings:
        spec = {**SPEC, "space": {**SPEC["space"], "augment.schedule": {"choice": ["constant", "dynacl"]}}}
    Sweep.from_dict(spec).save(folder)
    c = [
        {"attack.steps": 3, "attack.eps": 8 / 255, "data.batch_size": 32},  # the paper point, clipped
        {"attack.steps": 2, "attack.eps": 0.15, "data.batch_size": 16},
        {"attack.steps": 1, "attack.eps": 0.05, "data.batch_size": 16},
        {"attack.steps": 2, "attack.eps": 0.1, "data.batch_size": 32},
    ]
    if strings:
        for config, schedule in zip(c, ("constant", "dynacl", "dynacl", "constant"), strict=True):
            config["augment.schedule"] = schedule
    metas = [_trial(folder, 1, c[0], 3, FINAL)]
    if killed:
        metas.append(_trial(folder, 2, c[1], 2, status="RUNNING"))
        with (folder / metas[-1]["relative_logdir"] / "result.json").open("a") as f:
            f.write('{"epoch": 3, "train/lo')  # killed while writing
        _trial(folder, 3, c[2], 1, status="RUNNING")  # started after the last state save
    else:
        metas.append(_trial(folder, 2, c[1], 1))  # ASHA stopped it after epoch 1
        (folder / "posthoc").mkdir()
        post = {**FINAL, "val/standard_acc": 0.9, "val/robust_acc": 0.25}
        (folder / "posthoc" / f"{metas[-1]['trial_id']}.json").write_text(json.dumps(post))
        metas.append(_trial(folder, 3, c[2], 1, status="ERROR"))
        err = "Failure # 1 (occurred at 2026)\nTraceback:\n  File x\nValueError: Illegal attack.eps=2\n"
        (folder / metas[-1]["relative_logdir"] / "error.txt").write_text(err)
        metas.append(_trial(folder, 4, c[3], 3, {**FINAL, "val/standard_acc": 0.7, "val/robust_acc": 0.35}))
    state = {"trial_data": [[json.dumps(m), json.dumps({"error_filename": None})] for m in metas]}
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    return folder


# A sweep where mixing budgets reverses the ranking of parameters. A (loss.temperature) decides
# the full-length value; B (optim.lr) only decides how fast a trial starts, so it decides the
# proxy at the first rung (epoch 4) and with it which trials ASHA keeps. Survivors (fast B) end at
# 0.80 (good A) or 0.60 (bad A) after 20 epochs; the trials stopped at epoch 4 have post-hoc
# values near 0.25 whatever their A. Over that mix B explains most of the variance (it sorts
# 4-epoch from 20-epoch models); at full length (B constant among the survivors) only A matters.
A, B = "loss.temperature", "optim.lr"
A_GOOD, A_BAD, B_FAST, B_SLOW = 0.8, 0.2, 3e-3, 3e-4
BUDGET_SPEC = {
    "base": {"data": {"name": "synthetic", "synthetic_size": 300, "batch_size": 32}, "run": {"epochs": 20}},
    "space": {A: {"choice": [A_BAD, A_GOOD]}, B: {"choice": [B_SLOW, B_FAST]}},
    "sweep": {"num_samples": 13, "proxy_every": 2, "grace_period": 4},
}


def rung_proxy(config: dict[str, Any], rep: int) -> float:
    """proxy/robust_acc at epoch 4: B only (plus a small replicate jitter that no key explains)."""
    return (0.40 if config[B] == B_FAST else 0.20) + 0.004 * rep


def make_budget_sweep(folder: Path) -> Path:
    """13 trials, 20 epochs, proxy on even epochs: a 2 x 2 grid of (A, B) x 3 replicates, then one
    trial that failed at epoch 2. Slow-B trials are stopped by ASHA at epoch 4 (post hoc 0.25); one
    fast, bad-A trial at epoch 12 (post hoc 0.55); the other 5 fast trials run to epoch 20."""
    folder.mkdir()
    Sweep.from_dict(BUDGET_SPEC).save(folder)
    metas, posthoc, index = [], {}, 0
    for rep in range(3):
        for a in (A_BAD, A_GOOD):
            for b in (B_SLOW, B_FAST):
                index += 1
                config = {A: a, B: b}
                start = rung_proxy(config, rep)
                end = (0.75 if a == A_GOOD else 0.55) + 0.004 * rep
                curve = {
                    e: start * e / 4 if e <= 4 else start + (end - start) * (e - 4) / 16
                    for e in range(2, 21, 2)
                }
                if b == B_SLOW or (a == A_BAD and rep == 0):
                    stop, value = (4, 0.25 + 0.005 * rep) if b == B_SLOW else (12, 0.55)
                    metas.append(_trial(folder, index, config, stop, proxy=curve))
                    posthoc[metas[-1]["trial_id"]] = {**FINAL, "val/robust_acc": value}
                else:
                    val = (0.80 if a == A_GOOD else 0.60) + 0.004 * rep
                    metas.append(
                        _trial(folder, index, config, 20, {**FINAL, "val/robust_acc": val}, proxy=curve)
                    )
    failed = _trial(folder, 13, {A: A_GOOD, B: B_FAST}, 2, status="ERROR", proxy={2: 0.2})
    (folder / failed["relative_logdir"] / "error.txt").write_text("RuntimeError: worker died\n")
    (folder / "posthoc").mkdir()
    for tid, metrics in posthoc.items():
        (folder / "posthoc" / f"{tid}.json").write_text(json.dumps(metrics))
    state = {"trial_data": [[json.dumps(m), "{}"] for m in [*metas, failed]]}
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    return folder
