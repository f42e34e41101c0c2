"""``run_epochs`` on a restored trainer: what a resumed sweep trial reports, and in which order."""

import pytest
import torch

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.config.pretrain import Config
from acl_ray.orchestration.epochs import Evals, run_epochs

CFG = Config().override(
    {"data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32, "run.progress": False,
     "run.epochs": 4, "attack.steps": 1}
)


def restored_at(epoch: int) -> Pretrainer:
    """A trainer that trained ``epoch`` epochs, then a new one loaded from its state (a restore)."""
    torch.set_num_threads(1)
    data = load_datasets(CFG.data)
    first = Pretrainer(CFG, data, torch.device("cpu"))
    for _ in range(epoch):
        first.history[-1] = {**first.train_epoch(), "worker/pid": 1}  # as run_epochs keeps the full row
    again = Pretrainer(CFG, data, torch.device("cpu"))
    again.load_state_dict(first.state_dict())
    return again


def collect(trainer: Pretrainer, replay: bool) -> list[tuple[dict, bool]]:
    calls: list[tuple[dict, bool]] = []
    def report(row: dict, state: dict | None) -> None:
        calls.append((row, state is not None))

    run_epochs(trainer, load_datasets(CFG.data), Evals(), report, {"worker/pid": 2}, replay=replay)
    return calls


@pytest.mark.parametrize("replay", [True, False])
def test_a_trial_restored_mid_run_reports_its_checkpoint_row_again(replay: bool) -> None:
    trainer = restored_at(2)
    assert [r["epoch"] for r in trainer.history] == [1, 2]
    saved = [dict(r) for r in trainer.history]
    calls = collect(trainer, replay)
    epochs = [row["epoch"] for row, _ in calls]
    if replay:  # the checkpoint's rows first, marked and without a new checkpoint, then the rest
        assert epochs == [1, 2, 3, 4]
        assert [row for row, _ in calls[:2]] == [{**r, "replayed": True} for r in saved]
        assert not any(has_state for _, has_state in calls[:2])
    else:
        assert epochs == [3, 4]
    assert all(not row.get("replayed") for row, _ in calls[-2:])
    assert [row["worker/pid"] for row, _ in calls[-2:]] == [2, 2]
    assert calls[-1][1]  # the last epoch always writes a checkpoint


def test_a_fresh_trial_replays_nothing() -> None:
    torch.set_num_threads(1)
    trainer = Pretrainer(CFG, load_datasets(CFG.data), torch.device("cpu"))
    assert [row["epoch"] for row, _ in collect(trainer, replay=True)] == [1, 2, 3, 4]


def test_a_finished_trial_reports_its_final_row_once_with_its_checkpoint() -> None:
    trainer = restored_at(4)
    calls = collect(trainer, replay=True)
    assert [(row["epoch"], has_state) for row, has_state in calls] == [(4, True)]
    assert "replayed" not in calls[0][0]
