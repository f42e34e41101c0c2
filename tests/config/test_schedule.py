"""The ``schedule`` section of a pre-training config, and what a PBT / PB2 sweep file must hold."""

import random

import pytest
import yaml

from acl_ray.config.pretrain import Config, load_config
from acl_ray.config.schedule import SCHEDULABLE, schedule_overrides
from acl_ray.config.sweep import Sweep, load_sweep


def test_a_schedule_gives_each_epoch_the_values_from_its_segment(tmp_path) -> None:
    path = tmp_path / "c.yaml"  # the flat keys of the one vocabulary, as a user writes them
    path.write_text(
        "schedule:\n  epochs: [0, 8, 16]\n  attack.eps: [0.1, 0.08, 0.06]\n  attack.steps: [3, 3, 5]\n"
    )
    c = load_config(path)
    assert [c.at_epoch(e).attack.eps for e in (0, 7, 8, 15, 16, 39)] == [0.1, 0.1, 0.08, 0.08, 0.06, 0.06]
    assert c.at_epoch(16).attack.steps == 5 and c.at_epoch(16).optim.lr == c.optim.lr  # unscheduled: as is
    assert Config.from_dict(c.to_dict()) == c  # config.yaml round trip (nested sections)
    assert Config().at_epoch(5) == Config()


def test_per_epoch_values_round_trip_through_the_shortest_schedule() -> None:
    rng = random.Random(0)
    per_epoch = []
    for _ in range(30):  # runs of equal values, as a PBT lineage has between its perturbations
        v = {"attack.eps": rng.choice([0.05, 0.1]), "optim.lr": rng.choice([1e-3, 5e-4])}
        per_epoch += [v] * rng.randint(1, 3)
    c = Config().override(schedule_overrides(per_epoch))
    assert [
        {
            k: getattr(c.at_epoch(i).attack if k == "attack.eps" else c.at_epoch(i).optim, k.split(".")[1])
            for k in v
        }
        for i, v in enumerate(per_epoch)
    ] == per_epoch
    starts = c.schedule.epochs  # a segment starts exactly where a value changes
    assert all(per_epoch[e] != per_epoch[e - 1] for e in starts[1:]) and len(set(starts)) == len(starts)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"epochs": [1, 4], "attack.eps": [0.1, 0.2]}, r"schedule.epochs=\[1, 4\]: must start at 0"),
        ({"epochs": [0, 4, 4], "attack.eps": [0.1, 0.2, 0.3]}, "increase strictly"),
        ({"epochs": [0, 4], "attack.eps": [0.1]}, r"schedule.attack.eps=\[0.1\]: must have one value per"),
        ({"epochs": [0, 4], "attack.eps": [0.1, 2.0]}, r"schedule.attack.eps\[1\]=2.0: must be in \(0, 1\]"),
        (
            {"epochs": [0, 4], "attack.steps": [2, 0]},
            r"schedule.attack.steps\[1\]=0: must be an integer >= 1",
        ),
        ({"epochs": [0, 4], "attack.steps": [2, 2.5]}, "schedule.attack.steps=2.5: must be an integer"),
        (
            {"epochs": [0, 4], "augment.strength": [1.0, 0.0]},
            r"schedule.augment.strength\[1\]=0.0: must be in",
        ),
        ({"epochs": [0, 4], "optim.lr": [1e-3, -1]}, r"schedule.optim.lr\[1\]=-1.0: must be > 0"),
        (
            {"epochs": [0, 4], "data.batch_size": [64, 128]},
            "'schedule.data.batch_size': keys are schedule.epochs",
        ),
        ({"epochs": [0, 4], "model.arch": ["a", "b"]}, "KEY in augment.strength, loss.adv_weight"),
        ({"epochs": [0]}, "epochs are given but no key is"),
        ({"attack.eps": [0.1]}, "one value per schedule.epochs entry"),
        ({"epochs": 3, "attack.eps": [0.1]}, "schedule.epochs=3: must be a list"),
        ({"epochs": [0], "attack.eps": 0.1}, "schedule.attack.eps=0.1: must be a list"),
    ],
)
def test_bad_schedules_are_one_line_errors_naming_the_field(schedule, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        Config.from_dict({"schedule": schedule})
    assert "\n" not in str(err.value)


def test_the_scheduled_adv_weight_needs_the_dual_stream() -> None:
    with pytest.raises(
        ValueError, match=r"schedule.loss.adv_weight=\[0.3\]: must be \[\] unless model.variant=ds"
    ):
        Config().override({"model.variant": "a2a", "schedule.epochs": [0], "schedule.loss.adv_weight": [0.3]})


SMALL = {
    "base": {"data": {"name": "synthetic"}, "run": {"epochs": 3}},
    "space": {
        "attack.steps": {"int": [1, 3]},
        "attack.eps": {"loguniform": [0.03, 0.3]},
        "data.batch_size": {"choice": [16, 32]},
    },
}
PBT = {**SMALL, "sweep": {"scheduler": "pbt", "num_samples": 4, "perturbation_interval": 1}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "sweep.mutable=data.batch_size",
            "sweep.mutable='data.batch_size': must be keys that can change between",
        ),
        ("sweep.mutable=loss.temperature", "sweep.mutable='loss.temperature': must be keys of the space"),
        ("sweep.workers=2", "sweep.workers=2: must be 1 with sweep.runner=auto for sweep.scheduler=pbt"),
        ("sweep.runner=train", "sweep.workers=1: must be 1 with sweep.runner=auto"),
        ("sweep.confirm.top_k=1", "sweep.confirm.top_k=1: must be 0 with sweep.scheduler=pbt"),
        ("sweep.perturbation_interval=3", "sweep.perturbation_interval=3: must be below run.epochs"),
        ("sweep.quantile_fraction=0.75", "sweep.quantile_fraction"),
        ("schedule.epochs=[0]", "Illegal space='attack.eps': must be keys that base.schedule does not set"),
    ],
)
def test_bad_population_sweeps_are_refused_in_one_line(override, message) -> None:
    overrides = [override, "schedule.attack.eps=[0.1]"] if override.startswith("schedule") else [override]
    with pytest.raises(ValueError, match=message) as err:
        Sweep.from_dict(PBT, overrides)
    assert "\n" not in str(err.value)


