"""The learned schedules of a population sweep (``sweep.scheduler: pbt | pb2``) as results.

A PBT member's checkpoint carries its metric history, and each row records the values trained with
(``sched/<key>``) and the trial that trained the epoch (``pbt/trial``). A member that exploits resumes
from a copy of a better member's checkpoint, so its history is that member's up to the copied epoch
and its own from then on: at the last epoch the history is the member's whole lineage. The trial
reports it with its final row (``pbt/lineage``, JSON), which this module reads from the sweep
folder's files (no torch, no Ray) and writes as:

- ``schedules.json``: every member's values per epoch, who trained each epoch, the shortest
  replayable schedule and its final metrics;
- ``best_schedule.yaml``: a full pre-training config (the base config, the best member's keys that
  were sampled once, and its whole schedule) for ``acl-ray pretrain --config DIR/best_schedule.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from acl_ray.config.pretrain import Config
from acl_ray.config.schedule import SCHED, schedule_overrides
from acl_ray.config.sweep import Sweep
from acl_ray.results.trials import Trial, write_json

LINEAGE = "pbt/lineage"  # the final row's key: JSON {"trial": [...], key: [...]}, one entry per epoch
TRAINED_BY = "pbt/trial"  # every row of a member: the trial id that trained the epoch
SCHEDULES_FILE = "schedules.json"
BEST_SCHEDULE_FILE = "best_schedule.yaml"


@dataclasses.dataclass(frozen=True)
class Lineage:
    """What one member trained with, epoch by epoch (index 0 = epoch 1)."""

    trained_by: list[str]  # the trial that trained each epoch (ancestors, then the member)
    values: dict[str, list[Any]]  # mutated key -> its value at each epoch

    @property
    def ancestors(self) -> list[tuple[int, str]]:
        """``(first 1-based epoch, trial id)`` of each stretch trained by one trial."""
        return [(i + 1, t) for i, t in enumerate(self.trained_by) if i == 0 or t != self.trained_by[i - 1]]

    def per_epoch(self) -> list[dict[str, Any]]:
        return [{k: v[i] for k, v in self.values.items()} for i in range(len(self.trained_by))]


def lineage_json(history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """The ``pbt/lineage`` value of a member whose metric history (epoch 1 first) is ``history``."""
    return json.dumps(
        {
            "trial": [r.get(TRAINED_BY) for r in history],
            **{k: [r.get(SCHED + k) for r in history] for k in keys},
        }
    )


def lineage(t: Trial, keys: Sequence[str]) -> Lineage | None:
    """The member's lineage from its final report, or None (no final report, or not a PBT member)."""
    text = (t.final or {}).get(LINEAGE)
    if not isinstance(text, str):
        return None
    d = json.loads(text)
    if any(k not in d or None in d[k] for k in keys):
        return None  # recorded without these keys: not this sweep's member
    return Lineage(list(d["trial"]), {k: list(d[k]) for k in keys})


def members(s: Sweep, trials: Sequence[Trial]) -> dict[str, tuple[Trial, Lineage]]:
    """trial id -> (trial, lineage) of every member with a final report ({} unless a population sweep)."""
    found = {t.trial_id: (t, lineage(t, s.mutated)) for t in trials} if s.mutated else {}
    return {tid: (t, m) for tid, (t, m) in found.items() if m is not None}


def replay_config(s: Sweep, config: Mapping[str, Any], member: Lineage) -> Config:
    """The pre-training config that trains ``member``'s schedule from scratch: the base config, the
    member's space keys that were sampled once (``config``: its Tune config), its mutated keys as a
    ``schedule`` (their plain values: the first epoch's)."""
    per_epoch = member.per_epoch()
    fixed = {k: v for k, v in config.items() if k in s.space and k not in member.values}
    return s.base.override({**fixed, **per_epoch[0], **schedule_overrides(per_epoch)})


def write_schedules(s: Sweep, out: Path, trials: Sequence[Trial], best: Mapping[str, Any] | None) -> None:
    """``out/schedules.json`` and, when ``best`` (the summary's best row) has a lineage,
    ``out/best_schedule.yaml``."""
    entries: dict[str, Any] = {}
    configs: dict[str, Config] = {}
    for tid, (t, m) in members(s, trials).items():
        configs[tid] = cfg = replay_config(s, t.config, m)
        final = t.final or {}
        entries[tid] = {
            "trial_index": t.trial_index,
            **{k: final.get(k) for k in ("val/robust_acc", "val/standard_acc", "eval/robust_acc")},
            "trained_by": m.trained_by,
            "ancestors": m.ancestors,
            "values": m.values,
            "schedule": {"epochs": list(cfg.schedule.epochs), **dict(cfg.schedule.items())},
        }
    chosen = best["trial_id"] if best is not None and best["trial_id"] in entries else None
    summary = {"keys": s.mutated, "epochs": s.base.run.epochs, "best": chosen, "members": entries}
    write_json(out / SCHEDULES_FILE, summary)
    if chosen is None:
        return
    e = entries[chosen]
    head = (
        f"# The learned schedule of sweep {out.name}: trial #{e['trial_index']} {chosen} (best val/robust_acc"
        f" {e['val/robust_acc']:.4f}), trained by {', '.join(t for _, t in e['ancestors'])} in turn.\n"
        f"# acl-ray pretrain --config {BEST_SCHEDULE_FILE} --out RUN   (trains it again from scratch)\n"
    )
    (out / BEST_SCHEDULE_FILE).write_text(head + yaml.safe_dump(configs[chosen].to_dict(), sort_keys=False))
