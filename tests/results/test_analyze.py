"""``acl-ray analyze`` on fake sweep folders written in Tune's layout (no Ray cluster, no training)."""

import csv
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acl_ray.cli import main
from acl_ray.config.pretrain import load_config
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.results.analyze import (
    EPOCH_SCHEMA,
    analyze,
    knee_point,
    load_trials,
    pareto_front,
    select,
    trials_schema,
)
from acl_ray.results.importance import CSV_HEAD
from tests.results.fake_sweep import SPEC, make_sweep

FILES = (
    "trials.parquet",
    "epochs.parquet",
    "pareto.png",
    "params.png",
    "curves.png",
    "importance.csv",
    "importance.png",
    "best_config.yaml",
    "report.md",
)
DATA = Path(__file__).parent / "data"


def test_tables_read_back_to_the_documented_schema(tmp_path) -> None:
    import ray

    sweep = make_sweep(tmp_path / "sw")
    chosen = analyze(sweep)
    out = sweep / "analysis"
    assert all((out / f).is_file() for f in FILES)
    assert not ray.is_initialized()
    trials = pq.read_table(out / "trials.parquet")
    assert trials.schema.equals(trials_schema(load_sweep(sweep / "sweep.yaml")))
    searched = [trials.schema.field(k).type for k in ("attack.steps", "attack.eps", "data.batch_size")]
    assert searched == [pa.int64(), pa.float64(), pa.int64()]  # from the config dataclass types
    assert trials.schema.names[:4] == ["trial_id", "trial_index", "status", "stop_reason"]
    rows = trials.to_pylist()
    assert [r["stop_reason"] for r in rows] == ["completed", "asha", "error", "completed"]
    assert [r["eval_source"] for r in rows] == ["final", "posthoc", None, "final"]
    assert [r["paper_point"] for r in rows] == [True, False, False, False]
    assert rows[1]["val/robust_acc"] == 0.25 and rows[2]["val/robust_acc"] is None
    assert [r["eval_epoch"] for r in rows] == [3, 1, None, 3]  # posthoc: its checkpoint's epoch
    assert trials.schema.field("eval_epoch").type == pa.int32()
    assert rows[2]["error"] == "ValueError: Illegal attack.eps=2"
    # 30 s x 2 workers x 1.5 CPUs = 90 CPU-seconds
    assert rows[0]["device_hours"] == pytest.approx(30.0 * 2 * 1.5 / 3600)
    assert rows[0]["checkpoint_path"] == str(sweep / f"trial-{rows[0]['trial_id']}" / "checkpoint_3")
    assert chosen["trial_id"] == rows[3]["trial_id"]  # the best val robust accuracy, 0.35
    epochs = pq.read_table(out / "epochs.parquet")
    assert epochs.schema.equals(EPOCH_SCHEMA)
    assert epochs.num_rows == 3 + 1 + 1 + 3
    report = (out / "report.md").read_text()
    assert "![Pareto front](pareto.png)" in report and "ValueError: Illegal attack.eps=2" in report
    # the common rung is epoch 1 (the ASHA-stopped trial's last): 4 trials, 3 keys; 2 trials ran to
    # run.epochs, too few for the full-length budget
    imp = list(csv.DictReader((out / "importance.csv").open()))
    assert [(r["budget"], r["epoch"], r["trials"]) for r in imp] == [("rung", "1", "4")] * 3
    assert "full length: val/robust_acc at epoch 3 (2 trials)" in report
    assert "skipped: 2 trial(s) ran to run.epochs = 3" in report


def test_a_searched_string_key_is_a_column_a_plot_axis_and_an_importance(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw", strings=True)
    analyze(sweep, show=False)
    out = sweep / "analysis"
    assert all((out / f).is_file() for f in FILES)
    trials = pq.read_table(out / "trials.parquet")
    assert trials.schema.field("augment.schedule").type == pa.string()
    assert trials.column("augment.schedule").to_pylist() == ["constant", "dynacl", "dynacl", "constant"]
    params = [r["param"] for r in csv.DictReader((out / "importance.csv").open())]
    assert "augment.schedule" in params


def brute_force_front(points: list[tuple[float, float]]) -> list[int]:
    def dominates(q: tuple[float, float], p: tuple[float, float]) -> bool:
        return q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1])

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


