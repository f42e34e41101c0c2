"""A sweep's summary rows, summary.json and best_config.yaml, from fake and real sweep folders."""

import json
import shutil
from pathlib import Path

from acl_ray.config.pretrain import load_config
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.results.summary import FINAL_KEYS, expected_trials, summary_rows, unfinished, write_summary
from acl_ray.results.trials import POSTHOC_DIR, read_trials
from tests.results.fake_sweep import SPEC, make_sweep

DATA = Path(__file__).parent / "data"


def test_rows_mark_the_source_of_the_full_protocol_and_early_stops(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw")
    s = Sweep.from_dict(SPEC)
    rows = summary_rows(s, read_trials(sweep, posthoc=sweep / POSTHOC_DIR))
    assert [r["trial_index"] for r in rows] == [1, 2, 3, 4]
    assert [r["eval/source"] for r in rows] == ["final", "posthoc", None, "final"]
    assert [r["stopped_early"] for r in rows] == [False, True, False, False]
    assert [r["error"] for r in rows] == [False, False, True, False]
    assert [r["epoch"] for r in rows] == [3, 1, 1, 3]
    assert rows[1]["val/robust_acc"] == 0.25 and rows[2]["val/robust_acc"] is None
    assert all(r[k] is not None for r in (rows[0], rows[1], rows[3]) for k in FINAL_KEYS)
    assert rows[0]["checkpoint_path"] == f"/elsewhere/sw/trial-{rows[0]['trial_id']}/checkpoint_3"
    for r in rows:
        config = {k: r[k] for k in s.space}
        assert r["resolved_config"] == s.base.override(config).to_dict()
    # without the cache, the ASHA-stopped trial is left for acl_ray.orchestration.posthoc
    assert summary_rows(s, read_trials(sweep))[1]["eval/source"] is None


def test_summary_json_and_best_config(tmp_path, capsys) -> None:
    sweep = make_sweep(tmp_path / "sw")
    s = load_sweep(sweep / "sweep.yaml")
    rows = summary_rows(s, read_trials(sweep, posthoc=sweep / POSTHOC_DIR))
    best = write_summary(s, sweep, rows)
    assert best is not None and best["trial_index"] == 4  # val robust acc 0.35
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["best"]["trial_id"] == best["trial_id"] and len(summary["trials"]) == 4
    assert summary["metric"] == s.sweep.metric and summary["config"] == s.to_dict()
    assert load_config(sweep / "best_config.yaml").to_dict() == best["resolved_config"]
    assert f"{best['trial_id']}*" in capsys.readouterr().out


def test_no_finished_trial_no_best_config(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw", killed=True)
    s = load_sweep(sweep / "sweep.yaml")
    rows = [r for r in summary_rows(s, read_trials(sweep)) if r["trial_index"] != 1]  # drop the finished one
    assert write_summary(s, sweep, rows) is None
    assert json.loads((sweep / "summary.json").read_text())["best"] is None
    assert not (sweep / "best_config.yaml").exists()


def test_a_real_sweep_folder(tmp_path) -> None:
    sweep = Path(shutil.copytree(DATA / "sweep_sw1", tmp_path / "sw1"))
    s = load_sweep(sweep / "sweep.yaml")
    rows = summary_rows(s, read_trials(sweep, posthoc=sweep / POSTHOC_DIR, unsaved=False))
    assert [(r["trial_id"], r["epoch"], r["stopped_early"]) for r in rows] == [
        ("e52eb644", 3, False),
        ("aeb0f039", 2, True),
        ("afc32bb8", 1, True),
    ]
    for r in rows:  # what tests/orchestration/test_tune.py checks on a fresh sweep
        assert all(r[k] is not None and 0 <= r[k] <= 1 for k in FINAL_KEYS), r
        assert r["eval/source"] == ("posthoc" if r["stopped_early"] else "final")


def test_unfinished_counts_trials_left_running_or_pending_and_those_never_created() -> None:
    """What a Ctrl-C leaves (Tune saves the trials it cut short as running, pending or paused, and
    creates no more) against what a run that ended on its own leaves."""
    done = ["TERMINATED", "ERROR", "TERMINATED"]
    assert unfinished(done, expected=3) == 0
    assert unfinished(["TERMINATED", "RUNNING", "PENDING"], expected=3) == 2
    assert unfinished(["TERMINATED", "PAUSED"], expected=2) == 1  # a population member mid-exploit
    assert unfinished(["TERMINATED"], expected=3) == 2  # interrupted between two trials
    assert unfinished(done, expected=0) == 0  # a budget ends the search: no count to reach
    s = Sweep.from_dict(SPEC)
    assert expected_trials(s) == s.sweep.num_samples
    budgeted = Sweep.from_dict({**SPEC, "sweep": {**SPEC["sweep"], "budget_epochs": 12}})
    assert expected_trials(budgeted) == 0
