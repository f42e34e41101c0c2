"""A run directory: resolved config, versions, per-epoch metrics and the latest checkpoint.

``DIR/config.yaml`` (the full resolved config), ``DIR/env.json`` (versions and seed),
``DIR/metrics.jsonl`` (one JSON object per epoch) and ``DIR/checkpoint.pt``.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from acl_ray.config.pretrain import Config

CONFIG, METRICS, ENV = "config.yaml", "metrics.jsonl", "env.json"
_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "ray", "optuna", "acl-ray")


def environment() -> dict[str, Any]:
    """Versions that decide whether a number reproduces (the official code's users lacked these)."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def require_empty(out: str | Path, hint: str = "choose another --out") -> Path:
    """``out`` as a Path when it is missing or empty; otherwise a one-line error ending in ``hint``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"Output directory {str(out)!r} is not empty: {hint}")
    return out


def prepare_run_dir(out: str | Path, cfg: Config, resume: bool) -> Path:
    """Create ``out`` for a new run, or check it holds one to resume; never overwrite silently."""
    out = Path(out)
    holds_run = (out / CONFIG).exists() or (out / METRICS).exists()
    if resume and not holds_run:
        raise ValueError(f"Cannot --resume {str(out)!r}: it holds no run (no {CONFIG})")
    if not resume:
        if holds_run:
            raise ValueError(
                f"Output directory {str(out)!r} already holds a run: pass --resume or choose another --out"
            )
        require_empty(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / CONFIG)
    (out / ENV).write_text(json.dumps({**environment(), "seed": cfg.run.seed}, indent=2))
    return out


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``: a last line without its newline (being written by a running
    run, or torn by a kill) is not a row yet."""
    try:
        text = (Path(out) / METRICS).read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.split("\n")[:-1]:  # what follows the last newline is "" or a partial line
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(out: str | Path, last_epoch: int) -> None:
    """Keep only rows up to ``last_epoch`` (rows after the checkpoint will be trained again)."""
    rows = [r for r in read_metrics(out) if r["epoch"] <= last_epoch]
    (Path(out) / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def append_metrics(out: str | Path, row: dict[str, Any]) -> None:
    with open(Path(out) / METRICS, "a") as f:
        f.write(json.dumps(row) + "\n")
