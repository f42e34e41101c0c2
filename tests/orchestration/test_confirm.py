"""Confirmation on a real small sweep: the top trial and a control trained again from scratch at full
length with fresh seeds as Tune trials, statistics and the confirmed winner written, its runs tracked
beside the search's; ``acl-ray confirm`` on a finished confirmation trains nothing again."""

import json
from pathlib import Path
from typing import Any

import yaml

from acl_ray.config.pretrain import load_config
from acl_ray.config.sweep import Sweep
from acl_ray.orchestration.tracking import CONFIG_FILE, MLFLOW_ARTIFACTS, MLFLOW_DB
from acl_ray.results.confirm import CONFIRM_DIR, PLAN_FILE, RUN_KEY, read_confirmation
from acl_ray.results.trials import Trial, read_reports, read_trials
from tests.orchestration.test_tracking import check_mlflow
from tests.orchestration.test_tune import SMALL


def check_tracked(out: Path, spec: dict[str, Any], plan: list[dict[str, Any]], trials: list[Trial]) -> None:
    """The confirmation's MLflow runs, an experiment of their own (``<sweep>/confirm``): one finished run
    per confirmation trial, its plan entry's overrides and labels as parameters, its final numbers, its
    resolved config. (W&B's: test_tracking.py, without a logging actor of its own here.)"""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / MLFLOW_DB}")
    experiment = client.get_experiment_by_name(f"{out.name}/{CONFIRM_DIR}")
    assert experiment is not None
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {t.trial_id for t in trials}
    for t in trials:
        entry = plan[int(t.config[RUN_KEY])]
        run, final = runs[t.trial_id], t.final["eval/robust_acc"]
        params = {k: str(v) for k, v in entry["overrides"].items()}
        assert run.data.params == {**params, "confirm/labels": ", ".join(entry["labels"])}
        assert run.info.status == "FINISHED"
        assert [m.value for m in client.get_metric_history(run.info.run_id, "eval/robust_acc")] == [final]
        resolved = Sweep.from_dict(spec).base.override(entry["overrides"]).to_dict()
        config = out / MLFLOW_ARTIFACTS / run.info.run_id / "artifacts" / CONFIG_FILE
        assert yaml.safe_load(config.read_text()) == resolved


def test_a_sweep_then_its_confirmation_and_a_resumed_confirm_that_trains_nothing(tmp_path, local_ray) -> None:
    from acl_ray.orchestration.tune import confirm_sweep, run_sweep

    spec = {**SMALL, "base": {**SMALL["base"], "run": {"epochs": 2}},
            "sweep": {"num_samples": 2, "scheduler": "fifo", "tracking": ["mlflow"]}}
    out = tmp_path / "sweep"
    rows = run_sweep(Sweep.from_dict(spec), out, analysis=False)
    assert not (out / CONFIRM_DIR).exists()  # sweep.confirm.top_k is 0 by default
    best = max(rows, key=lambda r: r["val/robust_acc"])

    sets = ["sweep.confirm.top_k=1", "sweep.confirm.seeds=2", "sweep.confirm.controls=acl"]
    conf = confirm_sweep(out, overrides=sets)
    plan = json.loads((out / CONFIRM_DIR / PLAN_FILE).read_text())
    label = f"trial #{best['trial_index']} {best['trial_id']}"
    assert [(r["labels"], r["seed"]) for r in plan] == [([label], 1000), ([label], 1001),
                                                      (["acl"], 1000), (["acl"], 1001)]
    assert plan[0]["overrides"] == {**{k: best[k] for k in spec["space"]}, "run.seed": 1000}
    trials = read_trials(out / CONFIRM_DIR)
    assert len(trials) == 4 and all(t.epoch == 2 and t.final is not None for t in trials)  # full length
    by_run = {t.config["confirm/run"]: t for t in trials}
    rows_by = {r["label"]: r for r in conf["rows"]}
    for i in range(len(plan)):  # each trained from scratch: epochs 1 and 2, nothing restored
        assert [r["epoch"] for r in read_reports(by_run[i].dir)] == [1, 2]
    for lab, runs in ((label, (0, 1)), ("acl", (2, 3))):  # the statistics are over those runs
        values = [by_run[i].final["eval/robust_acc"] for i in runs]
        assert rows_by[lab]["eval/robust_acc"]["mean"] == sum(values) / 2
    assert set(rows_by) == {label, "acl"} and conf["controls"] == ["acl"]
    for r in conf["rows"]:
        assert r["seeds"] == [1000, 1001] and r["val/robust_acc"]["n"] == 2
    assert rows_by[label]["vs"]["acl"]["eval/robust_acc"]["n"] == 2
    assert read_confirmation(out) == json.loads((out / "confirmation.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["confirmed_best"]["label"] == conf["winner"]
    winner = rows_by[conf["winner"]]
    chosen = load_config(out / "best_config.yaml")  # the confirmed winner, without a confirmation seed
    assert chosen.to_dict() == Sweep.from_dict(spec).base.override(winner["overrides"]).to_dict()

    check_tracked(out, spec, plan, trials)
    check_mlflow(out, rows)  # the search's runs: as they were, none of the confirmation's among them

    report = (out / "analysis" / "report.md").read_text()  # confirm_sweep re-runs the analysis
    assert f"Winner by mean val/robust_acc: **{conf['winner']}**" in report

    lines = {t.trial_id: len(read_reports(t.dir)) for t in trials}
    again = confirm_sweep(out, overrides=["sweep.confirm.top_k=3"])  # a started confirmation keeps its plan
    assert json.loads((out / CONFIRM_DIR / PLAN_FILE).read_text()) == plan
    assert {t.trial_id: len(read_reports(t.dir)) for t in read_trials(out / CONFIRM_DIR)} == lines
    assert again["rows"] == conf["rows"]
    assert yaml.safe_load((out / "sweep.yaml").read_text())["sweep"]["confirm"]["top_k"] == 0


def test_confirm_bad_input_is_one_line_before_ray_starts(tmp_path, capsys) -> None:
    from acl_ray.cli import main

    assert main(["confirm", str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().out
    Sweep.from_dict(SMALL).save(tmp_path)
    assert main(["confirm", str(tmp_path), "--set", "attack.eps=0.1"]) == 2
    assert "sweep.confirm.* keys only" in capsys.readouterr().out
    assert main(["confirm", str(tmp_path), "--set", "sweep.confirm.controls=best"]) == 2
    assert "Illegal sweep.confirm.controls='best': must be one of paper, acl, dynacl, dynacl-air" in (
        capsys.readouterr().out)
    assert main(["confirm", str(tmp_path), "--set", "sweep.confirm.top_k=1"]) == 2  # no summary.json yet
    assert "finish it first" in capsys.readouterr().out
    assert not (tmp_path / "confirm").exists()
