import math

import numpy as np
import pytest
import torch

from acl_ray.algorithm.losses import nt_xent


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
