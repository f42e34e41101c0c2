"""Offline analysis of a sweep folder: Parquet tables, Pareto set, selection, plots and a report.

``acl-ray analyze DIR`` reads only files, through :func:`acl_ray.results.trials.read_trials`:
``sweep.yaml``, Tune's newest ``experiment_state-*.json``, each trial's ``result.json`` and
``posthoc/<trial_id>.json``. It imports neither Ray nor torch, so it works on finished, failed and
killed sweeps alike, and writes everything into ``DIR/analysis/`` (see ``analyze``).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from acl_ray.config.pretrain import Config
from acl_ray.config.space import paper_point
from acl_ray.config.sweep import SWEEP_FILE, Sweep, load_sweep
from acl_ray.results.confirm import confirmation_markdown, read_confirmation
from acl_ray.results.schedules import members, replay_config
from acl_ray.results.summary import FINAL_KEYS
from acl_ray.results.trials import POSTHOC_DIR, Trial, local_checkpoint, read_trials

SELECT_RULES = ("best", "knee", "min-sa")
METRICS = (*FINAL_KEYS, "proxy/standard_acc", "proxy/robust_acc")
STOP_REASONS = ("completed", "asha", "error", "killed/unfinished")

# trials.parquet = TRIAL_HEAD + one column per searched key (typed from the config dataclass) + TRIAL_TAIL.
TRIAL_HEAD = pa.schema(
    [
        ("trial_id", pa.string()),  # Tune's trial id (also the Train run folder trial-<id>/)
        ("trial_index", pa.int32()),  # creation order, 1 = first (the paper point when enqueued)
        ("status", pa.string()),  # Tune status as last saved: TERMINATED | ERROR | RUNNING | PENDING | ...
        ("stop_reason", pa.string()),  # one of STOP_REASONS
    ]
)
TRIAL_TAIL = pa.schema(
    [
        ("epochs", pa.int32()),  # last reported pre-training epoch (0 = none)
        *((k, pa.float64()) for k in FINAL_KEYS),  # the full protocol; null when neither final nor posthoc
        ("eval_source", pa.string()),  # final (last epoch) | posthoc (after ASHA stopped it) | null
        ("eval_epoch", pa.int32()),  # epoch of the model the full protocol evaluated (see _eval_epoch)
        ("proxy/standard_acc", pa.float64()),  # last reported proxy values
        ("proxy/robust_acc", pa.float64()),
        ("time/total_s", pa.float64()),  # Tune's time_total_s (wall clock of the trial, all restores)
        ("device_hours", pa.float64()),  # time/total_s * workers * (GPUs or else CPUs per worker) / 3600
        ("checkpoint_path", pa.string()),  # last reported checkpoint (moved into DIR when DIR was moved)
        ("paper_point", pa.bool_()),  # the trial is the paper's defaults (sweep.paper_point)
        ("error", pa.string()),  # last exception line of error.txt, or null
    ]
)
EPOCH_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int32()),
        ("train/loss", pa.float64()),
        ("train/lr", pa.float64()),
        ("proxy/standard_acc", pa.float64()),  # null on epochs without a proxy (sweep.proxy_every)
        ("proxy/robust_acc", pa.float64()),
        ("time/train_s", pa.float64()),
        ("train/images_per_s", pa.float64()),
        ("time/total_s", pa.float64()),  # Tune's cumulative time_total_s at this report
    ]
)
_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


def _field_type(key: str) -> Any:
    section, name = key.split(".")
    return typing.get_type_hints(type(getattr(Config(), section)))[name]


def trials_schema(s: Sweep) -> pa.Schema:
    """The fixed head, the searched keys typed as their config fields, the fixed tail."""
    searched = [(k, _ARROW[_field_type(k)]) for k in s.space]
    return pa.schema([*TRIAL_HEAD, *searched, *TRIAL_TAIL])


def _cast(key: str, value: Any) -> Any:
    return None if value is None else _field_type(key)(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _eval_epoch(t: Trial, source: str | None) -> int | None:
    """The epoch of the model behind the trial's val/eval numbers: the last epoch (final), or the
    epoch of the last reported checkpoint, the one the post-hoc evaluation loaded (posthoc)."""
    if source == "final":
        row = t.final
    elif source == "posthoc":
        row = next((r for r in reversed(t.results) if r.get("checkpoint_path")), None)
    else:
        row = None
    return None if row is None else int(row["epoch"])


def load_trials(folder: Path, s: Sweep) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of trials.parquet and epochs.parquet (as dicts keyed by the schemas' column names)."""
    sw = s.sweep
    per_worker = sw.gpus_per_worker if sw.gpus_per_worker > 0 else sw.cpus_per_worker
    paper = paper_point(s.space, s.base) if sw.paper_point else None
    rows, epochs = [], []
    for t in read_trials(folder, posthoc=folder / POSTHOC_DIR):
        final, tid = t.final, t.trial_id
        source = "final" if final else "posthoc" if t.posthoc is not None else None
        metrics = final or t.posthoc or {}
        if t.status == "ERROR":
            reason = "error"
        elif source == "final":
            reason = "completed"
        elif t.status == "TERMINATED" and sw.scheduler == "asha" and 0 < t.epoch < s.base.run.epochs:
            reason = "asha"
        else:
            reason = "killed/unfinished"
        seconds = t.last.get("time_total_s")
        config = {k: _cast(k, t.config.get(k)) for k in s.space}
        rows.append(
            {
                "trial_id": tid,
                "trial_index": t.trial_index,
                "status": t.status,
                "stop_reason": reason,
                **config,
                "epochs": t.epoch,
                **{k: metrics.get(k) for k in FINAL_KEYS},
                "eval_source": source,
                "eval_epoch": _eval_epoch(t, source),
                "proxy/standard_acc": t.latest("proxy/standard_acc"),
                "proxy/robust_acc": t.latest("proxy/robust_acc"),
                "time/total_s": seconds,
                "device_hours": None if seconds is None else seconds * sw.workers * per_worker / 3600,
                "checkpoint_path": local_checkpoint(folder, tid, t.latest("checkpoint_path")),
                "paper_point": paper is not None and all(_same(config[k], paper[k]) for k in s.space),
                "error": t.error,
            }
        )
        keys = EPOCH_SCHEMA.names[1:-1]
        epochs += [
            {"trial_id": tid, **{k: r.get(k) for k in keys}, "time/total_s": r.get("time_total_s")}
            for r in t.results
        ]
    return rows, epochs


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, both coordinates maximised, O(n log n).

    ``q`` dominates ``p`` when ``q >= p`` in both and ``q > p`` in one; equal points do not
    dominate each other, so duplicates on the front are all kept.
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y, i = [], -math.inf, 0
    while i < len(order):  # groups of equal x, from the largest x down
        j = i
        while j < len(order) and points[order[j]][0] == points[order[i]][0]:
            j += 1
        top = points[order[i]][1]  # the group's largest y; lower ones are dominated within the group
        if top > best_y:  # not dominated by any point of larger x
            front += [k for k in order[i:j] if points[k][1] == top]
            best_y = top
        i = j
    return sorted(front)


