"""One command for a GPU machine: the CUDA-only tests, then the fast path measured side by side.

    python benchmarks/gpu_check.py --out benchmarks/results      # on one GPU (<= 20 min on an H100)
    python benchmarks/gpu_check.py --smoke --out /tmp/gc         # CPU, tiny: what the test suite runs

1. ``pytest -m cuda`` (tests that skip without a CUDA device): the CUDA path of the algorithm layer.
2. In one process, ResNet-18 at batch 512 on CIFAR-shaped data, images/s and peak device memory of
   one optimiser step (augmentation, attack, forward, backward, optimiser) for SimCLR and ACL-DS
   (K = 5 PGD steps) in fp32, bf16, bf16 + channels_last and bf16 + channels_last + torch.compile,
   plus an **official-pattern** ACL-DS step: fp32, an attack that calls ``loss.backward()`` on the
   model so every PGD step also computes weight gradients (the official ``PGD_contrastive``), and
   separate clean and adversarial training forwards. It is written here from the description in
   research/acl.md 1.4 (model.eval() attack through the "pgd" BN, model.zero_grad() + backward per
   step, then ``(nt_xent(f) + nt_xent(f_adv)) / 2``); no code was copied.

Writes ``gpu_check_<device>.json`` and ``.md`` into ``--out``. Each case gets ``--warmup`` untimed
steps (allocator, cuDNN autotuning, compilation), then ``--steps`` timed ones; the clock is read
after ``torch.cuda.synchronize()``. Peak memory is ``torch.cuda.max_memory_allocated`` per case.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import device_name, random_cifar, sync_device

from acl_ray.algorithm.augment import two_views
from acl_ray.algorithm.data import DatasetInfo, Datasets, Split
from acl_ray.algorithm.losses import nt_xent
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.config.pretrain import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
# (label, run.precision, run.channels_last, run.compile)
MODES = (
    ("fp32", "fp32", False, False),
    ("bf16", "bf16", False, False),
    ("bf16+channels_last", "bf16", True, False),
    ("bf16+channels_last+compile", "bf16", True, True),
)


class OfficialPatternStep:
    """ACL-DS the way the official code spends compute (see the module docstring), on our encoder."""

    def __init__(self, trainer: Pretrainer) -> None:
        self.t = trainer
        self.encoder: nn.Module = trainer.encoder

    def _attack(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        a, t = self.t.cfg.attack, self.t.cfg.loss.temperature
        x = torch.cat([x1, x2])  # (2n, C, H, W)
        delta = (torch.rand_like(x) * 2 - 1) * a.eps
        self.encoder.eval()
        for _ in range(a.steps):
            delta.requires_grad_(True)
            z = self.encoder((x + delta).clamp(0, 1), route="adv")  # (2n, d)
            loss = nt_xent(z[: len(x1)], z[len(x1) :], t)
            self.encoder.zero_grad()
            loss.backward()  # weight gradients too: the cost the official attack pays
            assert delta.grad is not None
            delta = (delta.detach() + a.step_size * delta.grad.sign()).clamp(-a.eps, a.eps)
        return (x + delta).clamp(0, 1).detach()

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.t.images[idx].float() / 255
        x1, x2 = two_views(x, self.t.spec, self.t.aug_gen)
        x_adv = self._attack(x1, x2)
        n, t = len(x1), self.t.cfg.loss.temperature
        self.encoder.train()
        z = self.encoder(torch.cat([x1, x2]), route="clean")  # separate clean forward
        z_adv = self.encoder(x_adv, route="adv")  # and adversarial forward
        loss = (nt_xent(z[:n], z[n:], t) + nt_xent(z_adv[:n], z_adv[n:], t)) / 2
        self.t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.t.optimizer.step()
        return loss.detach()


def measure(
    step: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    batch: int,
    device: torch.device,
    warmup: int,
    steps: int,
    seed: int,
) -> dict[str, float | None]:
    """Images/s over ``steps`` timed steps after ``warmup``, peak device memory, last loss."""
    gen = torch.Generator(device=device).manual_seed(seed)
    idx = torch.stack(
        [torch.randperm(n, generator=gen, device=device)[:batch] for _ in range(warmup + steps)]
    )
    for i in range(warmup):
        step(idx[i])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync_device(device)
    start = time.perf_counter()
    loss = torch.zeros(())
    for i in range(warmup, warmup + steps):
        loss = step(idx[i])
    sync_device(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": batch / seconds, "s_per_step": seconds, "peak_gib": peak, "loss": float(loss)}


def base(args: argparse.Namespace, device: torch.device) -> tuple[Config, Any]:
    sets = {"run.progress": False, "run.epochs": 1000, "attack.steps": args.k}
    if args.smoke:  # digits-sized model on random 8x8 images: seconds on a CPU
        cfg = Config().override({**sets, "data.batch_size": args.batch or 16})
        g = torch.Generator().manual_seed(args.seed)
        split = Split(
            torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8), torch.zeros(64).long()
        )
        return cfg, Datasets(split, split, split, DatasetInfo("synthetic", 10, 1, 8, 8, (0.5,), (0.5,)))
    cfg = load_config(ROOT / "configs" / "paper_cifar10.yaml").override(
        {**sets, "data.batch_size": args.batch or 512}
    )
    return cfg, random_cifar(max(4 * cfg.data.batch_size, 2048), device, args.seed)


def run_tests(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"ran": False, "why": "no CUDA device"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"ran": True, "returncode": proc.returncode, "summary": tail}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# gpu_check on {res['device']}",
        "",
        f"torch {res['torch']}, batch {res['batch']}, "
        f"K = {res['k']}, {res['steps']} timed steps after {res['warmup']} warm-up steps.",
        "",
        f"CUDA tests: {res['tests'].get('summary') or res['tests'].get('why')}",
        "",
        "| case | images/s | s/step | peak GiB | vs official pattern |",
        "|---|---|---|---|---|",
    ]
    ref = res["cases"].get("ds K=5 official-pattern [fp32]", {}).get("images_per_s")
    for label, c in res["cases"].items():
        ratio = f"{c['images_per_s'] / ref:.2f}x" if ref and label.startswith("ds") else ""
        peak = "-" if c["peak_gib"] is None else f"{c['peak_gib']:.2f}"
        lines.append(f"| {label} | {c['images_per_s']:.1f} | {c['s_per_step']:.4f} | {peak} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check_<device>.json / .md")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (small CNN, 8x8, 2 steps)")
    p.add_argument("--batch", type=int, default=0, help="images per step (default 512; smoke 16)")
    p.add_argument("--k", type=int, default=5, help="PGD steps of the ACL-DS cases")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.k, args.warmup, args.steps = min(args.k, 2), 1, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, data = base(args, device)
    res: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch": cfg.data.batch_size,
        "k": args.k,
        "warmup": args.warmup,
        "steps": args.steps,
        "tests": run_tests(device),
        "cases": {},
    }
    n = len(data.train)
    for label, precision, channels_last, compile_ in MODES:
        for variant in ("simclr", "ds"):
            sets = {
                "model.variant": variant,
                "run.precision": precision,
                "run.channels_last": channels_last,
                "run.compile": compile_,
            }
            trainer = Pretrainer(cfg.override(sets), data, device)
            name = f"{'simclr' if variant == 'simclr' else f'ds K={args.k}'} [{label}]"
            res["cases"][name] = measure(
                trainer.step, n, cfg.data.batch_size, device, args.warmup, args.steps, args.seed
            )
            print(f"{name}: {res['cases'][name]['images_per_s']:.1f} images/s", flush=True)
    trainer = Pretrainer(cfg.override({"run.precision": "fp32", "run.channels_last": False}), data, device)
    name = f"ds K={args.k} official-pattern [fp32]"
    res["cases"][name] = measure(
        OfficialPatternStep(trainer).step, n, cfg.data.batch_size, device, args.warmup, args.steps, args.seed
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check_{res['device']}{'_smoke' if args.smoke else ''}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
