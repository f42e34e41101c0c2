"""One command for a GPU machine: the CUDA-only tests, then the fast path measured side by side.

    PYTHONPATH=. python benchmarks/gpu_check.py --out "$OUT" --budget-s 420   # a bare 15-minute lease
    python benchmarks/gpu_check.py --out benchmarks/results                   # one GPU, no time limit
    python benchmarks/gpu_check.py --smoke --out /tmp/gc                      # CPU, tiny: the suite's run

Runs from a plain checkout on bare PyTorch (torch, torchvision, numpy, scikit-learn, pyyaml, rich,
pytest): neither this script nor the tests it runs import Ray, Optuna or pyautoattack.

1. ``pytest -m cuda`` on the test files that hold ``cuda``-marked tests (found by reading tests/),
   so collection imports no Ray test module: the CUDA path of the algorithm layer. Its output goes
   to ``<stem>_pytest.log`` and ``<stem>_pytest.xml`` (JUnit) in ``--out``.
2. In one process, ResNet-18 at batch 512 on CIFAR-shaped data, images/s and peak device memory of
   one optimiser step (augmentation, attack, forward, backward, optimiser) for SimCLR and ACL-DS
   (K = 5 PGD steps) in fp32, bf16, bf16 + channels_last, an **official-pattern** ACL-DS step, and
   last bf16 + channels_last + torch.compile (the costliest to start, so the first cut). The
   official pattern is fp32, an attack that calls ``loss.backward()`` on the model so every PGD step
   also computes weight gradients (the official ``PGD_contrastive``), and separate clean and
   adversarial training forwards. It is written here from the description in research/acl.md 1.4
   (model.eval() attack through the "pgd" BN, model.zero_grad() + backward per step, then
   ``(nt_xent(f) + nt_xent(f_adv)) / 2``); no code was copied.

Each case gets ``--warmup`` untimed steps (allocator, cuDNN autotuning, compilation), then
``--steps`` timed ones; the clock is read after ``torch.cuda.synchronize()``. Peak memory is
``torch.cuda.max_memory_allocated`` per case.

``--budget-s`` bounds the whole process (counted from its start, imports included; 5 s are kept for
the last write): the tests get at most 40% of it, and each case a share of what is left (a compiled
case four eager ones, the official pattern two). A case times as many steps as its share holds
(at least 3 while the budget lasts); a case that cannot start in time, or a compiled case with
less than ``--compile-min-s`` left, is skipped, and the JSON says why. ``<stem>.json`` and
``<stem>.md`` are rewritten (temporary file, then rename) before and after every case, so a run
killed mid-way leaves every finished number and the case it was in. At most 4 files (+ 2 transient
temporaries) are written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
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
RESERVE_S = 5.0  # of a budget: kept for the last write and the process exit
TESTS_SHARE = 0.4  # the CUDA tests may take this share of what is left of a budget
TESTS_MIN_S = 20.0  # below this the tests are not started
MIN_TIMED = 3  # timed steps a case keeps beyond its share while the whole budget holds them
NOT_HERE = ("ray", "optuna", "autoattack")  # never imported by this script or the tests it runs


@dataclass(frozen=True)
class Case:
    name: str
    variant: str  # "simclr" | "ds" | "official"
    precision: str
    channels_last: bool
    compile: bool
    weight: float  # share of the remaining budget, in eager cases


def plan(k: int) -> list[Case]:
    """Cheap and certain first: eager modes, the official pattern, then the compiled cases (DS first)."""
    cases = []
    for label, precision, cl in (("fp32", "fp32", False), ("bf16", "bf16", False),
                                 ("bf16+channels_last", "bf16", True)):
        cases += [Case(f"simclr [{label}]", "simclr", precision, cl, False, 1.0),
                  Case(f"ds K={k} [{label}]", "ds", precision, cl, False, 1.0)]
    cases.append(Case(f"ds K={k} official-pattern [fp32]", "official", "fp32", False, False, 2.0))
    label = "bf16+channels_last+compile"
    cases += [Case(f"ds K={k} [{label}]", "ds", "bf16", True, True, 4.0),
              Case(f"simclr [{label}]", "simclr", "bf16", True, True, 4.0)]
    return cases


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``); 0 where that cannot be read."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class Budget:
    """Wall-clock seconds left of ``--budget-s`` (infinite without one), ``RESERVE_S`` held back."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.deadline = None if budget_s is None else time.monotonic() + budget_s - process_age()

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - RESERVE_S - time.monotonic()


def timed_steps(requested: int, per_step_s: float, share_s: float, left_s: float) -> int:
    """Timed steps for a case: all ``requested`` when its share allows, else as many as the share
    holds but at least ``MIN_TIMED`` while the whole budget (``left_s``) holds them; 0 if none fits."""
    per = max(per_step_s, 1e-9)
    n = min(float(requested), max(share_s / per, float(min(MIN_TIMED, requested))), left_s / per)
    return max(0, math.floor(n))


