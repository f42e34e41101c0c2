"""sweep.budget_epochs: Tune's experiment-level stopper that ends a sweep at a total of training epochs,
and the `gp` searcher (Optuna's GPSampler through OptunaSearch)."""

import json
import random

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.serialization import TuneFunctionDecoder, TuneFunctionEncoder

from acl_ray.config.sweep import Sweep, SweepConfig, load_sweep
from acl_ray.orchestration.search import build_searcher, startup_trials
from acl_ray.orchestration.tuner import EpochBudget
from tests.orchestration.test_tune import ROOT
from tests.orchestration.test_warm_start import suggestions


def reports(trials: int, epochs: int, seed: int) -> list[tuple[str, dict]]:
    """Each trial's epochs 1..epochs in order, the trials interleaved at random, with a replayed row
    (a resumed trial reports its checkpoint's epoch again) after some epochs."""
    rng = random.Random(seed)
    queues = {f"t{i}": list(range(1, rng.randint(1, epochs) + 1)) for i in range(trials)}
    out: list[tuple[str, dict]] = []
    while any(queues.values()):
        tid = rng.choice([t for t, q in queues.items() if q])
        epoch = queues[tid].pop(0)
        out.append((tid, {"epoch": epoch, "proxy/robust_acc": 0.1}))
        if rng.random() < 0.3:
            out.append((tid, {"epoch": epoch, "replayed": True}))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget", [1, 5, 13, 40])
def test_the_sweep_stops_exactly_when_the_trained_epochs_reach_the_budget(seed: int, budget: int) -> None:
    stopper = EpochBudget(budget)
    trained: set[tuple[str, int]] = set()  # the naive count: each (trial, epoch) trained, once
    for tid, result in reports(trials=6, epochs=12, seed=seed):
        assert stopper(tid, result) is False  # no single trial is stopped
        trained.add((tid, result["epoch"]))
        assert stopper.spent == len(trained)
        assert stopper.stop_all() == (len(trained) >= budget), (tid, result, len(trained))


def test_a_replayed_row_and_epochs_trained_again_after_a_restore_count_once() -> None:
    stopper = EpochBudget(6)
    for e in (1, 2, 3, 4):
        stopper("a", {"epoch": e})
    stopper("a", {"epoch": 4, "replayed": True})  # the restored trial re-reports its checkpoint's row
    assert stopper.spent == 4
    for e in (3, 4):  # resumed from an older checkpoint (epoch 2): epochs 3, 4 trained again
        stopper("a", {"epoch": e})
    stopper("b", {"done": True})  # a result without an epoch (Tune's own) trains nothing
    assert stopper.spent == 4 and not stopper.stop_all()
    stopper("b", {"epoch": 1})
    assert stopper.spent == 5 and not stopper.stop_all()
    stopper("a", {"epoch": 5})
    assert stopper.spent == 6 and stopper.stop_all()


def test_tunes_saved_experiment_state_keeps_the_count() -> None:
    """Tune saves its stopper with the experiment state (runner_data) and restores it on resume."""
    stopper = EpochBudget(10)
    stopper("a", {"epoch": 3})
    stopper("b", {"epoch": 2})
    text = json.dumps({"runner_data": {"_stopper": stopper}}, cls=TuneFunctionEncoder)
    back = json.loads(text, cls=TuneFunctionDecoder, allow_cloudpickle=True)["runner_data"]["_stopper"]
    assert isinstance(back, EpochBudget) and back.budget == 10 and back.epochs == {"a": 3, "b": 2}


def test_budget_epochs_is_off_by_default_and_checked() -> None:
    assert SweepConfig().budget_epochs == 0
    assert load_sweep(ROOT / "configs" / "sweep_digits_later.yaml").sweep.budget_epochs == 0
    assert Sweep.from_dict({}, ["sweep.budget_epochs=400"]).sweep.budget_epochs == 400
    with pytest.raises(ValueError, match="sweep.budget_epochs"):
        SweepConfig(budget_epochs=-1)


def gp_suggestions(s: Sweep, n: int) -> list[dict]:
    # a smooth objective of eps: the GP has something to model
    return suggestions(s, n, value=lambda i, config: 0.3 + config["attack.eps"])


def test_gp_is_optunas_gaussian_process_sampler_seeded_after_the_same_start_up_as_tpe() -> None:
    s = load_sweep(ROOT / "configs" / "sweep_digits_later.yaml", ["sweep.searcher=gp", "sweep.seed=3"])
    searcher = build_searcher(s)
    assert isinstance(searcher, OptunaSearch)
    assert isinstance(searcher._sampler, optuna.samplers.GPSampler)
    assert searcher._sampler._n_startup_trials == startup_trials(s) == 3 + 2  # 3 reference points, 2 random
    first = gp_suggestions(s, 6)  # the points, 2 random trials, then one from the GP
    assert first == gp_suggestions(s, 6)  # seeded
    assert first[5] not in first[:5]
    s.base.override(first[5])  # a legal config: every key in its range
    assert 0.03 <= first[5]["attack.eps"] <= 0.3 and first[5]["augment.schedule"] in ("constant", "dynacl")
