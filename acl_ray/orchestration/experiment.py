"""A local view of a Tune experiment folder, wherever ``sweep.storage`` put it (S3, GCS, NFS).

:func:`acl_ray.results.trials.read_trials` reads local files only; for a remote experiment
this copies the few small files it reads (never the checkpoints) into a temporary folder.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

_STATE = re.compile(r"^experiment_state-.*\.json$")  # Tune's saved state, in the experiment folder
_TRIAL_FILES = ("params.json", "result.json", "error.txt")  # in each trial folder


@contextlib.contextmanager
def local_experiment(path: str) -> Iterator[Path]:
    """``path`` itself when it is a local path; a temporary copy of what the reader needs for a URI."""
    if "://" not in path:
        yield Path(path)
        return
    fs, root = pafs.FileSystem.from_uri(path)
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="acl_ray_experiment_") as tmp:
        for info in _list(fs, root):
            rel = info.path[len(root) :].lstrip("/")
            if info.type == pafs.FileType.Directory:  # a trial folder (or a Train run): one level down
                files = [f for f in _list(fs, info.path) if f.type == pafs.FileType.File]
                todo = [f for f in files if f.base_name in _TRIAL_FILES]
            elif info.type == pafs.FileType.File and _STATE.match(rel):
                todo = [info]
            else:
                continue
            for f in todo:
                dest = Path(tmp) / f.path[len(root) :].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(f.path) as stream:
                    dest.write_bytes(stream.read())
        yield Path(tmp)


def _list(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return list(fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)))
