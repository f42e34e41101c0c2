"""A sweep's Optuna study on disk (acl_ray.orchestration.study, search) and `acl-ray dashboard` serving it.

The study of a real sweep is checked by :func:`check_study`, called on the sweeps of test_tune.py and
test_tune_resume.py (no Ray of its own here).
"""

import json
import pickle
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from acl_ray.cli import main
from acl_ray.config.sweep import STUDY_FILE, SWEEP_FILE, Sweep, load_sweep
from acl_ray.orchestration import tracking
from acl_ray.orchestration.search import build_searcher
from acl_ray.orchestration.study import (
    POSTHOC_ATTR,
    new_study_storage,
    open_storage,
    record_posthoc,
    stored_study,
)
from acl_ray.orchestration.tuner import to_tune
from acl_ray.results.trials import read_trials

ROOT = Path(__file__).resolve().parents[2]
PROXY = "proxy/robust_acc"
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def study_of(out: Path) -> optuna.Study:
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / STUDY_FILE}")


def check_study(out: Path, rows: list[dict[str, Any]]) -> optuna.Study:
    """One Optuna trial per Tune trial, holding what the trial folders and the summary hold: parameters
    (params.json), the proxy per epoch (result.json), the state and the final numbers."""
    study = study_of(out)
    trials = {t.trial_id: t for t in read_trials(out, posthoc=out / "posthoc", unsaved=False)}
    by_id = {ot.user_attrs["trial_id"]: ot for ot in study.trials}
    # the dashboard names its axes by the objective
    assert study.metric_names == [load_sweep(out / SWEEP_FILE).sweep.metric]
    assert len(by_id) == len(study.trials) and set(by_id) >= set(trials)
    # besides: a trial a killed driver started after it last saved (Tune starts it anew), as FAIL
    assert all(by_id[t].state == optuna.trial.TrialState.FAIL for t in set(by_id) - set(trials))
    summary = {r["trial_id"]: r for r in rows}
    for tid, t in trials.items():
        ot, row = by_id[tid], summary[tid]
        assert ot.params == t.config, tid
        proxy = {int(r["epoch"]): r[PROXY] for r in t.results if r.get(PROXY) is not None}
        assert ot.intermediate_values == proxy and proxy, tid
        assert ot.user_attrs["epoch"] == row["epoch"]
        if row["eval/source"] == "final":
            assert ot.state == COMPLETE and ot.value == row["val/robust_acc"]
            for key in ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc"):
                assert ot.user_attrs[key] == row[key], key
        else:  # stopped by ASHA, told as PRUNED; its post-hoc numbers came after, into the study's attributes
            assert row["stopped_early"] and ot.state == PRUNED
            posthoc = study.user_attrs[f"{POSTHOC_ATTR}{ot.number}"]
            assert posthoc["trial_id"] == tid and posthoc["eval/robust_acc"] == row["eval/robust_acc"]
    return study


def tiny_sweep(folder: Path, overrides: tuple[str, ...] = ()) -> Sweep:
    folder.mkdir(parents=True)
    s = Sweep.from_dict({"base": {"run": {"epochs": 4}}}, overrides)
    s.save(folder)
    return s


def fill(study: optuna.Study) -> None:
    """Four trials as a sweep leaves them: complete, pruned with intermediate values, failed, running."""
    for i in range(4):
        t = study.ask({"attack.eps": optuna.distributions.FloatDistribution(0.03, 0.3)})
        t.set_user_attr("trial_id", f"t{i}")
        t.report(0.1 * i, 1)
        if i < 3:
            state = [COMPLETE, PRUNED, optuna.trial.TrialState.FAIL][i]
            study.tell(t, 0.5 if i == 0 else None, state=state)


def test_the_dashboard_serves_the_study_on_loopback_and_stops_on_ctrl_c(tmp_path) -> None:
    out = tmp_path / "s1"
    s = tiny_sweep(out)
    url = s.study_url(out)
    assert url == f"sqlite:///{out / STUDY_FILE}"
    fill(optuna.create_study(study_name="s1", storage=open_storage(url), direction="maximize"))
    cmd = [sys.executable, "-m", "acl_ray.cli", "dashboard", str(out), "--port", "0"]  # 0: a free port
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("optuna-dashboard: http://127.0.0.1:"), first
        address = first.split()[1]  # http://127.0.0.1:PORT/dashboard/studies/ID
        tunnel = proc.stdout.readline()
        port = address.split(":")[2].split("/")[0]
        assert f"ray attach cluster.yaml -p {port}" in tunnel and f"ssh -L {port}:127.0.0.1:{port}" in tunnel
        base = address.split("/dashboard")[0]
        with urllib.request.urlopen(f"{base}/api/studies", timeout=60) as r:
            studies = json.load(r)["study_summaries"]
        assert [st["study_name"] for st in studies] == ["s1"]
        assert address.endswith(f"/dashboard/studies/{studies[0]['study_id']}")
        with urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=60) as r:
            trials = json.load(r)["trials"]
        assert [(t["number"], t["state"]) for t in trials] == [
            (0, "Complete"), (1, "Pruned"), (2, "Fail"), (3, "Running")
        ]
        assert trials[1]["intermediate_values"] == [{"step": 1, "value": 0.1}]
        assert trials[0]["user_attrs"] == [{"key": "trial_id", "value": "t0"}]
        with urllib.request.urlopen(address, timeout=60) as r:  # the page a browser opens
            assert r.status == 200 and b"<html" in r.read().lower()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest and "GET /api" not in rest  # no request log, no stack on Ctrl-C


def test_dashboard_refusals_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().out
    assert main(["dashboard", str(tmp_path), "--port", "70000"]) == 2
    assert "Illegal --port=70000" in capsys.readouterr().out
    pbt = tmp_path / "pbt"
    tiny_sweep(pbt, ("sweep.scheduler=pbt", "sweep.perturbation_interval=2"))
    assert main(["dashboard", str(pbt)]) == 2
    said = capsys.readouterr().out
    said = " ".join(said.split())
    assert "sweep.scheduler=pbt sweep: a population has no searcher, so no Optuna study" in said
    fresh = tmp_path / "fresh"
    tiny_sweep(fresh)
    assert main(["dashboard", str(fresh)]) == 2  # no trial started yet: no study, and no file made
    assert "holds no study 'fresh' yet" in " ".join(capsys.readouterr().out.split())
    assert not (fresh / STUDY_FILE).exists()
    optuna.create_study(study_name="fresh", storage=open_storage(Sweep.from_dict({}).study_url(fresh) or ""))
    monkeypatch.setitem(tracking.MODULES, "dashboard", "optuna_dashboard_not_installed")
    assert main(["dashboard", str(fresh)]) == 2
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and 'pip install -c constraints.txt -e ".[tracking]"' in said, said


def test_a_new_sweep_refuses_a_storage_that_holds_its_study_name(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    s = Sweep.from_dict({}, [f"sweep.study_storage={url}"])
    assert s.study_url(tmp_path / "s1") == url  # sweep.study_storage replaces DIR/study.db
    assert new_study_storage(s, tmp_path / "s1") is not None
    optuna.create_study(study_name="s1", storage=url)
    with pytest.raises(ValueError, match="already holds a study named 's1'"):
        new_study_storage(s, tmp_path / "s1")
    assert new_study_storage(s, tmp_path / "s2") is not None  # another folder name, another study
    with pytest.raises(ValueError, match="Illegal sweep.study_storage"):
        open_storage("postgresql+nosuchdriver://u@h/db")


def test_a_restored_searcher_continues_its_stored_study_without_enqueuing_the_points_again(tmp_path) -> None:
    """Tune restores a sweep's searcher by setting up the one pickled with the Tuner (before it had a
    study) and then loading its saved state; a stored study must not get the reference points again."""
    s = Sweep.from_dict({}, ["sweep.num_samples=6"])
    url = f"sqlite:///{tmp_path / STUDY_FILE}"
    pristine = pickle.dumps(build_searcher(s, open_storage(url), "s1"))  # as in tuner.pkl
    first = pickle.loads(pristine)
    first.set_search_properties(None, None, to_tune(s.space))
    paper = first.suggest("a")  # the enqueued paper point
    first.on_trial_result("a", {"epoch": 1, "proxy/robust_acc": 0.3})
    first.on_trial_complete("a", {"epoch": 1, "val/robust_acc": 0.4, "eval/robust_acc": 0.38})
    first.suggest("e")
    first.on_trial_complete("e", None, error=True)  # failed for good (Tune's retries spent)
    first.suggest("b")
    first.on_trial_result("b", {"epoch": 1, "proxy/robust_acc": 0.2})
    first.save(str(tmp_path / "searcher.pkl"))
    first.on_trial_result("b", {"epoch": 2, "proxy/robust_acc": 0.25})  # after the last save, then killed
    first.on_trial_complete("b", {"epoch": 2})  # told (PRUNED) after the last save
    first.suggest("x")  # started after the last save: Tune will not know it either

    again = pickle.loads(pristine)
    again.set_search_properties(None, None, to_tune(s.space))  # the study exists: nothing enqueued
    again.restore(str(tmp_path / "searcher.pkl"))
    again.on_trial_result("b", {"epoch": 2, "proxy/robust_acc": 0.25})  # b trains epoch 2 again
    again.on_trial_result("b", {"epoch": 2, "proxy/robust_acc": 0.25, "replayed": True})
    again.on_trial_complete("b", {"epoch": 2})  # the study has it finished already: skipped, no error
    proposed = again.suggest("c")
    study = optuna.load_study(study_name="s1", storage=url)
    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    assert [t.state for t in study.trials] == [COMPLETE, failed, PRUNED, failed, running]  # x: lost, killed
    assert study.metric_names == ["val/robust_acc"]  # named once, kept by the resumed searcher
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["a", "e", "b", "x", "c"]
    assert proposed != paper  # not the reference point run a second time
    assert study.trials[0].user_attrs == {"trial_id": "a", "epoch": 1, "val/robust_acc": 0.4,
                                          "eval/robust_acc": 0.38}
    assert study.trials[2].intermediate_values == {1: 0.2, 2: 0.25} and study.trials[2].value == 0.25
    assert record_posthoc(url, "s1", [{"trial_id": "b", "val/robust_acc": 0.3, "eval/robust_acc": 0.31,
                                       "eval/attack": "pgd20-ce+cw", "time/eval_s": 4.0}]) == 1
    assert optuna.load_study(study_name="s1", storage=url).user_attrs[f"{POSTHOC_ATTR}2"] == {
        "trial_id": "b", "val/robust_acc": 0.3, "eval/robust_acc": 0.31, "eval/attack": "pgd20-ce+cw"
    }


def test_stored_study_never_creates_a_file(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / STUDY_FILE}"
    assert not stored_study(url, "s1") and not (tmp_path / STUDY_FILE).exists()
    optuna.create_study(study_name="s1", storage=url)
    assert stored_study(url, "s1") and not stored_study(url, "s2")


def test_study_settings_are_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"Illegal sweep.study_storage='study.db': must be empty"):
        Sweep.from_dict({}, ["sweep.study_storage=study.db"])
    with pytest.raises(ValueError, match="sweep.study_storage.*a population has no searcher"):
        Sweep.from_dict({}, ["sweep.scheduler=pbt", "sweep.study_storage=sqlite:///x.db"])
    assert Sweep.from_dict({}, ["sweep.scheduler=pbt"]).study_url(tmp_path) is None
    default = Sweep.from_dict({}).study_url(Path("rel"))  # an absolute path: the sweep resolves its folder
    assert default == f"sqlite:///{Path('rel').resolve() / STUDY_FILE}"


def test_a_sweep_started_before_studies_were_kept_resumes_without_one(tmp_path) -> None:
    """Its pickled post-hoc callback had one listener, its study.db does not exist: neither breaks."""
    from acl_ray.orchestration.posthoc import Posthoc

    heard: list[str] = []
    old = Posthoc.__new__(Posthoc)
    old.__setstate__({"notify": lambda tid, metrics: heard.append(tid), "_pending": {}})
    for notify in old.notify:
        notify("t1", None)
    assert heard == ["t1"]
    url = f"sqlite:///{tmp_path / STUDY_FILE}"
    assert not stored_study(url, "old")
    assert record_posthoc(url, "old", [{"trial_id": "t1", "val/robust_acc": 0.5}]) == 0
