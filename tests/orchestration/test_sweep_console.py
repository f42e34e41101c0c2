"""What ``acl-ray sweep`` prints: no Ray worker output unless ``--verbose`` (it goes to DIR/logs/),
plain lines off a terminal, one line per failed trial; and DIR/analysis/ once it returns."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from acl_ray.orchestration.live_table import TrialTable, clock
from tests.orchestration.test_tune import SMALL

# Lines Ray forwards from its worker processes, and what Ray Train's workers log at each report.
WORKER_LINES = ("(RayTrainWorker", "(pid=", "TrainingReport", "Checkpoint successfully created")


def sweep(tmp_path: Path, name: str, *flags: str) -> tuple[str, Path]:
    """A 1-trial, 2-epoch sweep whose trial runs Ray Train (``sweep.runner=train``), in a subprocess."""
    spec = {
        **SMALL,
        "base": {**SMALL["base"], "run": {"epochs": 2}},
        "sweep": {"num_samples": 1, "scheduler": "fifo", "runner": "train", "proxy_every": 2},
    }
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(spec))
    out = tmp_path / name
    return cli("sweep", "--config", str(cfg), "--out", str(out), *flags), out


def cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "acl_ray.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def logged(out: Path, text: str) -> bool:
    return any(text in f.read_text(errors="replace") for f in (out / "logs").rglob("*") if f.is_file())


def test_worker_output_goes_to_the_sweep_folder_unless_verbose(tmp_path) -> None:
    quiet, out = sweep(tmp_path, "quiet")
    assert not [w for w in WORKER_LINES if w in quiet], quiet[-3000:]
    assert "trial #1" in quiet and "done at epoch 2" in quiet  # plain lines (not a terminal)
    # The worker output is not lost: it is in the sweep folder, copied from Ray's session folder.
    assert logged(out, "Checkpoint successfully created")
    assert not any(p.is_symlink() for p in (out / "logs").iterdir())
    # The analysis `acl-ray analyze DIR` writes is there when the sweep returns.
    for name in (
        "trials.parquet",
        "epochs.parquet",
        "report.md",
        "pareto.png",
        "curves.png",
        "best_config.yaml",
    ):
        assert (out / "analysis" / name).is_file(), name
    assert (out / "summary.json").is_file()
    assert "Started a local Ray instance" not in quiet  # Ray's own INFO lines: only with --verbose
    # (--verbose: test_tune_resume.py's resumed sweep, which has a Ray to start and trials to train)


def fake_trial(tmp_path: Path, error: str | None = None) -> SimpleNamespace:
    d = tmp_path / "train_driver_abc12_3_x=1"
    d.mkdir(exist_ok=True)
    if error:
        (d / "error.txt").write_text(f"Traceback (most recent call last):\n  File 'x'\n{error}\n")
    return SimpleNamespace(
        trial_id="abc12",
        experiment_tag="3_x=1",
        config={"attack.eps": 0.1},
        error_file=str(d / "error.txt") if error else None,
        path=str(d),
    )


def test_a_failed_trial_is_one_line_with_its_reason_and_log(tmp_path, capsys) -> None:
    table = TrialTable(["attack.eps"], "proxy/robust_acc", 20)
    table.setup(total_num_samples=4)
    trial = fake_trial(tmp_path, "ValueError: Illegal attack.eps=2.0: must be in (0, 1]")
    table.on_trial_start(0, [], trial)
    table.on_trial_result(0, [], trial, {"epoch": 5, "proxy/robust_acc": 0.25})
    capsys.readouterr()
    table.on_trial_error(0, [], trial)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    assert "trial #3 abc12 failed at epoch 5: ValueError: Illegal attack.eps=2.0" in lines[0]
    assert f"log: {tmp_path / 'train_driver_abc12_3_x=1' / 'error.txt'}" in lines[0]
    assert "1 done, 0 running, 3 pending" in lines[0]


def test_header_counts_best_trial_and_time_left(tmp_path, capsys) -> None:
    table = TrialTable(["attack.eps"], "proxy/robust_acc", 20)
    table.setup(total_num_samples=4)
    a, b = fake_trial(tmp_path), SimpleNamespace(**{**vars(fake_trial(tmp_path)), "trial_id": "def34"})
    b.experiment_tag = "4_x=2"
    for t in (a, b):
        table.on_trial_start(0, [], t)
    assert "0 done, 2 running, 2 pending" in table.header() and "best val RA -" in table.header()
    table.on_trial_result(0, [], a, {"epoch": 4, "proxy/robust_acc": 0.3})
    table.on_trial_complete(0, [], a)  # stopped by ASHA at epoch 4: evaluated post hoc
    table.posthoc("abc12", {"val/robust_acc": 0.41})
    table.on_trial_result(0, [], b, {"epoch": 20, "val/robust_acc": 0.62})
    table.on_trial_complete(0, [], b)
    head = table.header()
    assert "2 done, 0 running, 2 pending" in head and "best val RA 0.6200 (#4 def34)" in head
    # 24 epochs trained; finished trials averaged 12 epochs: 2 pending trials x 12 epochs left.
    table.start -= 24.0  # as if 24 s had passed: 1 epoch/s
    assert abs(table.eta_s() - 24.0) < 0.5  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "trial #3 abc12 stopped by ASHA at epoch 4" in out and "post-hoc evaluation: val RA 0.41" in out
    assert clock(75) == "1:15" and clock(3725) == "1:02:05" and clock(None) == "-"