def test_which_keys_a_population_sweep_mutates(tmp_path) -> None:
    s = Sweep.from_dict(PBT)
    assert s.mutated == ["attack.steps", "attack.eps"]  # space order; batch and the rest drawn once
    assert Sweep.from_dict(PBT, ["sweep.mutable=attack.eps"]).mutated == ["attack.eps"]
    assert Sweep.from_dict(SMALL).mutated == []  # ASHA: nothing changes while a trial trains
    only_batch = {**PBT, "space": {"data.batch_size": {"choice": [16, 32]}}}
    with pytest.raises(ValueError, match="sweep.scheduler='pbt': must be used with a space key that can"):
        Sweep.from_dict(only_batch)
    choice = {**PBT, "space": {"loss.temperature": {"choice": [0.2, 0.5]}}}
    assert Sweep.from_dict(choice).mutated == ["loss.temperature"]  # PBT moves to a neighbouring choice
    with pytest.raises(ValueError, match="space loss.temperature=.*pb2 mutates ranges only"):
        Sweep.from_dict(choice, ["sweep.scheduler=pb2"])
    path = tmp_path / "s.yaml"  # the sweep file round trip keeps the population settings
    path.write_text(
        yaml.safe_dump({**PBT, "sweep": {**PBT["sweep"], "mutable": ["attack.eps"], "synch": True}})
    )
    loaded = load_sweep(path)
    assert loaded.sweep.mutable == ("attack.eps",) and loaded.sweep.synch
    assert set(SCHEDULABLE) >= set(loaded.mutated)
