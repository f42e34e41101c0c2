"""The DS objective with DynACL's weight and AIR's regularisers, against its parts composed by hand."""

import copy
import math

import pytest
import torch

from acl_ray.algorithm.attacks import AttackSpec, pgd_contrastive
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.losses import invariance_regularisers, nt_xent
from acl_ray.algorithm.models import build_encoder
from acl_ray.algorithm.objective import acl_loss
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.config.pretrain import Config

N = 8


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def setup(**over: object):
    cfg = Config().override({"attack.steps": 2, **over})
    torch.manual_seed(0)
    model = build_encoder(cfg.model, 1, (0.5,), (0.5,))
    model.train()
    twin = copy.deepcopy(model)  # the same weights and BN statistics, for the by-hand loss
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(N, 1, 8, 8, generator=g)
    x1 = (x0 + 0.1 * torch.randn(N, 1, 8, 8, generator=g)).clamp(0, 1)
    x2 = (x0 + 0.1 * torch.randn(N, 1, 8, 8, generator=g)).clamp(0, 1)
    return cfg, model, twin, x0, x1, x2


def by_hand(cfg: Config, model, x0, x1, x2, w: float, with_x0: bool) -> torch.Tensor:
    """The loss composed from its parts, on a copy made before ``acl_loss`` moved the BN running
    statistics (the attack runs BN in eval mode, so it reads them)."""
    t = cfg.loss.temperature
    x1a, x2a = pgd_contrastive(
        model, x1, x2, AttackSpec.of(cfg.attack), temperature=t, generator=torch.Generator().manual_seed(5)
    )
    clean_rows = [x1, x2, x0] if with_x0 else [x1, x2]
    split = (2 * N, 3 * N) if with_x0 else 2 * N  # the originals: a clean segment of their own
    z = model(torch.cat([*clean_rows, x1a, x2a]), route="split", split=split)
    parts = z.split(N)
    z1, z2, z1a, z2a = parts[0], parts[1], parts[-2], parts[-1]
    loss = (1 - w) * nt_xent(z1, z2, t) + w * nt_xent(z1a, z2a, t)
    if with_x0:
        sir, air = invariance_regularisers(z1, z2, z1a, z2a, parts[2], t)
        loss = loss + cfg.loss.sir_weight * sir + cfg.loss.air_weight * air
    return loss


def test_default_ds_loss_is_the_weighted_mean_of_the_two_streams() -> None:
    cfg, model, twin, x0, x1, x2 = setup()
    got = acl_loss(model, model, x1, x2, cfg, torch.Generator().manual_seed(5), x0=x0)  # x0 unused
    assert got.item() == by_hand(cfg, twin, x0, x1, x2, 0.5, with_x0=False).item()


def test_scheduled_weight_replaces_the_configured_one() -> None:
    cfg, model, twin, x0, x1, x2 = setup()
    got = acl_loss(model, model, x1, x2, cfg, torch.Generator().manual_seed(5), adv_weight=0.8)
    assert got.item() == pytest.approx(by_hand(cfg, twin, x0, x1, x2, 0.8, with_x0=False).item(), rel=1e-6)


@pytest.mark.parametrize(("sir", "air"), [(0.5, 0.5), (0.0, 1.0), (2.0, 0.0)])
def test_air_adds_its_regularisers_on_the_un_augmented_rows(sir: float, air: float) -> None:
    cfg, model, twin, x0, x1, x2 = setup(**{"loss.sir_weight": sir, "loss.air_weight": air})
    got = acl_loss(model, model, x1, x2, cfg, torch.Generator().manual_seed(5), x0=x0)
    twin2 = copy.deepcopy(twin)
    want = by_hand(cfg, twin, x0, x1, x2, 0.5, with_x0=True)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    cfg0 = cfg.override({"loss.sir_weight": 0, "loss.air_weight": 0})
    plain = by_hand(cfg0, twin2, x0, x1, x2, 0.5, with_x0=True)  # same forward, no regulariser
    assert got.item() > plain.item()  # distinct views: the KL terms are positive


def test_air_without_the_un_augmented_images_is_refused() -> None:
    cfg, model, _, _, x1, x2 = setup(**{"loss.air_weight": 0.5})
    with pytest.raises(ValueError, match="loss.air_weight / loss.sir_weight need the un-augmented images"):
        acl_loss(model, model, x1, x2, cfg)


def test_dynacl_air_trains_an_epoch() -> None:
    c = Config().override(
        {
            "data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32,
            "run.progress": False, "run.epochs": 2,
            "augment.schedule": "dynacl", "loss.adv_weight_schedule": "dynacl",
            "loss.air_weight": 0.5, "loss.sir_weight": 0.5,
        }
    )
    p = Pretrainer(c, load_datasets(c.data), torch.device("cpu"))
    before = [q.detach().clone() for q in p.encoder.parameters()]
    row = p.train_epoch()
    assert math.isfinite(row["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, p.encoder.parameters(), strict=True))
