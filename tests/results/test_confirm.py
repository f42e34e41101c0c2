"""Confirmation statistics on built cases: mean ± std per configuration, paired 95% intervals (checked
against scipy's paired t-test), verdicts, the winner by validation only, and runs left to do."""

import math

import pytest
from scipy import stats

from acl_ray.results.confirm import (
    METRICS,
    confirmation_markdown,
    paired_difference,
    summarize_confirmation,
    verdicts,
)

SEEDS = (1000, 1001, 1002)


def metrics(val_ra: float, test_ra: float) -> dict[str, float]:
    return {"val/standard_acc": 0.95, "val/robust_acc": val_ra, "eval/standard_acc": 0.96,
            "eval/robust_acc": test_ra}


def plan_and_results(table: dict[tuple[str, str], list[tuple[float, float]]]):
    plan, results = [], {}
    for (label, kind), values in table.items():
        for seed, (val, test) in zip(SEEDS, values, strict=True):
            results[len(plan)] = metrics(val, test)
            plan.append({"labels": [label], "kinds": [kind], "seed": seed, "overrides": {"x": label}})
    return plan, results


@pytest.mark.parametrize(
    "diffs", [(0.04, 0.05, 0.06), (0.1, -0.1, 0.0), (-0.2, -0.25, -0.21), (0.3, 0.1, 0.2)]
)
def test_paired_interval_equals_scipys_paired_t_test(diffs) -> None:
    b = {s: 0.5 + 0.01 * i for i, s in enumerate(SEEDS)}
    a = {s: b[s] + d for s, d in zip(SEEDS, diffs, strict=True)}
    got = paired_difference(a, b)
    ref = stats.ttest_rel([a[s] for s in SEEDS], [b[s] for s in SEEDS]).confidence_interval(0.95)
    assert got["mean"] == pytest.approx(sum(diffs) / 3)
    assert (got["low"], got["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    expected = "beats" if ref.low > 0 else "worse" if ref.high < 0 else "within noise"
    assert got["verdict"] == expected


def test_pairs_only_seeds_both_finished() -> None:
    got = paired_difference({1: 0.6, 2: 0.7, 3: 0.8}, {2: 0.5, 3: 0.6})
    assert got["seeds"] == [2, 3] and got["n"] == 2 and got["mean"] == pytest.approx(0.2)
    assert paired_difference({1: 0.6}, {1: 0.5})["verdict"] == "too few seeds"
    two = paired_difference({1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6})  # equal differences: a zero-width interval
    assert two["low"] == two["high"] == pytest.approx(0.1) and two["verdict"] == "too few seeds"


def test_a_confirmation_built_to_have_a_winner_a_tie_and_a_loser() -> None:
    plan, results = plan_and_results({
        ("trial #3", "trial"): [(0.80, 0.78), (0.82, 0.80), (0.81, 0.79)],  # +0.05 over dynacl, tight
        ("trial #7", "trial"): [(0.70, 0.74), (0.85, 0.72), (0.75, 0.76)],  # noisy: test within noise
        ("dynacl", "control"): [(0.76, 0.73), (0.77, 0.75), (0.76, 0.74)],
        ("paper", "control"): [(0.40, 0.35), (0.42, 0.36), (0.41, 0.34)],
    })
    conf = summarize_confirmation(plan, results)
    rows = {r["label"]: r for r in conf["rows"]}
    assert conf["winner"] == "trial #3" and conf["controls"] == ["dynacl", "paper"]
    assert rows["trial #3"]["val/robust_acc"]["mean"] == pytest.approx(0.81)
    assert rows["trial #3"]["val/robust_acc"]["std"] == pytest.approx(0.01)
    assert rows["trial #3"]["vs"]["dynacl"]["eval/robust_acc"]["verdict"] == "beats"
    assert rows["trial #7"]["vs"]["dynacl"]["eval/robust_acc"]["verdict"] == "within noise"
    assert rows["paper"]["vs"]["dynacl"]["eval/robust_acc"]["verdict"] == "worse"
    assert "paper" not in rows["paper"]["vs"]  # never against itself
    words = verdicts(conf)
    assert any(w.startswith("trial #3 beats dynacl on test RA: +0.050") for w in words)
    assert any(w.startswith("trial #7 is within noise of dynacl") for w in words)
    text = confirmation_markdown(conf)
    assert "Winner by mean val/robust_acc: **trial #3**" in text and "| trial #3 | trial | 3 |" in text


def test_the_winner_is_chosen_on_validation_never_on_test() -> None:
    plan, results = plan_and_results({
        ("a", "trial"): [(0.80, 0.50), (0.80, 0.50), (0.81, 0.50)],  # best on validation
        ("b", "trial"): [(0.70, 0.90), (0.70, 0.90), (0.71, 0.90)],  # best on test
    })
    assert summarize_confirmation(plan, results)["winner"] == "a"


def test_a_shared_run_counts_for_both_labels_and_unfinished_runs_are_listed() -> None:
    plan = [{"labels": ["trial #1", "dynacl"], "kinds": ["trial", "control"], "seed": s, "overrides": {}}
            for s in SEEDS]
    results = {0: metrics(0.7, 0.7), 1: metrics(0.72, 0.71)}  # the third seed did not finish
    conf = summarize_confirmation(plan, results)
    rows = {r["label"]: r for r in conf["rows"]}
    assert rows["trial #1"]["seeds"] == rows["dynacl"]["seeds"] == [1000, 1001]
    assert rows["trial #1"]["vs"] == {}  # the same runs: no comparison with itself
    assert conf["missing_runs"] == {"trial #1": 1, "dynacl": 1}
    assert all(not math.isnan(rows["dynacl"][m]["mean"]) for m in METRICS)
