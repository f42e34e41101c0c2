"""A sweep's Optuna study, where Optuna's own tools open it (optuna-dashboard, ``optuna`` CLI,
``study.trials_dataframe()``). Optuna and SQLAlchemy only: ``acl-ray dashboard`` needs no Ray.

Every sweep with a searcher (TPE, random, GP, NSGA-II; not PBT / PB2, which have none) keeps its
study in an Optuna storage: ``DIR/study.db`` (SQLite, nothing to start) or ``sweep.study_storage``
(any Optuna RDB URL, e.g. PostgreSQL for a cluster). The study is named after the sweep folder; a new
sweep refuses a storage that already holds that name, and ``--resume`` continues it. Each Tune trial
is one Optuna trial (:class:`~acl_ray.orchestration.search.ProxyOptunaSearch`): its parameters, the
per-epoch proxy as intermediate values, its state (COMPLETE; PRUNED when ASHA or the epoch budget
stopped it; FAIL) and, as user attributes, its Tune ``trial_id``, its last ``epoch`` and the final
protocol's ``val/*`` and ``eval/*`` numbers. Optuna freezes a trial once it is told: the numbers of
an ASHA-stopped trial, evaluated post hoc after that, are the study's user attribute
``posthoc/<trial number>`` (:func:`record_posthoc`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from acl_ray.config.sweep import Sweep

FINAL_PREFIXES = ("val/", "eval/")  # the final protocol's numbers (selection split, test split)
TRIAL_ID = "trial_id"  # the user attribute naming an Optuna trial's Tune trial
POSTHOC_ATTR = "posthoc/"  # + trial number: the study's user attribute holding its post-hoc numbers


def final_numbers(result: Mapping[str, Any]) -> dict[str, Any]:
    """The final protocol's values of a result (``val/*``, ``eval/*``), as JSON scalars."""
    return {
        k: v for k, v in result.items()
        if k.startswith(FINAL_PREFIXES) and isinstance(v, (int, float, str, bool)) and v is not None
    }


def study_name(out: Path) -> str:
    """A sweep's study is named after its folder, as its Tune experiment is."""
    return out.name


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``; a one-line ``ValueError`` when it cannot be opened."""
    # SQLite: a reader (optuna-dashboard) holding the file for a moment makes a write wait, not fail
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
        reason = " ".join(str(e).split())[:300]
        raise ValueError(f"Illegal sweep.study_storage={url!r}: cannot open it ({reason})") from None


def new_study_storage(s: Sweep, out: Path) -> optuna.storages.RDBStorage | None:
    """The storage for a new sweep into ``out``, refused when it already holds a study of that name
    (another sweep's, in a shared ``sweep.study_storage``); None for a sweep without a searcher."""
    url = s.study_url(out)
    if url is None:
        return None
    storage = open_storage(url)
    if study_name(out) in optuna.study.get_all_study_names(storage):
        raise ValueError(
            f"Illegal sweep.study_storage={url!r}: it already holds a study named {study_name(out)!r}"
            " (another sweep's); give this sweep another folder name, or resume that sweep with --resume"
        )
    return storage


def stored_study(url: str, name: str) -> bool:
    """The storage at ``url`` holds the study ``name`` (a sweep started before studies were kept, or
    a population sweep, has none; an SQLite file that is not there is not created to find out)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return False
    return name in optuna.study.get_all_study_names(open_storage(url))


class PosthocToStudy:
    """A post-hoc listener (:class:`~acl_ray.orchestration.posthoc.Posthoc`): an ASHA-stopped trial's
    numbers, once evaluated, into the study's user attributes (see the module docstring)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name

    def __call__(self, trial_id: str, metrics: dict[str, Any] | None) -> None:
        if metrics is not None:
            record_posthoc(self.url, self.name, [{TRIAL_ID: trial_id, **metrics}])


def record_posthoc(url: str, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write each row's final numbers (``val/*``, ``eval/*``; the row names its Tune ``trial_id``) as the
    study's user attribute ``posthoc/<trial number>``; returns how many trials it wrote (none when the
    storage has no such study: a sweep started before studies were kept)."""
    storage = open_storage(url)
    if name not in optuna.study.get_all_study_names(storage):
        return 0
    study = optuna.load_study(study_name=name, storage=storage)
    numbers = {t.user_attrs.get(TRIAL_ID): t.number for t in study.get_trials(deepcopy=False)}
    written = 0
    for row in rows:
        number = numbers.get(row[TRIAL_ID])
        if number is not None:
            study.set_user_attr(f"{POSTHOC_ATTR}{number}", {TRIAL_ID: row[TRIAL_ID], **final_numbers(row)})
            written += 1
    return written