@pytest.mark.parametrize("seed", range(12))
def test_pareto_front_equals_brute_force_dominance(seed) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    grid = rng.choice([3, 10, 1000])  # coarse grids make many ties and duplicates
    points = [(rng.randint(0, grid) / grid, rng.randint(0, grid) / grid) for _ in range(n)]
    assert pareto_front(points) == brute_force_front(points)


def test_pareto_front_keeps_duplicates_and_drops_equal_x_lower_y() -> None:
    points = [(0.5, 0.5), (0.5, 0.5), (0.5, 0.4), (0.6, 0.1), (0.4, 0.5)]
    assert pareto_front(points) == [0, 1, 3]


def test_knee_is_the_front_point_farthest_from_the_extremes_line() -> None:
    # front from (0.2, 0.42) to (0.9, 0.10); (0.8, 0.35) bulges out most; (0.1, 0.1) is dominated
    points = [(0.9, 0.10), (0.8, 0.35), (0.5, 0.40), (0.2, 0.42), (0.1, 0.1)]
    front = pareto_front(points)
    assert front == [0, 1, 2, 3]
    assert knee_point(points, front) == 1
    assert knee_point(points, [0, 3]) == 3  # two points: distance 0 for both, higher robust acc wins
    assert knee_point(points, [2]) == 2


def _rows(points: list[tuple[float, float]]) -> list[dict[str, Any]]:
    return [
        {"trial_index": i + 1, "val/standard_acc": sa, "val/robust_acc": ra}
        for i, (sa, ra) in enumerate(points)
    ]


def test_selection_rules_on_hand_made_points() -> None:
    rows = _rows([(0.9, 0.10), (0.8, 0.35), (0.5, 0.40), (0.2, 0.42), (0.1, 0.1)])
    metric = "val/robust_acc"
    assert select(rows, "best", metric)["trial_index"] == 4
    assert select(rows, "knee", metric)["trial_index"] == 2
    assert select(rows, "min-sa", metric, 0.5)["trial_index"] == 3  # SA >= 0.5 includes 0.5
    assert select(rows, "min-sa", metric, 0.51)["trial_index"] == 2
    assert select(rows, "min-sa", metric, 0.9)["trial_index"] == 1
    assert select(rows, "best", "val/standard_acc")["trial_index"] == 1
    with pytest.raises(ValueError, match="No trial has val/standard_acc >= 0.95"):
        select(rows, "min-sa", metric, 0.95)
    ties = _rows([(0.5, 0.4), (0.6, 0.4), (0.6, 0.4)])  # best: higher SA, then the earlier trial
    assert select(ties, "best", metric)["trial_index"] == 2


@pytest.mark.parametrize("rule", ["best", "knee", "min-sa"])
def test_best_config_is_the_selected_trials_resolved_config(tmp_path, rule) -> None:
    sweep = make_sweep(tmp_path / "sw")
    extra = ["--min-standard-acc", "0.75"] if rule == "min-sa" else []
    assert main(["analyze", str(sweep), "--select", rule, *extra]) == 0
    s = load_sweep(sweep / "sweep.yaml")
    rows, _ = load_trials(sweep, s)
    expected = {"best": 4, "knee": 1, "min-sa": 1}[rule]  # knee of (0.8, 0.32), (0.9, 0.25), (0.7, 0.35)
    trial = next(r for r in rows if r["trial_index"] == expected)
    cfg = load_config(sweep / "analysis" / "best_config.yaml")  # what acl-ray pretrain --config reads
    assert cfg == s.base.override({k: trial[k] for k in s.space})
    assert cfg.to_dict() == Sweep.from_dict(SPEC).base.override({k: trial[k] for k in s.space}).to_dict()


