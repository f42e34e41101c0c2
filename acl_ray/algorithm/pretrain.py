"""The pre-training epoch loop, shared by the in-process CLI and every Ray Train worker.

:class:`Pretrainer` owns the encoder, optimiser, schedule, sampler and random generators and
trains one epoch at a time; whoever drives it (:func:`run_pretrain` here, in-process into a run
directory, or the Ray worker in ``acl_ray.orchestration.ray_train``) decides where metrics and
checkpoints go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from acl_ray.algorithm.augment import spec_for, two_views
from acl_ray.algorithm.checkpoint import CHECKPOINT, check_signature, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.models import build_encoder
from acl_ray.algorithm.objective import acl_loss
from acl_ray.algorithm.optim import build_optimizer, scaled_lr, set_base_lr, warmup_cosine
from acl_ray.algorithm.run_dir import append_metrics, prepare_run_dir, read_metrics, truncate_metrics
from acl_ray.algorithm.runtime import autocast, resolve_device, set_threads, use_channels_last
from acl_ray.algorithm.schedules import adv_weight, aug_strength, scaled_spec
from acl_ray.config.pretrain import Config
from acl_ray.config.schedule import SCHED, SCHEDULABLE
from acl_ray.console import log, progress_bar


class Pretrainer:
    """ACL pre-training state; ``train_epoch`` runs one epoch and returns its metrics.

    Each epoch trains with the values in effect at that epoch (``cfg.at_epoch``: the ``schedule``
    section, if any), decided by the epoch alone. With a schedule, or ``record_schedule`` (a PBT
    member, whose values change between epochs through its config), each metric row records them as
    ``sched/<key>`` for every ``SCHEDULABLE`` key: the history in a checkpoint is then the schedule
    its weights were trained with, inherited by whoever resumes from it.
    """

    def __init__(
        self,
        cfg: Config,
        data: Datasets,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        record_schedule: bool = False,
    ) -> None:
        self.cfg, self.device, self.rank, self.world_size = cfg, device, rank, world_size
        self.record_schedule = record_schedule or bool(cfg.schedule.epochs)
        self.epoch_cfg = cfg  # the values in effect this epoch (cfg.at_epoch)
        n_train, bs = len(data.train), cfg.data.batch_size
        if bs > n_train:
            raise ValueError(
                f"Illegal data.batch_size={bs}: must be <= the {cfg.data.name} training split"
                f" ({n_train} images)"
            )
        if bs % world_size:
            raise ValueError(f"Illegal data.batch_size={bs}: must be divisible by the {world_size} workers")
        self.local_batch = bs // world_size
        torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
        info = data.info
        self.encoder = build_encoder(cfg.model, info.channels, info.mean, info.std).to(device)
        self.channels_last = use_channels_last(cfg.run.channels_last, device)
        if self.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        self.attack_model: nn.Module = self.encoder
        if cfg.run.compile:
            self.attack_model = torch.compile(self.encoder)  # type: ignore[assignment]
        self.model: nn.Module = wrap(self.attack_model) if wrap else self.attack_model
        self.images = data.train.images.to(device)  # (N, C, H, W) uint8, held on the device
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(n_train),  # type: ignore[arg-type]  # any sized sequence of indices works
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=cfg.run.seed,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.lr = scaled_lr(cfg.optim, bs, bs)  # the configured batch is the global batch
        self.optimizer = build_optimizer(self.encoder.parameters(), cfg.optim, self.lr)
        self.scheduler = warmup_cosine(
            self.optimizer, cfg.optim, self.steps_per_epoch, cfg.run.epochs, self.lr
        )
        # Reseeded from (seed, epoch, rank) at every epoch start: a resumed run replays the same
        # views and attack starts without carrying generator state in the checkpoint.
        self.aug_gen = torch.Generator(device=device)
        self.attack_gen = torch.Generator(device=device)
        self.preset = spec_for(cfg.data, cfg.data.name)
        self.spec = self.preset  # this epoch's augmentation (DynACL: the preset scaled down)
        self.adv_weight = cfg.loss.adv_weight  # this epoch's DS weight of the adversarial loss
        self.gather = world_size > 1
        self.epoch = 0  # completed epochs
        self.history: list[dict[str, float]] = []  # metric rows of completed epochs, saved in checkpoints

    def signature(self) -> dict[str, Any]:
        """What must match for a checkpoint to load into this model."""
        m = self.cfg.model
        return {
            "arch": m.arch,
            "routes": list(self.encoder.routes),
            "proj": [m.proj_hidden_dim, m.proj_out_dim, m.proj_layers],
            "in_channels": int(self.encoder.mean.shape[1]),
        }

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the images at ``idx``; returns the loss, still on the device."""
        x = self.images[idx].float() / 255  # (n, C, H, W) in [0, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x1, x2 = two_views(x, self.spec, self.aug_gen)
        self.model.train()
        with autocast(self.device, self.cfg.run.precision):
            loss = acl_loss(
                self.model, self.attack_model, x1, x2, self.epoch_cfg, self.attack_gen, self.gather,
                x0=x, adv_weight=self.adv_weight,  # x0: read only when AIR's weights are on
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def train_epoch(self, show_progress: bool = False) -> dict[str, float]:
        """Train one epoch; returns ``{"epoch", "train/loss", "time/train_s", ...}`` (1-based epoch)."""
        self.sampler.set_epoch(self.epoch)
        cfg = self.epoch_cfg = self.cfg.at_epoch(self.epoch)  # every schedule is a function of the epoch
        strength = aug_strength(cfg, self.epoch)
        self.spec = scaled_spec(self.preset, strength)
        self.adv_weight = adv_weight(cfg, self.epoch)
        bs = cfg.data.batch_size
        set_base_lr(self.scheduler, scaled_lr(cfg.optim, bs, bs))  # also after loading another lr's state
        base = (self.cfg.run.seed * 100_003 + self.epoch) * 1_009 + self.rank * 2
        self.aug_gen.manual_seed(base)
        self.attack_gen.manual_seed(base + 1)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        batches = order[: self.steps_per_epoch * self.local_batch].view(
            self.steps_per_epoch, self.local_batch
        )
        batches = batches.to(self.device)  # one host-to-device copy per epoch, none per step
        total = torch.zeros((), device=self.device)
        start = time.perf_counter()
        with progress_bar(show_progress) as bar:
            task = bar.add_task(
                f"epoch {self.epoch + 1}/{self.cfg.run.epochs}", total=len(batches), status=""
            )
            for i, idx in enumerate(batches):
                total += self.step(idx)
                if show_progress and i % 10 == 9:  # .item() syncs with the device: only for the bar
                    bar.update(task, status=f"loss {total.item() / (i + 1):.4f}")
                bar.update(task, advance=1)
        loss = total / max(len(batches), 1)
        if self.gather:
            dist.all_reduce(loss)
            loss /= self.world_size
        elapsed = time.perf_counter() - start
        self.epoch += 1
        row = {
            "epoch": self.epoch,
            "train/loss": float(loss.item()),
            "train/lr": float(self.scheduler.get_last_lr()[0]),
            "time/train_s": elapsed,
            "train/images_per_s": len(batches) * self.cfg.data.batch_size / max(elapsed, 1e-9),
        }
        if self.cfg.augment.schedule != "constant":
            row["train/aug_strength"] = strength
        if self.cfg.loss.adv_weight_schedule != "constant":
            row["train/adv_weight"] = self.adv_weight
        if self.record_schedule:
            row.update(scheduled_values(cfg))
        self.history.append(row)
        return row

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "config": self.cfg.to_dict(),
            "signature": self.signature(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        check_signature(state["signature"], self.signature(), source)
        if "optimizer" not in state:  # acl-ray import-official writes weights only
            raise ValueError(f"Cannot resume from {source!r}: it holds weights but no optimiser state")
        self.encoder.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state.get("history", []))


def scheduled_values(cfg: Config) -> dict[str, float]:
    """``{"sched/<key>": value}`` of every ``SCHEDULABLE`` key in ``cfg`` (an epoch's config)."""
    out = {}
    for key in SCHEDULABLE:
        section, name = key.split(".")
        out[SCHED + key] = getattr(getattr(cfg, section), name)
    return out


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
        scheduled = "".join(  # DynACL's schedules, when on
            f"  {name} {row[key]:.3f}"
            for key, name in (("train/aug_strength", "aug"), ("train/adv_weight", "adv w"))
            if key in row
        )
        scheduled += "".join(f"  {key} {row[SCHED + key]:.3g}" for key, _ in cfg.schedule.items())
        log(
            f"epoch {row['epoch']:>4}/{cfg.run.epochs}  loss {row['train/loss']:.4f}  "
            f"{row['train/images_per_s']:.0f} img/s  {row['time/train_s']:.1f}s{scheduled}"
        )
        if trainer.epoch % cfg.run.checkpoint_every == 0 or trainer.epoch == cfg.run.epochs:
            save_checkpoint(ckpt, trainer.state_dict())
    return read_metrics(out)
