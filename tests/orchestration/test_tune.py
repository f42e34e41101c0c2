"""A small real sweep on a local Ray, and every bad input rejected before anything starts."""

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import yaml

from acl_ray.cli import main
from acl_ray.config.pretrain import Config, load_config
from acl_ray.config.space import paper_point, validate_space
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.orchestration.trial import asha_rungs
from acl_ray.orchestration.tuner import to_tune
from tests.orchestration.test_study import check_study
from tests.orchestration.test_tracking import check_mlflow, check_wandb

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "base": {"data": {"name": "synthetic", "synthetic_size": 300, "batch_size": 32}, "run": {"epochs": 3}},
    "space": {
        "attack.steps": {"int": [1, 3]},
        "attack.eps": {"loguniform": [0.03, 0.3]},
        "data.batch_size": {"choice": [16, 32]},
        "augment.schedule": {"choice": ["constant", "dynacl"]},  # the later methods' knobs, strings included
        "loss.air_weight": {"choice": [0.0, 0.5]},
    },
    "sweep": {"num_samples": 4, "grace_period": 1, "reduction_factor": 2},
    "proxy": {"train_size": 100, "val_size": 60, "epochs": 5},
    "final": {"protocol": "slf", "epochs": 5, "eval": {"steps": 5}},
}


