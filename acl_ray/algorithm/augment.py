"""SimCLR views for a whole batch at once, on the batch's device, with per-sample random parameters.

Pipeline per view (each step only when its spec field turns it on):

1. One affine resample (``F.affine_grid`` + ``F.grid_sample``, bilinear, ``align_corners=False``)
   that combines random resized crop, horizontal flip, rotation and translation. Because it is a
   single resample, rotation/translation reveal the original image around the crop; padding is
   "border" inside the image frame (as torchvision's resize of a crop) and zeros outside it (as
   torchvision ``RandomAffine``'s fill=0).
   Crop sizes are continuous (torchvision rounds them to whole pixels).
2. Colour jitter with probability ``jitter_p``, in the fixed order brightness, contrast, saturation,
   hue (torchvision ``ColorJitter`` shuffles the order per call), each followed by a clamp to [0, 1].
3. Random grayscale (ITU-R 601 luma) with probability ``grayscale_p``.
4. Additive Gaussian noise, then one random-erasing rectangle, then a final clamp to [0, 1].

Brightness and contrast act on any channel count, as torchvision's do; saturation, hue and grayscale
need ``C == 3`` and are skipped otherwise. Presets: SimCLR for CIFAR as in the official ACL code
(https://github.com/VITA-Group/Adversarial-Contrastive-Learning), and the measured digits preset
of DESIGN.md.

Randomness convention: every draw comes from the ``generator`` argument and is made on
``generator.device``, then moved to ``x.device``. Pass a generator on the batch's device (no copies);
a CPU generator also works with a CUDA batch but then the noise tensors cross the bus. The same seed
on the same device gives the same views.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from acl_ray.config.pretrain import DataConfig

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentSpec:
    """Augmentation strengths; every default is "off", so ``AugmentSpec()`` is the identity."""

    crop_scale: tuple[float, float] = (1.0, 1.0)  # random resized crop area range (fraction of image)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range (width / height)
    flip: bool = False  # random horizontal flip
    flip_p: float = 0.5  # probability of the flip when ``flip`` is on
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, sat., hue
    jitter_p: float = 0.0  # probability of colour jitter (SimCLR: 0.8)
    grayscale_p: float = 0.0  # probability of grayscale (SimCLR: 0.2)
    translate: float = 0.0  # max shift as a fraction of the image size (digits: 0.1)
    rotate_deg: float = 0.0  # max rotation in degrees (digits: 10)
    noise_std: float = 0.0  # additive Gaussian noise std (digits: 0.05)
    erase_p: float = 0.0  # probability of one erased rectangle (digits: 0.25)
    erase_scale: tuple[float, float] = (0.02, 0.2)  # erased area range (fraction of image)
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # erased aspect ratio range, as torchvision

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "erase_scale", "erase_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"Illegal {name}=({lo}, {hi}): must satisfy 0 < low <= high")
        if self.crop_scale[1] > 1 or self.erase_scale[1] > 1:
            raise ValueError("Illegal crop_scale/erase_scale: areas must be at most 1")
        for name in ("flip_p", "jitter_p", "grayscale_p", "erase_p", "translate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Illegal {name}={getattr(self, name)}: must be in [0, 1]")
        if min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"Illegal jitter={self.jitter}: must be >= 0 with hue <= 0.5")
        if self.rotate_deg < 0 or self.noise_std < 0:
            raise ValueError("Illegal rotate_deg/noise_std: must be >= 0")


SIMCLR = AugmentSpec(
    crop_scale=(0.1, 1.0), flip=True, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2
)
DIGITS = AugmentSpec(crop_scale=(0.5, 1.0), translate=0.1, rotate_deg=10.0, noise_std=0.05, erase_p=0.25)
PRESETS = {"simclr": SIMCLR, "digits": DIGITS}


def spec_for(cfg: DataConfig, dataset: str | None = None) -> AugmentSpec | None:
    """Pick the augmentation preset for a data config.

    Args:
        cfg: ``augment`` "auto" gives the digits preset for datasets digits/synthetic and the SimCLR
            preset otherwise; "none" gives None. ``crop_min_scale > 0`` replaces the preset's lower
            crop-area bound (digits 0.5, SimCLR 0.1).
        dataset: dataset name for "auto"; defaults to ``cfg.name``.
    """
    if cfg.augment == "none":
        return None
    name = cfg.augment
    if name == "auto":
        name = "digits" if (dataset or cfg.name) in ("digits", "synthetic") else "simclr"
    spec = PRESETS[name]
    if cfg.crop_min_scale > 0:
        spec = dataclasses.replace(spec, crop_scale=(cfg.crop_min_scale, 1.0))
    return spec


def _uniform(
    gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device: torch.device
) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, device=gen.device).to(device)
    return lo + (hi - lo) * u


def _bernoulli(gen: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    return _uniform(gen, (n,), 0.0, 1.0, device) < p  # (N,) bool


def _boxes(
    gen: torch.Generator,
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hw: float,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box sizes as fractions of the image side, torchvision-style: 10 tries, the first that fits.

    Shape:
        returns width fraction, height fraction, found: (N,) each; ``hw`` is H / W.
    """
    area = _uniform(gen, (n, 10), *scale, device)  # (N, 10)
    r = torch.exp(_uniform(gen, (n, 10), math.log(ratio[0]), math.log(ratio[1]), device))  # (N, 10)
    w = torch.sqrt(area * r * hw)  # pixel ratio (w W) / (h H) = r and w h = area
    h = torch.sqrt(area / (r * hw))
    fits = (w <= 1) & (h <= 1)  # (N, 10)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (N, 1) first fitting try
    found = fits.any(dim=1)  # (N,)
    return w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1), found


