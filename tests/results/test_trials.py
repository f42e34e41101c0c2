"""The one reader of a sweep folder, on fake folders in Tune's layout and on a real one."""

import json
import shutil
import threading
from pathlib import Path

import pytest

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


def _partial_writes(sweep: Path) -> list[tuple[Path, bytes]]:
    """Every file of a finished fake sweep and its full content, to be written again piece by piece."""
    files = [p for p in sorted(sweep.rglob("*")) if p.is_file() and p.suffix in (".json", ".txt")]
    return [(p, p.read_bytes()) for p in files]


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:1], id="one-byte"),
        pytest.param(lambda b: b.rstrip(b"\n"), id="no-final-newline"),
    ],
)
def test_half_written_files_are_not_there_yet(tmp_path, cut) -> None:
    sweep = make_sweep(tmp_path / "sw", strings=True)
    full = {t.trial_id: t for t in read_trials(sweep, posthoc=sweep / POSTHOC_DIR)}
    for path, content in _partial_writes(sweep):
        path.write_bytes(cut(content))
        for t in read_trials(sweep, posthoc=sweep / POSTHOC_DIR):  # never raises
            done = full[t.trial_id]
            assert t.results == done.results[: len(t.results)]  # a prefix of what will be there
            assert t.config in ({}, done.config)
            assert t.posthoc in (None, done.posthoc)
        path.write_bytes(content)


def test_a_result_line_without_its_newline_is_left_out_until_complete(tmp_path) -> None:
    rows = [{"epoch": 1, "v": 1}, {"epoch": 2, "v": 2}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "result.json").write_text(text.rstrip("\n"))  # the last line's newline not yet written
    assert read_results(tmp_path) == rows[:1]
    (tmp_path / "result.json").write_text(text)
    assert read_results(tmp_path) == rows


def test_an_older_saved_state_is_used_while_the_newest_is_written(tmp_path) -> None:
    sweep = make_sweep(tmp_path / "sw")
    (sweep / "experiment_state-2026-01-02_00-00-00.json").write_text('{"trial_data": [["{\\"tri')
    assert [t.status for t in read_trials(sweep, unsaved=False)] == ["TERMINATED", "TERMINATED", "ERROR",
                                                                      "TERMINATED"]


def test_a_sweep_read_while_it_is_written(tmp_path) -> None:
    """A writer thread rebuilds a sweep folder a few bytes at a time while the reader polls it."""
    source = make_sweep(tmp_path / "done", strings=True)
    full = {t.trial_id: t for t in read_trials(source, posthoc=source / POSTHOC_DIR)}
    live = tmp_path / "live"
    live.mkdir()
    stop = threading.Event()

    def write() -> None:
        try:
            for path, content in _partial_writes(source):
                target = live / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb", buffering=0) as f:
                    for i in range(0, len(content), 7):
                        f.write(content[i : i + 7])
        finally:
            stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    polls = 0
    while not stop.is_set() or polls == 0:
        for t in read_trials(live, posthoc=live / POSTHOC_DIR):
            done = full[t.trial_id]
            assert t.results == done.results[: len(t.results)]
            assert t.config in ({}, done.config)
        polls += 1
    writer.join()
    final = read_trials(live, posthoc=live / POSTHOC_DIR)
    assert [(t.trial_id, t.results, t.posthoc) for t in final] == [
        (t.trial_id, t.results, t.posthoc) for t in full.values()
    ]


def test_grid_trial_ids_with_their_variant_number(tmp_path) -> None:
    d = tmp_path / "confirm_driver_6012a_00003_3_confirm_run=3_2026-12-01_04-55-45"
    d.mkdir()
    (d / "params.json").write_text('{"confirm/run": 3}')
    (d / "result.json").write_text('{"epoch": 1}\n')
    meta = {"trial_id": "6012a_00003", "experiment_tag": "3_confirm_run=3", "status": "TERMINATED",
            "config": {"confirm/run": 3}, "relative_logdir": d.name}
    state = {"trial_data": [[json.dumps(meta), "{}"]]}
    (tmp_path / "experiment_state-2026-12-01_04-55-45.json").write_text(json.dumps(state))
    [t] = read_trials(tmp_path)  # the folder is the saved trial's, not a second one
    assert (t.trial_id, t.trial_index, t.status, t.dir) == ("6012a_00003", 3, "TERMINATED", d)
    (tmp_path / "experiment_state-2026-12-01_04-55-45.json").unlink()
    [t] = read_trials(tmp_path)  # before Tune saved its state: found from the folder alone
    assert (t.trial_id, t.trial_index, t.status) == ("6012a_00003", 3, "UNKNOWN")
