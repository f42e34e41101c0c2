"""Tests for batched on-device augmentation: invariants, per-sample randomness, closed forms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from acl_ray.algorithm.augment import (
    DIGITS,
    SIMCLR,
    AugmentSpec,
    adjust_hue,
    augment,
    gray,
    spec_for,
    two_views,
)
from acl_ray.config.pretrain import DataConfig

IDENTITY = AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, c: int, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(seed))


PRESET_CASES = [(SIMCLR, 3), (SIMCLR, 1), (DIGITS, 1), (DIGITS, 3)]


@pytest.mark.parametrize(("spec", "c"), PRESET_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_device_range(spec: AugmentSpec, c: int, dtype: torch.dtype) -> None:
    x = images(8, c).to(dtype)
    y = augment(x, spec, gen())
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


@pytest.mark.parametrize(("spec", "c"), PRESET_CASES)
def test_per_sample_parameters(spec: AugmentSpec, c: int) -> None:
    n = 16
    x = images(1, c).expand(n, -1, -1, -1).contiguous()  # N copies of one image
    y = augment(x, spec, gen()).flatten(1)  # (N, D)
    diff = (y[:, None] - y[None]).abs().amax(dim=2)  # (N, N) pairwise max difference
    off_diag = diff[~torch.eye(n, dtype=torch.bool)]
    assert (off_diag > 1e-3).float().mean() > 0.9  # nearly every pair of views differs


def test_reproducible_under_seed() -> None:
    x = images(8, 3)
    assert torch.equal(augment(x, SIMCLR, gen(5)), augment(x, SIMCLR, gen(5)))
    assert not torch.equal(augment(x, SIMCLR, gen(5)), augment(x, SIMCLR, gen(6)))
    x1 = images(8, 1)
    assert torch.equal(augment(x1, DIGITS, gen(5)), augment(x1, DIGITS, gen(5)))
    assert not torch.equal(augment(x1, DIGITS, gen(5)), augment(x1, DIGITS, gen(6)))


@pytest.mark.parametrize(("spec", "c"), [(SIMCLR, 3), (DIGITS, 1)])
def test_two_views_differ(spec: AugmentSpec, c: int) -> None:
    x = images(8, c)
    a, b = two_views(x, spec, gen())
    assert a.shape == b.shape == x.shape
    assert ((a - b).flatten(1).abs().amax(dim=1) > 1e-3).all()


def test_none_spec_is_identity() -> None:
    x = images(4, 3)
    assert augment(x, None, gen()) is x
    a, b = two_views(x, None, gen())
    assert torch.equal(a, x) and torch.equal(b, x)


@pytest.mark.parametrize(("c", "h", "w"), [(1, 8, 8), (3, 32, 32), (3, 12, 20)])
def test_identity_spec_returns_input(c: int, h: int, w: int) -> None:
    x = torch.rand(4, c, h, w, generator=gen(2))
    torch.testing.assert_close(augment(x, IDENTITY, gen()), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("c", "h", "w"), [(1, 8, 8), (3, 12, 20)])
def test_forced_flip(c: int, h: int, w: int) -> None:
    x = torch.rand(4, c, h, w, generator=gen(2))
    spec = dataclasses.replace(IDENTITY, flip=True, flip_p=1.0)
    torch.testing.assert_close(augment(x, spec, gen()), x.flip(-1), atol=1e-5, rtol=0)


def test_half_flip_flips_some() -> None:
    x = images(64, 3)
    y = augment(x, dataclasses.replace(IDENTITY, flip=True), gen())
    flipped = ((y - x.flip(-1)).flatten(1).abs().amax(1) < 1e-5).float().mean()
    kept = ((y - x).flatten(1).abs().amax(1) < 1e-5).float().mean()
    assert flipped + kept == 1 and 0.25 < flipped < 0.75


def test_forced_rotation_by_small_angle_moves_pixels_rigidly() -> None:
    # Rotating a centred disc leaves it (almost) unchanged; rotating a bar does not.
    size = 33
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size // 2) ** 2 + (xx - size // 2) ** 2
    disc = (r2 < 100).float().view(1, 1, size, size)
    spec = dataclasses.replace(IDENTITY, rotate_deg=10.0)
    y = augment(disc.expand(8, -1, -1, -1), spec, gen())
    assert (y - disc).abs().mean() < 0.02
    bar = ((xx - size // 2).abs() < 2).float().view(1, 1, size, size)
    assert (augment(bar.expand(8, -1, -1, -1), spec, gen()) - bar).abs().mean() > 0.02


def test_forced_grayscale_is_itu601_luma() -> None:
    x = images(6, 3)
    y = augment(x, dataclasses.replace(IDENTITY, grayscale_p=1.0), gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        torch.testing.assert_close(y[:, ch], luma, atol=1e-5, rtol=0)


def test_grayscale_skipped_for_one_channel() -> None:
    x = images(4, 1)
    torch.testing.assert_close(augment(x, dataclasses.replace(IDENTITY, grayscale_p=1.0), gen()), x)


def test_brightness_only_jitter_is_proportional() -> None:
    x = 0.1 + 0.4 * images(16, 3)  # in [0.1, 0.5]: times at most 1.4 never clamps
    spec = dataclasses.replace(IDENTITY, jitter=(0.4, 0.0, 0.0, 0.0), jitter_p=1.0)
    ratio = (augment(x, spec, gen()) / x).flatten(1)  # (N, D)
    factor = ratio[:, :1]
    torch.testing.assert_close(ratio, factor.expand_as(ratio), atol=1e-5, rtol=0)
    assert ((factor - 1).abs() > 1e-3).all() and (factor >= 0.6 - 1e-6).all() and (factor <= 1.4 + 1e-6).all()
    assert factor.std() > 0.05  # per-sample factors


@pytest.mark.parametrize("which", ["contrast", "saturation"])
def test_contrast_and_saturation_blend_towards_gray(which: str) -> None:
    # torchvision: contrast blends with the image's mean luma, saturation with the per-pixel luma;
    # y - anchor = f * (x - anchor) with one factor f in [0.6, 1.4] per image (no clamp for x in [0.4, 0.6]).
    x = 0.4 + 0.2 * images(16, 3)
    strength = (0.0, 0.4, 0.0, 0.0) if which == "contrast" else (0.0, 0.0, 0.4, 0.0)
    y = augment(x, dataclasses.replace(IDENTITY, jitter=strength, jitter_p=1.0), gen())
    anchor = gray(x).mean(dim=(1, 2, 3), keepdim=True) if which == "contrast" else gray(x)
    num, den = (y - anchor).flatten(1), (x - anchor).flatten(1)  # (N, D)
    f = (num * den).sum(1, keepdim=True) / (den * den).sum(1, keepdim=True)  # (N, 1) least squares
    torch.testing.assert_close(num, f * den, atol=1e-5, rtol=0)
    assert ((f - 1).abs() > 1e-3).all() and (f > 0.6 - 1e-4).all() and (f < 1.4 + 1e-4).all()


def test_jitter_probability_leaves_others_untouched() -> None:
    x = images(64, 3)
    spec = dataclasses.replace(IDENTITY, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.5)
    y = augment(x, spec, gen())
    same = ((y - x).flatten(1).abs().amax(1) < 1e-5).float().mean()
    assert 0.25 < same < 0.75


def test_hue_round_trip_and_full_turn() -> None:
    x = images(4, 3)
    torch.testing.assert_close(adjust_hue(x, torch.zeros(4)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(adjust_hue(x, torch.full((4,), 0.3)), torch.full((4,), -0.3)), x)
    # A third of a turn maps pure red to pure green.
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        adjust_hue(red, torch.tensor([1 / 3])).flatten(), torch.tensor([0.0, 1.0, 0.0])
    )


def test_colour_ops_match_torchvision() -> None:
    tf = pytest.importorskip("torchvision.transforms.functional")
    x = images(5, 3, size=8)
    shifts = torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1])
    ours = adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(ours[i], tf.adjust_hue(x[i], s), atol=1e-4, rtol=0)
    torch.testing.assert_close(gray(x), tf.rgb_to_grayscale(x), atol=2e-4, rtol=0)  # tv uses 0.2989


def test_digits_noise_and_erasing() -> None:
    x = torch.full((256, 1, 8, 8), 0.5)
    noisy = augment(x, dataclasses.replace(IDENTITY, noise_std=0.05), gen())
    assert abs((noisy - x).std().item() - 0.05) < 0.005
    y = augment(x, dataclasses.replace(IDENTITY, erase_p=1.0), gen())
    erased = (y != 0.5).flatten(1).float().mean(1)  # (N,) fraction of changed pixels
    assert (erased > 0).float().mean() > 0.95 and erased.max() <= 0.35


def test_spec_for() -> None:
    assert spec_for(DataConfig(name="digits")) == DIGITS
    assert spec_for(DataConfig(name="synthetic")) == DIGITS
    cifar = spec_for(DataConfig(name="cifar10"))
    assert cifar == SIMCLR and cifar.crop_scale == (0.1, 1.0) and cifar.flip
    assert cifar.jitter == (0.4, 0.4, 0.4, 0.1) and cifar.jitter_p == 0.8 and cifar.grayscale_p == 0.2
    assert spec_for(DataConfig(name="digits"), dataset="cifar100") == SIMCLR
    assert spec_for(DataConfig(name="cifar10", augment="digits")) == DIGITS
    over = spec_for(DataConfig(name="cifar10", crop_min_scale=0.3))
    assert over is not None and over.crop_scale == (0.3, 1.0)
    over_digits = spec_for(DataConfig(name="digits", crop_min_scale=0.8))
    assert over_digits is not None and over_digits.crop_scale == (0.8, 1.0)
    assert spec_for(DataConfig(augment="none")) is None


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentSpec(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="jitter_p"):
        AugmentSpec(jitter_p=1.5)


def test_crop_zooms_by_side_fraction() -> None:
    # Bilinear resampling is exact on a linear ramp, so a crop of area 1/4 (side 1/2) halves the slope.
    size = 16
    ramp = torch.linspace(0, 1, size).expand(4, 1, size, size).contiguous()  # (4, 1, H, W)
    y = augment(ramp, AugmentSpec(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)), gen())
    half_step = 0.5 / (size - 1)
    dx = y.diff(dim=-1)  # (4, 1, H, W - 1); the outer half pixel is flat where the crop meets an edge
    torch.testing.assert_close(dx[..., 1:-1], torch.full_like(dx[..., 1:-1], half_step))
    assert (dx >= -1e-6).all() and (dx <= half_step + 1e-6).all()
    assert (y.diff(dim=-2).abs() < 1e-5).all()


@pytest.mark.parametrize("c", [1, 3])
def test_crops_touching_the_edge_are_not_darkened(c: int) -> None:
    x = torch.full((64, c, 8, 8), 0.7)
    spec = AugmentSpec(crop_scale=(0.1, 1.0), flip=True)
    torch.testing.assert_close(augment(x, spec, gen()), x)


def _crop_flip_reference(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int = 4) -> torch.Tensor:
    """One image the naive way: pad with zeros, slice the window, maybe mirror it."""
    padded = torch.zeros(img.shape[0], img.shape[1] + 2 * pad, img.shape[2] + 2 * pad)
    padded[:, pad : pad + img.shape[1], pad : pad + img.shape[2]] = img
    out = padded[:, dy : dy + img.shape[1], dx : dx + img.shape[2]]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_a_per_image_reference() -> None:
    from acl_ray.algorithm.augment import crop_flip

    x = torch.rand(64, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    out = crop_flip(x, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # replay the draws: offsets, then flips
    offsets = torch.randint(0, 9, (64, 2), generator=gen)
    flips = torch.rand(64, generator=gen) < 0.5
    assert 5 < int(flips.sum()) < 59 and out.shape == x.shape
    for i in range(64):
        want = _crop_flip_reference(x[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert torch.equal(out[i], want), i
