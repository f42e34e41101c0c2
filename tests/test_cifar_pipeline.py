"""The path a robustness researcher runs, CIFAR-shaped, through the CLI on the CPU: ResNet-18 ACL-DS
pre-training on the official-format archive the tests write, finetuning with every published preset,
then AutoAttack (standard) on the test split. Tiny sizes: this checks the path, not the numbers."""

import json
from pathlib import Path

import pytest
import yaml

from acl_ray.algorithm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from acl_ray.cli import main
from acl_ray.config.protocols import PRESETS
from tests.algorithm.test_data import fake_cifar

CIFAR_SETS = ["data.name=cifar10", "data.download=false", "model.arch=resnet18", "data.batch_size=16",
              "attack.steps=1", "run.epochs=1", "run.progress=false", "run.threads=2"]
# Tiny versions of the presets: one epoch, a one-step training attack, few eval steps and images.
TINY = ["finetune.epochs=1", "finetune.train_steps=1", "finetune.batch_size=32", "finetune.val_size=4",
        "finetune.milestones=1", "eval.steps=2", "finetune.threads=2"]


def sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pytest.MonkeyPatch]:
    root = tmp_path_factory.mktemp("cifar")
    mp = pytest.MonkeyPatch()
    fake_cifar(root / "data", mp, cifar100=False, n_train=40, n_test=6)
    run = root / "pre"
    args = ["pretrain", "--out", str(run), *sets([*CIFAR_SETS, f"data.root={root / 'data'}"])]
    assert main(args) == 0
    yield run, mp
    mp.undo()


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "digits"])
def test_cifar_preset_finetune_then_autoattack(cifar_run, tmp_path, preset) -> None:
    run, _ = cifar_run
    out = tmp_path / preset
    args = ["finetune", "--checkpoint", str(run), "--preset", preset, "--out", str(out), *sets(TINY)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    ft = yaml.safe_load((out / "config.yaml").read_text())
    assert ft["preset"] == preset and ft["augment"] == "crop_flip" and ft["lr_schedule"] == "step"
    assert m["protocol"] == PRESETS[preset]["protocol"] and m["eval/eps"] == pytest.approx(8 / 255)
    assert 0 <= m["eval/robust_acc"] <= m["eval/standard_acc"] <= 1
    if preset != "robustssl-slf":  # AutoAttack once per protocol family is enough for the suite
        return
    assert main(["evaluate", "--checkpoint", str(out), "--checks", "0"]) == 0  # the preset's: AA standard
    e = json.loads((out / "evaluate_autoattack" / "metrics.json").read_text())
    assert e["eval/attack"].startswith("autoattack-standard")
    # AutoAttack only attacks clean-correct points; it need not be below PGD on every point.
    assert 0 <= e["eval/robust_acc"] <= e["eval/standard_acc"]
    assert e["eval/pgd_robust_acc"] <= e["eval/standard_acc"]


def test_cifar_checkpoint_without_preset_gets_the_cifar_threat_model(cifar_run, tmp_path, capsys) -> None:
    """No preset: eps 8/255 (step 2/255, PGD-20 unless --set), for the test and ALF's training attack;
    an explicit --set eval.eps wins; acl-ray evaluate keeps the classifier's; every line names its eps."""
    run, _ = cifar_run
    out = tmp_path / "alf"
    capsys.readouterr()
    args = ["finetune", "--checkpoint", str(run), "--protocol", "alf", "--out", str(out), *sets(TINY)]
    assert main(args) == 0
    assert "(pgd-2 ce+cw x1, eps 8/255);" in capsys.readouterr().out
    ft = yaml.safe_load((out / "config.yaml").read_text())
    assert (ft["threat_model"], ft["preset"], ft["eval"]["eps"]) == ("cifar10", "", 8 / 255)
    assert ft["eval"]["alpha"] == 0  # step eps/4 = 2/255
    assert ft["train_eps"] == 8 / 255 and ft["augment"] == "none"  # PGD-10 at 8/255, step train_eps / 4
    assert json.loads((out / "metrics.json").read_text())["eval/eps"] == 8 / 255

    assert main(["evaluate", "--checkpoint", str(out), "--attack", "pgd", "--checks", "0"]) == 0
    assert "(pgd-2 ce+cw x1, eps 8/255)" in capsys.readouterr().out
    assert json.loads((out / "evaluate_pgd" / "metrics.json").read_text())["eval/eps"] == 8 / 255

    chosen = tmp_path / "chosen"
    args = ["finetune", "--checkpoint", str(run), "--protocol", "slf", "--out", str(chosen),
            *sets([*TINY, "eval.eps=0.05"])]
    assert main(args) == 0
    assert "(pgd-2 ce+cw x1, eps 0.05);" in capsys.readouterr().out
    ft = yaml.safe_load((chosen / "config.yaml").read_text())
    assert (ft["eval"]["eps"], ft["eval"]["alpha"]) == (0.05, 0)  # step eps/4, as on digits
    assert json.loads((chosen / "metrics.json").read_text())["eval/eps"] == 0.05


def test_evaluate_moves_an_old_cifar_classifier_off_the_digits_eps(cifar_run, tmp_path, capsys) -> None:
    """A classifier finetuned before the defaults followed the data (no threat_model record, eps 0.1
    on CIFAR) is tested at 8/255, with a warning; --eps 0.1 keeps the old radius."""
    run, _ = cifar_run
    out = tmp_path / "old"
    args = ["finetune", "--checkpoint", str(run), "--protocol", "slf", "--out", str(out), *sets(TINY)]
    assert main(args) == 0
    state = load_checkpoint(out)
    state["config"].pop("threat_model")  # as the older code saved it, at the digits default
    state["config"]["eval"].update(eps=0.1, alpha=0.0)
    save_checkpoint(out / CHECKPOINT, state)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--checks", "0", "--out", str(tmp_path / "e1")]) == 0
    printed = capsys.readouterr().out
    assert "eps 8/255)" in printed and "digits default eps 0.1 on cifar10" in printed
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["eval/eps"] == 8 / 255
    assert main(["evaluate", "--checkpoint", str(out), "--checks", "0", "--eps", "0.1",
                 "--out", str(tmp_path / "e2")]) == 0
    printed = capsys.readouterr().out
    assert "eps 0.1)" in printed and "warning" not in printed
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["eval/eps"] == 0.1


def test_cifar_semisup_gets_the_cifar_threat_model(cifar_run, tmp_path, capsys, monkeypatch) -> None:
    """The config acl-ray semisup builds for a CIFAR checkpoint (the run itself is tested on digits in
    test_cli.py and tests/algorithm/test_semisup.py; on ResNet-18 it would add a minute here)."""
    import acl_ray.algorithm.semisup as semisup_module

    run, _ = cifar_run
    given = []

    def fake(checkpoint, cfg, out):
        given.append(cfg)
        acc = {"eval/standard_acc": 0.5, "eval/robust_acc": 0.25, "teacher/standard_acc": 0.5}
        return {**acc, "semisup/labelled": 4, "eval/attack": "pgd-20 ce+cw x1", "eval/eps": cfg.eval.eps}

    monkeypatch.setattr(semisup_module, "semisup", fake)
    args = ["semisup", "--checkpoint", str(run), "--out", str(tmp_path / "semi")]
    capsys.readouterr()
    assert main(args) == 0
    assert "(pgd-20 ce+cw x1, eps 8/255);" in capsys.readouterr().out
    assert main([*args, "--set", "eval.eps=0.05"]) == 0
    assert "eps 0.05);" in capsys.readouterr().out
    default, chosen = given
    assert (default.threat_model, default.eval.eps, default.eval.step_size, default.eval.steps) == (
        "cifar10", 8 / 255, 2 / 255, 20)
    assert (chosen.eval.eps, chosen.eval.step_size) == (0.05, 0.0125)


def test_cifar_dynacl_air_pretrains_through_the_cli(tmp_path, monkeypatch) -> None:
    """DynACL-AIR on the ResNet-18 path: SimCLR views scaled down (3 channels: jitter, grayscale),
    the weight ramp and the originals' own clean-BN segment, over 2 epochs of 1 step each (its own
    archive of 20 images: 2 for validation, 18 to train on, one batch of 16 per epoch)."""
    data_root = tmp_path / "data"
    fake_cifar(data_root, monkeypatch, cifar100=False, n_train=20, n_test=6)
    knobs = ["augment.schedule=dynacl", "augment.step_epochs=1", "loss.adv_weight_schedule=dynacl",
             "loss.adv_weight_step_epochs=1", "loss.air_weight=0.5", "loss.sir_weight=0.5", "run.epochs=2"]
    out = tmp_path / "dynacl_air"
    args = ["pretrain", "--out", str(out), *sets([*CIFAR_SETS, f"data.root={data_root}", *knobs])]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/aug_strength"] for r in rows] == [1.0, 0.5]
    assert [r["train/adv_weight"] for r in rows] == pytest.approx([0.5 + 1 / 6, 0.5 + 1 / 3])
    assert all(r["train/loss"] == r["train/loss"] for r in rows)  # finite (not NaN)
