"""Kill a sweep's driver process mid-sweep; ``acl-ray sweep --resume`` finishes it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.test_sweep import SMALL


def result_lines(out: Path) -> dict[str, int]:
    """Reported results per trial id, from Tune's per-trial result.json files."""
    counts = {}
    for f in out.glob("train_driver_*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if lines:
            counts[lines[0]["trial_id"]] = len(lines)
    return counts


def finished(out: Path) -> dict[str, int]:
    done = {}
    for f in out.glob("train_driver_*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if lines and lines[-1].get("val/robust_acc") is not None:
            done[lines[0]["trial_id"]] = len(lines)
    return done


def test_killed_sweep_resumes_without_losing_or_rerunning_trials(tmp_path) -> None:
    cfg = tmp_path / "sweep.yaml"
    spec = {**SMALL, "sweep": {**SMALL["sweep"], "num_samples": 4, "scheduler": "fifo", "max_concurrent": 1}}
    cfg.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "acl_ray.cli", "sweep", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + 300
    while not finished(out) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.5)
    assert proc.poll() is None, "sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait(timeout=60)
    before = finished(out)
    assert 1 <= len(before) < 4

    done = subprocess.run(
        [sys.executable, "-m", "acl_ray.cli", "sweep", "--resume", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 4  # the count asked for
    assert all(t["eval/robust_acc"] is not None for t in summary["trials"])
    after = result_lines(out)
    for tid, n in before.items():  # finished trials kept, not re-run (no new results)
        assert after[tid] == n
