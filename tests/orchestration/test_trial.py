"""A sweep trial's plan (proxy and checkpoint epochs, ASHA rungs), its checkpoint store and runner."""

import pytest
import torch
from ray.tune.schedulers import ASHAScheduler

from acl_ray.algorithm.checkpoint import CHECKPOINT
from acl_ray.config.pretrain import Config
from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.epochs import Evals, checkpoint_due, proxy_due
from acl_ray.orchestration.trial import TrialCheckpoint, asha_rungs, in_process, shares_data, trial_evals
from tests.orchestration.test_tune import SMALL


@pytest.mark.parametrize(
    ("epochs", "grace", "rf"), [(20, 4, 3), (3, 1, 2), (40, 5, 2), (10, 10, 3), (8, 20, 3)]
)
def test_rungs_are_the_epochs_where_asha_decides(epochs, grace, rf) -> None:
    s = Sweep.from_dict(
        {**SMALL, "base": {"run": {"epochs": epochs}}},
        [f"sweep.grace_period={grace}", f"sweep.reduction_factor={rf}"],
    )
    asha = ASHAScheduler(
        metric="m",
        mode="max",
        time_attr="epoch",
        max_t=epochs,
        grace_period=min(grace, epochs),
        reduction_factor=rf,
    )
    assert sorted(asha_rungs(s)) == sorted(m for m, _ in asha._brackets[0]._rungs)  # Tune's own milestones
    assert asha_rungs(Sweep.from_dict(SMALL, ["sweep.scheduler=fifo"])) == ()


def test_default_sweep_checkpoints_where_a_checkpoint_can_be_used() -> None:
    evals = Evals(proxy={}, proxy_every=5, rungs=(4, 12))
    saved = [e for e in range(1, 21) if checkpoint_due(evals, e, 20, every=4)]
    assert saved == [4, 8, 12, 16, 20]  # every 4, the rungs (4, 12) and the end
    assert [e for e in range(1, 21) if proxy_due(evals, e, 20)] == [4, 5, 10, 12, 15, 20]
    assert not proxy_due(Evals(), 20, 20)  # plain pre-training: no proxy
    assert Evals.from_dict(evals.to_dict()) == evals


def test_trial_plan_and_runner_from_the_sweep() -> None:
    s = Sweep.from_dict(SMALL)
    evals = trial_evals(s)
    assert evals.proxy is not None and evals.proxy["eps"] == s.final.eval.eps  # the proxy attacks at eval eps
    assert evals.final == s.final.to_dict() and evals.rungs == (1, 2)
    assert in_process(s)
    assert not in_process(Sweep.from_dict(SMALL, ["sweep.workers=2"]))
    assert not in_process(Sweep.from_dict(SMALL, ["sweep.runner=train"]))
    with pytest.raises(ValueError, match="sweep.runner"):
        Sweep.from_dict(SMALL, ["sweep.runner=ray"])
    base = Config()
    assert shares_data(base, base.override({"data.batch_size": 512, "attack.eps": 0.2}))
    assert not shares_data(base, base.override({"data.split_seed": 1}))


@pytest.mark.parametrize("uri", [False, True])
def test_trial_checkpoint_round_trip(tmp_path, uri) -> None:
    run_dir = f"file://{tmp_path}/trial-x" if uri else str(tmp_path / "trial-x")
    store = TrialCheckpoint(run_dir)
    assert store.load("cpu") is None  # a new trial
    state = {"model": {"w": torch.ones(3)}, "signature": {"arch": "a"}, "epoch": 4}
    store.save(state)
    store.save({**state, "epoch": 8})  # replaced, not added
    got = store.load("cpu")
    assert got is not None and got["epoch"] == 8 and torch.equal(got["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in (tmp_path / "trial-x" / "checkpoint").iterdir()) == [CHECKPOINT]
