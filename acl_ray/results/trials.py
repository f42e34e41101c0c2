"""The one reader of a sweep's Tune experiment folder: plain files, no Ray.

Tune keeps, in the experiment folder: ``experiment_state-<date>.json`` (every trial's id,
experiment tag, status and config, saved periodically and once more when ``Tuner.fit()``
returns), and one folder per trial, ``<trainable>_<trial_id>_<index>_<params>_<date>/``, with
``params.json`` (its config), ``result.json`` (one JSON line per report) and, after a failure,
``error.txt``. The sweep folder adds ``posthoc/<trial_id>.json``: the full protocol run after ASHA
stopped a trial. Reading the files (not ``ray.tune.ExperimentAnalysis``) works the same on
finished, failed and killed sweeps, and needs neither Ray nor torch.

A running sweep's files are read while Tune (and the post-hoc tasks) write them: an empty, missing
or half-written file is "not there yet", never an error. ``result.json`` keeps every complete line
(one that ends with a newline) and drops a partial last one; a JSON file that does not parse is
skipped until it does (an older ``experiment_state-*.json`` is used meanwhile).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

POSTHOC_DIR = "posthoc"  # in the sweep folder: <trial_id>.json per trial evaluated after ASHA stopped it


@dataclasses.dataclass(frozen=True)
class Trial:
    """What the files say about one trial."""

    trial_id: str  # Tune's trial id (also the Train run folder trial-<id>/)
    trial_index: int  # creation order, 1 = first (0 when the experiment tag has no number)
    status: str  # Tune status as last saved: TERMINATED | ERROR | RUNNING | PENDING | UNKNOWN (unsaved)
    config: dict[str, Any]  # the searched keys as Tune gave them (flat: "attack.eps")
    results: list[dict[str, Any]]  # reported results, one per epoch (last report wins after a restore)
    error: str | None  # last exception line of error.txt, or None when there is none
    posthoc: dict[str, Any] | None  # posthoc/<trial_id>.json, or None
    dir: Path | None  # the trial's folder, when it exists

    @property
    def last(self) -> dict[str, Any]:
        """The last reported result ({} before the first report)."""
        return self.results[-1] if self.results else {}

    @property
    def epoch(self) -> int:
        """The last reported pre-training epoch (0 = none)."""
        return int(self.last.get("epoch", 0) or 0)

    @property
    def final(self) -> dict[str, Any] | None:
        """The last result carrying the full protocol (reported at the last epoch), if any."""
        return next((r for r in reversed(self.results) if r.get("val/robust_acc") is not None), None)

    def latest(self, key: str) -> Any:
        """The most recent non-null value of ``key`` among the results."""
        return next((r[key] for r in reversed(self.results) if r.get(key) is not None), None)


def _text(path: Path | None) -> str | None:
    """The file's text, or None when it is missing or vanishes while read (renamed, cleaned up)."""
    if path is None:
        return None
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def read_json(path: Path | None) -> Any:
    """A JSON file's content, or None while it is missing, empty or only partly written."""
    text = _text(path)
    if not text or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON through a temporary file and a rename: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def complete_lines(text: str | None) -> list[str]:
    """The lines of a line-delimited file that are complete: a last line without its newline is
    still being written (or was torn by a kill) and is left out."""
    if not text:
        return []
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline is "" or a partial line


def read_reports(trial_dir: Path | None) -> list[dict[str, Any]]:
    """Every reported result in report order: an epoch trained again after a failure appears twice.

    A partial last line (being written, or torn by a kill) and lines that do not parse are skipped.
    """
    rows: list[dict[str, Any]] = []
    for line in complete_lines(_text(trial_dir / "result.json" if trial_dir else None)):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("epoch") is not None:
            rows.append(r)
    return rows


