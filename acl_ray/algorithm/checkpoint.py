"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file (or a directory holding ``checkpoint.pt``) without unpickling code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"No checkpoint at {str(path)!r}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "signature" not in state:
        raise ValueError(f"{str(path)!r} is not an acl_ray checkpoint (no model/signature)")
    return state


def check_signature(found: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line ``ValueError`` when a checkpoint was written by a different model."""
    diff = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if diff:
        parts = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"Checkpoint {str(path)!r} is from another model ({parts})")
