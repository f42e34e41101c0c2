"""A PBT member's lineage from its final report, and the files a population sweep writes (no Ray)."""

import json

import yaml

from acl_ray.config.pretrain import load_config
from acl_ray.config.sweep import Sweep
from acl_ray.results.schedules import (
    LINEAGE,
    SCHEDULES_FILE,
    TRAINED_BY,
    lineage,
    lineage_json,
    write_schedules,
)
from acl_ray.results.trials import Trial

PBT = {
    "base": {"data": {"name": "synthetic"}, "run": {"epochs": 4}},
    "space": {"attack.eps": {"uniform": [0.05, 0.3]}, "data.batch_size": {"choice": [16, 32]}},
    "sweep": {"scheduler": "pbt", "num_samples": 2, "perturbation_interval": 2},
}


def member(tid: str, index: int, history: list[dict], config: dict, val: float) -> Trial:
    final = {"epoch": len(history), "val/robust_acc": val, LINEAGE: lineage_json(history, ["attack.eps"])}
    return Trial(tid, index, "TERMINATED", config, [final], None, None, None)


def test_a_members_lineage_and_its_replayable_schedule(tmp_path) -> None:
    s = Sweep.from_dict(PBT)
    a = [{TRAINED_BY: "a", "sched/attack.eps": 0.1}] * 4
    b = [*a[:2], {TRAINED_BY: "b", "sched/attack.eps": 0.2}, {TRAINED_BY: "b", "sched/attack.eps": 0.2}]
    trials = [
        member("a", 1, a, {"attack.eps": 0.1, "data.batch_size": 32}, 0.5),
        member("b", 2, b, {"attack.eps": 0.2, "data.batch_size": 32}, 0.6),
    ]
    got = lineage(trials[1], ["attack.eps"])
    assert got is not None and got.ancestors == [(1, "a"), (3, "b")] and got.values["attack.eps"][2] == 0.2
    assert lineage(trials[1], ["optim.lr"]) is None  # recorded without the key: not this sweep's member
    assert lineage(Trial("c", 3, "ERROR", {}, [{"epoch": 1}], "boom", None, None), ["attack.eps"]) is None
    write_schedules(s, tmp_path, trials, {"trial_id": "b"})
    written = json.loads((tmp_path / SCHEDULES_FILE).read_text())
    assert written["best"] == "b" and written["members"]["b"]["schedule"] == {
        "epochs": [0, 2],
        "attack.eps": [0.1, 0.2],
    }
    replay = load_config(tmp_path / "best_schedule.yaml")
    assert [replay.at_epoch(e).attack.eps for e in range(4)] == [0.1, 0.1, 0.2, 0.2]
    assert replay.data.batch_size == 32 and replay.run.epochs == 4  # drawn once; the base's length
    assert yaml.safe_load((tmp_path / "best_schedule.yaml").read_text())["schedule"]["epochs"] == [0, 2]
