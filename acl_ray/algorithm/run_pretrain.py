"""In-process pre-training into a run directory (``acl-ray pretrain`` without ``--workers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.pretrain import Pretrainer, resolve_device, set_threads
from acl_ray.algorithm.run_dir import append_metrics, prepare_run_dir, read_metrics, truncate_metrics
from acl_ray.config.pretrain import Config
from acl_ray.console import log


def run_pretrain(cfg: Config, out: str | Path, resume: bool = False) -> list[dict[str, Any]]:
    """Pre-train ``cfg`` into ``out`` (checkpoint every ``run.checkpoint_every`` epochs and at the end).

    With ``resume``, continue from ``out/checkpoint.pt``; metric rows written after that checkpoint
    are dropped because those epochs are trained again. Returns all metric rows of the run.
    """
    device = resolve_device(cfg.run.device)
    set_threads(cfg.run.threads)
    data = load_datasets(cfg.data)
    trainer = Pretrainer(cfg, data, device)  # validates batch size against the data first
    out = prepare_run_dir(out, cfg, resume)
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        trainer.load_state_dict(load_checkpoint(ckpt), str(ckpt))
        log(f"resumed from {ckpt} at epoch {trainer.epoch}")
    truncate_metrics(out, trainer.epoch)
    while trainer.epoch < cfg.run.epochs:
        row = trainer.train_epoch(show_progress=cfg.run.progress)
        append_metrics(out, row)
        log(
            f"epoch {row['epoch']:>4}/{cfg.run.epochs}  loss {row['train/loss']:.4f}  "
            f"{row['train/images_per_s']:.0f} img/s  {row['time/train_s']:.1f}s"
        )
        if trainer.epoch % cfg.run.checkpoint_every == 0 or trainer.epoch == cfg.run.epochs:
            save_checkpoint(ckpt, trainer.state_dict())
    return read_metrics(out)
