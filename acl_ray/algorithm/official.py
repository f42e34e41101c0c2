"""Import a pre-training checkpoint of the official ACL code as an acl_ray pre-training run.

The official code (VITA-Group/Adversarial-Contrastive-Learning, ``train_simCLR.py``) saves
``{"epoch", "state_dict", "optim"}`` (``model_{epoch}.pt`` adds ``acc``, ``tacc``; a bare state dict
is also accepted, as its ``train_trades.py`` does), with PyTorch 1.5 (the pickle format before the
zip archive). Its model is a CIFAR ResNet-18 (``models/resnet_multi_bn.py``) whose every BN is a
``bn_list`` of ``len(bn_names)`` BNs; ``bn_names=['normal', 'pgd']`` for ACL-DS, so ``bn_list.0`` is
our "clean" route and ``bn_list.1`` our "adv" route (SimCLR runs have ``bn_list.0`` only). Its
``fc`` is the projection head ``proj_head``: ``fc{1,2,3}`` linears (bias on ``fc1`` only) and
``bn{1,2,3}`` BatchNorm1d lists (``--twoLayerProj``: no ``fc3``/``bn3``). ``normalize.{mean,std}``
hold the ImageNet statistics the model normalises with.

The mapping is one to one: every official tensor has exactly one place in :class:`Encoder` and
every Encoder tensor one official source (ReLU, the identity max-pool and the average pool hold
no tensors). Only ``num_batches_tracked`` may be absent (pre-0.4.1 files); it is then 0, which
changes nothing while BN momentum is set. The optimiser state is not imported, so an imported run
can be finetuned and evaluated but not resumed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from acl_ray.algorithm.checkpoint import CHECKPOINT, load_weights, save_checkpoint
from acl_ray.algorithm.models import Encoder
from acl_ray.algorithm.run_dir import CONFIG, ENV, environment, require_empty
from acl_ray.config.pretrain import Config, ModelConfig

DATASETS = ("cifar10", "cifar100")  # what the official code pre-trains on (32x32 RGB)
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# The ACL-DS pre-training the released checkpoints come from (research/acl.md section 1.4); a
# record in config.yaml, not used by finetuning.
PAPER = {
    "data.batch_size": 512, "data.augment": "simclr", "model.arch": "resnet18",
    "attack.eps": 8 / 255, "attack.alpha": 2 / 255, "attack.steps": 5, "loss.temperature": 0.5,
    "optim.name": "lars", "optim.lr": 5.0, "optim.momentum": 0.9, "optim.weight_decay": 1e-6,
    "optim.warmup_epochs": 10, "optim.min_lr": 1e-6, "run.epochs": 1000, "run.seed": 1,
}


def official_key_map(routes: tuple[str, ...], proj_layers: int) -> dict[str, str]:
    """Official key -> :class:`Encoder` key for the dual-BN ResNet-18 + ``proj_head``.

    Args:
        routes: our routes in ``bn_list`` order: ("clean", "adv") for ``bn_names=['normal','pgd']``.
        proj_layers: 3, or 2 for ``--twoLayerProj``.
    """
    pairs = {"normalize.mean": "mean", "normalize.std": "std", "conv1.weight": "backbone.stem.0.weight"}

    def bn(official: str, ours: str) -> None:
        for i, route in enumerate(routes):
            for f in BN_FIELDS:
                pairs[f"{official}.bn_list.{i}.{f}"] = f"{ours}.bns.{route}.{f}"

    bn("bn1", "backbone.stem.1")
    for layer in range(1, 5):  # official layer{1..4}.{0,1} = our blocks 0..7, in order
        for b in range(2):
            src, dst = f"layer{layer}.{b}", f"backbone.blocks.{2 * (layer - 1) + b}"
            for j in (1, 2):
                pairs[f"{src}.conv{j}.weight"] = f"{dst}.conv{j}.weight"
                bn(f"{src}.bn{j}", f"{dst}.bn{j}")
            if layer > 1 and b == 0:  # stride 2: a 1x1 conv + BN on the shortcut
                pairs[f"{src}.downsample.conv.weight"] = f"{dst}.shortcut.0.weight"
                bn(f"{src}.downsample.bn", f"{dst}.shortcut.1")
    for j in range(1, proj_layers + 1):  # our head: Linear, BN, ReLU per layer -> index 3 (j - 1)
        pairs[f"fc.fc{j}.weight"] = f"head.{3 * (j - 1)}.weight"
        if j == 1:
            pairs["fc.fc1.bias"] = "head.0.bias"
        bn(f"fc.bn{j}", f"head.{3 * (j - 1) + 1}")
    return pairs


def official_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model tensors of a loaded official file: ``obj["state_dict"]`` or ``obj``, no ``module.``."""
    name = f"{source!r}"
    if isinstance(obj, Mapping) and "model" in obj and "signature" in obj:
        raise ValueError(f"{name} is already an acl_ray checkpoint: pass its run directory to finetune")
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{name} holds no state dict (found {type(state).__name__})")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ValueError(f"{name} is not a state dict: key {k!r} holds a {type(v).__name__}")
    return dict(state)


