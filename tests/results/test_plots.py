"""The analysis figures: no matplotlib warning reaches the terminal, confirmed configurations drawn
with their spread."""

import warnings
from typing import Any

import pytest
from matplotlib.axes import Axes

from acl_ray.config.sweep import load_sweep
from acl_ray.results import plots
from acl_ray.results.analyze import analyze, load_trials
from acl_ray.results.budget import common_rung, measured_at
from tests.results.fake_sweep import A_BAD, A_GOOD, B_FAST, A, B, make_budget_sweep


def test_curves_without_labels_draw_no_legend_and_warn_nothing(tmp_path) -> None:
    # over 20 trials the curves carry no labels: matplotlib warned "No artists with labels found"
    rows = [{"trial_id": f"t{i}", "trial_index": i, "stop_reason": "asha"} for i in range(25)]
    epochs = [{"trial_id": r["trial_id"], "epoch": e, "proxy/robust_acc": 0.1} for r in rows for e in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_curves(tmp_path / "curves.png", rows, epochs, total=3)
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_no_warning_reaches_the_terminal_and_plot_warnings_go_to_the_report(tmp_path, monkeypatch) -> None:
    sweep = make_budget_sweep(tmp_path / "sw")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analyze(sweep, show=False)
    assert [str(w.message) for w in caught] == []
    assert "Plot warnings" not in (sweep / "analysis" / "report.md").read_text()

    draw = plots.plot_pareto

    def warns(*args: Any) -> None:
        warnings.warn("a glyph is missing", UserWarning, stacklevel=1)
        draw(*args)

    monkeypatch.setattr(plots, "plot_pareto", warns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analyze(sweep, show=False)
    assert [str(w.message) for w in caught] == []
    report = (sweep / "analysis" / "report.md").read_text()
    assert "Plot warnings (kept out of the terminal): UserWarning: a glyph is missing" in report


def test_params_plot_draws_confirmed_configurations_with_error_bars(tmp_path, monkeypatch) -> None:
    sweep = make_budget_sweep(tmp_path / "sw")
    s = load_sweep(sweep / "sweep.yaml")
    rows, epochs = load_trials(sweep, s)
    drawn: list[tuple[list[Any], list[float], list[float]]] = []
    errorbar = Axes.errorbar

    def spy(self: Axes, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        drawn.append((list(x), list(y), list(kwargs["yerr"])))
        return errorbar(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", spy)
    confirmed = [
        {A: A_GOOD, B: B_FAST, "mean": 0.79, "std": 0.02, "seeds": 3},
        {A: A_BAD, B: B_FAST, "mean": 0.61, "std": None, "seeds": 1},
    ]
    rung = common_rung(rows, epochs, "val/robust_acc")
    metric = "val/robust_acc"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_params(
            tmp_path / "p.png", s, rows, metric, rung, measured_at(rows, epochs, metric), confirmed
        )
    # one panel per searched key (bottom row only): x = the key's value, y = mean, error = std
    assert drawn == [
        ([A_GOOD, A_BAD], [0.79, 0.61], [0.02, 0.0]),
        ([B_FAST, B_FAST], [0.79, 0.61], pytest.approx([0.02, 0.0])),
    ]
