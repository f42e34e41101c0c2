import itertools
import math

import pytest
import torch

from acl_ray.algorithm.optim import LARS, build_optimizer, scaled_lr, warmup_cosine
from acl_ray.config.pretrain import OptimConfig


def test_lars_step_matches_formula() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3))
    w0 = w.detach().clone()
    g = torch.randn(5, 3)
    lr, wd, eta, mom = 0.5, 1e-2, 1e-3, 0.9
    opt = LARS([w], lr, mom, wd, eta)
    updates = []
    for _ in range(2):
        w.grad = g.clone()
        wn, gn = w.detach().norm(), g.norm()
        updates.append(lr * eta * wn / (gn + wd * wn) * (g + wd * w.detach()))
        opt.step()
    expected = w0 - updates[0] - (mom * updates[0] + updates[1])
    torch.testing.assert_close(w.detach(), expected)


def test_lars_trust_is_one_for_zero_weights() -> None:
    w = torch.nn.Parameter(torch.zeros(4))
    w.grad = torch.ones(4)
    LARS([w], lr=0.1, momentum=0.0).step()
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.1))


def test_warmup_then_cosine() -> None:
    cfg = OptimConfig(name="sgd", lr=1.0, warmup_epochs=2, min_lr=0.1)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg, 1.0)
    sched = warmup_cosine(opt, cfg, steps_per_epoch=5, epochs=10, lr=1.0)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    mid = 10 + 20  # half-way through the cosine part
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])) and lrs[-1] > 0.1


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_rules(rule: str, factor: float) -> None:
    cfg = OptimConfig(lr=0.3, lr_scaling=rule, base_batch_size=128)
    assert scaled_lr(cfg, 512, 512) == pytest.approx(0.3 * factor)
    assert scaled_lr(OptimConfig(lr=0.3, lr_scaling=rule), 512, 512) == pytest.approx(0.3)
