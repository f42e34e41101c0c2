"""``acl-ray`` on bad input: one ``error:`` line, exit code 2, no traceback, nothing written.

Every bad input is built here (invalid YAML, truncated or random checkpoints, a pickled object,
an empty CIFAR root) and goes through :func:`acl_ray.cli.main` as a user would type it. At the end:
defaults that follow the checkpoint's data (digits keeps eps 0.1; CIFAR in test_cifar_pipeline.py).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

import acl_ray.cli as cli
from acl_ray.algorithm.finetune import random_checkpoint
from acl_ray.algorithm.robustness import eps_name
from acl_ray.cli import main
from acl_ray.config.pretrain import Config

BAD_YAML = "base:\n  attack: {eps: 0.1\n  run: [1, 2\n"


class Payload:
    """A custom class: pickling it stores a GLOBAL that ``torch.load(weights_only=True)`` refuses."""

    def __init__(self) -> None:
        self.command = "echo pwned"


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI on ``argv``; it must exit 2 with exactly one ``error:`` line and no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    out = captured.out.rstrip("\n")
    assert out.startswith("error: "), out
    assert "\n" not in out, out
    assert "Traceback" not in captured.out + captured.err
    return out


@pytest.fixture
def bad_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_YAML)
    return path


def test_pretrain_config_not_yaml(tmp_path: Path, bad_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    line = error_line(capsys, ["pretrain", "--config", str(bad_yaml), "--out", str(out)])
    assert "broken.yaml" in line and "not valid YAML" in line and "line 3" in line
    assert not out.exists()


def test_sweep_config_not_yaml(tmp_path: Path, bad_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    line = error_line(capsys, ["sweep", "--config", str(bad_yaml), "--out", str(out)])
    assert "broken.yaml" in line and "not valid YAML" in line
    assert not out.exists()


def test_set_value_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    line = error_line(capsys, ["pretrain", "--out", str(out), "--set", "attack.eps=[1,"])
    assert "YAML" in line and "[1," in line
    assert not out.exists()


def test_cifar_absent_without_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = tmp_path / "empty_root", tmp_path / "run"
    root.mkdir()
    sets = ["data.name=cifar10", f"data.root={root}", "data.download=false", "run.threads=1"]
    line = error_line(capsys, ["pretrain", "--out", str(out), *[a for s in sets for a in ("--set", s)]])
    assert "cifar-10-python.tar.gz" in line and str(root) in line and "data.download" in line
    assert not out.exists()  # the data is loaded before the run directory is made


def _truncated(path: Path) -> str:
    torch.save({"model": {"w": torch.randn(64, 64)}, "signature": {"arch": "x"}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated"


def _random_bytes(path: Path) -> str:
    path.write_bytes(os.urandom(4096))
    return "not a torch checkpoint"


def _empty(path: Path) -> str:
    path.write_bytes(b"")
    return "empty"


def _pickled_object(path: Path) -> str:
    torch.save({"model": Payload(), "signature": {}}, path)
    return "Payload"


@pytest.mark.parametrize("make", [_truncated, _random_bytes, _empty, _pickled_object])
@pytest.mark.parametrize("command", ["finetune", "evaluate", "semisup"])
def test_broken_checkpoint(make, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, out = tmp_path / "checkpoint.pt", tmp_path / "out"
    why = make(ckpt)
    before = ckpt.read_bytes()
    argv = [command, "--checkpoint", str(ckpt), "--out", str(out)]
    if command == "finetune":
        argv += ["--protocol", "slf"]
    line = error_line(capsys, argv)
    assert str(ckpt) in line and why in line
    if make is _pickled_object:
        assert "pickled code" in line and "weights_only=True" in line
    assert ckpt.read_bytes() == before and not out.exists()


def test_checkpoint_dir_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = error_line(capsys, ["evaluate", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")])
    assert str(tmp_path / "checkpoint.pt") in line


def test_space_error_keeps_brackets_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = tmp_path / "sweep.yaml", tmp_path / "sweep_out"
    spec.write_text("space: {attack.eps: {uniform: [0.3, 0.1]}}\n")
    line = error_line(capsys, ["sweep", "--config", str(spec), "--out", str(out)])
    assert "attack.eps" in line and "uniform needs [low, high] with low < high" in line
    assert not out.exists() or not any(out.iterdir())


def test_space_shape_error_keeps_brackets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text("space: {attack.eps: 0.1}\n")
    line = error_line(capsys, ["sweep", "--config", str(spec), "--out", str(tmp_path / "s")])
    assert "must be {kind: [values]}" in line


def test_long_message_is_not_wrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path.joinpath(*[f"directory_{k:02d}" for k in range(20)], "config.yaml")
    line = error_line(capsys, ["pretrain", "--config", str(deep), "--out", str(tmp_path / "run")])
    assert len(line) > 300 and str(deep) in line


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/runs/[exp 1]/config.yaml"),
        IsADirectoryError(21, "Is a directory", "/runs/[exp 1]"),
        FileNotFoundError(2, "No such file or directory", "/runs/[exp 1]/metrics.jsonl"),
    ],
)
def test_os_errors_are_one_line(
    error: OSError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_analyze", fails)
    line = error_line(capsys, ["analyze", "somewhere"])
    assert line == f"error: {error}"  # "[Errno 13]" and "[exp 1]" survive rich markup


def test_multiline_message_becomes_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise ValueError("first part\n  second [part]\n")

    monkeypatch.setattr(cli, "cmd_analyze", fails)
    assert error_line(capsys, ["analyze", "somewhere"]) == "error: first part second [part]"


@pytest.mark.parametrize("bug", [KeyError("train/loss"), TypeError("bad operand"), RuntimeError("shape")])
def test_programming_errors_keep_their_traceback(bug: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise bug

    monkeypatch.setattr(cli, "cmd_analyze", fails)
    with pytest.raises(type(bug)):
        main(["analyze", "somewhere"])


# ----------------------------------------------------------------------------- defaults of the data

FAST_DIGITS = ["finetune.epochs=1", "finetune.val_size=20", "eval.steps=2", "finetune.threads=1"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained digits encoder as a pre-training run (no training: this is about the defaults)."""
    return random_checkpoint(Config().override({"run.threads": 1}), tmp_path_factory.mktemp("digits") / "pre")


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def test_digits_checkpoint_keeps_eps_0_1(digits_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "alf"
    capsys.readouterr()
    assert main(["finetune", "--checkpoint", str(digits_run), "--protocol", "alf", "--out", str(out),
                 *_sets([*FAST_DIGITS, "finetune.train_steps=1"])]) == 0
    line = capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["threat_model"] == "digits" and saved["eval"]["eps"] == 0.1 and saved["eval"]["alpha"] == 0
    assert saved["train_eps"] == 0.1  # ALF's PGD-10 at the test radius, step 0.025
    assert json.loads((out / "metrics.json").read_text())["eval/eps"] == 0.1
    assert "(pgd-2 ce+cw x1, eps 0.1);" in line


def test_digits_semisup_keeps_eps_0_1(digits_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "semi"
    knobs = ["semisup.teacher_epochs=1", "semisup.epochs=1", "semisup.train_steps=1", "semisup.val_size=20",
             "semisup.threads=1", "eval.steps=2"]
    capsys.readouterr()
    assert main(["semisup", "--checkpoint", str(digits_run), "--out", str(out), *_sets(knobs)]) == 0
    line = capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["threat_model"], saved["eval"]["eps"]) == ("digits", 0.1)
    assert json.loads((out / "metrics.json").read_text())["eval/eps"] == 0.1
    assert "(pgd-2 ce+cw x1, eps 0.1);" in line


@pytest.mark.parametrize(
    ("eps", "shown"),
    [(0.1, "0.1"), (0.05, "0.05"), (0.2, "0.2"), (8 / 255, "8/255"), (2 / 255, "2/255"), (16 / 255, "16/255"),
     (0.0314, "0.0314"), (1 / 3, "85/255"), (0.123456, "0.1235")],
)
def test_eps_is_named_as_people_write_it(eps: float, shown: str) -> None:
    assert eps_name(eps) == shown