def knee_point(points: Sequence[tuple[float, float]], front: Sequence[int]) -> int:
    """The front point farthest from the line through the front's two extremes (ties: higher y).

    The extremes are the front's highest-x and highest-y points; distances are in the points' own
    units (accuracies in [0, 1], not rescaled). With one or two distinct front points every
    distance is 0 and the tie rule picks the highest y.
    """
    (ax, ay), (bx, by) = (
        points[max(front, key=lambda i: points[i])],
        points[max(front, key=lambda i: (points[i][1], points[i][0]))],
    )
    norm = math.hypot(bx - ax, by - ay)

    def dist(i: int) -> float:
        px, py = points[i]
        return 0.0 if norm == 0 else abs((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / norm

    return max(front, key=lambda i: (round(dist(i), 12), points[i][1], -i))


def _pair(metric: str) -> tuple[str, str]:
    split = metric.split("/")[0]
    return f"{split}/standard_acc", f"{split}/robust_acc"


def select(rows: list[dict[str, Any]], rule: str, metric: str, min_sa: float | None = None) -> dict[str, Any]:
    """The trial a rule picks among ``rows`` that have ``metric`` (see README, "Sweep analysis").

    best: max ``metric``; knee: ``knee_point`` of the Pareto front of the metric's split
    (standard vs robust accuracy); min-sa: max robust accuracy with standard accuracy >= min_sa.
    Ties go to the higher other accuracy, then the earlier trial.
    """
    sa, ra = _pair(metric)
    done = [r for r in rows if r.get(metric) is not None]
    both = [r for r in done if r.get(sa) is not None and r.get(ra) is not None]
    if rule == "best":
        other = sa if metric == ra else ra
        return max(
            done, key=lambda r: (r[metric], -1.0 if r.get(other) is None else r[other], -r["trial_index"])
        )
    if not both:
        raise ValueError(f"--select {rule} needs trials with both {sa} and {ra}; none has both")
    if rule == "knee":
        pts = [(r[sa], r[ra]) for r in both]
        return both[knee_point(pts, pareto_front(pts))]
    assert min_sa is not None
    ok = [r for r in both if r[sa] >= min_sa]
    if not ok:
        top = max(r[sa] for r in both)
        raise ValueError(
            f"No trial has {sa} >= {min_sa:g} (the highest is {top:.4f}): lower --min-standard-acc"
        )
    return max(ok, key=lambda r: (r[ra], r[sa], -r["trial_index"]))


def pareto_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Trials on the front of the metric's split, by descending robust accuracy."""
    sa, ra = _pair(metric)
    both = [r for r in rows if r.get(sa) is not None and r.get(ra) is not None]
    front = [both[i] for i in pareto_front([(r[sa], r[ra]) for r in both])]
    return sorted(front, key=lambda r: (-r[ra], -r[sa]))


def check_args(folder: Path, rule: str, metric: str, min_sa: float | None) -> None:
    if rule not in SELECT_RULES:
        raise ValueError(f"Unknown --select {rule!r}: choose one of {', '.join(SELECT_RULES)}")
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if (rule == "min-sa") != (min_sa is not None):
        raise ValueError("--select min-sa needs --min-standard-acc X, and --min-standard-acc needs min-sa")
    if not (folder / SWEEP_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a sweep folder: it has no {SWEEP_FILE}")


def confirmed_points(s: Sweep, conf: dict[str, Any] | None, metric: str) -> list[dict[str, Any]]:
    """Confirmed configurations as points of the parameter plots: every searched key (the base value
    where a control does not set it) and ``mean``, ``std``, ``seeds`` of ``metric``."""
    out = []
    base = s.base.to_dict()
    for r in (conf or {}).get("rows", []):
        if r[metric]["mean"] is None:
            continue
        keys = {k: r["overrides"].get(k, base[k.split(".")[0]][k.split(".")[1]]) for k in s.space}
        out.append({**keys, "mean": r[metric]["mean"], "std": r[metric]["std"], "seeds": len(r["seeds"])})
    return out


def analyze(
    folder: str | Path,
    rule: str = "best",
    metric: str = "val/robust_acc",
    min_sa: float | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Write ``folder/analysis/``: trials.parquet, epochs.parquet, best_config.yaml, importance.csv,
    pareto.png, params.png, curves.png, importance.png and report.md; print rich tables (``show``).
    Importance and the parameter plots compare trials at one budget (``acl_ray.results.budget``).

    Returns the selected trial's row. Bad input raises a one-line ``ValueError`` before any file
    is written.
    """
    from acl_ray.results import plots, report

    folder = Path(folder).resolve()
    check_args(folder, rule, metric, min_sa)
    try:
        s = load_sweep(folder / SWEEP_FILE)
    except yaml.YAMLError as e:
        raise ValueError(f"{str(folder)!r} is not a sweep folder: {SWEEP_FILE} is not YAML ({e})") from None
    rows, epochs = load_trials(folder, s)
    if not any(r.get(metric) is not None for r in rows):
        counts = ", ".join(f"{sum(r['stop_reason'] == k for r in rows)} {k}" for k in STOP_REASONS)
        hint = "" if metric.startswith("proxy/") else "; try --metric proxy/robust_acc"
        raise ValueError(f"No finished trial in {str(folder)!r}: none has {metric} ({counts}){hint}")
    chosen = select(rows, rule, metric, min_sa)
    out = folder / "analysis"
    out.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=trials_schema(s)), out / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(epochs, schema=EPOCH_SCHEMA), out / "epochs.parquet")
    found = members(s, read_trials(folder)) if s.mutated else {}  # PBT: the learned schedules
    if chosen["trial_id"] in found:
        trial, lineage = found[chosen["trial_id"]]
        resolved = replay_config(s, trial.config, lineage)
    else:
        resolved = s.base.override({k: chosen[k] for k in s.space})
    text = yaml.safe_dump(resolved.to_dict(), sort_keys=False)
    rule_text = f"{rule} (>= {min_sa:g} {_pair(metric)[0]})" if rule == "min-sa" else rule
    (out / "best_config.yaml").write_text(
        f"# sweep {folder.name}, trial {chosen['trial_id']}, selected by --select {rule_text} on {metric}\n"
        f"# acl-ray pretrain --config best_config.yaml --out RUN\n{text}"
    )
    conf = read_confirmation(folder, metric) if metric in FINAL_KEYS else None
    confirmed = confirmed_points(s, conf, metric)
    lineages = {tid: m for tid, (_, m) in found.items()}
    front = pareto_rows(rows, metric)
    notes = plots.write_all(out, s, rows, epochs, metric, chosen, front, confirmed, lineages)
    notes["confirmation"] = confirmation_markdown(conf) if conf else None
    report.write_report(out, folder, s, rows, metric, rule_text, chosen, notes, show)
    return chosen
