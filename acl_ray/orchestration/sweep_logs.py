"""Where a sweep's logs go: Ray's own log folder, inside the sweep folder.

With a quiet console (``ray.init(log_to_driver=False)``), what Ray's worker processes print (trials,
Ray Train controllers and workers, post-hoc tasks: ``worker-*.out`` / ``.err``, Ray Train's
``train/*.log``) stays in the Ray session's log folder. While the sweep runs,
``DIR/logs/<session>`` links to that folder; when it ends the link is replaced by a copy, so the
sweep folder keeps its logs after Ray's temporary folder is gone. A trial's traceback is Tune's
``error.txt`` in its trial folder.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import ray

LOGS_DIR = "logs"


def session_logs() -> Path | None:
    """This node's Ray session log folder, when this process is on a node of the cluster."""
    node = getattr(ray._private.worker, "_global_node", None)  # what Ray Train's own log files use
    path = Path(node.get_logs_dir_path()) if node is not None else None
    return path if path is not None and path.is_dir() else None


def link_logs(out: Path) -> Path | None:
    """``out/logs/<session>`` -> the live session log folder; the link, or None without one."""
    src = session_logs()
    if src is None:
        return None
    dest = out / LOGS_DIR / src.parent.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        dest.unlink()
    if not dest.exists():
        dest.symlink_to(src, target_is_directory=True)
    return dest


def keep_logs(out: Path) -> None:
    """Replace each link made by :func:`link_logs` with a copy of what it points to."""
    folder = out / LOGS_DIR
    for link in folder.iterdir() if folder.is_dir() else []:
        if not link.is_symlink():
            continue
        tmp = link.with_name(f".{link.name}.copy")
        shutil.rmtree(tmp, ignore_errors=True)
        if not link.resolve().is_dir():
            continue
        with contextlib.suppress(shutil.Error, OSError):  # a file rotated away mid-copy: keep the rest
            shutil.copytree(link.resolve(), tmp, symlinks=True, ignore_dangling_symlinks=True)
        if tmp.is_dir():
            link.unlink()
            tmp.rename(link)