def skip_reason(case: Case, left_s: float, first_step_s: float, compile_min_s: float) -> str | None:
    """Why ``case`` should not start with ``left_s`` seconds of the budget left, or None."""
    if left_s <= 0:
        return "skipped: the budget (--budget-s) is spent"
    if case.compile and left_s < compile_min_s:
        return (f"skipped: {left_s:.0f} s of the budget left, torch.compile needs about "
                f"{compile_min_s:.0f} s (--compile-min-s)")
    if left_s < first_step_s:
        return f"skipped: {left_s:.1f} s of the budget left, a case took {first_step_s:.1f} s to start"
    return None


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
    step: Callable[[torch.Tensor], torch.Tensor], n: int, batch: int, device: torch.device,
    args: argparse.Namespace, budget: Budget, start: float, share_s: float,
) -> dict[str, Any]:
    """Images/s over the timed steps that fit after the warm-up, peak device memory, last loss.

    ``start`` is when the case began (its model build counts against ``share_s``). The warm-up
    stops early once half the share is spent (after 2 steps: the first one compiles); the last
    warm-up step's time sets how many timed steps fit (``timed_steps``)."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.stack([torch.randperm(n, generator=gen, device=device)[:batch]
                       for _ in range(args.warmup + args.steps)])
    warm: list[float] = []
    first = 0.0
    for i in range(args.warmup):
        t0 = time.perf_counter()
        step(idx[i])
        sync_device(device)
        warm.append(time.perf_counter() - t0)
        if i == 0:
            first = time.monotonic() - start  # the model build and the first step
        spent = time.monotonic() - start
        if i + 1 >= min(2, args.warmup) and (spent > share_s / 2 or budget.left() <= 0):
            break
    per = warm[-1] if warm else 0.0
    steps = timed_steps(args.steps, per, share_s - (time.monotonic() - start), budget.left())
    row: dict[str, Any] = {"warmup_steps": len(warm), "start_s": first, "steps": steps}
    if steps == 0:
        return {**row, "skipped": f"cut after warm-up: {per:.2f} s/step, {budget.left():.1f} s left"}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync_device(device)
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for i in range(len(warm), len(warm) + steps):
        loss = step(idx[i])
    sync_device(device)
    seconds = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row.update({"images_per_s": batch / seconds, "s_per_step": seconds, "peak_gib": peak,
                "loss": float(loss), "case_s": time.monotonic() - start})
    if steps < args.steps or len(warm) < args.warmup:
        row["cut"] = f"budget: {len(warm)}/{args.warmup} warm-up and {steps}/{args.steps} timed steps"
    return row


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


def cuda_test_files() -> list[str]:
    """Test files that hold ``cuda``-marked tests: collecting only these imports no Ray test module."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "pytest.mark.cuda" in p.read_text())


def run_tests(out: Path, stem: str, budget: Budget, on_cpu: bool) -> dict[str, Any]:
    """``pytest -m cuda`` in a child process (its own session, interrupted then killed at its share)."""
    if not torch.cuda.is_available() and not on_cpu:
        return {"ran": False, "why": "no CUDA device"}
    timeout = budget.left() * TESTS_SHARE
    if timeout <= 0:
        return {"ran": False, "why": "skipped: the budget (--budget-s) is spent"}
    if timeout < TESTS_MIN_S:
        return {"ran": False, "why": f"skipped: {timeout:.0f} s of the budget for them (< {TESTS_MIN_S:.0f})"}
    files, log, xml = cuda_test_files(), out / f"{stem}_pytest.log", out / f"{stem}_pytest.xml"
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "cuda",
           f"--junitxml={xml}", *files]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=None if math.isinf(timeout) else timeout)
        except subprocess.TimeoutExpired:  # SIGINT first: pytest then writes its summary and JUnit file
            timed_out = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    res: dict[str, Any] = {"ran": True, "files": files, "returncode": proc.returncode,
                           "summary": lines[-1] if lines else "", "seconds": time.monotonic() - t0,
                           "timed_out": timed_out, "log": log.name}
    if xml.is_file():
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            res["junit"] = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return res


