"""Tune's ``result.json`` and ``progress.csv`` without losing rows when a trial starts again.

Tune's JSON and CSV loggers write in the driver's staging folder, and Tune copies that folder into
the sweep folder every ``sync_period`` (5 s here, ``tuner.LIVE_SYNC``). When a trial with a checkpoint
starts again, the loggers first copy the sweep folder's file back over the staging one
(``LoggerCallback._restore_from_remote`` in Ray 2.60): every row reported since the last copy is
lost. A retried trial loses a few seconds of rows that way; a PBT member is paused and resumed at
every perturbation, so its rows went missing (measured: one epoch per exploit in a 3-member sweep).
These loggers copy the file back only when the staging folder has none: a sweep restored by a new
driver (a new Ray session, a new staging folder), the case the copy is for. Within one driver the
staging file already holds every row the sweep folder's copy has, and more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback


class _KeepStaged:
    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if not Path(trial.local_path, file_name).exists():
            super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class JsonLogger(_KeepStaged, JsonLoggerCallback):
    """Tune's ``result.json`` writer (it replaces the default one), keeping staged rows."""


class CsvLogger(_KeepStaged, CSVLoggerCallback):
    """Tune's ``progress.csv`` writer (it replaces the default one), keeping staged rows."""
