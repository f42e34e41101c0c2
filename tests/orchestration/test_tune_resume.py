"""Kill a sweep's driver (`acl-ray sweep --resume` finishes it) or a trial's process (Tune retries it)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import yaml

from acl_ray.algorithm.checkpoint import load_checkpoint
from acl_ray.results.trials import read_reports
from tests.orchestration.test_study import check_study, study_of
from tests.orchestration.test_tune import SMALL


def finished(out: Path) -> dict[str, dict]:
    """The final reported row of every trial that has reported its full evaluation."""
    done = {}
    for d in out.glob("train_driver_*"):
        lines = read_reports(d)  # a line being written is not there yet
        if lines and lines[-1].get("val/robust_acc") is not None:
            done[lines[-1]["trial_id"]] = lines[-1]
    return done


def test_killed_sweep_resumes_without_losing_or_rerunning_trials(tmp_path) -> None:
    cfg = tmp_path / "sweep.yaml"
    # One trial after the other, the driver killed once a first one's result has reached the sweep
    # folder (Tune copies it there every 5 s): two more trials of 12 epochs leave room for that copy.
    # FIFO decides nothing on the proxy: it runs at the last epoch only.
    sweep = {**SMALL["sweep"], "num_samples": 3, "scheduler": "fifo", "max_concurrent": 1, "proxy_every": 12}
    base = {**SMALL["base"], "run": {"epochs": 12}}
    spec = {**SMALL, "base": base, "sweep": sweep}
    cfg.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "acl_ray.cli", "sweep", "--config", str(cfg), "--out", str(out)]
    console = tmp_path / "console.txt"  # what the sweep printed: the message if it ends on its own
    with console.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 300
    while not finished(out) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    assert proc.poll() is None, f"sweep ended before it could be killed:\n{console.read_text()[-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait(timeout=60)
    before = finished(out)
    assert 1 <= len(before) < 3
    told = {t.number: t.user_attrs["trial_id"] for t in study_of(out).trials}  # the study as the kill left it

    # --verbose: Ray's own messages and its workers' output reach the console too (one switch in
    # ensure_ray: log_to_driver and Ray's log level); test_sweep_console.py: not without it
    done = subprocess.run(
        [sys.executable, "-m", "acl_ray.cli", "sweep", "--resume", str(out), "--verbose"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Started a local Ray instance" in done.stdout + done.stderr  # Ray's start-up line (INFO)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 3  # the count asked for
    assert all(t["eval/robust_acc"] is not None for t in summary["trials"])
    after = finished(out)
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    for tid, row in before.items():
        # Kept: same final metrics. Not re-run: the final row is still the one the first run's
        # worker produced (Tune may not have saved the trial as finished before the kill; its
        # complete Train run then re-reports that row without training).
        assert by_id[tid]["val/robust_acc"] == row["val/robust_acc"]
        assert after[tid]["worker/pid"] == row["worker/pid"] and after[tid]["epoch"] == row["epoch"]
    # the resumed sweep went on in the same study: its trials kept, the rest added, nothing twice
    study = check_study(out, summary["trials"])
    assert optuna.study.get_all_study_names(f"sqlite:///{out / 'study.db'}") == ["sweep"]
    assert {t.number: t.user_attrs["trial_id"] for t in study.trials if t.number in told} == told
    assert {t.user_attrs["trial_id"] for t in study.trials} >= set(by_id)


def reports(out: Path) -> list[dict]:
    return [r for d in out.glob("train_driver_*") for r in read_reports(d)]


def test_a_killed_trial_process_is_retried_from_its_last_checkpoint(tmp_path) -> None:
    """A 1-worker trial trains in its Tune process; Tune's FailureConfig restarts it from its checkpoint."""
    cfg = tmp_path / "sweep.yaml"
    base = {**SMALL["base"], "run": {"epochs": 30, "checkpoint_every": 2}}
    sweep = {"num_samples": 1, "scheduler": "fifo", "max_failures": 1, "proxy_every": 30}  # proxy: at the end
    spec = {**SMALL, "base": base, "sweep": sweep}
    cfg.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "acl_ray.cli", "sweep", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The trial writes its checkpoint itself (Tune's result.json reaches the sweep folder later).
    end = time.monotonic() + 300
    while not list(out.glob("trial-*/checkpoint/checkpoint.pt")) and time.monotonic() < end:
        assert proc.poll() is None, "sweep ended before its trial could be killed"
        time.sleep(0.02)
    saved = load_checkpoint(next(out.glob("trial-*/checkpoint")))["history"][-1]
    assert saved["epoch"] < 30
    os.kill(saved["worker/pid"], signal.SIGKILL)  # the trial's own process, mid-training
    printed, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, printed[-3000:]
    assert "failed, retrying from its last checkpoint" in printed
    rows = reports(out)
    after = [r for r in rows if r["worker/pid"] != saved["worker/pid"]]
    assert after, "the trial was not retried in a new process"
    resumed = after[0]["epoch"] - 1  # the epoch of the checkpoint it started from
    assert resumed >= saved["epoch"] and resumed % 2 == 0  # checkpoints: every 2 epochs
    assert [r["epoch"] for r in after] == list(range(resumed + 1, 31))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"][0]["eval/robust_acc"] is not None and summary["trials"][0]["epoch"] == 30


def _interrupt_once(cmd: list[str], saved: Callable[[], bool], console: Path) -> int:
    """Run ``cmd`` in its own process group, press Ctrl-C (SIGINT to the group, as a terminal does)
    once ``saved()`` holds, and return its exit code."""
    with console.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 300
    while not saved() and time.monotonic() < end:
        assert proc.poll() is None, f"ended before Ctrl-C:\n{console.read_text()[-3000:]}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=300)


def test_ctrl_c_stops_a_sweep_and_its_confirmation_without_concluding_and_both_continue(tmp_path) -> None:
    """Ctrl-C ends Tune's run gracefully; the sweep must then neither evaluate the trial it cut short
    as if ASHA had stopped it, nor confirm or analyse a partial search, nor conclude from some of the
    confirmation's runs: it says how to continue, exits 130, and the continued sweep is complete."""
    cfg = tmp_path / "sweep.yaml"
    base = {**SMALL["base"], "run": {"epochs": 12, "checkpoint_every": 2}}
    sweep = {"num_samples": 2, "scheduler": "fifo", "max_concurrent": 1, "proxy_every": 12,
             "confirm": {"top_k": 1, "seeds": 2, "controls": []}}
    cfg.write_text(yaml.safe_dump({**SMALL, "base": base, "sweep": sweep}))
    out = tmp_path / "sweep"
    cli = [sys.executable, "-m", "acl_ray.cli"]
    console = tmp_path / "console.txt"

    def checkpoint_in(folder: Path) -> Callable[[], bool]:
        return lambda: bool(list(folder.glob("trial-*/checkpoint/checkpoint.pt")))

    search = [*cli, "sweep", "--config", str(cfg), "--out", str(out)]
    rc = _interrupt_once(search, checkpoint_in(out), console)
    printed = console.read_text()
    assert rc == 130, printed[-3000:]
    assert f"continue it with: acl-ray sweep --resume {out}" in " ".join(printed.split())
    assert not (out / "confirm").exists() and not (out / "analysis").exists()
    assert not (out / "posthoc").exists()  # FIFO stops no trial early: nothing to evaluate post hoc
    rows = json.loads((out / "summary.json").read_text())["trials"]
    assert len(rows) < 2 or any(r["status"] not in ("TERMINATED", "ERROR") for r in rows)

    refused = subprocess.run([*cli, "confirm", str(out)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "unfinished trial" in refused.stdout, refused.stdout + refused.stderr

    confirm = out / "confirm"
    rc = _interrupt_once([*cli, "sweep", "--resume", str(out)], checkpoint_in(confirm), console)
    printed = console.read_text()
    assert rc == 130, printed[-3000:]
    assert f"continue it with: acl-ray confirm {out}" in " ".join(printed.split())
    assert not (out / "confirmation.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert "confirmation" not in summary and len(summary["trials"]) == 2  # the search was finished
    assert all(r["status"] == "TERMINATED" and r["eval/robust_acc"] is not None for r in summary["trials"])

    done = subprocess.run([*cli, "confirm", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    conf = json.loads((out / "confirmation.json").read_text())
    best = min(summary["trials"], key=lambda r: (-r["val/robust_acc"], r["trial_index"]))  # ties: earlier
    (row,) = conf["rows"]
    assert row["label"] == f"trial #{best['trial_index']} {best['trial_id']}" and row["seeds"] == [1000, 1001]
