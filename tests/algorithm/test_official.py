"""``acl-ray import-official``: a checkpoint of the official ACL code becomes a pre-training run.

The official files are built here by a stand-in of the official module naming (``bn_list`` dual
BN, ``downsample.conv``/``downsample.bn``, ``fc`` = ``proj_head`` with ``fc{j}``/``bn{j}``,
``normalize``), written from the layout notes in research/acl.md section 1.3, with random values.
The converted encoder is checked tensor by tensor and against a functional forward that reads the
official state dict by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.checkpoint import load_checkpoint
from acl_ray.algorithm.classifier import encoder_from_state, load_classifier
from acl_ray.algorithm.data import DatasetInfo
from acl_ray.algorithm.models import Encoder
from acl_ray.algorithm.official import convert_official, official_key_map
from acl_ray.cli import main
from tests.algorithm.test_data import fake_cifar
from tests.test_cli import Payload, error_line

ROUTES = {0: "clean", 1: "adv"}  # bn_names=['normal', 'pgd']
CIFAR = DatasetInfo("cifar10", 10, 3, 32, 32, (0.5,) * 3, (0.5,) * 3)  # mean/std come from the file


class BNList(nn.Module):  # official: batch_norm_multiple
    def __init__(self, bn: type[nn.Module], c: int, n: int) -> None:
        super().__init__()
        self.bn_list = nn.ModuleList([bn(c) for _ in range(n)])


class Down(nn.Module):  # official: Downsample_multiple
    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 1, 2, bias=False), BNList(nn.BatchNorm2d, cout, n)


class Block(nn.Module):  # official: BasicBlock with bn_names
    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, bias=False), BNList(nn.BatchNorm2d, cout, n)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, bias=False), BNList(nn.BatchNorm2d, cout, n)
        if cin != cout:
            self.downsample = Down(cin, cout, n)


class Head(nn.Module):  # official: proj_head(512, bn_names, twoLayerProj)
    def __init__(self, n: int, layers: int) -> None:
        super().__init__()
        for j in range(1, layers + 1):
            setattr(self, f"fc{j}", nn.Linear(512, 512, bias=j == 1))
            setattr(self, f"bn{j}", BNList(nn.BatchNorm1d, 512, n))


class Official(nn.Module):  # official: ResNet(BasicBlock, [2, 2, 2, 2], bn_names) with fc = proj_head
    def __init__(self, n: int = 2, layers: int = 3) -> None:
        super().__init__()
        self.normalize = nn.Module()
        self.normalize.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]))
        self.normalize.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]))
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, bias=False), BNList(nn.BatchNorm2d, 64, n)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512), start=1):
            setattr(self, f"layer{i}", nn.Sequential(Block(cin, cout, n), Block(cout, cout, n)))
            cin = cout
        self.fc = Head(n, layers)


def official_state(n: int = 2, layers: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official state dict with random values on a sane scale (He-like weights, var > 0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in Official(n, layers).state_dict().items():
        if k.endswith("num_batches_tracked"):
            v = torch.randint(1, 1000, (), generator=g)
        elif k.endswith("running_var"):
            v = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(".weight") and v.dim() > 1:
            v = torch.randn(v.shape, generator=g) * (2 / v[0].numel()) ** 0.5
        elif not k.startswith("normalize"):  # BN affine, running means, the fc1 bias
            centre = 1.0 if ".bn" in k and k.endswith("weight") else 0.0
            v = centre + 0.2 * torch.randn(v.shape, generator=g)
        out[k] = v
    return out


def reference(
    sd: dict[str, torch.Tensor], x: torch.Tensor, i: int, layers: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and projections of the official model, eval mode, BN ``bn_list.i``, by key name."""

    def bn(name: str, h: torch.Tensor) -> torch.Tensor:
        p = f"{name}.bn_list.{i}."
        w, b = sd[p + "weight"], sd[p + "bias"]
        return F.batch_norm(h, sd[p + "running_mean"], sd[p + "running_var"], w, b, training=False)

    h = (x - sd["normalize.mean"].view(1, 3, 1, 1)) / sd["normalize.std"].view(1, 3, 1, 1)
    h = F.relu(bn("bn1", F.conv2d(h, sd["conv1.weight"], padding=1)))
    for layer in range(1, 5):
        for b in range(2):
            p = f"layer{layer}.{b}"
            stride = 2 if layer > 1 and b == 0 else 1
            out = F.relu(bn(f"{p}.bn1", F.conv2d(h, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
            out = bn(f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1))
            if f"{p}.downsample.conv.weight" in sd:
                h = bn(f"{p}.downsample.bn", F.conv2d(h, sd[f"{p}.downsample.conv.weight"], stride=stride))
            h = F.relu(out + h)
    feats = h.mean(dim=(2, 3))  # (N, 512)
    z = feats
    for j in range(1, layers + 1):
        z = bn(f"fc.bn{j}", F.linear(z, sd[f"fc.fc{j}.weight"], sd.get(f"fc.fc{j}.bias")))
        z = F.relu(z) if j < layers else z
    return feats, z


def encoder(sd: dict[str, torch.Tensor]) -> Encoder:
    state, model = convert_official(sd, "official.pt")
    sig = {"routes": list(model.routes)}
    return encoder_from_state({"config": {"model": vars(model)}, "signature": sig, "model": state}, CIFAR)


@pytest.mark.parametrize(("n", "layers"), [(2, 3), (2, 2), (1, 3)])
def test_every_official_tensor_lands_in_its_place(n: int, layers: int) -> None:
    sd = official_state(n, layers)
    state, model = convert_official(sd, "official.pt")
    assert model.routes == (("clean", "adv") if n == 2 else ("clean",))
    assert (model.arch, model.proj_hidden_dim, model.proj_out_dim, model.proj_layers) == (
        "resnet18", 512, 512, layers
    )
    ours = Encoder(model, 3, (0.0,) * 3, (1.0,) * 3).state_dict()
    assert set(state) == set(ours) and len(sd) == len(state)  # one to one
    keys = official_key_map(model.routes, layers)
    for k, v in sd.items():
        assert torch.equal(state[keys[k]].flatten(), v.flatten()), k
    # Spot checks written out by hand, independent of the key map.
    assert torch.equal(state["mean"], sd["normalize.mean"].view(1, 3, 1, 1))
    assert torch.equal(state["backbone.blocks.1.bn1.bns.clean.weight"], sd["layer1.1.bn1.bn_list.0.weight"])
    assert torch.equal(state["backbone.blocks.4.shortcut.0.weight"], sd["layer3.0.downsample.conv.weight"])
    assert torch.equal(state[f"head.{3 * (layers - 1)}.weight"], sd[f"fc.fc{layers}.weight"])
    if n == 2:
        assert torch.equal(state["backbone.blocks.0.bn1.bns.adv.weight"], sd["layer1.0.bn1.bn_list.1.weight"])
        want = sd["layer4.0.downsample.bn.bn_list.1.running_var"]
        assert torch.equal(state["backbone.blocks.6.shortcut.1.bns.adv.running_var"], want)
        tracked = sd["fc.bn1.bn_list.1.num_batches_tracked"]
        assert torch.equal(state["head.1.bns.adv.num_batches_tracked"], tracked)


@pytest.mark.parametrize(("n", "layers"), [(2, 3), (2, 2)])
def test_same_features_as_the_official_forward(n: int, layers: int) -> None:
    sd = official_state(n, layers, seed=1)
    enc = encoder(sd).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for i in range(n):
            feats, z = reference(sd, x, i, layers)
            assert feats.abs().mean() > 0.1  # a forward on a sane scale, not all zeros
            torch.testing.assert_close(enc.features(x, ROUTES[i]), feats, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(enc(x, ROUTES[i]), z, rtol=1e-5, atol=1e-5)
        if n == 2:  # the routes really differ: picking the wrong bn_list would be seen
            assert not torch.allclose(reference(sd, x, 0, layers)[0], reference(sd, x, 1, layers)[0])


def save_official(path: Path, sd: dict[str, torch.Tensor], how: str) -> Path:
    """As train_simCLR.py saves (PyTorch 1.5: the pre-zip format), bare, or from DataParallel."""
    if how == "train_simCLR":
        optim = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 5.0}]}
        saved = {"epoch": 1000, "state_dict": sd, "optim": optim}
        torch.save(saved, path, _use_new_zipfile_serialization=False)
    elif how == "bare":
        torch.save(sd, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    return path


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cifar") / "data"
    mp = pytest.MonkeyPatch()
    fake_cifar(root, mp, cifar100=False, n_train=40, n_test=6)
    yield root
    mp.undo()


def data_sets(root: Path) -> list[str]:
    return ["--set", f"data.root={root}", "--set", "data.download=false"]


@pytest.mark.parametrize("how", ["train_simCLR", "bare", "data_parallel"])
def test_import_writes_a_run_that_finetune_accepts(how: str, tmp_path: Path, cifar_root: Path) -> None:
    sd = official_state(seed=3)
    path, run = save_official(tmp_path / "ACL_DS.pt", sd, how), tmp_path / "run"
    assert main(["import-official", str(path), "--out", str(run), *data_sets(cifar_root)]) == 0
    state = load_checkpoint(run)
    assert state["signature"] == {"arch": "resnet18", "routes": ["clean", "adv"], "proj": [512, 512, 3],
                                  "in_channels": 3}
    cfg = state["config"]
    assert cfg["data"]["name"] == "cifar10" and cfg["data"]["root"] == str(cifar_root)
    assert cfg["run"]["epochs"] == (1000 if how == "train_simCLR" else cfg["run"]["epochs"])
    assert json.loads((run / "env.json").read_text())["imported_from"] == str(path.resolve())
    if how != "train_simCLR":
        return
    ft = tmp_path / "slf"
    tiny = ["finetune.epochs=1", "finetune.batch_size=32", "finetune.val_size=4", "eval.steps=2",
            "finetune.threads=2"]
    argv = ["finetune", "--checkpoint", str(run), "--protocol", "slf", "--out", str(ft)]
    assert main([*argv, *[a for s in tiny for a in ("--set", s)]]) == 0
    m = json.loads((ft / "metrics.json").read_text())
    assert m["route"] == "adv" and 0 <= m["eval/robust_acc"] <= m["eval/standard_acc"] <= 1
    clf, _, _ = load_classifier(ft)  # SLF froze the encoder: still the official adv-BN features
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(clf.features(x), reference(sd, x, 1)[0], rtol=1e-5, atol=1e-5)


def test_imported_run_cannot_be_resumed(
    tmp_path: Path, cifar_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, run = save_official(tmp_path / "a.pt", official_state(), "bare"), tmp_path / "run"
    assert main(["import-official", str(path), "--out", str(run), *data_sets(cifar_root)]) == 0
    sets = ["--set", "run.threads=1", "--set", "data.batch_size=16"]  # fits the 36 fake images
    line = error_line(capsys, ["pretrain", "--resume", "--out", str(run), *sets])
    assert "no optimiser state" in line


def _renamed(path: Path) -> str:
    sd = official_state()
    sd["encoder.extra"] = sd.pop("layer2.1.bn2.bn_list.1.bias")
    torch.save({"state_dict": sd}, path)
    return "unmapped key 'encoder.extra'"


def _missing(path: Path) -> str:
    sd = official_state()
    del sd["layer3.0.downsample.conv.weight"]
    torch.save(sd, path)
    return "missing key 'layer3.0.downsample.conv.weight'"


def _single_bn(path: Path) -> str:  # a finetuned official model (models/resnet.py): no bn_list
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "bn1.weight": torch.ones(64)}, path)
    return "unmapped key 'bn1.weight'"


