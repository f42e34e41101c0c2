import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

import acl_ray.algorithm.semisup as semisup_mod
from acl_ray.algorithm.checkpoint import load_checkpoint
from acl_ray.algorithm.classifier import load_classifier
from acl_ray.algorithm.data import Split, load_datasets
from acl_ray.algorithm.pretrain import run_pretrain
from acl_ray.algorithm.robustness import evaluate_checkpoint
from acl_ray.algorithm.semisup import labelled_indices, semisup
from acl_ray.cli import main
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import SemisupConfig

torch.set_num_threads(1)

TINY = {"data.name": "synthetic", "data.batch_size": 64, "run.epochs": 1, "run.threads": 1}
TINY["run.progress"] = False
FAST = {
    "semisup.teacher_epochs": 3, "semisup.epochs": 2, "semisup.train_steps": 2, "semisup.select_every": 1,
    "semisup.val_size": 40, "semisup.threads": 1, "semisup.batch_size": 64, "eval.steps": 3,
}


def fast(**more: object) -> SemisupConfig:
    return SemisupConfig().override({**FAST, **more})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, object]:
    """A one-epoch ACL-DS pre-training on synthetic data and one semisup run on it (a few seconds)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("semisup")
    run_pretrain(Config().override(TINY), root / "ds")
    metrics = semisup(root / "ds", fast(), root / "semi")
    return {"pre": str(root / "ds"), "out": str(root / "semi"), "metrics": metrics}


# ----------------------------------------------------------------------------- labelled subset


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("n,classes", [(1258, 10), (420, 4), (97, 7)])
def test_labelled_subset_is_stratified_sized_and_deterministic(n, classes, fraction) -> None:
    g = torch.Generator().manual_seed(n)
    labels = torch.multinomial(torch.linspace(1, 3, classes), n, replacement=True, generator=g)  # unbalanced
    idx = labelled_indices(labels, fraction, seed=3)
    k = max(1, round(fraction * n))
    assert len(idx) == k and len(idx.unique()) == k and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, labelled_indices(labels, fraction, seed=3))  # deterministic
    counts, share = torch.bincount(labels[idx], minlength=classes), torch.bincount(labels) * k / n
    if k >= classes:
        assert (counts >= 1).all()  # every class present
    else:
        assert counts.max() == 1  # as many classes as images
    assert ((counts - share).abs() <= 1).all()  # each class within one image of its share
    if fraction < 1:
        assert not torch.equal(idx, labelled_indices(labels, fraction, seed=4))


def test_one_percent_of_digits_has_every_class() -> None:
    labels = load_datasets(Config().data).train.labels
    idx = labelled_indices(labels, 0.01, seed=0)
    assert len(idx) == round(0.01 * len(labels)) and set(labels[idx].tolist()) == set(range(10))


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_writes_metrics_checkpoint_and_config(run, tmp_path) -> None:
    m, out = run["metrics"], run["out"]
    assert json.loads(Path(out, "metrics.json").read_text()) == pytest.approx(m)
    n_train = len(load_datasets(Config().override(TINY).data).train.labels)
    assert m["semisup/labelled"] == round(0.1 * n_train) and m["semisup/label_fraction"] == 0.1
    assert m["semisup/labelled"] + m["semisup/unlabelled"] == n_train
    assert (m["route"], m["teacher/route"]) == ("adv", "clean")
    for split in ("val", "eval"):
        assert 0 <= m[f"{split}/robust_acc"] <= m[f"{split}/standard_acc"] <= 1
    assert 0 <= m["teacher/standard_acc"] <= 1 and m["time/teacher_s"] > 0
    cfg = SemisupConfig.from_dict(yaml.safe_load(Path(out, "config.yaml").read_text()))
    assert cfg == fast()
    clf, ft, _ = load_classifier(out)
    assert clf.route == "adv" and ft.eval == cfg.eval
    again = evaluate_checkpoint(out, checks=0)  # what `acl-ray evaluate --checkpoint out` runs
    assert again["eval/standard_acc"] == pytest.approx(m["eval/standard_acc"])
    assert again["eval/robust_acc"] == pytest.approx(m["eval/robust_acc"])


@pytest.mark.parametrize("fraction,labelled", [(1.0, 420), (0.001, 1)])
def test_extreme_fractions_run(run, tmp_path, fraction, labelled) -> None:
    m = semisup(run["pre"], fast(**{"semisup.label_fraction": fraction, "semisup.epochs": 1}), tmp_path / "x")
    assert (m["semisup/labelled"], m["semisup/unlabelled"]) == (labelled, 420 - labelled)
    assert 0 <= m["eval/robust_acc"] <= m["eval/standard_acc"] <= 1


def _scrambled(monkeypatch, keep: torch.Tensor, scramble_labelled: bool) -> None:
    """Make semisup see training labels permuted outside ``keep`` (or inside it)."""
    real = load_datasets

    def fake(cfg):
        data = real(cfg)
        labels = data.train.labels.clone()
        mask = torch.zeros(len(labels), dtype=torch.bool)
        mask[keep] = True
        pos = (mask if scramble_labelled else ~mask).nonzero().squeeze(1)
        labels[pos] = (labels[pos] + 1 + torch.arange(len(pos)) % 3) % int(labels.max() + 1)  # all changed
        return dataclasses.replace(data, train=Split(data.train.images, labels))

    monkeypatch.setattr(semisup_mod, "load_datasets", fake)


def _same_run(a: str, b: str) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return all(torch.equal(sa[key], sb[key]) for key in sa)


def test_unlabelled_labels_are_never_used(run, tmp_path, monkeypatch) -> None:
    labels = load_datasets(Config().override(TINY).data).train.labels
    keep = labelled_indices(labels, 0.1, seed=0)  # the default draw, made with the true labels
    _scrambled(monkeypatch, keep, scramble_labelled=False)
    m = semisup(run["pre"], fast(), tmp_path / "a", labelled=keep)
    assert {k: v for k, v in m.items() if not k.startswith("time/")} == pytest.approx(
        {k: v for k, v in run["metrics"].items() if not k.startswith("time/")}
    )
    assert _same_run(run["out"], tmp_path / "a")
    # The test can fail: scrambling the labelled images' labels changes the result.
    _scrambled(monkeypatch, keep, scramble_labelled=True)
    semisup(run["pre"], fast(), tmp_path / "b", labelled=keep)
    assert not _same_run(run["out"], tmp_path / "b")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_bad_label_fraction_is_a_one_line_error(fraction) -> None:
    with pytest.raises(ValueError, match=r"semisup\.label_fraction.*\(0, 1\]") as e:
        SemisupConfig(label_fraction=fraction)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"semisup\.label_fraction"):
        SemisupConfig().override({"semisup.label_fraction": fraction})


@pytest.mark.parametrize("key,value", [
    ("semisup.alpha", 1.5), ("semisup.route", "dual"), ("semisup.labelled_batch", 500), ("semisup.nope", 1),
    ("eval.eps", 2), ("semisup.epochs", 0), ("semisup.temperature", 0),
])
def test_bad_fields_are_one_line_errors(key, value) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as e:
        SemisupConfig().override({key: value})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args", [
    ["--label-fraction", "0"], ["--label-fraction", "1.5"], ["--label-fraction", "-0.1"],
    ["--set", "semisup.alpha=2"], ["--set", "semisup.route=dual"],
])
def test_cli_exits_2_on_bad_input(run, tmp_path, capsys, args) -> None:
    assert main(["semisup", "--checkpoint", run["pre"], "--out", str(tmp_path / "o"), *args]) == 2
    assert "error:" in capsys.readouterr().out and not (tmp_path / "o").exists()


def test_cli_refuses_a_classifier_a_non_empty_out_and_bad_indices(run, tmp_path) -> None:
    assert main(["semisup", "--checkpoint", run["out"], "--out", str(tmp_path / "o")]) == 2
    assert main(["semisup", "--checkpoint", run["pre"], "--out", run["out"]]) == 2  # not empty
    with pytest.raises(ValueError, match="labelled"):
        semisup(run["pre"], fast(), tmp_path / "i", labelled=torch.tensor([0, 10_000]))