def _theta(
    spec: AugmentSpec, gen: torch.Generator, n: int, height: int, width: int, device: torch.device
) -> torch.Tensor:
    """Per-sample affine map from output to input normalised coordinates (``F.affine_grid``).

    ``p_in = S F R (p_out - t) + c``: S the crop half-extents, F the flip, R a rotation that is
    rigid in pixel space, t the translation, c the crop centre.

    Shape:
        returns (N, 2, 3) float32.
    """
    hw = height / width
    w, h, found = _boxes(gen, n, spec.crop_scale, spec.crop_ratio, hw, device)  # (N,) each
    w, h = torch.where(found, w, 1.0), torch.where(found, h, 1.0)  # torchvision falls back to all
    cx = (1 - w) * _uniform(gen, (n,), -1.0, 1.0, device)  # crop stays inside the image
    cy = (1 - h) * _uniform(gen, (n,), -1.0, 1.0, device)
    f = torch.ones(n, device=device)
    if spec.flip:
        f = torch.where(_bernoulli(gen, n, spec.flip_p, device), -1.0, 1.0)  # (N,)
    a = torch.zeros(n, device=device)
    if spec.rotate_deg > 0:
        a = _uniform(gen, (n,), -spec.rotate_deg, spec.rotate_deg, device) * (math.pi / 180)
    tx = torch.zeros(n, device=device)
    ty = torch.zeros(n, device=device)
    if spec.translate > 0:  # a shift of translate * size is 2 * translate in [-1, 1] coordinates
        tx = _uniform(gen, (n,), -2 * spec.translate, 2 * spec.translate, device)
        ty = _uniform(gen, (n,), -2 * spec.translate, 2 * spec.translate, device)
    cos, sin = torch.cos(a), torch.sin(a)
    a00, a01 = w * f * cos, -w * f * sin * hw  # rotation in normalised coords: D^-1 R D, D = diag(W, H)
    a10, a11 = h * sin / hw, h * cos
    row0 = torch.stack([a00, a01, cx - a00 * tx - a01 * ty], dim=1)  # (N, 3)
    row1 = torch.stack([a10, a11, cy - a10 * tx - a11 * ty], dim=1)  # (N, 3)
    return torch.stack([row0, row1], dim=1)  # (N, 2, 3)


def gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB images.

    Shape:
        x: (N, 3, H, W) -> (N, 1, H, W).
    """
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image by ``shift`` turns through a vectorised RGB -> HSV -> RGB.

    Shape:
        x: (N, 3, H, W) in [0, 1]; shift: (N,) in [-0.5, 0.5] -> (N, 3, H, W).
    """
    r, g, b = x.unbind(dim=1)  # (N, H, W) each
    maxc, argmax = x.max(dim=1)  # (N, H, W)
    delta = maxc - x.min(dim=1).values  # (N, H, W) chroma
    safe = torch.where(delta > 0, delta, 1.0)
    h6 = torch.where(
        argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )  # hue in sextants [0, 6); ties give the same hue from either branch
    h6 = (h6 + 6 * shift.view(-1, 1, 1)) % 6
    s = delta / torch.where(maxc > 0, maxc, 1.0)  # (N, H, W) saturation
    # HSV -> RGB: channel n in (5, 3, 1) is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6.
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + h6.unsqueeze(1)) % 6
    v, s = maxc.unsqueeze(1), s.unsqueeze(1)  # (N, 1, H, W)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)  # (N, 3, H, W)


