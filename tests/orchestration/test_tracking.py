"""sweep.tracking: MLflow and W&B runs of a sweep (acl_ray.orchestration.tracking).

What a real sweep wrote is checked by :func:`check_mlflow` and :func:`check_wandb`, called on the
sweep of test_tune.py (no Ray of its own here); this module checks the settings and the defaults.
"""

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from acl_ray.cli import main
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.orchestration import tracking
from acl_ray.orchestration.tracking import (
    CONFIG_FILE,
    MLFLOW_ARTIFACTS,
    MLFLOW_DB,
    WANDB_DIR,
    hints,
    wandb_mode,
)
from acl_ray.results.trials import Trial, read_trials

FINAL = ("val/standard_acc", "val/robust_acc", "eval/standard_acc", "eval/robust_acc")
PER_EPOCH = ("train/loss", "proxy/robust_acc", "time/train_s")


def sweep_trials(out: Path) -> dict[str, Trial]:
    return {t.trial_id: t for t in read_trials(out, posthoc=out / "posthoc", unsaved=False)}


def per_epoch(t: Trial, key: str) -> list[tuple[int, float]]:
    """(epoch, value) of ``key`` in the trial folder's result.json."""
    return [(int(r["epoch"]), r[key]) for r in t.results if r.get(key) is not None]


def check_mlflow(out: Path, rows: list[dict[str, Any]]) -> None:
    """One finished MLflow run per trial in DIR/mlflow.db: its searched values as parameters, the trial
    folder's numbers at the same epochs, its final numbers (post hoc for a stopped trial), its config."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / MLFLOW_DB}")
    experiment = client.get_experiment_by_name(out.name)
    assert experiment is not None
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    trials, summary = sweep_trials(out), {r["trial_id"]: r for r in rows}
    assert set(runs) == set(trials) and len(client.search_runs([experiment.experiment_id])) == len(trials)
    for tid, t in trials.items():
        run, row = runs[tid], summary[tid]
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in t.config.items()}
        for key in PER_EPOCH:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == per_epoch(t, key), (tid, key)
        for key in FINAL:
            (final,) = client.get_metric_history(run.info.run_id, key)
            assert (final.step, final.value) == (row["epoch"], row[key]), (tid, key)
        # the artifacts are in the sweep folder: DIR/mlartifacts/<run>/artifacts/
        assert run.info.artifact_uri == (out / MLFLOW_ARTIFACTS / run.info.run_id / "artifacts").as_uri()
        config = out / MLFLOW_ARTIFACTS / run.info.run_id / "artifacts" / CONFIG_FILE
        assert yaml.safe_load(config.read_text()) == row["resolved_config"]


def wandb_records(path: Path) -> list[Any]:
    """The records of a W&B run file (``run-<id>.wandb``): a 7-byte header (":W&B", magic, version),
    then LevelDB log records (checksum, length, type; FULL / FIRST / MIDDLE / LAST) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def wandb_history(path: Path) -> dict[int, dict[str, Any]]:
    """The logged rows of a W&B run file by step (rows logged at one step merged)."""
    steps: dict[int, dict[str, Any]] = {}
    for r in wandb_records(path):
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            steps.setdefault(int(items["_step"]), {}).update(items)
    return steps


def check_wandb(out: Path, rows: list[dict[str, Any]]) -> None:
    """One offline W&B run per trial in DIR/wandb: every epoch the trial folder holds at its step with
    the same numbers, the final numbers at the last one (post hoc for a stopped trial), its config file."""
    runs = {d.name.rsplit("-", 1)[1]: d for d in (out / WANDB_DIR).glob("offline-run-*")}
    trials, summary = sweep_trials(out), {r["trial_id"]: r for r in rows}
    assert set(runs) == set(trials)
    for tid, t in trials.items():
        steps, row = wandb_history(runs[tid] / f"run-{tid}.wandb"), summary[tid]
        assert sorted(steps) == [int(r["epoch"]) for r in t.results], tid
        for key in PER_EPOCH:
            logged = [(e, steps[e][key]) for e in sorted(steps) if steps[e].get(key) is not None]
            folder = per_epoch(t, key)
            assert [e for e, _ in logged] == [e for e, _ in folder], (tid, key)
            assert [v for _, v in logged] == pytest.approx([v for _, v in folder]), (tid, key)
        for key in FINAL:
            assert steps[row["epoch"]][key] == pytest.approx(row[key]), (tid, key)
        config = yaml.safe_load((runs[tid] / "files" / CONFIG_FILE).read_text())
        assert config == row["resolved_config"]
    # every run written by the sweep's one logging actor (not one process per trial)
    assert len({pid for d in runs.values() for pid in wandb_pids(d)}) == 1


