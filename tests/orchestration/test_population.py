"""Population Based Training over ACL's knobs: the scheduler's mutations, and a small real PBT sweep
whose learned schedule a plain ``acl-ray pretrain`` replays."""

import json
import random
from types import SimpleNamespace

import numpy as np
import yaml
from ray.tune.schedulers import TrialScheduler

from acl_ray.cli import main
from acl_ray.config.pretrain import load_config
from acl_ray.config.schedule import SCHED
from acl_ray.config.sweep import Sweep, load_sweep
from acl_ray.orchestration.population import Clip, bounds, perturbation_epochs, population_scheduler
from acl_ray.orchestration.trial import trial_evals
from acl_ray.results.schedules import LINEAGE, TRAINED_BY
from acl_ray.results.trials import read_reports
from tests.orchestration.test_tune import ROOT, SMALL

SPACE = {
    "attack.eps": {"loguniform": [0.03, 0.3]},
    "attack.steps": {"int": [1, 3]},
    "optim.lr": {"loguniform": [3e-4, 3e-3]},
    "augment.strength": {"uniform": [0.3, 1.0]},
    "loss.temperature": {"choice": [0.3, 0.5, 0.7]},
    "data.batch_size": {"choice": [16, 32]},  # drawn once per member: not mutable
}
PBT = {
    **SMALL,
    "base": {**SMALL["base"], "run": {"epochs": 2}},
    "space": SPACE,
    "sweep": {"scheduler": "pbt", "num_samples": 2, "perturbation_interval": 1, "synch": True,
              "quantile_fraction": 0.5, "paper_point": False},
}


def inside(key: str, value: object) -> bool:
    kind, args = next(iter(SPACE[key].items()))
    if kind == "choice":
        return value in args
    ok = args[0] <= value <= args[1]  # type: ignore[operator]
    return ok and (isinstance(value, int) if kind == "int" else True)


def test_pbt_mutations_stay_inside_the_declared_ranges() -> None:
    s = Sweep.from_dict(PBT)
    assert s.mutated == ["attack.eps", "attack.steps", "optim.lr", "augment.strength", "loss.temperature"]
    pbt = population_scheduler(s)
    # Tune's explore draws from both generators: resampling a domain uses numpy's (which the tests run
    # before this one, on the same xdist worker, leave in any state)
    random.seed(0)
    np.random.seed(0)
    donor = SimpleNamespace(config={"attack.eps": 0.3, "attack.steps": 3, "optim.lr": 3e-4,
                                    "augment.strength": 1.0, "loss.temperature": 0.7, "data.batch_size": 16})
    seen: dict[str, set] = {k: set() for k in s.mutated}
    for _ in range(400):  # Tune's own explore step (perturb by 0.8 / 1.2, shift, resample), then Clip
        new, _ = pbt._get_new_config(None, donor)
        assert new["data.batch_size"] == 16  # drawn once: the donor's value goes with its weights
        for k in s.mutated:
            assert inside(k, new[k]), (k, new[k])
            seen[k].add(new[k])
        donor = SimpleNamespace(config=new)  # walk: the next donor is this member
    assert seen["attack.steps"] == {1, 2, 3} and seen["loss.temperature"] == {0.3, 0.5, 0.7}
    assert min(seen["attack.eps"]) == 0.03 and max(seen["attack.eps"]) == 0.3  # clipped, not beyond


def test_pb2_bounds_give_every_integer_its_share_and_clip_keeps_them_inside() -> None:
    space = {k: v for k, v in SPACE.items() if k != "loss.temperature"}
    s = Sweep.from_dict({**PBT, "space": space}, ["sweep.scheduler=pb2"])
    b = bounds(s)
    assert b["attack.steps"] == [1.0, 3.999] and b["attack.eps"] == [0.03, 0.3]
    clip = Clip(s.space, s.mutated)
    rng = random.Random(0)
    steps = set()
    for _ in range(300):  # PB2 casts a new value to the old one's type (int truncates), then Clip
        drawn = {k: rng.uniform(*b[k]) * rng.choice([0.999, 1.0, 1.001]) for k in s.mutated}
        drawn["attack.steps"] = int(drawn["attack.steps"])
        got = clip(drawn)
        assert all(inside(k, got[k]) for k in s.mutated), got
        steps.add(got["attack.steps"])
    assert steps == {1, 2, 3}


def test_members_are_compared_only_at_perturbation_epochs_with_a_checkpoint() -> None:
    s = Sweep.from_dict(PBT, ["run.epochs=9", "sweep.perturbation_interval=4"])
    assert perturbation_epochs(s) == (4, 8)  # never the last epoch: its full protocol is the member's own
    evals = trial_evals(s)
    assert set(evals.rungs) == {4, 8}  # proxy and checkpoint where PBT decides
    pbt = population_scheduler(s)
    for result in ({"epoch": 3}, {"epoch": 9}, {"epoch": 4, "replayed": True}):  # nothing to copy there
        assert pbt.on_trial_result(None, None, {**result, "proxy/robust_acc": 0.5}) == TrialScheduler.CONTINUE
    assert trial_evals(Sweep.from_dict(SMALL)).rungs == (1, 2)  # ASHA's rungs, as before


