"""benchmarks/tracking_overhead.py's report on built runs: medians, and the overhead against the
reference variant overall and per round."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "tracking_overhead.py"


def runs(*sweeps: float) -> list[dict[str, float]]:
    return [{"process_s": s + 10, "sweep_s": s} for s in sweeps]


def test_overhead_against_the_baseline_and_per_round() -> None:
    bench = load_script(SCRIPT)
    res = bench.report({"baseline": runs(100, 200, 150), "mlflow": runs(110, 200, 180)}, [])
    assert res["reference"] == "baseline"
    base, ml = res["rows"]
    assert base["sweep_s"] == 150 and "overhead_sweep_pct" not in base
    assert ml["sweep_s"] == 180 and ml["overhead_sweep_pct"] == pytest.approx(20.0)
    assert ml["overhead_process_pct"] == pytest.approx(100 * (190 / 160 - 1), abs=0.1)  # rounded to 0.1
    assert ml["overhead_sweep_pct_per_round"] == [10.0, 0.0, 20.0]  # each round against its own
    assert "+10.0%, +0.0%, +20.0%" in bench.markdown(res)


def test_without_the_baseline_the_study_on_disk_is_the_reference() -> None:
    bench = load_script(SCRIPT)
    res = bench.report({"study": runs(300, 320), "mlflow+wandb": runs(330, 320)}, [])
    assert res["reference"] == "study"
    assert res["rows"][1]["overhead_sweep_pct_per_round"] == [10.0, 0.0]
    assert res["rows"][1]["overhead_sweep_pct"] == pytest.approx(100 * (325 / 310 - 1), abs=0.1)


def test_accounted_share_is_driver_seconds_plus_actor_cpu_over_the_cpus(monkeypatch) -> None:
    bench = load_script(SCRIPT)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    tracked = [{"process_s": 210, "sweep_s": 200, "driver_s": 3.0, "actor_cpu_s": 4.0}]
    res = bench.report({"study": runs(190), "mlflow+wandb": tracked}, [])
    study, both = res["rows"]
    assert study["accounted_pct"] == 0.0 and both["driver_s"] == 3.0 and both["actor_cpu_s"] == 4.0
    assert both["accounted_pct"] == pytest.approx(100 * (3 + 4 / 2) / 200)
    assert "| 3.0 | 4.0 | 2.50% |" in bench.markdown(res)


BURN = """
import os, subprocess, sys, time
while time.process_time() < float(sys.argv[1]):  # CPU seconds, however long the machine takes
    pass
child = None
if len(sys.argv) > 2:
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]], stdout=subprocess.PIPE)
    child.stdout.readline()
print(os.getpid(), child.pid if child else 0, flush=True)
time.sleep(600)
"""


def test_cpu_seconds_counts_a_process_and_the_processes_it_started() -> None:
    bench = load_script(SCRIPT)
    proc = subprocess.Popen([sys.executable, "-c", BURN, "0.4", BURN], stdout=subprocess.PIPE, text=True)
    pid, child = (int(x) for x in proc.stdout.readline().split())  # both have burnt their share
    try:
        below = bench.cpu_seconds(child)
        assert 0.35 <= below < bench.cpu_seconds(pid)  # (/proc counts whole ticks of 10 ms)
        assert bench.cpu_seconds(pid) >= 0.75  # its own 0.4 s and its child's
    finally:
        os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()
    assert bench.cpu_seconds(pid) == 0.0  # gone: nothing to count


def test_tracker_hooks_are_timed_on_the_classes_and_restored_here(monkeypatch) -> None:
    from acl_ray.orchestration import trackers

    bench = load_script(SCRIPT)
    for cls in (trackers.MlflowTracker, trackers.WandbTracker):  # monkeypatch puts them back after
        for hook in bench.HOOKS:
            monkeypatch.setattr(cls, hook, getattr(cls, hook))
    monkeypatch.setattr(trackers, "tracking_callbacks", trackers.tracking_callbacks)
    monkeypatch.setattr(trackers.MlflowTracker, "on_step_begin", lambda self, **info: time.sleep(0.05))
    costs = {"driver_s": 0.0, "actor_cpu_s": 0.0}
    bench.account_trackers(costs)
    trackers.MlflowTracker.on_step_begin(None)
    trackers.MlflowTracker.on_step_begin(None)
    assert costs["driver_s"] >= 0.1 and costs["actor_cpu_s"] == 0.0
