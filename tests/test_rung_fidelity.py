"""benchmarks/rung_fidelity.py: its rank statistics on closed-form cases, and --smoke end to end."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "rung_fidelity.py"


def load_module():  # benchmarks/ is not a package: import the script by path
    return load_script(SCRIPT)


def naive_spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho without ties: 1 - 6 sum d^2 / (n (n^2 - 1))."""
    n = len(x)
    rx = {v: i for i, v in enumerate(sorted(x))}
    ry = {v: i for i, v in enumerate(sorted(y))}
    d2 = sum((rx[a] - ry[b]) ** 2 for a, b in zip(x, y, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


@pytest.mark.parametrize(
    ("x", "y"),
    [([1, 2, 3, 4], [1, 3, 2, 4]), ([0.1, 0.5, 0.3, 0.9, 0.7], [5, 1, 2, 4, 3]), ([1, 2, 3], [3, 2, 1])],
)
def test_spearman_matches_the_closed_form_without_ties(x: list[float], y: list[float]) -> None:
    assert load_module().spearman(x, y) == pytest.approx(naive_spearman(x, y))


def test_spearman_averages_tied_ranks_and_is_undefined_for_a_constant_side() -> None:
    rf = load_module()
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4): Pearson of the ranks is 4.5 / sqrt(4.5 * 5).
    assert rf.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert rf.spearman([1, 1, 1], [1, 2, 3]) is None
    lo, hi = rf.bootstrap_rho([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])
    assert -1 <= lo <= rf.spearman([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5]) <= hi <= 1


def test_top_third_regret_is_what_asha_keeps_at_factor_3() -> None:
    rf = load_module()
    target = [0.9, 0.5, 0.6, 0.7, 0.8, 0.4]
    assert rf.top_third_regret(target, target) == 0  # a perfect signal keeps the best
    assert rf.top_third_regret([0, 1, 1, 0, 0, 0], target) == pytest.approx(0.3)  # keeps #1, #2: best 0.6


def test_configs_hold_the_named_points_and_each_schedule_several_times() -> None:
    from acl_ray.config.sweep import load_sweep

    rf = load_module()
    s = load_sweep(rf.CONFIG)
    configs = rf.draw_configs(s.space, s.to_dict()["base"], 12, 0)
    paper, dynacl, base, *drawn = configs
    assert [paper["name"], dynacl["name"], base["name"]] == ["paper", "dynacl", "base"] and len(drawn) == 12
    assert paper["attack.steps"] == 5 and paper["data.batch_size"] == 512
    assert dynacl["augment.schedule"] == dynacl["loss.adv_weight_schedule"] == "dynacl"
    assert base["augment.schedule"] == base["loss.adv_weight_schedule"] == "constant"
    differ = {k for k in base if base[k] != dynacl[k]}
    assert differ == {"name", *rf.SCHEDULES}  # the schedules' pair: nothing else changes
    for key in rf.SCHEDULES:
        counts = Counter(c[key] for c in drawn)
        assert counts["constant"] == counts["dynacl"] == 6, (key, counts)
    for c in drawn:
        s.base.override({k: v for k, v in c.items() if k != "name"})  # every draw is a legal config
    assert configs == rf.draw_configs(s.space, s.to_dict()["base"], 12, 0)  # seeded


def test_smoke_writes_every_signal_with_rho_in_range(tmp_path: Path) -> None:
    """The three named configs on synthetic data: 2 epochs, 1-epoch short runs, a second seed. In one
    worker process (--jobs 1): beside the suite's other tests, on 2 cores, a second worker would only
    add the CPU time of its own start (torch and the algorithm imported once more)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--jobs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "rung_fidelity.json").read_text())
    assert [c["name"] for c in res["configs"]] == ["paper", "dynacl", "base"]
    for c in res["configs"]:
        assert len(c["proxy"]) == 2 and all(0 <= p <= 1 for p in c["proxy"])
        for prefix in ("", "short1/", "seed1/"):
            assert 0 <= c[f"{prefix}val/robust_acc"] <= c[f"{prefix}val/standard_acc"] <= 1
    signals = {s["signal"]: s for s in res["signals"]}
    assert set(signals) == {"proxy@1", "proxy@2", "short1 proxy", "short1 val", "seed 1 val (ceiling)"}
    for s in signals.values():
        assert len(s["values"]) == 3
        for rho in (s["rho"], s["rho_top_half"], s["rho_vs_seed_mean"], *(s["rho_90"] or [])):
            assert rho is None or -1 <= rho <= 1, s
    assert res["wall_s"] > 0 and set(res["task_s_by_kind"]) == {"full", "short1", "seed1"}
    md = (tmp_path / "rung_fidelity.md").read_text()
    assert "| signal | budget (epochs per config) | rho vs full val RA |" in md and "| short1 val | 1 |" in md
