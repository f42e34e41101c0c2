"""The pre-training epoch loop, shared by the in-process CLI and every Ray Train worker.

:class:`Pretrainer` owns the encoder, optimiser, schedule, sampler and random generators and
trains one epoch at a time; whoever drives it (``run_pretrain`` here, the Ray worker in
``acl_ray.orchestration.ray_train``) decides where metrics and checkpoints go.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from acl_ray.algorithm.augment import spec_for, two_views
from acl_ray.algorithm.checkpoint import check_signature
from acl_ray.algorithm.data import Datasets
from acl_ray.algorithm.models import build_encoder
from acl_ray.algorithm.objective import acl_loss
from acl_ray.algorithm.optim import build_optimizer, scaled_lr, warmup_cosine
from acl_ray.config.pretrain import Config
from acl_ray.console import progress_bar


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Illegal run.device='cuda': no CUDA device is visible (use auto or cpu)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads, or the CPUs this process was given.

    Ray sets ``OMP_NUM_THREADS`` in each worker to its CPU allotment; outside Ray the CPU
    affinity mask is used. Oversubscribing two cores made steps 3-20x slower (DESIGN.md).
    """
    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Pretrainer:
    """ACL pre-training state; ``train_epoch`` runs one epoch and returns its metrics."""

    def __init__(
        self,
        cfg: Config,
        data: Datasets,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        self.cfg, self.device, self.rank, self.world_size = cfg, device, rank, world_size
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
        if device.type == "cuda" and cfg.run.channels_last:
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
        self.spec = spec_for(cfg.data, cfg.data.name)
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
        if self.device.type == "cuda" and self.cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x1, x2 = two_views(x, self.spec, self.aug_gen)
        self.model.train()
        with autocast(self.device, self.cfg.run.precision):
            loss = acl_loss(self.model, self.attack_model, x1, x2, self.cfg, self.attack_gen, self.gather)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def train_epoch(self, show_progress: bool = False) -> dict[str, float]:
        """Train one epoch; returns ``{"epoch", "train/loss", "time/train_s", ...}`` (1-based epoch)."""
        self.sampler.set_epoch(self.epoch)
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
        self.encoder.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
