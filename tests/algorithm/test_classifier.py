from typing import Any

import pytest
import torch
from torch import nn

from acl_ray.algorithm.checkpoint import save_checkpoint
from acl_ray.algorithm.classifier import (
    Classifier,
    encoder_from_state,
    eval_outputs,
    load_classifier,
    resolve_route,
    split_tensors,
)
from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.config.pretrain import Config

SYN = {"data.name": "synthetic", "data.synthetic_size": 120, "data.batch_size": 32, "run.progress": False}


@pytest.fixture(scope="module")
def pre() -> tuple[Pretrainer, dict[str, Any], Datasets]:
    """An untrained ACL-DS pre-training state whose BN statistics differ per route, and its data."""
    torch.set_num_threads(1)
    cfg = Config().override(SYN)
    data = load_datasets(cfg.data)
    trainer = Pretrainer(cfg, data, torch.device("cpu"))
    x, _ = split_tensors(data.train, torch.device("cpu"))
    trainer.encoder.train()
    with torch.no_grad():
        trainer.encoder(x[:32], route="clean")
        trainer.encoder(x[32:64] * 0.5, route="adv")
    return trainer, trainer.state_dict(), data


def test_encoder_from_state_rebuilds_the_pretrained_encoder(pre) -> None:
    trainer, state, data = pre
    enc = encoder_from_state(state, data.info)
    assert enc.routes == trainer.encoder.routes
    for (k, a), b in zip(enc.state_dict().items(), trainer.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_classifier_forward_uses_the_fixed_route(pre) -> None:
    _, state, data = pre
    info = data.info
    clf = Classifier(encoder_from_state(state, info), info.num_classes, "adv").eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(clf(x), clf.fc(clf.encoder.features(x, "adv")))
        assert torch.equal(clf.features(x), clf.encoder.features(x, "adv"))
        assert not torch.equal(clf.encoder.features(x, "clean"), clf.encoder.features(x, "adv"))


def test_a_finetuning_classifier_drops_the_head_and_starts_at_zero(pre) -> None:
    _, state, data = pre
    info = data.info
    clf = Classifier(encoder_from_state(state, info), info.num_classes, "adv")
    assert not any(k.startswith("encoder.head.") for k in clf.state_dict())  # saved checkpoints' keys
    assert clf.fc.weight.abs().sum() == 0 and clf.fc.bias.abs().sum() == 0


def test_a_probe_leaves_the_encoder_untouched_and_keeps_the_seeded_init(pre) -> None:
    enc = pre[0].encoder
    head, before = enc.head, {k: v.clone() for k, v in enc.state_dict().items()}
    torch.manual_seed(3)
    probe = Classifier(enc, 10, "adv", drop_head=False, zero_init=False)
    torch.manual_seed(3)
    reference = nn.Linear(enc.feature_dim, 10)
    assert enc.head is head and len(list(head.parameters())) > 0
    assert torch.equal(probe.fc.weight, reference.weight) and torch.equal(probe.fc.bias, reference.bias)
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())


@pytest.mark.parametrize("n", [0, 1, 7])
def test_eval_outputs_batches_without_grad_and_restores_the_mode(pre, n) -> None:
    _, state, data = pre
    info = data.info
    clf = Classifier(encoder_from_state(state, info), info.num_classes, "adv")
    clf.train()
    x = torch.rand(n, 1, 8, 8)
    logits, feats = eval_outputs(clf, x, batch=3), eval_outputs(clf, x, clf.features, batch=3)
    assert logits.shape == (n, info.num_classes) and feats.shape == (n, clf.encoder.feature_dim)
    assert not logits.requires_grad and logits.dtype == torch.float32
    assert clf.training and all(m.training for m in clf.modules())
    clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, clf.features(x))


def test_resolve_route() -> None:
    assert resolve_route("auto", ("clean", "adv"), "ckpt") == "adv"
    assert resolve_route("auto", ("clean",), "ckpt") == "clean"
    assert resolve_route("clean", ("clean", "adv"), "ckpt") == "clean"
    with pytest.raises(ValueError, match=r"finetune.route='adv'.*'ckpt' has only the routes: clean") as e:
        resolve_route("adv", ("clean",), "ckpt")
    assert "\n" not in str(e.value)


def test_split_tensors_scales_to_the_unit_interval(pre) -> None:
    split = pre[2].val
    x, y = split_tensors(split, torch.device("cpu"), 5)
    assert x.shape[0] == y.shape[0] == 5 and x.dtype == torch.float32
    assert torch.equal(x * 255, split.images[:5].float()) and torch.equal(y, split.labels[:5])


def test_load_classifier_refuses_a_pretraining_checkpoint(pre, tmp_path) -> None:
    save_checkpoint(tmp_path / "checkpoint.pt", pre[1])
    with pytest.raises(ValueError, match="pre-training checkpoint") as e:
        load_classifier(tmp_path)
    assert "\n" not in str(e.value)