def _jitter(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Colour jitter with per-sample factors, applied where Bernoulli(jitter_p) fires.

    Shape:
        x: (N, C, H, W) float32 -> (N, C, H, W).
    """
    n, c = x.shape[:2]
    bright, contrast, sat, hue = spec.jitter
    fire = _bernoulli(gen, n, spec.jitter_p, x.device).view(n, 1, 1, 1)
    y = x

    def factor(strength: float) -> torch.Tensor:  # torchvision: U(max(0, 1 - s), 1 + s)
        return _uniform(gen, (n,), max(0.0, 1 - strength), 1 + strength, x.device).view(n, 1, 1, 1)

    if bright > 0:
        y = (y * factor(bright)).clamp(0, 1)
    if contrast > 0:  # blend with the mean gray level of each image
        mean = (gray(y) if c == 3 else y.mean(dim=1, keepdim=True)).mean(dim=(1, 2, 3), keepdim=True)
        f = factor(contrast)
        y = (f * y + (1 - f) * mean).clamp(0, 1)
    if sat > 0 and c == 3:  # blend with the grayscale image
        f = factor(sat)
        y = (f * y + (1 - f) * gray(y)).clamp(0, 1)
    if hue > 0 and c == 3:
        y = adjust_hue(y, _uniform(gen, (n,), -hue, hue, x.device)).clamp(0, 1)
    return torch.where(fire, y, x)


def _erase(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """One random rectangle per firing sample, filled with 0 or (coin flip per sample) uniform noise.

    Shape:
        x: (N, C, H, W) float32 -> (N, C, H, W).
    """
    n, _, height, width = x.shape
    w, h, found = _boxes(gen, n, spec.erase_scale, spec.erase_ratio, height / width, x.device)
    fire = _bernoulli(gen, n, spec.erase_p, x.device) & found  # (N,)
    eh = (h * height).round().clamp(1, height)  # (N,) rectangle size in pixels
    ew = (w * width).round().clamp(1, width)
    top = (_uniform(gen, (n,), 0.0, 1.0, x.device) * (height - eh + 1)).floor().view(n, 1, 1)
    left = (_uniform(gen, (n,), 0.0, 1.0, x.device) * (width - ew + 1)).floor().view(n, 1, 1)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    in_rows = (rows >= top) & (rows < top + eh.view(n, 1, 1))  # (N, H, 1)
    in_cols = (cols >= left) & (cols < left + ew.view(n, 1, 1))  # (N, 1, W)
    mask = (in_rows & in_cols & fire.view(n, 1, 1)).unsqueeze(1)  # (N, 1, H, W)
    noisy = _bernoulli(gen, n, 0.5, x.device).view(n, 1, 1, 1)
    fill = _uniform(gen, tuple(x.shape), 0.0, 1.0, x.device) * noisy  # (N, C, H, W)
    return torch.where(mask, fill, x)


def augment(x: torch.Tensor, spec: AugmentSpec | None, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image, with per-sample parameters, computed in float32 on ``x.device``.

    Args:
        x: images in [0, 1], float32 or bfloat16.
        spec: augmentation strengths; None returns ``x`` unchanged.
        generator: source of all randomness; draws happen on ``generator.device`` (see module doc).

    Shape:
        x: (N, C, H, W) -> (N, C, H, W), same dtype and device, values in [0, 1].
    """
    if spec is None:
        return x
    n, c, height, width = x.shape
    y = x.float()
    theta = _theta(spec, generator, n, height, width, x.device)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, c, height, width], align_corners=False)  # (N, H, W, 2) as (x, y)
    # Inside the image frame but beyond the outer pixel centres, bilinear "zeros" padding would darken
    # crops that touch an edge; clamp those points to the centres (torchvision's resize does the same).
    # Points outside the frame (rotation, translation) keep zero padding, as RandomAffine's fill=0.
    lim = torch.tensor([1 - 1 / width, 1 - 1 / height], device=x.device)  # (2,)
    grid = torch.where(grid.abs() <= 1, torch.minimum(torch.maximum(grid, -lim), lim), grid)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = y.clamp(0, 1)
    if spec.jitter_p > 0 and max(spec.jitter) > 0:
        y = _jitter(y, spec, generator)
    if spec.grayscale_p > 0 and c == 3:
        fire = _bernoulli(generator, n, spec.grayscale_p, x.device).view(n, 1, 1, 1)
        y = torch.where(fire, gray(y).expand(-1, 3, -1, -1), y)
    if spec.noise_std > 0:
        noise = torch.randn(tuple(x.shape), generator=generator, device=generator.device).to(x.device)
        y = (y + spec.noise_std * noise).clamp(0, 1)
    if spec.erase_p > 0:
        y = _erase(y, spec, generator)
    return y.clamp(0, 1).to(x.dtype)


def two_views(
    x: torch.Tensor, spec: AugmentSpec | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of the same images, made in one batched pass over ``2N`` images.

    Shape:
        x: (N, C, H, W) -> two (N, C, H, W).
    """
    views = augment(torch.cat([x, x]), spec, generator)  # (2N, C, H, W)
    first, second = views.chunk(2)
    return first, second


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Finetuning augmentation for CIFAR, per image: a random crop of the zero-padded image (as
    torchvision ``RandomCrop(size, padding=pad)``) and a horizontal flip with probability 0.5.

    Whole pixels only, so a kept pixel is an exact copy. Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=generator.device)
    flip = torch.rand(n, generator=generator, device=generator.device) < 0.5  # (N,)
    offsets, flip = offsets.to(x.device), flip.to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))  # (N, C, H + 2 pad, W + 2 pad), zeros outside
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # (N, W) a flip reads the columns backwards
    batch = torch.arange(n, device=x.device)[:, None, None]  # (N, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)