def wandb_pids(run: Path) -> set[int]:
    """The processes that wrote a W&B run: those of the lines of its logs/debug.log."""
    return {int(p) for p in re.findall(r":(\d+) \[\w+\.py:", (run / "logs" / "debug.log").read_text())}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("neptune", "Illegal sweep.tracking='neptune': must be one of mlflow, wandb"),
        ("mlflow,mlflow", "Illegal sweep.tracking='mlflow,mlflow': must be without repeats"),
        ("[wandb, tensorboard]", "Illegal sweep.tracking='tensorboard'"),
    ],
)
def test_bad_tracking_values_name_the_field_and_the_choices(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_sweep(None, [f"sweep.tracking={value}"])


def test_tracking_is_off_by_default_and_takes_a_list_or_commas() -> None:
    assert Sweep.from_dict({}).sweep.tracking == ()
    assert load_sweep(None, ["sweep.tracking=[mlflow, wandb]"]).sweep.tracking == ("mlflow", "wandb")
    assert load_sweep(None, ["sweep.tracking=wandb,mlflow"]).sweep.tracking == ("wandb", "mlflow")
    assert Sweep.from_dict({"sweep": {"tracking": ["mlflow"]}}).to_dict()["sweep"]["tracking"] == ["mlflow"]


def test_a_missing_tracker_is_one_line_before_anything_starts(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(tracking.MODULES, "wandb", "wandb_not_installed")
    out = tmp_path / "s"
    assert main(["sweep", "--out", str(out), "--set", "sweep.tracking=mlflow,wandb"]) == 2
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and not out.exists()
    assert "sweep.tracking=wandb needs the tracking extra" in said
    assert 'pip install -c constraints.txt -e ".[tracking]"' in said


def test_wandb_is_offline_unless_logged_in(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert wandb_mode() == "offline"
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert wandb_mode() == "online"  # wandb login keeps its key there
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's own choice wins
    assert wandb_mode() == "disabled"


def test_the_closing_hints_give_one_command_each(tmp_path, monkeypatch) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = load_sweep(None, ["sweep.tracking=mlflow,wandb"])
    mlflow, wandb = hints(s, tmp_path / "s1")
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/s1/mlflow.db " in mlflow
    assert f"wandb sync {tmp_path}/s1/wandb/offline-run-*" in wandb
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    remote = "MLflow: the runs are in http://mlflow.internal:5000, experiment 's1'"
    assert hints(s, tmp_path / "s1")[0] == remote
    assert hints(load_sweep(None), tmp_path / "s1") == []


class FakeTrial:
    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config, self.last_result = trial_id, config, {"epoch": 2}

    def __str__(self) -> str:
        return f"train_{self.trial_id}"


class FakeActor:
    """A logging actor's handle: records the calls sent to it (``actor.start.remote(...)``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, method: str) -> Any:
        class Method:
            @staticmethod
            def remote(*args: Any) -> tuple[Any, ...]:
                self.calls.append((method, *args))
                return (method, *args)

        return Method


def test_one_logging_actor_gets_each_trials_start_rows_and_finish_in_order(tmp_path, monkeypatch) -> None:
    """The W&B tracker sends everything to one actor, made at the first trial: per trial its run's
    start, its rows at their epoch (numbers only, replayed rows once), its finish; a stopped trial's
    run ends once its post-hoc numbers are logged, at the sweep's end if they never came."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    from acl_ray.orchestration import wandb_tracker

    made: list[FakeActor] = []
    monkeypatch.setattr(wandb_tracker, "_start_logging_actor", lambda: made.append(FakeActor()) or made[-1])
    closed: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        wandb_tracker.ray, "get", lambda ref, timeout: closed.append(("get", ref, timeout)) or 4
    )
    monkeypatch.setattr(wandb_tracker.ray, "kill", lambda actor: closed.append(("kill", actor)))
    s = load_sweep(None, ["sweep.tracking=wandb"])
    tracker = wandb_tracker.WandbTracker(s, tmp_path / "s1")
    tracker.setup()
    a, b, c, d = (FakeTrial(t, {"attack.eps": 0.1, "loss.air_weight": w}) for t, w in
                  [("a", 0.0), ("b", 0.5), ("c", 0.0), ("d", 0.5)])
    for t in (a, b, c, d):
        tracker.on_trial_start(0, [], t)
    assert len(made) == 1  # one actor for every trial
    tracker.on_trial_start(0, [], a)  # a paused trial that starts again: its run goes on
    row = {"epoch": 1, "train/loss": 2.5, "time": {"train_s": 3}, "done": False, "eval/source": "final",
           "pid": 7, "config": {"attack.eps": 0.1}}
    for t in (a, b, c, d):
        tracker.on_trial_result(0, [], t, row)
    tracker.on_trial_result(0, [], a, {**row, "replayed": True})  # a restored trial's rows once
    tracker.on_trial_result(0, [], a, {**row, "epoch": 2, "train/loss": 2.0})
    tracker.posthoc("b", None)  # b stopped: its evaluation runs
    tracker.posthoc("d", None)  # ... and d's, which never comes
    tracker.on_trial_complete(0, [], b)
    tracker.on_trial_complete(0, [], d)
    tracker.on_trial_complete(0, [], a)
    tracker.on_trial_error(0, [], c)
    tracker.posthoc("b", {"eval/robust_acc": 0.4, "eval/source": "posthoc"})
    tracker.on_experiment_end([])
    (actor,) = made
    per_trial: dict[str, list[tuple[Any, ...]]] = {}
    for method, *args in actor.calls:
        per_trial.setdefault(args[0] if args else "", []).append((method, *args[1:]))
    init = {
        "project": "acl-ray", "group": "s1", "job_type": "search", "mode": "offline",
        "dir": str(tmp_path / "s1"),
        "resume": "allow", "allow_val_change": True,
        "settings": {"x_disable_stats": True, "disable_git": True, "disable_code": True, "console": "off"},
        "id": "a", "name": "train_a", "config": a.config,
    }
    config_file = yaml.safe_dump(s.base.override(a.config).to_dict(), sort_keys=False)
    first = ({"epoch": 1, "train/loss": 2.5, "time/train_s": 3}, 1, {"attack.eps": 0.1, "pid": 7})
    assert per_trial["a"] == [
        ("start", init, config_file),
        ("log", *first),
        ("log", {"epoch": 2, "train/loss": 2.0, "time/train_s": 3}, 2, None),  # config sent when it changes
        ("finish", False),
    ]
    assert per_trial["b"] == [("start", *per_trial["b"][0][1:]), ("log", *first),
                              ("log", {"eval/robust_acc": 0.4}, 2, None), ("finish", False)]
    assert per_trial["c"][-1] == ("finish", True)
    assert per_trial["d"] == [("start", *per_trial["d"][0][1:]), ("log", *first), ("finish", False)]
    assert [m for m, *_ in actor.calls][-3:] == ["finish", "finish", "finish_all"]  # b, d: held till now
    assert closed == [("get", ("finish_all",), wandb_tracker.FINISH_TIMEOUT_S), ("kill", actor)]


def test_a_failed_logging_actor_is_one_line_at_the_end(tmp_path, monkeypatch, capsys) -> None:
    import ray.exceptions

    from acl_ray.orchestration import wandb_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = wandb_tracker.WandbTracker(load_sweep(None, ["sweep.tracking=wandb"]), tmp_path / "s1")
    tracker._actor = FakeActor()

    def timed_out(ref: Any, timeout: float) -> None:
        raise ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready.")

    killed: list[Any] = []
    monkeypatch.setattr(wandb_tracker.ray, "get", timed_out)
    monkeypatch.setattr(wandb_tracker.ray, "kill", killed.append)
    tracker.on_experiment_end([])
    assert capsys.readouterr().out == (
        f"W&B: runs left unfinished in {tmp_path}/s1/wandb: Get timed out: some object(s) not ready.\n"
    )
    assert len(killed) == 1
    monkeypatch.setenv("WANDB_MODE", "disabled")  # no actor at all
    tracker = wandb_tracker.WandbTracker(load_sweep(None, ["sweep.tracking=wandb"]), tmp_path / "s1")
    tracker.on_trial_start(0, [], FakeTrial("a", {}))
    tracker.on_trial_result(0, [], FakeTrial("a", {}), {"epoch": 1})
    assert tracker._actor is None


def test_the_logging_actor_holds_several_runs_open_at_once(tmp_path, monkeypatch) -> None:
    """The actor's class, in this process: runs of trials that run at the same time, each with its
    rows at their steps, its config file and its exit code, all in one process."""
    from acl_ray.orchestration import wandb_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    init = {"project": "acl-ray", "group": "s1", "mode": "offline", "dir": str(tmp_path), "resume": "allow",
            "allow_val_change": True, "settings": {"x_disable_stats": True, "console": "off"}}
    runs = wandb_tracker._WandbRuns()
    for tid in ("a", "b"):
        runs.start(tid, {**init, "id": tid, "name": f"train_{tid}", "config": {"x": tid}}, f"trial: {tid}\n")
    for step in (1, 2, 3):
        for tid in ("a", "b"):
            runs.log(tid, {"loss": step + (tid == "b")}, step, {"pid": 7} if step == 1 else None)
    runs.log("missing", {"loss": 1}, 1, None)  # nothing, no error
    runs.finish("b", failed=True)
    runs.log("a", {"eval/robust_acc": 0.5}, 3, None)
    assert runs.finish_all() == 1
    folders = {d.name.rsplit("-", 1)[1]: d for d in (tmp_path / WANDB_DIR).glob("offline-run-*")}
    assert set(folders) == {"a", "b"}
    for tid, d in folders.items():
        steps = wandb_history(d / f"run-{tid}.wandb")
        assert {k: v["loss"] for k, v in steps.items()} == {s: s + (tid == "b") for s in (1, 2, 3)}
        assert ("eval/robust_acc" in steps[3]) == (tid == "a")  # the final numbers at the last step
        assert (d / "files" / CONFIG_FILE).read_text() == f"trial: {tid}\n"
        records = wandb_records(d / f"run-{tid}.wandb")
        (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert exit_record.exit_code == (tid == "b")
    assert len(wandb_pids(folders["a"]) | wandb_pids(folders["b"])) == 1


def test_a_tracked_sweep_leaves_no_store_behind_for_the_next_in_its_process(tmp_path, monkeypatch) -> None:
    """mlflow.set_tracking_uri exports the store it is given; the next sweep in the process (its
    confirmation, a notebook's next sweep) must still see the user's own setting, or none."""
    from mlflow.tracking import MlflowClient

    from acl_ray.orchestration.trackers import MlflowTracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = load_sweep(None, ["sweep.tracking=mlflow"])
    first = MlflowTracker(s, tmp_path / "a")
    first.setup()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = MlflowTracker(s, tmp_path / "b", plan=[])
    assert second.tracking_uri == f"sqlite:///{tmp_path / 'b' / MLFLOW_DB}"
    assert second.artifacts == (tmp_path / "b" / MLFLOW_ARTIFACTS).as_uri()
    second.setup()
    (experiment,) = MlflowClient(second.tracking_uri).search_experiments(filter_string="name = 'b/confirm'")
    assert experiment.artifact_location == second.artifacts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "server.db"))  # the user's
    third = MlflowTracker(s, tmp_path / "c")
    third.setup()
    assert os.environ["MLFLOW_TRACKING_URI"] == third.tracking_uri == f"sqlite:///{tmp_path / 'server.db'}"
    assert third.artifacts is None  # a server's own artifact store


def test_a_confirmations_wandb_runs_are_a_group_of_their_own_with_what_each_run_trained(tmp_path,
                                                                                       monkeypatch) -> None:
    """A confirmation trial's config is its index in the plan: its W&B run gets the plan entry's
    overrides and labels instead, in the group ``<sweep>/confirm``, its files in DIR/confirm/wandb."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    from acl_ray.orchestration import wandb_tracker

    made: list[FakeActor] = []
    monkeypatch.setattr(wandb_tracker, "_start_logging_actor", lambda: made.append(FakeActor()) or made[-1])
    s = load_sweep(None, ["sweep.tracking=wandb"])
    plan = [{"labels": ["acl"], "overrides": {"attack.eps": 0.03, "run.seed": 1000}},
            {"labels": ["trial #2 ab", "dynacl"], "overrides": {"attack.eps": 0.1, "run.seed": 1001}}]
    tracker = wandb_tracker.WandbTracker(s, tmp_path / "s1", plan)
    tracker.on_trial_start(0, [], FakeTrial("c_00001", {"confirm/run": 1}))
    ((method, tid, init, config_file),) = made[0].calls
    assert (method, tid) == ("start", "c_00001")
    where = (init["group"], init["job_type"], init["dir"])
    assert where == ("s1/confirm", "confirm", str(tmp_path / "s1" / "confirm"))
    assert init["config"] == {"attack.eps": 0.1, "run.seed": 1001, "confirm/labels": "trial #2 ab, dynacl"}
    assert yaml.safe_load(config_file) == s.base.override(plan[1]["overrides"]).to_dict()
