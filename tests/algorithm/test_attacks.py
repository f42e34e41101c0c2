import pytest
import torch
from torch import nn

from acl_ray.algorithm.attacks import cw_margin, pgd_classifier, pgd_contrastive
from acl_ray.algorithm.losses import nt_xent
from acl_ray.algorithm.models import build_encoder
from acl_ray.config.pretrain import ModelConfig

EPS, ALPHA, T = 0.1, 0.025, 0.5


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
    a, b = pgd_contrastive(m, x1, x2, EPS, ALPHA, 5, T, generator=torch.Generator().manual_seed(0))
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
    a, b = pgd_contrastive(m, x1, x2, EPS, ALPHA, 5, T, random_start=False)
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
    pgd_contrastive(m, x1, x2, EPS, ALPHA, 3, T)
    assert [mod.training for mod in m.modules()] == modes
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in m.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in m.state_dict().items())


def test_contrastive_pgd_reproducible_under_a_seed() -> None:
    m = encoder()
    x1, x2 = batch(3)
    runs = [
        pgd_contrastive(m, x1, x2, EPS, ALPHA, 3, T, generator=torch.Generator().manual_seed(s))
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_a2s_attack_perturbs_only_the_first_view() -> None:
    m = encoder()
    x1, x2 = batch(4)
    a, b = pgd_contrastive(m, x1, x2, EPS, ALPHA, 3, T, perturb=(True, False))
    assert torch.equal(b, x2) and not torch.equal(a, x1)


def test_attack_on_a_missing_route_is_refused() -> None:
    m = encoder("simclr")  # only the "clean" route exists
    x1, x2 = batch(5)
    with pytest.raises(ValueError, match="route 'adv'"):
        pgd_contrastive(m, x1, x2, EPS, ALPHA, 1, T)


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
    x_adv = pgd_classifier(model, x, y, 0.3, 0.05, 20, loss=loss, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        acc = (model(x_adv).argmax(1) == y).float().mean().item()
    assert acc < 0.05  # an undefended linear model falls at this budget


def test_classifier_pgd_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match="ce, cw"):
        pgd_classifier(Linear(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.1, 0.1, 1, loss="kl")