def test_the_digits_pbt_sweep_file_mutates_every_knob_within_digits_ranges() -> None:
    s = load_sweep(ROOT / "configs" / "sweep_digits_pbt.yaml")
    assert s.sweep.scheduler == "pbt" and s.sweep.num_samples == 4 and s.sweep.cpus_per_worker == 1
    assert set(s.mutated) == {"augment.strength", "loss.adv_weight", "attack.eps", "attack.steps", "optim.lr",
                              "loss.temperature"}
    assert perturbation_epochs(s) == (4, 8, 12, 16) and s.sweep.confirm.top_k == 0
    default = load_sweep(ROOT / "configs" / "sweep_digits.yaml")
    for k in ("attack.eps", "attack.steps", "optim.lr", "loss.temperature"):
        assert s.space[k] == default.space[k]  # the searched ranges of the default sweep


def test_small_pbt_sweep_learns_a_schedule_that_a_plain_run_replays(tmp_path, local_ray) -> None:
    """Two members, 2 epochs, synchronous PBT with quantile 0.5: at epoch 1 the worse copies the better
    (one exploit, always), and each reports its lineage with its final row."""
    from acl_ray.orchestration.tune import run_sweep

    out = tmp_path / "sweep"
    s = Sweep.from_dict(PBT)
    rows = run_sweep(s, out)
    assert len(rows) == 2 and all(r["status"] == "TERMINATED" and not r["stopped_early"] for r in rows)
    for r in rows:  # every member ran the full protocol at its own last epoch
        assert r["eval/source"] == "final" and r["val/robust_acc"] is not None and r["epoch"] == 2
    learned = json.loads((out / "schedules.json").read_text())
    members = learned["members"]
    assert set(members) == {r["trial_id"] for r in rows} and learned["keys"] == s.mutated
    reports = {tid: read_reports(next(out.glob(f"train_driver_{tid}_*"))) for tid in members}
    for tid, m in members.items():
        assert all(inside(k, v) for k in s.mutated for v in m["values"][k])  # mutated within ranges
        assert len(m["trained_by"]) == 2 and m["trained_by"][-1] == tid
        for epoch, by in enumerate(m["trained_by"], start=1):  # its history: what its trainers reported
            there = [r for r in reports[by] if r["epoch"] == epoch]  # (no row lost: result_files.py)
            assert there and all(r[TRAINED_BY] == by for r in there)
            assert any(all(r[SCHED + k] == m["values"][k][epoch - 1] for k in s.mutated) for r in there)
    copied = [(tid, m) for tid, m in members.items() if len(m["ancestors"]) > 1]
    assert len(copied) == 1, "synchronous, quantile 0.5: the worse member copies the better one at epoch 1"
    tid, m = copied[0]
    donor = m["trained_by"][0]
    assert m["ancestors"] == [[1, donor], [2, tid]] and members[donor]["ancestors"] == [[1, donor]]
    row = next(r for r in rows if r["trial_id"] == tid)
    assert {k: m["values"][k][1] for k in s.mutated} == {k: row[k] for k in s.mutated}  # its new values
    assert any(m["values"][k][1] != m["values"][k][0] for k in s.mutated)  # perturbed from the donor's
    assert row["data.batch_size"] == next(r for r in rows if r["trial_id"] == donor)["data.batch_size"]
    final = next(r for r in reports[tid] if r.get(LINEAGE))
    assert json.loads(final[LINEAGE])["trial"] == m["trained_by"]

    path = tmp_path / "copied.yaml"  # the summary's resolved config of a member replays its schedule
    path.write_text(yaml.safe_dump(row["resolved_config"]))
    run = ["pretrain", "--config", str(path), "--out", str(tmp_path / "run"), "--set", "run.progress=false"]
    assert main(run) == 0
    again = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for k in s.mutated:  # from scratch, epoch by epoch the values the member trained with
        assert [r[SCHED + k] for r in again] == m["values"][k]
    best = learned["best"]
    assert best == json.loads((out / "summary.json").read_text())["best"]["trial_id"]
    replay = load_config(out / "best_schedule.yaml")  # a plain pre-training config, the best's schedule
    assert replay == load_config(out / "best_config.yaml") and replay.schedule.epochs[0] == 0
    assert replay.at_epoch(1).attack.eps == members[best]["values"]["attack.eps"][1]

    assert (out / "analysis" / "schedule.png").stat().st_size > 0  # the sweep's analysis draws it
    report = (out / "analysis" / "report.md").read_text()
    assert "![learned schedule](schedule.png)" in report and "Plot warnings" not in report


def test_pb2_is_imported_only_by_a_pb2_sweep() -> None:
    """PB2 imports scikit-learn and SciPy's stats (1.5-2 s): every trial and evaluation process of a
    sweep starts without them, and the PB2 scheduler class still pickles by its module's name."""
    import pickle
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import acl_ray.orchestration.trial, acl_ray.orchestration.posthoc, acl_ray.algorithm.finetune\n"
        "assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules if m.startswith('sklearn'))[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    space = {k: v for k, v in SPACE.items() if "choice" not in v}  # PB2 mutates ranges only
    s = Sweep.from_dict({**PBT, "space": space, "sweep": {**PBT["sweep"], "scheduler": "pb2"}})
    scheduler = population_scheduler(s)
    assert type(scheduler).__name__ == "EpochPB2" and scheduler.epochs == perturbation_epochs(s)
    assert pickle.loads(pickle.dumps(type(scheduler))) is type(scheduler)