def test_killed_sweep_still_produces_every_file(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw", killed=True)
    chosen = analyze(sweep)
    out = sweep / "analysis"
    assert all((out / f).is_file() for f in FILES)
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert [(r["trial_index"], r["status"], r["stop_reason"]) for r in rows] == [
        (1, "TERMINATED", "completed"),
        (2, "RUNNING", "killed/unfinished"),
        (3, "UNKNOWN", "killed/unfinished"),  # its folder exists, Tune's saved state does not list it
    ]
    assert rows[1]["epochs"] == 2 and rows[1]["val/robust_acc"] is None  # the torn line is skipped
    assert chosen["trial_index"] == 1
    assert (out / "importance.csv").read_text().splitlines() == [",".join(CSV_HEAD)]
    report = (out / "report.md").read_text()
    assert "skipped: 1 finished trial" in report and "killed or still running" in report
    # the learning curves of unfinished trials: the proxy needs no final metrics
    assert analyze(sweep, metric="proxy/robust_acc")["trial_index"] == 3


def _one_line_error(capsys: Any, argv: list[str], message: str) -> None:
    assert main(["analyze", *argv]) == 2
    out = capsys.readouterr().out
    assert message in out and len(out.strip().splitlines()) == 1, out


def test_bad_input_gives_one_line_errors_and_writes_nothing(tmp_path, capsys) -> None:
    _one_line_error(capsys, [str(tmp_path)], "is not a sweep folder")
    _one_line_error(capsys, [str(tmp_path / "nope")], "is not a sweep folder")
    sweep = make_sweep(tmp_path / "sw")
    _one_line_error(capsys, [str(sweep), "--metric", "val/robust"], "Unknown metric 'val/robust'")
    _one_line_error(capsys, [str(sweep), "--select", "pareto"], "Unknown --select 'pareto'")
    _one_line_error(capsys, [str(sweep), "--select", "min-sa"], "--min-standard-acc")
    _one_line_error(capsys, [str(sweep), "--min-standard-acc", "0.5"], "needs min-sa")
    _one_line_error(capsys, [str(sweep), "--select", "min-sa", "--min-standard-acc", "0.99"], "No trial has")
    killed = make_sweep(tmp_path / "killed", killed=True)
    (killed / killed.glob("train_driver_0001*").__next__().name / "result.json").write_text("")
    _one_line_error(capsys, [str(killed)], "No finished trial")
    assert not (sweep / "analysis").exists() and not (killed / "analysis").exists()
    with pytest.raises(ValueError, match="try --metric proxy/robust_acc"):
        analyze(killed)


def test_a_real_sweep_folder(tmp_path) -> None:
    """tests/data/sweep_sw1: Tune's own files (state, result.json, params.json) of a 3-trial sweep, 3
    epochs, ASHA; checkpoints, pickles and event files left out (85 KB)."""
    import shutil

    sweep = Path(shutil.copytree(DATA / "sweep_sw1", tmp_path / "sw1"))
    chosen = analyze(sweep, "knee")
    out = sweep / "analysis"
    assert all((out / f).is_file() for f in FILES)
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert [(r["trial_id"], r["stop_reason"], r["eval_source"], r["epochs"]) for r in rows] == [
        ("e52eb644", "completed", "final", 3),
        ("aeb0f039", "asha", "posthoc", 2),
        ("afc32bb8", "asha", "posthoc", 1),
    ]
    assert rows[0]["paper_point"] and rows[0]["attack.eps"] == pytest.approx(8 / 255)
    assert rows[0]["device_hours"] == pytest.approx(rows[0]["time/total_s"] / 3600)  # 1 worker, 1 CPU
    assert pq.read_table(out / "epochs.parquet").num_rows == 3 + 2 + 1
    # val (SA, RA): (0.867, 0.333), (0.900, 0.267), (0.533, 0.200): two on the front, knee = higher RA
    assert chosen["trial_id"] == "e52eb644"


def test_analyze_runs_without_torch_or_ray(tmp_path) -> None:
    """The results floor imports neither: ``acl-ray analyze`` works where only pyarrow, matplotlib,
    rich and Optuna are installed (a laptop reading a cluster's sweep folder)."""
    import shutil
    import subprocess
    import sys

    sweep = Path(shutil.copytree(DATA / "sweep_sw1", tmp_path / "sw1"))
    code = (
        "import sys\n"
        "from acl_ray.cli import main\n"
        f"assert main(['analyze', {str(sweep)!r}, '--select', 'knee']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, loaded[:10]\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (sweep / "analysis" / "trials.parquet").is_file()