def convert_official(
    state: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Our :class:`Encoder` state dict and model config (routes from ``variant``) for an official one.

    Raises:
        ValueError: one line naming the first official key with no place in our model, the first
            expected key the file lacks, or the first tensor whose shape differs.
    """
    indices = {k.split(".bn_list.")[1].split(".")[0] for k in state if ".bn_list." in k}
    routes = ("clean",) if indices == {"0"} else ("clean", "adv")  # other lists fail as unmapped keys
    layers = 3 if "fc.fc3.weight" in state else 2
    head = state.get("fc.fc1.weight"), state.get(f"fc.fc{layers}.weight")
    hidden, out = (int(w.shape[0]) if w is not None and w.dim() == 2 else 512 for w in head)
    model = ModelConfig(
        arch="resnet18", variant="ds" if len(routes) == 2 else "simclr",
        proj_hidden_dim=hidden, proj_out_dim=out, proj_layers=layers,
    )
    mean = state.get("normalize.mean")
    c = int(mean.numel()) if mean is not None else 3
    target = Encoder(model, c, (0.0,) * c, (1.0,) * c).state_dict()
    keys = official_key_map(routes, layers)
    name = f"{source!r} is not an official ACL ResNet-18 checkpoint"
    for k in state:
        if k not in keys:
            raise ValueError(f"{name}: unmapped key {k!r}")
    out_state: dict[str, torch.Tensor] = {}
    for k, ours in keys.items():
        want = target[ours]
        if k not in state:
            if k.endswith(".num_batches_tracked"):
                out_state[ours] = torch.zeros_like(want)
                continue
            raise ValueError(f"{name}: missing key {k!r}")
        v = state[k]
        if k in ("normalize.mean", "normalize.std") and v.numel() == want.numel():
            v = v.reshape(want.shape)  # (C,) -> (1, C, 1, 1)
        if v.shape != want.shape:
            raise ValueError(f"{name}: {k!r} has shape {tuple(v.shape)}, expected {tuple(want.shape)}")
        out_state[ours] = v.detach().to(want.dtype).clone()
    return out_state, model


def _signature(m: ModelConfig, in_channels: int) -> dict[str, Any]:
    """What ``Pretrainer.signature`` records for an encoder of ``m``."""
    proj = [m.proj_hidden_dim, m.proj_out_dim, m.proj_layers]
    return {"arch": m.arch, "routes": list(m.routes), "proj": proj, "in_channels": in_channels}


def import_official(
    path: str | Path,
    out_dir: str | Path,
    dataset: str = "cifar10",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert the official checkpoint at ``path`` into a pre-training run directory ``out_dir``.

    Writes ``config.yaml`` (the paper's ACL-DS setting on ``dataset``, the detected model, then
    ``overrides`` such as ``data.root``), ``env.json`` and ``checkpoint.pt`` (model, config,
    signature, epoch) that ``acl-ray finetune`` reads. Returns a summary of what was imported.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Illegal dataset {dataset!r}: must be one of {', '.join(DATASETS)}")
    path = Path(path)
    out = require_empty(out_dir)
    obj = load_weights(path, "Official checkpoint", legacy=True)
    state, model = convert_official(official_state_dict(obj, str(path)), str(path))
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    epoch = epoch if isinstance(epoch, int) and epoch >= 1 else None
    found = {f"model.{k}": v for k, v in dataclasses.asdict(model).items()}
    values: dict[str, Any] = {**PAPER, "data.name": dataset, **found}
    if epoch is not None:
        values["run.epochs"] = epoch
    cfg = Config().override({**values, **(overrides or {})})
    c = int(state["mean"].shape[1])
    signature = _signature(model, c)
    if _signature(cfg.model, c) != signature:
        raise ValueError(f"The model.* fields are read from the checkpoint ({found}); do not override them")
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / CONFIG)
    env = {**environment(), "seed": cfg.run.seed, "imported_from": str(path.resolve()), "epoch": epoch}
    (out / ENV).write_text(json.dumps(env, indent=2))
    save_checkpoint(out / CHECKPOINT, {
        "model": state, "epoch": epoch or 0, "history": [], "config": cfg.to_dict(), "signature": signature,
        "source": "official-acl",
    })
    summary = {"routes": list(model.routes), "proj_layers": model.proj_layers, "epoch": epoch}
    return {**summary, "tensors": len(state)}


__all__ = ["convert_official", "import_official", "official_key_map", "official_state_dict"]
