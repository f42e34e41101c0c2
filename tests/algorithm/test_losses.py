import math

import numpy as np
import pytest
import torch

from acl_ray.algorithm.losses import invariance_regularisers, nt_xent, semisup_loss, trades_loss


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR Algorithm 1 written as loops: l(i, j) over the 2N views, averaged."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2

    def sim(a: int, b: int) -> float:
        return float(z[a] @ z[b])

    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(sim(i, k) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(i, j) / t) / denom)
    return total / n2


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_naive_loop(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = nt_xent(z1, z2, t).item()
    assert got == pytest.approx(nt_xent_reference(z1.numpy(), z2.numpy(), t), rel=1e-5)


def test_nt_xent_identical_views_beat_random_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    assert nt_xent(z, z, 0.5) < nt_xent(z, torch.randn(32, 16, generator=g), 0.5)


def test_nt_xent_scale_invariant_and_symmetric() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    assert nt_xent(3 * z1, 0.5 * z2, 0.5) == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-5)
    assert nt_xent(z2, z1, 0.5) == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-5)


def trades_reference(nat, adv, y, beta):  # TRADES eq. 5 row by row: CE + beta KL(p(x) || p(x_adv))
    total = 0.0
    for r in range(len(nat)):
        p = torch.softmax(nat[r], 0)
        kl = (p * (torch.log(p) - torch.log_softmax(adv[r], 0))).sum()
        total = total - torch.log_softmax(nat[r], 0)[y[r]] + beta * kl
    return total / len(nat)


@pytest.mark.parametrize("n,k", [(1, 3), (7, 10)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
def test_trades_loss_matches_the_formula(n, k, beta) -> None:
    g = torch.Generator().manual_seed(n * k)
    nat, adv = (torch.randn(n, k, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    y = torch.randint(k, (n,), generator=g)
    ours, ref = trades_loss(nat, adv, y, beta), trades_reference(nat, adv, y, beta)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    for a, r in zip(torch.autograd.grad(ours, (nat, adv)), torch.autograd.grad(ref, (nat, adv)), strict=True):
        torch.testing.assert_close(a, r)
    assert trades_loss(nat, nat, y, beta).item() == pytest.approx(  # no KL between identical logits
        torch.nn.functional.cross_entropy(nat, y).item(), abs=1e-12
    )


def semisup_reference(nat, adv, y, teacher, alpha, t, beta):  # the official trade_loss_soft, row by row
    b, total = len(adv), 0.0
    for r in range(b):
        q = torch.softmax(teacher[r] / t, 0)
        soft_ce = -(q * torch.log_softmax(adv[r] / t, 0)).sum()  # official distillCrossEntropy
        if r < len(y):
            total = total + (1 - alpha) * -torch.log_softmax(adv[r], 0)[y[r]] + alpha * t * t * soft_ce
        else:
            total = total + t * t * soft_ce
        p = torch.softmax(nat[r], 0)
        total = total + beta * (p * (torch.log(p) - torch.log_softmax(adv[r], 0))).sum()
    return total / b


@pytest.mark.parametrize("n_lab,b,k", [(1, 8, 3), (5, 5, 10), (3, 20, 10)])
@pytest.mark.parametrize("alpha,t,beta", [(0.5, 1.0, 6.0), (0.2, 4.0, 1.0), (1.0, 0.5, 0.0)])
def test_semisup_loss_matches_the_official_formula(n_lab, b, k, alpha, t, beta) -> None:
    g = torch.Generator().manual_seed(b * k)
    nat, adv, teacher = (torch.randn(b, k, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    adv.requires_grad_(True)
    nat.requires_grad_(True)
    y = torch.randint(k, (n_lab,), generator=g)
    ours = semisup_loss(nat, adv, y, teacher, alpha, t, beta)
    ref = semisup_reference(nat, adv, y, teacher, alpha, t, beta)
    # KL = soft cross-entropy - teacher entropy: equal gradients, values apart by a constant.
    q = torch.softmax(teacher / t, 1)
    weights = torch.tensor([alpha] * n_lab + [1.0] * (b - n_lab), dtype=torch.float64)
    entropy = (weights * -(q * q.log()).sum(1)).sum() * t * t / b
    assert ours.item() == pytest.approx((ref - entropy).item(), rel=1e-9, abs=1e-9)
    for a, r in zip(torch.autograd.grad(ours, (nat, adv)), torch.autograd.grad(ref, (nat, adv)), strict=True):
        torch.testing.assert_close(a, r)


def air_reference(z1, z2, z1a, z2a, z0, t: float) -> tuple[float, float]:
    """AIR's two regularisers with loops: distributions over the batch, KL(view 2 || view 1)."""

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    def dist(scores: list[float]) -> list[float]:
        e = [math.exp(x) for x in scores]
        return [x / sum(e) for x in e]

    n = len(z0)
    sim = [[float(unit(a[k]) @ unit(b[k])) / t for k in range(n)] for a, b in
           [(z1, z0), (z2, z0), (z1a, z0), (z1a, z1), (z2a, z0), (z2a, z2)]]
    p1, p2 = dist(sim[0]), dist(sim[1])
    prod1 = [a * b for a, b in zip(dist(sim[2]), dist(sim[3]), strict=True)]  # AIR's product ...
    prod2 = [a * b for a, b in zip(dist(sim[4]), dist(sim[5]), strict=True)]
    q1 = [x / sum(prod1) for x in prod1]  # ... renormalised over the batch
    q2 = [x / sum(prod2) for x in prod2]

    def kl(p: list[float], q: list[float]) -> float:
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    return kl(p2, p1), kl(q2, q1)


@pytest.mark.parametrize(("n", "d", "t"), [(2, 3, 0.5), (7, 16, 0.5), (32, 8, 0.2)])
def test_invariance_regularisers_match_the_loop_reference(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n + d)
    zs = [torch.randn(n, d, generator=g) for _ in range(5)]
    sir, air = invariance_regularisers(*zs, temperature=t)
    want = air_reference(*(z.double().numpy() for z in zs), t=t)
    assert (sir.item(), air.item()) == pytest.approx(want, rel=1e-4, abs=1e-7)
    assert sir.item() > 0 and air.item() > 0  # distinct views: strictly positive divergences


def test_invariance_regularisers_vanish_for_identical_views() -> None:
    g = torch.Generator().manual_seed(3)
    z, za, z0 = (torch.randn(16, 8, generator=g) for _ in range(3))
    sir, air = invariance_regularisers(z, z, za, za, z0, temperature=0.5)
    assert sir.item() == 0.0 and air.item() == 0.0
    sir, air = invariance_regularisers(z, 3 * z, za, 0.5 * za, z0, temperature=0.5)  # cosine: scale-free
    assert sir.item() == pytest.approx(0.0, abs=1e-6) and air.item() == pytest.approx(0.0, abs=1e-6)


def test_invariance_regularisers_have_gradients_towards_agreement() -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2, z1a, z2a, z0 = (torch.randn(12, 6, generator=g).requires_grad_() for _ in range(5))
    first = sum(invariance_regularisers(z1, z2, z1a, z2a, z0, temperature=0.5))
    first.backward()  # type: ignore[union-attr]
    with torch.no_grad():  # one small gradient step on the second views lowers the divergence
        for z in (z2, z2a):
            z -= 0.05 * z.grad  # type: ignore[operator]
    assert sum(invariance_regularisers(z1, z2, z1a, z2a, z0, temperature=0.5)) < first
