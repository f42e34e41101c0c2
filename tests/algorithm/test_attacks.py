import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.attacks import AttackSpec, cw_margin, pgd_classifier, pgd_contrastive, trades_attack
from acl_ray.algorithm.losses import nt_xent
from acl_ray.algorithm.models import build_encoder
from acl_ray.config.pretrain import AttackConfig, ModelConfig
from acl_ray.config.protocols import EvalConfig

EPS, ALPHA, T = 0.1, 0.025, 0.5


def spec(steps: int, random_start: bool = True) -> AttackSpec:
    return AttackSpec(EPS, ALPHA, steps, random_start)


def encoder(variant: str = "ds") -> nn.Module:
    torch.manual_seed(0)
    m = build_encoder(ModelConfig(variant=variant), 1, (0.5,), (0.5,))
    m.train()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        for route in m.routes:  # give BN non-trivial running statistics on every route
            m(x, route=route)
    return m


def batch(seed: int = 0, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.rand(n, 1, 8, 8, generator=g)


def eval_loss(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    m.eval()
    with torch.no_grad():
        z = m(torch.cat([a, b]), route="adv")
        return nt_xent(z[: len(a)], z[len(a) :], T).item()


def test_contrastive_pgd_stays_in_ball_and_box() -> None:
    m = encoder()
    x1, x2 = batch()
    gen = torch.Generator().manual_seed(0)
    a, b = pgd_contrastive(m, x1, x2, spec(5), temperature=T, generator=gen)
    for adv, x in ((a, x1), (b, x2)):
        assert (adv - x).abs().max() <= EPS + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert not torch.equal(adv, x)


def test_contrastive_pgd_raises_the_loss() -> None:
    m = encoder()
    x1, _ = batch(1, n=16)
    x2 = (x1 + 0.02 * torch.randn(x1.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(30):  # learn to match the pairs, so the clean loss is low and there is room above
        z = m(torch.cat([x1, x2]), route="adv")
        opt.zero_grad()
        nt_xent(z[:16], z[16:], T).backward()
        opt.step()
    a, b = pgd_contrastive(m, x1, x2, spec(5, random_start=False), temperature=T)
    clean, adv = eval_loss(m, x1, x2), eval_loss(m, a, b)
    assert adv > clean + 0.1, (clean, adv)


def test_contrastive_pgd_has_no_side_effects() -> None:
    m = encoder()
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)
    m.head.train(False)  # a mixed mode that must come back exactly
    modes = [mod.training for mod in m.modules()]
    buffers = {k: v.clone() for k, v in m.state_dict().items()}
    x1, x2 = batch(2)
    pgd_contrastive(m, x1, x2, spec(3), temperature=T)
    assert [mod.training for mod in m.modules()] == modes
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in m.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in m.state_dict().items())


def test_contrastive_pgd_reproducible_under_a_seed() -> None:
    m = encoder()
    x1, x2 = batch(3)
    runs = [
        pgd_contrastive(m, x1, x2, spec(3), temperature=T, generator=torch.Generator().manual_seed(seed))
        for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_a2s_attack_perturbs_only_the_first_view() -> None:
    m = encoder()
    x1, x2 = batch(4)
    a, b = pgd_contrastive(m, x1, x2, spec(3), temperature=T, perturb=(True, False))
    assert torch.equal(b, x2) and not torch.equal(a, x1)


def test_attack_on_a_missing_route_is_refused() -> None:
    m = encoder("simclr")  # only the "clean" route exists
    x1, x2 = batch(5)
    with pytest.raises(ValueError, match="route 'adv'"):
        pgd_contrastive(m, x1, x2, spec(1), temperature=T)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * 20


def test_cw_margin_closed_form() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    assert torch.equal(cw_margin(logits, torch.tensor([1, 0])), torch.tensor([-1.0, -4.0]))


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_classifier_pgd_invariants_and_strength(loss: str) -> None:
    model = Linear()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # every clean point is correct by construction
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd_classifier(model, x, y, AttackSpec(0.3, 0.05, 20), loss=loss, generator=gen)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        acc = (model(x_adv).argmax(1) == y).float().mean().item()
    assert acc < 0.05  # an undefended linear model falls at this budget


class RowWise(nn.Module):
    """Logits of each point from that point alone, by elementwise products and a per-row sum in
    float64: no batched matrix product whose blocking could depend on how many points run."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(64, 10, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, :, None] * self.w).sum(1) * 20  # (N, 64, 10) -> (N, 10)


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_classifier_pgd_on_some_points_is_the_full_batch_attack_on_them(loss: str) -> None:
    model = RowWise()
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    only = torch.arange(24) % 3 != 1  # 16 of 24
    full_gen, some_gen = (torch.Generator().manual_seed(5) for _ in range(2))
    full = pgd_classifier(model, x, y, AttackSpec(0.2, 0.05, 5), loss, full_gen)
    some = pgd_classifier(model, x, y, AttackSpec(0.2, 0.05, 5), loss, some_gen, only=only)
    assert torch.equal(some[only], full[only])  # each point's start and steps as in the full batch
    assert torch.equal(some[~only], x[~only])  # the others clean
    assert not torch.equal(full[only], x[only])  # (the attack moved them)
    assert torch.equal(full_gen.get_state(), some_gen.get_state())  # the same draws: later batches agree
    none = pgd_classifier(model, x, y, AttackSpec(0.2, 0.05, 5), loss, only=torch.zeros(24, dtype=torch.bool))
    assert torch.equal(none, x)


def test_classifier_pgd_rejects_unknown_loss() -> None:
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="ce, cw"):
        pgd_classifier(Linear(), x, y, AttackSpec(0.1, 0.1, 1), loss="kl")


def test_trades_attack_stays_in_the_ball_raises_the_kl_and_keeps_the_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(16, 1, 8, 8)
    model.train()
    x_adv = trades_attack(model, x, AttackSpec(0.1, 0.025, 10), torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training
    model.eval()
    with torch.no_grad():  # the attack raised the KL term above the 0.001-noise start
        p = F.softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="batchmean")
    assert kl > 1e-4


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (AttackConfig(), AttackSpec(0.1, 0.025, 3, True)),
        (AttackConfig(eps=0.2, alpha=0.01, steps=5, random_start=False), AttackSpec(0.2, 0.01, 5, False)),
        (EvalConfig(), AttackSpec(0.1, 0.025, 20, True)),
        (EvalConfig(eps=8 / 255, alpha=2 / 255, steps=10), AttackSpec(8 / 255, 2 / 255, 10, True)),
    ],
)
def test_attack_spec_of_a_config(cfg, expected) -> None:
    assert AttackSpec.of(cfg) == expected  # alpha 0 means eps / 4; the test attack always starts at random
    assert AttackSpec.quarter_step(0.1, 7) == AttackSpec(0.1, 0.1 / 4, 7, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        expected.eps = 0.3  # type: ignore[misc]


def test_contrastive_pgd_takes_its_options_by_keyword() -> None:
    m = encoder()
    x1, x2 = batch(6)
    with pytest.raises(TypeError):
        pgd_contrastive(m, x1, x2, spec(1), T)  # type: ignore[misc]
