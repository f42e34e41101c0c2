"""Every experiment script runs end to end in --smoke mode (a subprocess each, as a user runs it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, out: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / name), "--smoke", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_digits_default_smoke(tmp_path: Path) -> None:
    run_script("digits_default.py", tmp_path / "d")
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["pretrain"]["epoch"] == 1
    assert 0 <= res["slf"]["eval/robust_acc"] <= res["slf"]["eval/standard_acc"] <= 1
    assert res["slf"]["protocol"] == "slf"


def test_reproduce_acl_cifar10_smoke_then_rerun_skips_finished_steps(tmp_path: Path) -> None:
    out = tmp_path / "r"
    first = run_script("reproduce_acl_cifar10.py", out)
    for cmd in ("acl-ray pretrain --config", "acl-ray finetune", "--protocol aff", "acl-ray evaluate"):
        assert cmd in first.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["aff/autoattack"].startswith("autoattack")
    assert 0 <= res["aff/autoattack_robust_acc"] <= res["aff/standard_acc"] <= 1
    cfg = (out / "pretrain" / "config.yaml").read_text()  # the paper config, with the smoke overrides
    assert "lars" in cfg and "0.03137254901960784" in cfg and "synthetic" in cfg
    again = run_script("reproduce_acl_cifar10.py", out)
    assert "acl-ray" not in again.stdout.replace("ACL-DS", "")  # everything was done: no command re-ran
    assert json.loads((out / "results.json").read_text()) == res


def test_semisup_digits_smoke(tmp_path: Path) -> None:
    run_script("semisup_digits.py", tmp_path / "s")
    rows = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [(r["pretrain"], r["label_fraction"]) for r in rows] == [("ds", 0.1)]
    assert 0 <= rows[0]["eval/robust_acc"] <= rows[0]["eval/standard_acc"] <= 1
    assert "| ds | 0.1" in (tmp_path / "s" / "table.md").read_text()


def test_sweep_cifar10_cluster_smoke_runs_one_trial_on_a_local_ray(tmp_path: Path) -> None:
    """About a minute: a local Ray, one synthetic trial through configs/sweep_cifar10.yaml."""
    run_script("sweep_cifar10_cluster.py", tmp_path / "c10")
    summary = json.loads((tmp_path / "c10" / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["eval/source"] == "final" and 0 <= trial["eval/robust_acc"] <= 1
    assert trial["attack.steps"] == 5 and trial["data.batch_size"] == 512  # the paper point, enqueued first
    assert summary["config"]["base"]["model"]["proj_out_dim"] == 512  # the CIFAR sweep file was used


def test_later_methods_table_smoke(tmp_path: Path) -> None:
    run_script("later_methods_table.py", tmp_path / "t")
    res = json.loads((tmp_path / "t" / "results.json").read_text())
    assert sorted({(r["method"], r["protocol"]) for r in res["rows"]}) == [
        ("acl", "alf"), ("acl", "slf"), ("all", "alf"), ("all", "slf")
    ]
    for r in res["rows"]:
        assert 0 <= r["eval/robust_acc"] <= r["eval/standard_acc"] <= 1
    cfg = (tmp_path / "t" / "runs" / "all_s0" / "pretrain" / "config.yaml").read_text()
    assert "schedule: dynacl" in cfg and "adv_weight_schedule: dynacl" in cfg and "air_weight: 0.5" in cfg
    rows = (tmp_path / "t" / "runs" / "all_s0" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["train/aug_strength"] for r in rows] == [1.0, 0.5]  # 2 epochs, one step each
    table = (tmp_path / "t" / "table.md").read_text()
    assert "| DynACL-AIR (all three) |" in table and "| ACL-DS (defaults) |" in table


def test_later_methods_sweep_smoke_compares_both_sweep_files(tmp_path: Path) -> None:
    """About a minute: two 2-trial synthetic sweeps on a local Ray, one after the other."""
    run_script("later_methods_sweep.py", tmp_path / "w", timeout=600)
    res = json.loads((tmp_path / "w" / "comparison.json").read_text())
    assert [(r["sweep"], r["trials"]) for r in res["rows"]] == [("acl", 2), ("later", 2)]
    assert set(res["mean_best_val_ra"]) == {"acl", "later"}
    later = json.loads((tmp_path / "w" / "later_s0" / "summary.json").read_text())
    assert "loss.air_weight" in later["config"]["space"] and len(later["trials"]) == 2


@pytest.mark.parametrize("name", ["digits_default.py", "reproduce_acl_cifar10.py", "semisup_digits.py",
                                  "sweep_cifar10_cluster.py", "later_methods_table.py",
                                  "later_methods_sweep.py"])
def test_help_describes_smoke_and_out(name: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / name), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--smoke" in proc.stdout and "--out" in proc.stdout
