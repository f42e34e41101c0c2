import pytest
import torch
from torch import nn

from acl_ray.algorithm.models import RoutedBatchNorm, build_encoder, model_routes, set_route
from acl_ray.config.pretrain import ModelConfig


def encoder(**kw: object) -> nn.Module:
    torch.manual_seed(0)
    return build_encoder(ModelConfig(**kw), 1, (0.5,), (0.5,))  # type: ignore[arg-type]


def running_stats(m: nn.Module, route: str) -> list[torch.Tensor]:
    return [b.bns[route].running_mean.clone() for b in m.modules() if isinstance(b, RoutedBatchNorm)]


def test_routes_per_variant() -> None:
    assert model_routes(encoder(variant="ds")) == ("clean", "adv")
    assert model_routes(encoder(variant="a2s")) == ("clean", "adv")
    assert model_routes(encoder(variant="simclr")) == ("clean",)
    assert model_routes(encoder(variant="a2a")) == ("adv",)


def test_every_bn_is_routed_and_conv_weights_are_shared() -> None:
    m = encoder()
    assert not any(
        isinstance(x, nn.BatchNorm2d | nn.BatchNorm1d) and not isinstance(p, RoutedBatchNorm)
        for p in m.modules()
        for x in p.children()
        if not isinstance(p, nn.ModuleDict)
    )
    names = [k for k, _ in m.named_parameters()]
    assert any(".bns.clean." in k for k in names) and any(".bns.adv." in k for k in names)
    assert not any("clean" in k or "adv" in k for k in names if "conv" in k or "body.0." in k)


def test_dual_bn_keeps_separate_running_statistics() -> None:
    m = encoder()
    m.train()
    clean0, adv0 = running_stats(m, "clean"), running_stats(m, "adv")
    m(torch.rand(8, 1, 8, 8), route="clean")
    clean1, adv1 = running_stats(m, "clean"), running_stats(m, "adv")
    assert all(not torch.equal(a, b) for a, b in zip(clean0, clean1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(adv0, adv1, strict=True))
    m(torch.rand(8, 1, 8, 8) * 0.5, route="adv")
    assert all(torch.equal(a, b) for a, b in zip(clean1, running_stats(m, "clean"), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(adv1, running_stats(m, "adv"), strict=True))


def test_split_route_equals_two_separate_passes() -> None:
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a, b = encoder(), encoder()
    a.train(), b.train()
    z = a(x, route="split", split=5)
    ref = torch.cat([b(x[:5], route="clean"), b(x[5:], route="adv")])
    torch.testing.assert_close(z, ref)
    for route in ("clean", "adv"):
        for s, r in zip(running_stats(a, route), running_stats(b, route), strict=True):
            torch.testing.assert_close(s, r)


def test_split_with_clean_segments_equals_three_separate_passes() -> None:
    """AIR's [views | originals | adv] forward: each clean segment has its own batch statistics."""
    x = torch.rand(15, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    a, b = encoder(), encoder()
    a.train(), b.train()
    z = a(x, route="split", split=(6, 9))
    ref = torch.cat([b(x[:6], route="clean"), b(x[6:9], route="clean"), b(x[9:], route="adv")])
    torch.testing.assert_close(z, ref)
    for route in ("clean", "adv"):  # the clean statistics were updated twice, as by two passes
        for s, r in zip(running_stats(a, route), running_stats(b, route), strict=True):
            torch.testing.assert_close(s, r)
    one = encoder()
    one.train()
    assert not torch.allclose(one(x, route="split", split=9), ref)  # one clean segment: other statistics


def test_unknown_or_missing_route_is_refused() -> None:
    with pytest.raises(ValueError, match="route 'adv'"):
        set_route(encoder(variant="simclr"), "adv")
    with pytest.raises(ValueError, match="Illegal route"):
        RoutedBatchNorm(4, ("clean", "pgd"))


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_survives_sync_batchnorm_conversion(arch: str) -> None:
    m = encoder(arch=arch)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(4, 1, 16, 16)
    m.eval()
    ref = m(x, route="adv")
    s = nn.SyncBatchNorm.convert_sync_batchnorm(m)
    bns = [b for b in s.modules() if isinstance(b, RoutedBatchNorm)]
    assert bns and all(isinstance(bn, nn.SyncBatchNorm) for b in bns for bn in b.bns.values())
    assert s.state_dict().keys() == before.keys()
    torch.testing.assert_close(s(x, route="adv"), ref)  # same statistics, same output
    assert model_routes(s) == ("clean", "adv")


def test_resnet18_shape_and_cifar_stem() -> None:
    m = build_encoder(
        ModelConfig(arch="resnet18", proj_hidden_dim=512, proj_out_dim=512, proj_layers=3),
        3,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    assert m.backbone.stem[0].stride == (1, 1) and m.backbone.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    m.eval()
    assert m.features(torch.rand(2, 3, 32, 32), route="clean").shape == (2, 512)
    assert m(torch.rand(2, 3, 32, 32), route="adv").shape == (2, 512)
    head_linears = [x for x in m.head if isinstance(x, nn.Linear)]
    assert len(head_linears) == 3 and not isinstance(m.head[-1], nn.ReLU)
