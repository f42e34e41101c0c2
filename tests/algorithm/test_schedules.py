"""DynACL's schedules against its published update rules, written as the stateful loops they are."""

import dataclasses

import pytest
import torch

from acl_ray.algorithm.augment import DIGITS, SIMCLR, spec_for
from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.schedules import adv_weight, aug_strength, scaled_spec, step_epochs
from acl_ray.config.pretrain import Config
from acl_ray.config.schedule import SCHED, SCHEDULABLE, schedule_overrides


def dynacl_strengths(epochs: int, k: int) -> list[float]:
    """DynACL's loop: at 1-based epoch e with e % k == 1 (or k == 1) rebuild the data with 1 - (e - 1) / E."""
    out, s = [], 1.0
    for e in range(1, epochs + 1):
        if e % k == 1 or k == 1:
            s = 1 - (e - 1) / epochs
        out.append(s)
    return out


def dynacl_weights(epochs: int, k: int, swap: float) -> list[float]:
    """DynACL's ``w = min(1 + (e // k) (k / E) swap, 2)`` in ``((2 - w) clean + w adv) / 2``, as our w / 2."""
    return [min(1.0 + (e // k) * (k / epochs) * swap, 2.0) / 2 for e in range(1, epochs + 1)]


@pytest.mark.parametrize(("epochs", "k"), [(1000, 50), (40, 2), (40, 7), (5, 1), (3, 10)])
def test_strength_is_dynacls_stepped_decay(epochs: int, k: int) -> None:
    cfg = Config().override({"run.epochs": epochs, "augment.schedule": "dynacl", "augment.step_epochs": k})
    got = [aug_strength(cfg, i) for i in range(epochs)]
    assert got == pytest.approx(dynacl_strengths(epochs, k), abs=1e-12)
    assert all(0 < s <= 1 for s in got) and got[0] == 1.0


@pytest.mark.parametrize(
    ("epochs", "k", "swap"), [(1000, 50, 2 / 3), (40, 2, 2 / 3), (40, 3, 1.0), (7, 1, 2.0)]
)
def test_adv_weight_is_dynacls_ramp(epochs: int, k: int, swap: float) -> None:
    cfg = Config().override(
        {
            "run.epochs": epochs,
            "loss.adv_weight_schedule": "dynacl",
            "loss.adv_weight_step_epochs": k,
            "loss.adv_weight_ramp": swap / 2,
        }
    )
    got = [adv_weight(cfg, i) for i in range(epochs)]
    assert got == pytest.approx(dynacl_weights(epochs, k, swap), abs=1e-12)
    assert got == sorted(got) and max(got) <= 1.0


def test_step_defaults_to_a_twentieth_of_the_run() -> None:
    assert [step_epochs(0, e) for e in (1000, 40, 19, 1)] == [50, 2, 1, 1]
    assert step_epochs(7, 1000) == 7
    cfg = Config().override({"run.epochs": 40, "augment.schedule": "dynacl"})
    assert [aug_strength(cfg, i) for i in (0, 1, 2, 39)] == pytest.approx([1.0, 1.0, 0.95, 0.05])


def test_constant_schedules_are_todays_acl() -> None:
    cfg = Config()
    assert cfg.augment.schedule == cfg.loss.adv_weight_schedule == "constant"
    assert cfg.loss.air_weight == cfg.loss.sir_weight == 0
    assert {aug_strength(cfg, i) for i in range(cfg.run.epochs)} == {1.0}
    assert {adv_weight(cfg, i) for i in range(cfg.run.epochs)} == {cfg.loss.adv_weight}
    assert scaled_spec(DIGITS, 1.0) is DIGITS and scaled_spec(None, 0.3) is None


@pytest.mark.parametrize("s", [1.0, 0.95, 0.5, 0.05])
def test_simclr_scaled_is_dynacls_transform(s: float) -> None:
    """DynACL's reload(s): RandomResizedCrop(scale=(1 - 0.9 s, 1)), flip, ColorJitter(0.4 s, 0.4 s, 0.4 s,
    0.1 s) with p 0.8 s, RandomGrayscale(0.2 s)."""
    got = scaled_spec(SIMCLR, s)
    assert got is not None
    assert got.crop_scale == pytest.approx((1 - 0.9 * s, 1.0))
    assert got.jitter == pytest.approx((0.4 * s, 0.4 * s, 0.4 * s, 0.1 * s))
    assert got.jitter_p == pytest.approx(0.8 * s) and got.grayscale_p == pytest.approx(0.2 * s)
    assert got.flip and got.crop_ratio == SIMCLR.crop_ratio


def test_digits_preset_scales_every_magnitude() -> None:
    got = scaled_spec(DIGITS, 0.25)
    assert got is not None
    assert got.crop_scale == pytest.approx((1 - 0.5 * 0.25, 1.0))
    for name in ("translate", "rotate_deg", "noise_std", "erase_p"):
        assert getattr(got, name) == pytest.approx(getattr(DIGITS, name) * 0.25), name
    assert got.erase_scale == DIGITS.erase_scale
    low = dataclasses.replace(DIGITS, crop_scale=(0.9, 0.95))  # never above the preset's high end
    assert scaled_spec(low, 0.01).crop_scale == pytest.approx((0.95, 0.95))  # type: ignore[union-attr]


def test_pretrainer_trains_each_epoch_with_the_scheduled_view_and_weight() -> None:
    torch.set_num_threads(1)
    c = Config().override(
        {
            "data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32,
            "run.progress": False, "run.epochs": 4,
            "augment.schedule": "dynacl", "augment.step_epochs": 2,
            "loss.adv_weight_schedule": "dynacl", "loss.adv_weight_step_epochs": 1,
        }
    )
    p = Pretrainer(c, load_datasets(c.data), torch.device("cpu"))
    preset = spec_for(c.data)
    for i in range(4):
        row = p.train_epoch()
        assert p.spec == scaled_spec(preset, aug_strength(c, i))
        assert row["train/aug_strength"] == aug_strength(c, i) == [1.0, 1.0, 0.5, 0.5][i]
        assert row["train/adv_weight"] == p.adv_weight == pytest.approx(0.5 + (i + 1) / 12)


def test_constant_runs_report_no_schedule_columns() -> None:
    c = Config().override({"data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32,
                           "run.progress": False, "run.epochs": 1})
    p = Pretrainer(c, load_datasets(c.data), torch.device("cpu"))
    row = p.train_epoch()
    assert "train/aug_strength" not in row and "train/adv_weight" not in row
    assert p.spec is spec_for(c.data)


# -- per-epoch values: a ``schedule`` section, or a PBT member whose config changes between epochs --

SYN = {"data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32, "run.progress": False,
       "run.epochs": 4}
V1 = {"augment.strength": 1.0, "loss.adv_weight": 0.5, "attack.eps": 0.1, "attack.steps": 2,
      "optim.lr": 1e-3, "loss.temperature": 0.5}
V2 = {"augment.strength": 0.4, "loss.adv_weight": 0.8, "attack.eps": 0.2, "attack.steps": 1,
      "optim.lr": 3e-4, "loss.temperature": 0.3}
CPU = torch.device("cpu")


def recorded(rows: list[dict]) -> list[dict]:
    """The ``sched/<key>`` values of each metric row, keyed by the config key."""
    return [{k: r[SCHED + k] for k in SCHEDULABLE} for r in rows]


def assert_same_state(a: Pretrainer, b: Pretrainer) -> None:
    """Bitwise the same weights, batch-norm statistics and optimiser state (Adam's moments, step)."""
    for (name, x), (_, y) in zip(a.encoder.state_dict().items(), b.encoder.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and sa
    for i in sa:
        for name in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][name]), torch.as_tensor(sb[i][name])), (i, name)


def member_lineage(tmp_path) -> tuple[Pretrainer, Pretrainer]:
    """PBT in one process: a donor trains 2 epochs with V1; a member loads its checkpoint (what Tune
    copies) with the new values V2 and trains epochs 3 and 4. Returns (donor after epoch 2, member)."""
    torch.set_num_threads(1)
    c1, c2 = Config().override({**SYN, **V1}), Config().override({**SYN, **V2})
    data = load_datasets(c1.data)
    donor = Pretrainer(c1, data, CPU, record_schedule=True)
    donor.train_epoch()
    donor.train_epoch()
    save_checkpoint(tmp_path / CHECKPOINT, donor.state_dict())
    member = Pretrainer(c2, data, CPU, record_schedule=True)
    member.load_state_dict(load_checkpoint(tmp_path), "donor")
    return donor, member


def test_an_exploiting_member_continues_from_the_copied_state_with_its_new_values(tmp_path) -> None:
    donor, member = member_lineage(tmp_path)
    assert_same_state(donor, member)  # exactly the copied weights and optimiser state
    assert member.epoch == 2 and member.history == donor.history  # the donor's epoch and history
    assert recorded(member.history) == [V1, V1]
    assert member.scheduler.base_lrs == [1e-3]  # the checkpoint's base lr, until the next epoch starts
    row = member.train_epoch()
    assert row["epoch"] == 3 and recorded([row]) == [V2]  # the new values, from the next epoch on
    assert member.epoch_cfg.attack.eps == 0.2 and member.adv_weight == 0.8
    assert member.spec == scaled_spec(member.preset, 0.4)
    sched = member.scheduler
    assert sched.base_lrs == [3e-4]  # LambdaLR's base follows the new lr, not the loaded state's
    lr = 3e-4 * sched.lr_lambdas[0](sched.last_epoch)  # the new base times the cosine factor
    assert row["train/lr"] == member.optimizer.param_groups[0]["lr"] == lr
    same = donor.train_epoch()  # the donor's own epoch 3 from the same state, with its own values
    assert same["train/loss"] != row["train/loss"] and recorded([same]) == [V1]


def test_a_replayed_schedule_retrains_a_members_lineage_exactly(tmp_path) -> None:
    _, member = member_lineage(tmp_path)
    member.train_epoch()
    member.train_epoch()
    lineage = recorded(member.history)
    assert lineage == [V1, V1, V2, V2]
    replay = Config().override({**SYN, **schedule_overrides(lineage)})  # what best_schedule.yaml holds
    assert replay.schedule.epochs == (0, 2) and replay.schedule.attack.eps == (0.1, 0.2)
    fresh = Pretrainer(replay, load_datasets(replay.data), CPU)  # from scratch, no PBT, no record flag
    for _ in range(4):
        fresh.train_epoch()
    assert recorded(fresh.history) == lineage  # epoch by epoch the values the member trained with
    assert [r["train/lr"] for r in fresh.history] == [r["train/lr"] for r in member.history]
    assert_same_state(fresh, member)  # and the same model: the lineage is a function of its values


def test_resume_mid_schedule_gives_the_uninterrupted_values_and_weights(tmp_path) -> None:
    torch.set_num_threads(1)
    c = Config().override({**SYN, "schedule.epochs": [0, 1, 3], "schedule.attack.eps": [0.05, 0.1, 0.2],
                           "schedule.optim.lr": [2e-3, 1e-3, 5e-4], "schedule.attack.steps": [1, 2, 2]})
    data = load_datasets(c.data)
    whole = Pretrainer(c, data, CPU)
    for _ in range(4):
        whole.train_epoch()
    first = Pretrainer(c, data, CPU)
    first.train_epoch()
    first.train_epoch()
    save_checkpoint(tmp_path / CHECKPOINT, first.state_dict())
    resumed = Pretrainer(c, data, CPU)
    resumed.load_state_dict(load_checkpoint(tmp_path), "ckpt")
    resumed.train_epoch()
    resumed.train_epoch()
    assert recorded(resumed.history) == recorded(whole.history)
    assert [r["sched/attack.eps"] for r in whole.history] == [0.05, 0.1, 0.1, 0.2]
    assert [r["train/loss"] for r in resumed.history] == [r["train/loss"] for r in whole.history]
    assert_same_state(resumed, whole)


def test_strength_scales_the_preset_and_dynacls_strength() -> None:
    c = Config().override({"run.epochs": 40, "augment.schedule": "dynacl", "augment.strength": 0.5})
    assert [aug_strength(c, i) for i in (0, 2, 39)] == pytest.approx([0.5, 0.475, 0.025])
    assert aug_strength(Config().override({"augment.strength": 0.3}), 7) == 0.3
