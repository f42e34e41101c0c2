"""The searcher's first trials are the reference points (paper ACL, DynACL, DynACL-AIR) that the space
can hold, clipped into it, told to Optuna like any trial; then a few random ones, then TPE."""

import pytest

from acl_ray.config.space import REFERENCES, warm_start_points
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.orchestration.search import build_searcher, startup_trials
from acl_ray.orchestration.tuner import to_tune
from tests.orchestration.test_tune import ROOT


def suggestions(s: Sweep, n: int, value=lambda i, config: 0.5 + 0.01 * i) -> list[dict]:
    """The searcher's first ``n`` configs, each told back as finished with ``value(i, config)``."""
    searcher = build_searcher(s)
    searcher.set_search_properties(None, None, to_tune(s.space))
    out = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        out.append(config)
        searcher.on_trial_complete(f"t{i}", {"val/robust_acc": value(i, config), "epoch": 20})
    return out


def test_the_enlarged_space_starts_from_paper_dynacl_and_dynacl_air() -> None:
    s = load_sweep(ROOT / "configs" / "sweep_digits_later.yaml")
    points = warm_start_points(s.space, s.base)
    assert [name for name, _ in points] == ["paper", "dynacl", "dynacl-air"]
    first = suggestions(s, 4)
    assert first[:3] == [p for _, p in points]  # enqueued, in order, as the searcher's first trials
    assert first[0]["attack.eps"] == pytest.approx(8 / 255) and first[0]["augment.schedule"] == "constant"
    for name, point in points[1:]:  # the methods' own keys; the rest at the base config
        assert {k: point[k] for k in REFERENCES[name]} == REFERENCES[name]
        assert point["attack.eps"] == s.base.attack.eps and point["data.batch_size"] == s.base.data.batch_size
    assert first[3] not in first[:3]  # then the searcher's own proposals
    assert startup_trials(s) == 3 + 2  # 2 random trials after the points, then TPE, in a 10-trial sweep
    assert build_searcher(s)._sampler._n_startup_trials == 5


def test_points_the_space_cannot_hold_are_left_out_and_clipped() -> None:
    s = load_sweep(ROOT / "configs" / "sweep_digits.yaml")  # no schedule keys: only the paper point
    assert [name for name, _ in warm_start_points(s.space, s.base)] == ["paper"]
    assert startup_trials(s) == 1 + 2
    narrow = Sweep.from_dict({"space": {"attack.eps": {"uniform": [0.05, 0.2]},
                                        "augment.schedule": {"choice": ["dynacl"]},
                                        "loss.adv_weight_schedule": {"choice": ["constant", "dynacl"]}}})
    points = dict(warm_start_points(narrow.space, narrow.base))
    assert points["paper"] == {"attack.eps": 0.05, "augment.schedule": "dynacl",  # clipped into the space
                               "loss.adv_weight_schedule": "constant"}
    assert points["dynacl"]["attack.eps"] == 0.1 and "dynacl-air" not in points
    off = Sweep.from_dict({"sweep": {"paper_point": False}})
    assert suggestions(off, 1)[0] != dict(warm_start_points(off.space, off.base))["paper"]
    assert startup_trials(off) == 2
