"""Console output from the main process only (rank 0), through rich. Shared by every layer: imports
nothing of acl_ray, nor torch or Ray."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

# Off a terminal (logs, CI) rich would wrap tables at 80 columns.
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def is_main_process() -> bool:
    """True on rank 0 of a torch.distributed group, or when there is no group.

    Never imports torch (``acl-ray analyze`` runs without it): a process group can only exist
    once ``torch.distributed`` has been imported.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()) == 0
    return int(os.environ.get("RANK", "0")) == 0


def log(message: str) -> None:
    if is_main_process():
        console.print(message)


class _NoProgress:
    def add_task(self, description: str, total: float | None = None, **fields: object) -> TaskID:
        return TaskID(0)

    def update(self, task: TaskID, **kwargs: object) -> None:
        return None


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | _NoProgress]:
    """A rich progress bar on rank 0 of an interactive console; a silent stand-in otherwise."""
    if not (enabled and is_main_process() and console.is_terminal):
        yield _NoProgress()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress
