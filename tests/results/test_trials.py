"""The one reader of a sweep folder, on fake folders in Tune's layout and on a real one."""

import json
import shutil
from pathlib import Path

from acl_ray.results.trials import POSTHOC_DIR, local_checkpoint, read_results, read_trials
from tests.results.fake_sweep import FINAL, make_sweep

DATA = Path(__file__).parent / "data"


def test_finished_sweep_trials_in_creation_order_with_results_errors_and_posthoc(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw")
    trials = read_trials(sweep, posthoc=sweep / POSTHOC_DIR)
    assert [t.trial_index for t in trials] == [1, 2, 3, 4]
    assert [t.status for t in trials] == ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED"]
    assert [t.epoch for t in trials] == [3, 1, 1, 3]
    assert [len(t.results) for t in trials] == [3, 1, 1, 3]
    assert trials[0].config == {"attack.steps": 3, "attack.eps": 8 / 255, "data.batch_size": 32}
    assert trials[0].final is not None and trials[0].final["val/robust_acc"] == FINAL["val/robust_acc"]
    assert trials[1].final is None and trials[1].posthoc is not None
    assert trials[1].posthoc["val/robust_acc"] == 0.25
    assert [t.posthoc is not None for t in trials] == [False, True, False, False]
    assert [t.error for t in trials] == [None, None, "ValueError: Illegal attack.eps=2", None]
    assert trials[0].latest("proxy/robust_acc") == trials[0].last["proxy/robust_acc"]
    assert all(t.dir is not None and t.dir.parent == sweep for t in trials)
    # without the posthoc folder, nothing is merged in
    assert all(t.posthoc is None for t in read_trials(sweep))


def test_killed_sweep_torn_line_and_trials_missing_from_the_saved_state(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw", killed=True)
    trials = read_trials(sweep)
    assert [(t.trial_index, t.status, t.epoch) for t in trials] == [
        (1, "TERMINATED", 3),
        (2, "RUNNING", 2),  # the torn third line is skipped
        (3, "UNKNOWN", 1),  # its folder exists, Tune's saved state does not list it
    ]
    assert trials[2].config == {"attack.steps": 1, "attack.eps": 0.05, "data.batch_size": 16}  # params.json
    saved = read_trials(sweep, unsaved=False)  # what a sweep's summary lists once fit() has returned
    assert [t.trial_index for t in saved] == [1, 2]


def test_last_report_of_an_epoch_wins_after_a_restore(tmp_path) -> None:
    lines = [{"epoch": 1, "v": 1}, {"epoch": 2, "v": 2}, {"epoch": 2, "v": 3}, {"no_epoch": True}]
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines) + "not json\n")
    assert read_results(tmp_path) == [{"epoch": 1, "v": 1}, {"epoch": 2, "v": 3}]
    assert read_results(None) == [] and read_results(tmp_path / "missing") == []


def test_reported_checkpoints_are_found_in_a_moved_sweep_folder(tmp_path) -> None:
    (tmp_path / "trial-abc12" / "checkpoint_3").mkdir(parents=True)
    assert local_checkpoint(tmp_path, "abc12", "/old/sw/trial-abc12/checkpoint_3") == str(
        tmp_path / "trial-abc12" / "checkpoint_3"
    )
    assert local_checkpoint(tmp_path, "abc12", "/old/sw/trial-abc12/checkpoint_9") == (
        "/old/sw/trial-abc12/checkpoint_9"  # not copied along: the reported path
    )
    assert local_checkpoint(tmp_path, "abc12", None) is None


def test_a_real_sweep_folder(tmp_path) -> None:
    sweep = Path(shutil.copytree(DATA / "sweep_sw1", tmp_path / "sw1"))
    trials = read_trials(sweep, posthoc=sweep / POSTHOC_DIR)
    assert [(t.trial_id, t.status, t.epoch) for t in trials] == [
        ("e52eb644", "TERMINATED", 3),
        ("aeb0f039", "TERMINATED", 2),
        ("afc32bb8", "TERMINATED", 1),
    ]
    assert [t.final is not None for t in trials] == [True, False, False]
    assert [t.posthoc is not None for t in trials] == [False, True, True]
    assert trials[0].last["checkpoint_path"].startswith("/tmp/sw1/trial-e52eb644/")
