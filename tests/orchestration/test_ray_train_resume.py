"""One Ray Train run (2 workers) through both failures a user meets: a worker process killed mid-run
(Ray Train restarts the group from its last checkpoint), then Ctrl-C on the driver and ``--resume``
to the end. One run for both: each Ray Train start costs half a minute on 2 cores."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from acl_ray.algorithm.run_dir import read_metrics

EPOCHS = 16


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
        # synthetic images: an epoch of a second or two, so the run costs its Ray Train starts
        "--set",
        "data.name=synthetic",
        "--set",
        "data.synthetic_size=300",
        *extra,
    ]


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    end = time.monotonic() + 600  # a deadline for a hung run only: the wait is for the event
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_worker_restarts_from_its_checkpoint_and_a_stopped_run_resumes_to_the_end(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        cli(out, "--set", f"run.epochs={EPOCHS}"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: len(rows(out)) >= 2, proc, "two epochs")
    before = rows(out)
    first = before[0]["worker/pid"]  # rank 0's process; the rows are its reports
    os.kill(first, signal.SIGKILL)  # a worker process dies mid-run
    # two epochs of the restarted group: the first of them is checkpointed (only the last row before a
    # stop can be one whose checkpoint Ray had not registered yet)
    wait_for(lambda: sum(r["worker/pid"] != first for r in rows(out)) >= 2, proc, "the restarted epochs")
    second = rows(out)[-1]["worker/pid"]
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    proc.wait(timeout=300)
    stopped = rows(out)
    assert len(stopped) < EPOCHS, "the run finished before it could be stopped"

    done = subprocess.run(cli(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    final = rows(out)
    assert [r["epoch"] for r in final] == list(range(1, EPOCHS + 1))
    # Epochs up to the checkpoint Ray had registered at the kill are kept, not redone; at most the one
    # whose report was still in flight is trained again by the restarted group.
    kept = [r for r in final if r["worker/pid"] == first]
    assert len(kept) >= len(before) - 1 and [r["epoch"] for r in kept] == list(range(1, len(kept) + 1))
    # then the restarted group, then the resumed run: three processes, in that order, each continuing
    pids = [r["worker/pid"] for r in final]
    runs = [p for i, p in enumerate(pids) if i == 0 or p != pids[i - 1]]
    assert runs[:2] == [first, second] and len(runs) == 3 and len(set(runs)) == 3, runs
    assert final[: len(stopped) - 1] == stopped[:-1]  # epochs finished before the stop: kept as written

    # (Resuming a finished run trains nothing and reports its final row again: tests/orchestration/
    # test_epochs.py checks that in the epoch loop both runners share, without another Ray start.)