def read_results(trial_dir: Path | None) -> list[dict[str, Any]]:
    """Reported results by epoch (last report wins after a restore)."""
    by_epoch = {int(r["epoch"]): r for r in read_reports(trial_dir)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def error_reason(trial_dir: Path | None) -> str | None:
    """The last exception line of the trial's ``error.txt`` (at most 300 characters), or None."""
    text = _text(trial_dir / "error.txt" if trial_dir else None)
    if text is None:
        return None
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errors = [x for x in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", x)]
    return (errors or lines or ["(empty error.txt)"])[-1][:300]


def _index(tag: str) -> int:
    head = tag.split("_")[0]
    return int(head) if head.isdigit() else 0


def _saved_trials(experiment: Path) -> list[dict[str, Any]]:
    """The trials' metadata in Tune's newest readable ``experiment_state-*.json`` ([] before any)."""
    for path in sorted(experiment.glob("experiment_state-*.json"), reverse=True):
        state = read_json(path)
        if not isinstance(state, dict):
            continue  # being written: an older state, if any, is the last complete one
        metas = []
        for entry in state.get("trial_data", []):
            try:
                meta = json.loads(entry[0])
            except (json.JSONDecodeError, TypeError, IndexError):
                continue
            if isinstance(meta, dict) and meta.get("trial_id"):
                metas.append(meta)
        return metas
    return []


def _listed(experiment: Path, unsaved: bool) -> list[dict[str, Any]]:
    """(id, index, status, config, folder) per trial: Tune's saved state, then folders it missed."""
    trials: dict[str, dict[str, Any]] = {}
    for meta in _saved_trials(experiment):
        logdir = meta.get("relative_logdir")
        trials[meta["trial_id"]] = {
            "trial_id": meta["trial_id"],
            "trial_index": _index(str(meta.get("experiment_tag") or "")),
            "status": meta.get("status") or "UNKNOWN",
            "config": meta.get("config") or {},
            "dir": experiment / logdir if logdir and (experiment / logdir).is_dir() else None,
        }
    for d in sorted(experiment.glob("*_*_*_*")):  # <trainable>_<trial_id>_<index>_<params>_<date>
        # a searcher's trial id is hex ("b4dcda5d"); a grid's has the variant number ("6012a_00003")
        m = re.match(r"^.+?_([0-9a-f]{5,}(?:_\d{5})?)_(\d+)_", d.name)
        if not d.is_dir() or not m or (m.group(1) not in trials and not unsaved):
            continue
        if m.group(1) in trials:
            trials[m.group(1)]["dir"] = trials[m.group(1)]["dir"] or d
            continue
        params = read_json(d / "params.json")
        if not isinstance(params, dict):
            continue  # Tune has not finished writing the new trial's config: not there yet
        trials[m.group(1)] = {
            "trial_id": m.group(1), "trial_index": int(m.group(2)), "status": "UNKNOWN", "dir": d,
            "config": params,
        }
    return sorted(trials.values(), key=lambda t: (t["trial_index"], t["trial_id"]))


def read_trials(experiment: str | Path, posthoc: Path | None = None, unsaved: bool = True) -> list[Trial]:
    """Every trial of the Tune experiment in the local folder ``experiment``, in creation order.

    ``posthoc``: the folder of cached post-hoc evaluations (``<sweep>/posthoc``), if any.
    ``unsaved``: also list trial folders that Tune's saved state does not (a trial started after the
    last save of a killed sweep) with status ``UNKNOWN``. Once ``Tuner.fit()`` has returned, the
    saved state is final and lists every trial the sweep kept.
    """
    trials = []
    for t in _listed(Path(experiment), unsaved):
        cached = posthoc / f"{t['trial_id']}.json" if posthoc is not None else None
        trials.append(
            Trial(
                trial_id=t["trial_id"],
                trial_index=t["trial_index"],
                status=t["status"],
                config=t["config"],
                results=read_results(t["dir"]),
                error=error_reason(t["dir"]),
                posthoc=_dict_or_none(read_json(cached)),
                dir=t["dir"],
            )
        )
    return trials


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def local_checkpoint(folder: Path, trial_id: str, path: str | None) -> str | None:
    """The reported checkpoint, found inside ``folder`` when the sweep folder was moved or copied."""
    marker = f"/trial-{trial_id}/"
    if path and marker in path:
        local = folder / f"trial-{trial_id}" / path.split(marker, 1)[1]
        if local.exists():
            return str(local)
    return path
