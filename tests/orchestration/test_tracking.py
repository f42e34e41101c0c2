"""sweep.tracking: MLflow and W&B runs of a sweep (acl_ray.orchestration.tracking).

What a real sweep wrote is checked by :func:`check_mlflow` and :func:`check_wandb`, called on the
sweep of test_tune.py (no Ray of its own here); this module checks the settings and the defaults.
"""

import json
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