def markdown(res: dict[str, Any]) -> str:
    state = "finished" if res["finished"] else f"not finished (in progress: {res['in_progress']})"
    budget = f"{res['budget_s']:.0f} s" if res["budget_s"] else "none"
    tests = res["tests"]
    lines = [
        f"# gpu_check on {res['device']}",
        "",
        f"torch {res['torch']}, Python {res['python']}, batch {res['batch']}, K = {res['k']}, "
        f"up to {res['steps']} timed steps after {res['warmup']} warm-up steps; budget {budget}; {state}.",
        "",
        f"CUDA tests: {tests.get('summary') or tests.get('why')}",
        "",
        "| case | images/s | s/step | timed steps | peak GiB | vs official pattern |",
        "|---|---|---|---|---|---|",
    ]
    ref = next((c["images_per_s"] for k, c in res["cases"].items() if "official-pattern" in k), None)
    for label, c in res["cases"].items():
        ratio = f"{c['images_per_s'] / ref:.2f}x" if ref and label.startswith("ds") else ""
        peak = "-" if c["peak_gib"] is None else f"{c['peak_gib']:.2f}"
        lines.append(f"| {label} | {c['images_per_s']:.1f} | {c['s_per_step']:.4f} | {c['steps']} | "
                     f"{peak} | {ratio} |")
    for title, rows in (("Skipped", res["skipped"]), ("Failed", res["failed"])):
        if rows:
            lines += ["", f"{title}:", *(f"- {k}: {v}" for k, v in rows.items())]
    return "\n".join(lines) + "\n"


def write(out: Path, stem: str, res: dict[str, Any]) -> None:
    """``<stem>.json`` and ``.md``, each written to a temporary file and renamed over the old one."""
    res["elapsed_s"] = process_age()
    res["loaded_" + "_".join(NOT_HERE)] = [m for m in NOT_HERE if m in sys.modules]
    for path, text in ((out / f"{stem}.json", json.dumps(res, indent=2)),
                       (out / f"{stem}.md", markdown(res))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def run_case(case: Case, cfg: Config, data: Any, device: torch.device, args: argparse.Namespace,
             budget: Budget, share_s: float) -> dict[str, Any]:
    start = time.monotonic()
    if case.compile:
        import torch._dynamo

        torch._dynamo.reset()  # each compiled case pays its own compilation
    variant = "ds" if case.variant == "official" else case.variant
    sets = {"model.variant": variant, "run.precision": case.precision,
            "run.channels_last": case.channels_last, "run.compile": case.compile}
    trainer = Pretrainer(cfg.override(sets), data, device)
    step = OfficialPatternStep(trainer).step if case.variant == "official" else trainer.step
    return measure(step, len(data.train), cfg.data.batch_size, device, args, budget, start, share_s)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check_<device>.json / .md / _pytest.*")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (small CNN, 8x8, 2 steps)")
    p.add_argument("--batch", type=int, default=0, help="images per step (default 512; smoke 16)")
    p.add_argument("--k", type=int, default=5, help="PGD steps of the ACL-DS cases")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per case (fewer on a short budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock seconds for the whole process, start-up included (default: no limit)")
    p.add_argument("--compile-min-s", type=float, default=120.0,
                   help="skip a torch.compile case with less than this left of the budget")
    p.add_argument("--tests-on-cpu", action="store_true",
                   help="run the pytest step without a GPU too (the cuda tests skip: checks collection)")
    args = p.parse_args(argv)
    budget = Budget(args.budget_s)
    if args.smoke:
        args.k, args.warmup, args.steps = min(args.k, 2), 1, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check_{device_name(device)}{'_smoke' if args.smoke else ''}"
    res: dict[str, Any] = {
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "c_compiler": shutil.which("cc") or shutil.which("gcc"), "budget_s": args.budget_s,
        "batch": args.batch or (16 if args.smoke else 512), "k": args.k, "warmup": args.warmup,
        "steps": args.steps, "finished": False, "in_progress": "CUDA tests",
        "tests": {}, "cases": {}, "skipped": {}, "failed": {},
    }
    write(out, stem, res)
    res["tests"] = run_tests(out, stem, budget, args.tests_on_cpu)
    print(f"CUDA tests: {res['tests'].get('summary') or res['tests'].get('why')}", flush=True)
    cfg, data = base(args, device)
    res["batch"], res["in_progress"] = cfg.data.batch_size, None
    cases, first_step_s = plan(args.k), 0.0
    for i, case in enumerate(cases):
        left = budget.left()
        reason = skip_reason(case, left, first_step_s, args.compile_min_s)
        if reason:
            res["skipped"][case.name] = reason
            print(f"{case.name}: {reason}", flush=True)
            continue
        share = left * case.weight / sum(c.weight for c in cases[i:])
        res["in_progress"] = case.name
        write(out, stem, res)
        try:
            row = run_case(case, cfg, data, device, args, budget, share)
        except Exception as e:  # a failed case (no C compiler for Triton, out of memory) loses no other
            traceback.print_exc()
            res["failed"][case.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            row = {}
        if not case.compile and row:
            first_step_s = max(first_step_s, row["start_s"])
        if "skipped" in row:
            res["skipped"][case.name] = row["skipped"]
        elif row:
            res["cases"][case.name] = row
            print(f"{case.name}: {row['images_per_s']:.1f} images/s over {row['steps']} steps", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        res["in_progress"] = None
        write(out, stem, res)
    res["finished"] = True
    write(out, stem, res)
    print(markdown(res))
    return res


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
