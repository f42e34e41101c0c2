"""The full protocol for trials that ASHA stopped, from their last checkpoint, as Ray tasks.

Every trial of a sweep ends with ``eval/standard_acc`` and ``eval/robust_acc``: those that ran to
the last epoch reported them; the others are evaluated here, once, and cached in
``<sweep>/posthoc/<trial_id>.json`` (which :mod:`acl_ray.results.trials` reads back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from acl_ray.config.sweep import Sweep
from acl_ray.results.trials import POSTHOC_DIR


def _posthoc(checkpoint_path: str, final: dict[str, Any], data_cfg: dict[str, Any]) -> dict[str, Any]:
    from ray.train import Checkpoint

    from acl_ray.algorithm.checkpoint import load_checkpoint
    from acl_ray.algorithm.data import load_datasets
    from acl_ray.algorithm.finetune import finetune_state
    from acl_ray.algorithm.runtime import resolve_device, set_threads
    from acl_ray.config.pretrain import DataConfig
    from acl_ray.config.protocols import FinetuneConfig

    set_threads(0)
    device = resolve_device("auto")
    with Checkpoint(checkpoint_path).as_directory() as d:  # local folder, S3 or GCS
        state = load_checkpoint(d, map_location=device)
    data = load_datasets(DataConfig(**data_cfg))
    return finetune_state(state, data, FinetuneConfig.from_dict(final), device)


def _reachable(path: str | None) -> bool:
    return bool(path) and ("://" in str(path) or Path(str(path)).exists())  # remote: checked when loaded


def complete_missing(s: Sweep, out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the final protocol for summary rows without it (stopped early), cached in ``out/posthoc``.

    Rows whose cached result was already merged (``eval/source`` = ``posthoc``) are left alone.
    """
    todo = [r for r in rows if r["eval/source"] is None and _reachable(r["checkpoint_path"])]
    if todo:
        if not ray.is_initialized():
            ray.init(num_cpus=None)
        task = ray.remote(num_cpus=s.sweep.cpus_per_worker, num_gpus=s.sweep.gpus_per_worker)(_posthoc)
        final = s.final.to_dict()
        data_cfg = s.base.to_dict()["data"]
        refs = [task.remote(r["checkpoint_path"], final, data_cfg) for r in todo]
        cache = out / POSTHOC_DIR
        cache.mkdir(exist_ok=True)
        for r, metrics in zip(todo, ray.get(refs), strict=True):
            (cache / f"{r['trial_id']}.json").write_text(json.dumps(metrics, indent=2))
            r.update(metrics, **{"eval/source": "posthoc"})
    return rows
