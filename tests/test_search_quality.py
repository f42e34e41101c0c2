"""benchmarks/search_quality.py: its best-so-far curve on built trials, and --smoke end to end (real
sweeps ended by sweep.budget_epochs, each pick confirmed beside DynACL), then resumed."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "search_quality.py"


def load_module():  # benchmarks/ is not a package: import the script by path
    return load_script(SCRIPT)


def trial(tid: str, index: int, value: float | None, reports: list[tuple[int, int]]) -> dict:
    return {"trial_id": tid, "trial_index": index, "value": value,
            "reports": [{"timestamp": ts, "epoch": e} for ts, e in reports]}


def test_best_so_far_counts_each_epoch_once_in_time_order_and_a_value_from_its_trials_end() -> None:
    sq = load_module()
    trials = [
        trial("a", 1, 0.30, [(10, 1), (12, 2), (14, 3)]),
        trial("b", 2, 0.50, [(11, 1), (13, 2), (16, 2)]),  # its last row replayed: epoch 2 counts once
        trial("c", 3, None, [(16, 1)]),  # stopped by the budget without a checkpoint: no value
        trial("d", 4, 0.40, [(15, 1), (17, 2)]),
    ]
    points = sq.best_so_far(trials)
    assert [(p["trial_id"], p["epochs"], p["best_val_robust_acc"]) for p in points] == [
        ("a", 5, 0.30),  # a's 3 epochs and b's first 2 were spent when a ended
        ("b", 6, 0.50),  # d's first epoch (t=15) came before b's end (t=16, its replayed row)
        ("c", 7, 0.50),
        ("d", 8, 0.50),
    ]
    assert sq.on_grid(points, [0, 4, 5, 6, 8, 9]) == [None, None, 0.30, 0.50, 0.50, 0.50]


def test_best_so_far_ends_at_the_total_of_every_trials_highest_epoch() -> None:
    sq = load_module()
    trials = [trial(f"t{i}", i, 0.1 * i, [(i + k, k) for k in range(1, i + 2)]) for i in range(5)]
    points = sq.best_so_far(trials)
    assert points[-1]["epochs"] == sum(i + 1 for i in range(5))
    assert all(a["epochs"] <= b["epochs"] for a, b in itertools.pairwise(points))
    assert points[-1]["best_val_robust_acc"] == pytest.approx(0.4)


def run_smoke(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_a_pick_that_is_the_control_counts_as_a_difference_of_zero() -> None:
    """Its confirmation is DynACL's own runs (no difference is computed): leaving it out of the mean
    over searcher seeds would credit the method with only its other seeds' gains."""
    sq = load_module()
    stat = {"mean": 0.8, "std": 0.01, "n": 3}
    part = {"label": "x", "seeds": [1000, 1001, 1002], **{m: stat for m in sq.RA}}
    base = {"method": "tpe", "epochs_spent": 40, "trials_run": 2, "best_val_robust_acc": 0.8,
            "curve": [{"epochs": 40, "best_val_robust_acc": 0.8}], "confirmed": part, "control": part}
    gain = {m: {"mean": 0.04, "low": 0.01, "high": 0.07, "verdict": "beats"} for m in sq.RA}
    records = [{**base, "seed": 0, "pick_is_control": False, "vs_control": gain},
               {**base, "seed": 1, "pick_is_control": True, "vs_control": {m: None for m in sq.RA}}]
    agg = sq.aggregate(records, ["tpe"], 40)["methods"]["tpe"]
    for m in sq.RA:
        assert agg[f"vs_control {m}"]["n"] == 2 and agg[f"vs_control {m}"]["mean"] == pytest.approx(0.02)
    assert agg["verdicts_test"] == ["beats", "is the control"]


def test_smoke_runs_budgeted_sweeps_confirms_each_pick_and_resumes(tmp_path: Path) -> None:
    """Two methods x 1 seed, 2-epoch trials, a budget of 4 epochs, 2 confirmation seeds."""
    from ray.tune.utils.serialization import TuneFunctionDecoder

    proc = run_smoke(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "search_quality.json").read_text())
    args = res["args"]
    assert (args["budget_epochs"], args["epochs"], args["confirm_seeds"]) == (4, 2, 2)
    assert set(res["aggregate"]["methods"]) == set(args["methods"]) and len(args["methods"]) == 2
    assert {r["method"] for r in res["runs"]} == set(args["methods"]) and len(res["runs"]) == 2
    for r in res["runs"]:
        epochs = [p["epochs"] for p in r["curve"]]
        assert epochs and all(a <= b for a, b in itertools.pairwise(epochs)), r["curve"]
        # the budget, not num_samples (budget // shortest trial + 2 trials), ended it: within one trial
        assert abs(epochs[-1] - args["budget_epochs"]) <= args["epochs"], r["curve"]
        assert r["epochs_spent"] == epochs[-1] and r["trials_run"] >= 2
        assert r["best_val_robust_acc"] == r["pick"]["val/robust_acc"] == max(
            p["best_val_robust_acc"] for p in r["curve"] if p["best_val_robust_acc"] is not None)
        for part in ("confirmed", "control"):  # the pick and DynACL, each at the 2 fresh seeds
            assert r[part]["seeds"] == [1000, 1001], (part, r[part])
            for m in ("val/robust_acc", "eval/robust_acc"):
                assert r[part][m]["n"] == 2 and 0 <= r[part][m]["mean"] <= 1
        assert r["control"]["label"] == "dynacl"
        diff = r["vs_control"]["eval/robust_acc"]
        assert diff["n"] == 2 and diff["mean"] == pytest.approx(
            r["confirmed"]["eval/robust_acc"]["mean"] - r["control"]["eval/robust_acc"]["mean"])
        # Tune saved the budget's count with its experiment state: a resumed sweep would keep it
        folder = Path(r["folder"])
        state = max(folder.glob("experiment_state-*.json"))
        stopper = json.loads(state.read_text(), cls=TuneFunctionDecoder, allow_cloudpickle=True)[
            "runner_data"]["_stopper"]
        assert stopper.budget == 4 and stopper.spent == r["epochs_spent"]
    for m in res["aggregate"]["methods"].values():
        assert m["seeds"] == [0] and m["best_val_robust_acc"]["n"] == 1
        curve = m["curve_mean"]
        assert curve["epochs"][0] == 0 and curve["epochs"][-1] >= args["budget_epochs"]
    md = (tmp_path / "search_quality.md").read_text()
    assert "| method | seeds | budget epochs | trials run (mean) | best val RA found" in md
    assert (tmp_path / "search_quality.png").stat().st_size > 0

    # the same command again: both pairs are finished, nothing is trained again
    stamps = {p: p.stat().st_mtime for p in tmp_path.glob("sweeps/*/summary.json")}
    again = run_smoke(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in tmp_path.glob("sweeps/*/summary.json")} == stamps
    assert json.loads((tmp_path / "search_quality.json").read_text())["runs"] == res["runs"]
