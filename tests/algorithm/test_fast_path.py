"""The GPU fast path (bf16 autocast, channels_last, torch.compile) executed on the CPU, on the digits
CNN (bf16 ResNet-18 is far too slow on CPUs without bf16 instructions). Each is compared with the
plain fp32 path on the same weights and data; the tolerances are stated where they are used.

``pytest -m cuda`` runs the same tests on a CUDA device (benchmarks/gpu_check.py does that).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict

import pytest
import torch

from acl_ray.algorithm.attacks import AttackSpec, pgd_classifier, pgd_contrastive
from acl_ray.algorithm.classifier import Classifier
from acl_ray.algorithm.data import Split, load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.robustness import robust_mask
from acl_ray.algorithm.runtime import CHANNELS_LAST_ON_CPU
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import EvalConfig

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]
BASE = {"run.progress": False, "data.batch_size": 64, "attack.steps": 2, "run.epochs": 2, "run.threads": 2}


@pytest.fixture(scope="module")
def data():
    return load_datasets(Config().data)


@pytest.fixture(scope="module")
def short(data):
    """The digits with the training split cut to 3 batches of 64: an epoch of 3 steps. For the tests
    that train whole epochs; the full split's 19 steps repeat the same shapes (and graphs) 19 times."""
    n = 3 * BASE["data.batch_size"]
    return dataclasses.replace(data, train=Split(data.train.images[:n], data.train.labels[:n]))


def trainer(data, device: str, **sets: object) -> Pretrainer:
    cfg = Config().override({**BASE, "run.precision": "fp32", "run.channels_last": False, **sets})
    return Pretrainer(cfg, data, torch.device(device))


def fresh_dynamo() -> defaultdict[str, Counter[str]]:
    """torch._dynamo reset and its counters cleared; returns the counters. Imported here, not at the
    top: benchmarks/gpu_check.py collects this file on machines where every test here is skipped or
    deselected, and the import alone costs some 3 s of CPU."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    return counters


def first_loss(t: Pretrainer) -> float:
    idx = torch.arange(t.local_batch, device=t.device)
    return float(t.step(idx))


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_ds_step_is_finite_and_close_to_fp32(data, device) -> None:
    fp32 = first_loss(trainer(data, device))
    bf16 = first_loss(trainer(data, device, **{"run.precision": "bf16"}))
    assert math.isfinite(bf16)
    assert abs(bf16 - fp32) / fp32 < 5e-3  # measured 1.9e-4 here: 8 mantissa bits, NT-Xent runs in fp32


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_equals_the_nchw_step(data, device, monkeypatch) -> None:
    monkeypatch.setenv(CHANNELS_LAST_ON_CPU, "1")
    plain = trainer(data, device)
    nhwc = trainer(data, device, **{"run.channels_last": True})
    conv = next(m for m in nhwc.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert nhwc.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert first_loss(nhwc) == pytest.approx(first_loss(plain), rel=1e-5)  # a layout, not a precision change


def test_channels_last_stays_off_on_cpu_unless_forced(data, monkeypatch) -> None:
    monkeypatch.delenv(CHANNELS_LAST_ON_CPU, raising=False)
    assert not trainer(data, "cpu", **{"run.channels_last": True}).channels_last


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_ds_epochs_match_eager_and_stop_recompiling(short, device) -> None:
    counters = fresh_dynamo()
    eager, compiled = trainer(short, device), trainer(short, device, **{"run.compile": True})
    assert first_loss(compiled) == pytest.approx(first_loss(eager), rel=1e-4)  # fused kernels reorder sums
    compiled.train_epoch()
    graphs = counters["stats"]["unique_graphs"]
    # The attack (eval-mode BN, "adv" route) and the training forward (train mode, "split" route):
    # a few graphs in the first epoch, and none new once they exist.
    assert 1 <= graphs <= 6, dict(counters["stats"])
    row = compiled.train_epoch()
    assert counters["stats"]["unique_graphs"] == graphs and math.isfinite(row["train/loss"])


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_channels_last_compile_together(short, device, monkeypatch) -> None:
    monkeypatch.setenv(CHANNELS_LAST_ON_CPU, "1")
    fresh_dynamo()
    t = trainer(short, device, **{"run.precision": "bf16", "run.channels_last": True, "run.compile": True})
    assert math.isfinite(t.train_epoch()["train/loss"])


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_attack_stays_in_the_ball_and_matches_eager(data, device) -> None:
    fresh_dynamo()
    t = trainer(data, device)
    enc = t.encoder.eval()
    x = data.train.images[:32].to(device).float() / 255
    spec = AttackSpec(eps=0.1, alpha=0.025, steps=3, random_start=False)  # no random start: same path
    a1, a2 = pgd_contrastive(enc, x, x.flip(0), spec, temperature=0.5)
    c1, c2 = pgd_contrastive(torch.compile(enc), x, x.flip(0), spec, temperature=0.5)
    for adv, ref in ((c1, a1), (c2, a2)):
        assert (adv - x if adv is c1 else adv - x.flip(0)).abs().max() <= 0.1 + 1e-6
        # A sign step flips only where a gradient entry is within float noise of 0: nearly all agree.
        assert (adv == ref).float().mean() > 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_classifier_finetune_epoch_and_evaluation(data, device) -> None:
    """ALF-style epoch (PGD-10 on the classifier, cross-entropy step) and the PGD-20 evaluation,
    through a compiled classifier: finite losses, logits equal to eager, a bounded number of graphs."""
    counters = fresh_dynamo()
    torch.manual_seed(0)
    clf = Classifier(trainer(data, device).encoder, 10, "adv", zero_init=False).to(device)
    fast = torch.compile(clf)
    x = data.train.images[:96].to(device).float() / 255
    y = data.train.labels[:96].to(device)
    opt = torch.optim.SGD(clf.fc.parameters(), lr=0.1)
    spec = AttackSpec.quarter_step(0.1, 10)
    for idx in torch.arange(96, device=device).split(32):
        gen = torch.Generator(device=device).manual_seed(0)
        x_adv = pgd_classifier(fast, x[idx], y[idx], spec, "ce", gen)
        clf.train()
        loss = torch.nn.functional.cross_entropy(fast(x_adv), y[idx])
        assert math.isfinite(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        clf.eval()
        assert torch.allclose(fast(x), clf(x), rtol=1e-4, atol=1e-4)
    graphs = counters["stats"]["unique_graphs"]
    mask = robust_mask(fast, x, y, EvalConfig(eps=0.1, steps=20, batch_size=40))  # 40, 40, 16: two shapes
    assert mask.dtype == torch.bool and mask.shape == (96,)
    assert counters["stats"]["unique_graphs"] - graphs <= 4  # a batch-size change may add one per mode
