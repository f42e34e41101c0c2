"""Importance and parameter plots compare trials at one budget (the common rung, full length),
never over the mix of 4-, 12- and 20-epoch values that ASHA's stopped trials leave."""

import csv
from typing import Any

import pytest

from acl_ray.config.sweep import load_sweep
from acl_ray.results.analyze import analyze, load_trials
from acl_ray.results.budget import budgets, common_rung, full_length, measured_at
from acl_ray.results.importance import importance
from tests.results.fake_sweep import A, B, make_budget_sweep, rung_proxy


def _ranking(imp: list[dict[str, str]], budget: str) -> list[str]:
    rows = sorted((r for r in imp if r["budget"] == budget), key=lambda r: -float(r["importance"]))
    return [r["param"] for r in rows]


def test_importance_ranks_at_each_budget_and_never_over_the_mix(tmp_path) -> None:
    sweep = make_budget_sweep(tmp_path / "sw")
    analyze(sweep, show=False)
    out = sweep / "analysis"
    imp = list(csv.DictReader((out / "importance.csv").open()))
    assert {(r["budget"], r["epoch"], r["metric"], r["trials"]) for r in imp} == {
        ("rung", "4", "proxy/robust_acc", "12"),  # the failed trial (epoch 2) is left out
        ("full", "20", "val/robust_acc", "5"),
    }
    assert _ranking(imp, "full") == [A, B]  # A decides the 20-epoch value
    assert _ranking(imp, "rung") == [B, A]  # B decides how fast a trial starts

    # What the old analysis did: fANOVA over the final and post-hoc values, which come from 4-, 12-
    # and 20-epoch models. It ranks by survival (B) and reverses the full-length ranking, so this
    # test fails if the full-length budget is fed the mix.
    s = load_sweep(sweep / "sweep.yaml")
    rows, _ = load_trials(sweep, s)
    assert sorted({r["eval_epoch"] for r in rows if r["val/robust_acc"] is not None}) == [4, 12, 20]
    mixed, _ = importance(s, rows, "val/robust_acc")
    assert [k for k, _ in mixed] == [B, A] != _ranking(imp, "full")

    report = (out / "report.md").read_text()
    assert "common rung: proxy/robust_acc at epoch 4 (12 trials)" in report
    assert "full length: val/robust_acc at epoch 20 (5 trials)" in report
    assert "1 failed or unfinished trial(s) ended before it, left out" in report
    assert "5 at epoch 20, 1 at epoch 12, 6 at epoch 4" in report  # the bottom row of params.png


def test_the_common_rung_takes_each_trials_proxy_at_exactly_that_epoch(tmp_path) -> None:
    sweep = make_budget_sweep(tmp_path / "sw")
    s = load_sweep(sweep / "sweep.yaml")
    rows, epochs = load_trials(sweep, s)
    rung, full = budgets(rows, epochs, "val/robust_acc", s.base.run.epochs)
    assert (rung.epoch, rung.metric, rung.skipped) == (4, "proxy/robust_acc", "")
    expected = {
        r["trial_index"]: rung_proxy({A: r[A], B: r[B]}, (r["trial_index"] - 1) // 4)
        for r in rows
        if r["trial_index"] <= 12
    }
    assert {r["trial_index"]: r["proxy/robust_acc"] for r in rung.rows} == pytest.approx(expected)
    assert (full.epoch, full.skipped) == (20, "")
    assert sorted(r["trial_index"] for r in full.rows) == [4, 6, 8, 10, 12]
    assert all(r["eval_source"] == "final" and r["eval_epoch"] == 20 for r in full.rows)
    # the proxy as the metric: full length is the proxy at epoch 20 of the same 5 trials
    full_proxy = full_length(rows, epochs, "proxy/robust_acc", 20)
    assert sorted(r["trial_index"] for r in full_proxy.rows) == [4, 6, 8, 10, 12]
    at = measured_at(rows, epochs, "proxy/robust_acc")
    assert sorted(at.values()) == [2] + [4] * 6 + [12] + [20] * 5


def _epochs(reported: dict[str, list[int]]) -> list[dict[str, Any]]:
    return [
        {"trial_id": t, "epoch": e, "proxy/robust_acc": 0.01 * e + 0.1 * i}
        for i, (t, es) in enumerate(reported.items())
        for e in es
    ]


def _rows(reasons: dict[str, str]) -> list[dict[str, Any]]:
    return [{"trial_id": t, "stop_reason": r, "val/robust_acc": None} for t, r in reasons.items()]


@pytest.mark.parametrize(
    ("reasons", "reported", "epoch", "inside"),
    [
        # a failed trial (c) does not pull the rung down; an unfinished one (d) past it is in
        (
            {"a": "completed", "b": "asha", "c": "error", "d": "killed/unfinished"},
            {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3, 4], "c": [1], "d": [1, 2, 3, 4, 5]},
            4,
            ["a", "b", "d"],
        ),
        # only unfinished trials (a killed sweep): every trial that reported sets the rung
        ({"d": "killed/unfinished", "e": "killed/unfinished"}, {"d": [1, 2, 3], "e": [1, 2]}, 2, ["d", "e"]),
        # the proxy every 2 epochs in one trial: the largest epoch both reported, not the first
        ({"a": "completed", "b": "asha"}, {"a": [2, 4, 6], "b": [1, 2, 3]}, 2, ["a", "b"]),
        ({"a": "completed", "b": "asha"}, {"a": [2], "b": [1]}, None, []),  # no common epoch
        ({"a": "error"}, {}, None, []),  # nothing reported
    ],
)
def test_common_rung_rules(reasons, reported, epoch, inside) -> None:
    rung = common_rung(_rows(reasons), _epochs(reported), "val/robust_acc")
    assert rung.epoch == epoch
    assert [r["trial_id"] for r in rung.rows] == inside
    assert bool(rung.skipped) == (epoch is None)
    values = {(e["trial_id"], e["epoch"]): e["proxy/robust_acc"] for e in _epochs(reported)}
    assert all(r["proxy/robust_acc"] == values[r["trial_id"], epoch] for r in rung.rows)


def test_full_length_needs_three_trials_run_to_the_end() -> None:
    def row(t: str, source: str, at: int) -> dict[str, Any]:
        return {"trial_id": t, "val/robust_acc": 0.5, "eval_source": source, "eval_epoch": at}

    rows = [row("a", "final", 20), row("b", "final", 20), row("c", "posthoc", 12)]
    short = full_length(rows, [], "val/robust_acc", 20)
    assert [r["trial_id"] for r in short.rows] == ["a", "b"]
    assert short.skipped.startswith("skipped: 2 trial(s) ran to run.epochs = 20")
    assert not full_length([*rows, row("d", "final", 20)], [], "val/robust_acc", 20).skipped
