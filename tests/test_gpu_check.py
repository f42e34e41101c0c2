"""benchmarks/gpu_check.py as a bare, short GPU lease runs it: no Ray, Optuna or pyautoattack, a wall-clock
budget that cuts cases (and says why), at most 8 files, results on disk after every case."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# On the lease these packages are absent: a meta-path finder makes every import of them fail, in the
# script and in the pytest process it starts (both read PYTHONPATH, so both run this sitecustomize).
BLOCKER = """
import sys

class _NotOnTheLease:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "optuna", "autoattack"):
            raise ModuleNotFoundError(f"{name} is not installed on a bare GPU lease")
        return None

sys.meta_path.insert(0, _NotOnTheLease())
"""


@pytest.fixture(scope="module")
def gc() -> ModuleType:
    return load_script(SCRIPT)


def lease_env(tmp_path: Path) -> dict[str, str]:
    """A plain checkout on PYTHONPATH (as ``PYTHONPATH=.`` on the lease) behind the import blocker."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def run(out: Path, env: dict[str, str], *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *extra],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (found,) = out.glob("gpu_check_*_smoke.json")
    return json.loads(found.read_text())


def test_timed_steps_fit_the_share_but_never_the_budget(gc) -> None:
    assert gc.timed_steps(20, 0.5, math.inf, math.inf) == 20  # no budget: every requested step
    assert gc.timed_steps(20, 0.5, 5.0, 100.0) == 10  # the share holds 10 steps of 0.5 s
    assert gc.timed_steps(20, 0.5, 0.4, 100.0) == gc.MIN_TIMED  # a short share keeps a few steps
    assert gc.timed_steps(20, 0.5, 0.4, 1.2) == 2  # ... while the whole budget holds them
    assert gc.timed_steps(20, 0.5, 5.0, 0.3) == 0  # not one step fits
    assert gc.timed_steps(2, 0.5, 0.0, 100.0) == 2  # never more than requested


def test_plan_runs_the_compiled_cases_last_and_skips_them_first(gc) -> None:
    cases = gc.plan(5)
    assert len({c.name for c in cases}) == 9
    assert [c.compile for c in cases] == [False] * 7 + [True] * 2
    assert cases[6].name == "ds K=5 official-pattern [fp32]"
    eager, compiled = cases[0], cases[7]
    assert gc.skip_reason(eager, math.inf, 0.0, 120.0) is None
    assert gc.skip_reason(compiled, 130.0, 0.0, 120.0) is None
    assert "--compile-min-s" in gc.skip_reason(compiled, 100.0, 0.0, 120.0)
    assert gc.skip_reason(eager, 100.0, 0.0, 120.0) is None  # the compile floor is for compiled cases
    assert "spent" in gc.skip_reason(eager, -1.0, 0.0, 120.0)
    assert "to start" in gc.skip_reason(eager, 5.0, 8.0, 120.0)  # an earlier case took 8 s to start


def test_measure_cuts_warm_up_and_timed_steps_to_the_share(gc) -> None:
    """A step that sleeps 50 ms with a 0.3 s share: the warm-up stops once half the share is gone
    (at most 4 of 5 steps) and the timed steps are what is left (<= 4 of 20, >= MIN_TIMED). Sleep
    never returns early, so these bounds hold on any machine."""

    def step(idx: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return torch.zeros(())

    args = argparse.Namespace(warmup=5, steps=20, seed=0)
    row = gc.measure(step, 64, 16, torch.device("cpu"), args, gc.Budget(None), time.monotonic(), 0.3)
    assert 2 <= row["warmup_steps"] <= 4
    assert gc.MIN_TIMED <= row["steps"] <= 4
    assert row["cut"].startswith("budget:") and row["images_per_s"] > 0


def test_bare_lease_smoke_imports_no_ray_and_writes_at_most_8_files(tmp_path, gc) -> None:
    """The lease's order (CUDA tests, then the cases) with Ray, Optuna and AutoAttack unimportable.
    On a CPU the cuda tests are collected and skip; the compiled cases are cut by --compile-min-s."""
    env = lease_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "bare GPU lease" in probe.stderr  # the blocker is in force
    out = tmp_path / "out"
    res = run(out, env, "--tests-on-cpu", "--budget-s", "1800", "--compile-min-s", "1e9")
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and not [f for f in files if f.endswith(".tmp")], files
    tests = res["tests"]
    assert tests["ran"] and tests["returncode"] == 0 and not tests["timed_out"], tests
    assert "tests/algorithm/test_fast_path.py" in tests["files"]
    junit = tests["junit"]
    assert junit["tests"] >= 6 and junit["errors"] == junit["failures"] == 0, junit
    assert {tests["log"], tests["log"].replace(".log", ".xml")} <= set(files)
    assert res["loaded_ray_optuna_autoattack"] == [] and res["finished"] and res["failed"] == {}
    names = [c.name for c in gc.plan(2)]
    assert set(res["cases"]) | set(res["skipped"]) == set(names)  # every case: numbers or a reason
    for name in names[7:]:
        assert "--compile-min-s" in res["skipped"][name]
    for name, case in res["cases"].items():
        assert case["images_per_s"] > 0 and math.isfinite(case["loss"]) and case["steps"] >= 1, name


def test_tiny_budget_cuts_every_case_and_says_why(tmp_path) -> None:
    out = tmp_path / "out"
    res = run(out, lease_env(tmp_path), "--tests-on-cpu", "--budget-s", "1")  # < the 5 s reserve
    assert res["cases"] == {} and len(res["skipped"]) == 9 and res["finished"]
    assert all("budget" in why for why in res["skipped"].values())
    assert not res["tests"]["ran"] and "budget" in res["tests"]["why"]
    files = sorted(p.name for p in out.iterdir())  # no tests ran: no pytest log or JUnit file
    assert len(files) == 2 and files[0].endswith("_smoke.json") and files[1].endswith("_smoke.md"), files
    assert "Skipped:" in next(out.glob("*.md")).read_text()


def test_a_killed_run_leaves_the_cases_it_finished(tmp_path, gc) -> None:
    """Results are written after every case: kill the run once one case is on disk, and the JSON
    still parses, holds that case and says the run did not finish."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        res: dict = {}
        while time.monotonic() < deadline and not res.get("cases") and proc.poll() is None:
            found = list(out.glob("gpu_check_*_smoke.json"))
            res = json.loads(found[0].read_text()) if found else {}  # renamed into place: never partial
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    assert res.get("cases"), "no case reached the disk before the deadline"
    res = json.loads(next(out.glob("gpu_check_*_smoke.json")).read_text())
    if not res["finished"]:  # (a very fast machine may finish before the kill lands)
        assert res["in_progress"] in [None, *(c.name for c in gc.plan(2))]
        assert "not finished" in next(out.glob("gpu_check_*_smoke.md")).read_text()
    assert all(c["images_per_s"] > 0 for c in res["cases"].values())
