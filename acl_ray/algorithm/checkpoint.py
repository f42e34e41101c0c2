"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the model."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save (>= 1.6) writes a zip archive
# The pickled magic number that opens the format torch.save wrote before PyTorch 1.6.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_END = b"PK\x05\x06"  # the end-of-central-directory record, in the last 64 KiB + 22 bytes
# What torch's zip reader (miniz: RuntimeError, or OSError EINVAL from a seek past the end) and the
# weights-only unpickler raise on damaged bytes. Only turned into a one-line error once the archive
# itself is shown damaged; for an intact file the error is re-raised as it came.
DAMAGED = (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, TypeError)


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
    """Load a checkpoint file (or a directory holding ``checkpoint.pt``) without unpickling code.

    Raises:
        ValueError: one line naming the file and why: missing, empty, not a torch zip archive,
            truncated or corrupt, holding pickled code that ``weights_only=True`` refuses, or not
            written by acl_ray.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    state = load_weights(path, "Checkpoint", map_location)
    if not isinstance(state, dict) or "model" not in state or "signature" not in state:
        raise ValueError(f"Checkpoint {str(path)!r} is not an acl_ray checkpoint (no model/signature)")
    return state


def load_weights(
    path: Path, what: str, map_location: str | torch.device = "cpu", legacy: bool = False
) -> Any:
    """``torch.load(path, weights_only=True)``; every bad file is a one-line ``ValueError``.

    Args:
        what: how the message names the file ("Checkpoint").
        legacy: also accept the pickle format ``torch.save`` wrote before PyTorch 1.6 (the official
            ACL code ran 1.5); its damage cannot be told from a bug by a zip check.
    """
    if not path.is_file():
        raise ValueError(f"No {what.lower()} at {str(path)!r}")
    name = f"{what} {str(path)!r}"
    with path.open("rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if not head:
        raise ValueError(f"{name} is empty (truncated when written or copied)")
    old = legacy and head == LEGACY_MAGIC
    if not head.startswith(ZIP_MAGIC) and not old:
        raise ValueError(f"{name} is not a torch checkpoint (not the zip archive torch.save writes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused what it read
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        damage = None if old else _damage(path, e)
        if damage is not None or (old and not refused):  # a flipped byte can look like any refused global
            raise ValueError(f"{name} is truncated or corrupt ({damage or 'pickle stream damaged'})") from e
        if refused:
            raise ValueError(
                f"{name} holds pickled code ({refused[1]}) that torch.load(weights_only=True) refuses to "
                "run; only tensors and plain values are loaded"
            ) from e
        why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        reason = why[1] if why else "not tensors or plain values"
        raise ValueError(f"{name} holds data torch.load(weights_only=True) refuses ({reason})") from e
    except DAMAGED as e:
        damage = f"{type(e).__name__}: {' '.join(str(e).split())}" if old else _damage(path, e)
        if damage is None:
            raise
        raise ValueError(f"{name} is truncated or corrupt ({damage})") from e


def _damage(path: Path, error: BaseException) -> str | None:
    """Why the zip archive at ``path`` is damaged, or None when it looks intact.

    Intact means: it ends with its end record, every member's CRC matches, and torch's own zip
    reader (``error``) did not call it corrupt.
    """
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - (1 << 16) - 22))
        if ZIP_END not in f.read():
            return "the zip archive stops before its end record"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    # zipfile's own reactions to damaged headers: bad magic, impossible sizes, seeks or versions,
    # a flipped "encrypted" flag (RuntimeError).
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, OverflowError) as e:
        return f"damaged zip archive: {e}"
    if bad:
        return f"damaged archive member {bad!r}"
    torch_says = re.match(r"PytorchStreamReader failed [^.]*", str(error))
    return torch_says[0] if torch_says else None


def check_signature(found: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line ``ValueError`` when a checkpoint was written by a different model."""
    diff = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if diff:
        parts = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"Checkpoint {str(path)!r} is from another model ({parts})")
