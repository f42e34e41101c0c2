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
) -> dict[str, Any]:
    """One trial folder with result.json (a line per epoch, the full protocol on the last)."""
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
