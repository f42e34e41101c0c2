"""Stop a whole Ray Train run (Ctrl-C on its driver) and resume it to the end with --resume."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from acl_ray.algorithm.run_dir import read_metrics


def rows(out: Path) -> list[dict]:
    return read_metrics(out)  # a row being written is not there yet


def cli(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "acl_ray.cli",
        "pretrain",
        "--workers",
        "2",
        "--out",
        str(out),
        "--set",
        "run.progress=false",
        *extra,
    ]


def test_stopped_run_resumes_to_the_end(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        cli(out, "--set", "run.epochs=6"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    end = time.monotonic() + 240
    while len(rows(out)) < 2 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    assert proc.poll() is None, "run ended before it could be stopped"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    proc.wait(timeout=120)
    stopped = rows(out)
    assert 2 <= len(stopped) < 6

    done = subprocess.run(cli(out, "--resume"), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    final = rows(out)
    assert [r["epoch"] for r in final] == [1, 2, 3, 4, 5, 6]
    assert final[0] == stopped[0]  # epochs finished before the stop are kept as written
    assert final[-1]["worker/pid"] != stopped[0]["worker/pid"]

    # (Resuming a finished run trains nothing and reports its final row again: tests/orchestration/
    # test_epochs.py checks that in the epoch loop both runners share, without a third Ray start.)
