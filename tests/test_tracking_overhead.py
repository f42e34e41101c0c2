"""benchmarks/tracking_overhead.py's report on built runs: medians, and the overhead against the
reference variant overall and per round."""

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