def _wrong_shape(path: Path) -> str:
    sd = official_state()
    sd["fc.fc2.weight"] = torch.zeros(512, 256)
    torch.save(sd, path)
    return "'fc.fc2.weight' has shape (512, 256), expected (512, 512)"


def _truncated(path: Path) -> str:
    save_official(path, official_state(), "train_simCLR")
    path.write_bytes(path.read_bytes()[:-1000])
    return "truncated or corrupt"


def _truncated_zip(path: Path) -> str:
    torch.save(official_state(), path)
    path.write_bytes(path.read_bytes()[: 200_000])
    return "truncated or corrupt"


def _pickled(path: Path) -> str:
    saved = {"state_dict": official_state(), "args": Payload()}
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    return "pickled code"


BAD = [_renamed, _missing, _single_bn, _wrong_shape, _truncated, _truncated_zip, _pickled]


@pytest.mark.parametrize("make", BAD)
def test_bad_file_is_one_error_line(make, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "official.pt", tmp_path / "run"
    why = make(path)
    line = error_line(capsys, ["import-official", str(path), "--out", str(out)])
    assert why in line and str(path) in line
    assert not out.exists()


def test_model_fields_are_not_overridden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = save_official(tmp_path / "a.pt", official_state(), "bare"), tmp_path / "run"
    argv = ["import-official", str(path), "--out", str(out), "--set", "model.proj_layers=2"]
    line = error_line(capsys, argv)
    assert "read from the checkpoint" in line and not out.exists()


def test_cifar100_and_a_simclr_checkpoint(tmp_path: Path) -> None:
    path, run = save_official(tmp_path / "simclr.pt", official_state(n=1), "bare"), tmp_path / "run"
    assert main(["import-official", str(path), "--out", str(run), "--dataset", "cifar100"]) == 0
    state = load_checkpoint(run)
    assert state["config"]["data"]["name"] == "cifar100" and state["config"]["model"]["variant"] == "simclr"
    assert state["signature"]["routes"] == ["clean"]  # finetune's route auto then keeps "clean"