def test_small_sweep_reports_standard_and_robust_accuracy_for_every_trial(tmp_path, capsys,
                                                                          local_ray) -> None:
    """... and leaves every trial in its Optuna study, MLflow and W&B (the tracking extra)."""
    from acl_ray.orchestration.tune import run_sweep

    out = tmp_path / "sweep"
    spec = {**SMALL, "sweep": {**SMALL["sweep"], "tracking": ["mlflow", "wandb"]}}
    with warnings.catch_warnings(record=True) as caught:
        python_default_warnings()  # what `acl-ray sweep` would show, not pytest's capture
        rows = run_sweep(Sweep.from_dict(spec), out)
    assert not [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
    assert len(rows) == 4
    captured = capsys.readouterr()
    printed = captured.out
    for r in rows:  # stopped trials were evaluated by the Tune callback as they stopped, not afterwards
        assert (f"{r['trial_id']} post-hoc evaluation" in printed) == r["stopped_early"], printed
    for r in rows:
        for key in ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc"):
            assert r[key] is not None and 0 <= r[key] <= 1, (key, r)
        assert r["eval/robust_acc"] <= r["eval/standard_acc"]
        assert r["eval/source"] == ("posthoc" if r["stopped_early"] else "final")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["val/robust_acc"] == max(r["val/robust_acc"] for r in rows)
    first = rows[0]  # the paper point is enqueued first: eps 8/255, steps clipped to the range
    assert first["attack.eps"] == pytest.approx(8 / 255) and first["attack.steps"] == 3
    assert first["augment.schedule"] == "constant" and first["loss.air_weight"] == 0.0  # ACL's own point
    for r in rows:  # every trial trained what it sampled
        assert r["resolved_config"]["augment"]["schedule"] == r["augment.schedule"] in ("constant", "dynacl")
        assert r["resolved_config"]["loss"]["air_weight"] == r["loss.air_weight"] in (0.0, 0.5)
    best = load_config(out / "best_config.yaml")  # acl-ray pretrain --config accepts it as is
    assert best.attack.steps == summary["best"]["attack.steps"] and best.data.name == "synthetic"
    assert load_sweep(out / "sweep.yaml").to_dict() == Sweep.from_dict(spec).to_dict()
    check_study(out, rows)
    check_mlflow(out, rows)
    check_wandb(out, rows)
    for line in (f"acl-ray dashboard {out}", f"mlflow ui --backend-store-uri sqlite:///{out}/mlflow.db",
                 f"wandb sync {out}/wandb/offline-run-*"):
        assert line in printed, line
    # nothing a library logs reaches the terminal unasked (MLflow's table creation, Ray's note on
    # restartable actors); warnings: above
    assert not [x for x in captured.err.splitlines() if x.strip()], captured.err[-3000:]


def python_default_warnings() -> None:
    """Python's own warning filters (pytest's capture shows every warning): deprecations of library
    code and resource / import warnings are not shown, everything else once."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def test_space_conversion_and_paper_point() -> None:
    space = {"attack.steps": {"int": [1, 5]}, "data.batch_size": {"choice": [64, 128]}}
    t = to_tune(space)
    assert t["attack.steps"].lower == 1 and t["attack.steps"].upper == 6  # randint: upper exclusive
    assert paper_point(space, Config()) == {"attack.steps": 5, "data.batch_size": 128}
    strings = {"augment.schedule": {"choice": ["dynacl"]}, "loss.air_weight": {"choice": [0.25, 1.0]}}
    assert paper_point(strings, Config()) == {"augment.schedule": "dynacl", "loss.air_weight": 0.25}


def test_the_later_methods_sweep_file_searches_acl_and_their_knobs() -> None:
    s = load_sweep(ROOT / "configs" / "sweep_digits_later.yaml")
    default = load_sweep(ROOT / "configs" / "sweep_digits.yaml")
    validate_space(s.space, s.base)
    later = {"augment.schedule", "loss.adv_weight_schedule", "loss.air_weight", "loss.sir_weight"}
    assert set(s.space) == set(default.space) | later  # ACL's keys and the new ones, together
    # the same trials, epochs and searcher; the first ASHA rung later, where the schedules rank; its
    # best trial confirmed beside DynACL and the proxy every epoch (the main job skips the one and
    # thins the other to stay short)
    d = default.sweep
    assert dataclasses.replace(s.sweep, grace_period=d.grace_period, confirm=d.confirm, proxy_every=4) == d
    assert s.sweep.proxy_every == 1
    assert s.sweep.confirm.top_k == 1 and d.confirm.top_k == 0 and s.sweep.confirm.controls == ("dynacl",)
    assert s.base == default.base and asha_rungs(s) == (8,) and asha_rungs(default) == (4, 12)
    assert paper_point(s.space, s.base)["loss.air_weight"] == 0.0  # the first trial is plain ACL-DS


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"attack.epsilon": {"uniform": [0.1, 0.2]}}, "Unknown search-space key 'attack.epsilon'"),
        ({"attack.eps": {"uniform": [0.2, 0.2]}}, "low < high"),
        ({"attack.eps": {"uniform": [0.3, 0.1]}}, "low < high"),
        ({"attack.eps": {"gauss": [0.1, 0.2]}}, "kind in int, uniform"),
        ({"attack.eps": {"loguniform": [0.0, 0.2]}}, "low > 0"),
        ({"data.batch_size": {"choice": []}}, "at least one value"),
        ({"attack.eps": {"uniform": [0.1, 2.0]}}, "attack.eps"),
        ({"data.batch_size": {"choice": [64, 4096]}}, "exceeds the training split"),
        ({}, "empty"),
    ],
)
def test_bad_search_spaces(space, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_space(space, Config(), max_batch=1257)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.num_samples=0", "sweep.num_samples"),
        ("sweep.searcher=grid", "sweep.searcher"),
        ("sweep.workrs=2", "Unknown config key 'sweep.workrs'"),
        ("final.protocol=xyz", "finetune.protocol"),
        ("eval.eps=2", "eval.eps"),
        ("attack.eps=-1", "attack.eps"),
        ("sweep.tracking=neptune", "sweep.tracking='neptune': must be one of mlflow, wandb"),
        ("sweep.study_storage=study.db", "sweep.study_storage"),
    ],
)
def test_bad_sweep_settings(override, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_sweep(None, [override])


def test_cli_bad_input_before_anything_starts(tmp_path, capsys) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "space": {"attack.nope": {"int": [1, 2]}}}))
    assert main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "a")]) == 2
    assert "attack.nope" in capsys.readouterr().out and not (tmp_path / "a").exists()
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().out
    cfg.write_text(yaml.safe_dump({**SMALL, "sweep": {"workers": 4}}))  # 4 CPUs on a 2-CPU Ray
    assert main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "b")]) == 2
    assert "A trial needs 4 CPU" in capsys.readouterr().out and not (tmp_path / "b").exists()
