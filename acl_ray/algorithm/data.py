"""Datasets as uint8 image tensors with fixed train/val/test splits.

Every dataset is loaded whole into memory (CIFAR: 150 MB as uint8) and returned as plain tensors;
augmentation, normalisation and batching happen elsewhere. Splits depend only on
``data.split_seed``, never on ``run.seed``, so every run and Tune trial sees the same images.

* ``digits``: scikit-learn's bundled 8x8 digits (offline), stratified train/val/test split.
* ``cifar10`` / ``cifar100``: torchvision's loaders; 45k/5k train/val split of the official
  training set, the official test set as test (as in the ACL paper, Jiang et al. 2020).
* ``synthetic``: tiny learnable class-prototype images for tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from acl_ray.config.pretrain import DataConfig

HALF = (0.5,)
# The official ACL code normalises CIFAR with ImageNet statistics inside the model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_VAL_FRACTION = 0.1  # 5000 of the 50000 training images
SYNTHETIC_CLASSES = 10
SYNTHETIC_NOISE = 0.25  # per-pixel Gaussian noise std around each class prototype, pixels in [0, 1]


class DatasetUnavailableError(OSError, RuntimeError):
    """Dataset files are absent and cannot be downloaded.

    An ``OSError`` (missing files, no network), so the CLI prints it as one line; also a
    ``RuntimeError``, what this module raised before, so existing handlers keep working.
    """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that models and augmentations need."""

    name: str
    num_classes: int
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]  # per-channel normalisation the model applies internally
    std: tuple[float, ...]


# eq=False: a generated __eq__ would compare tensors element-wise and fail on truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, held on the CPU.

    Shape:
        images: (N, C, H, W) uint8 in [0, 255].
        labels: (N,) int64.
    """

    images: torch.Tensor  # (N, C, H, W) uint8, CPU
    labels: torch.Tensor  # (N,) int64, CPU

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"Split.images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"Split.labels must be ({len(self.images)},) int64, got "
                f"{tuple(self.labels.shape)} {self.labels.dtype}"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class Datasets:
    """The three splits of one dataset plus its :class:`DatasetInfo`."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo


def load_datasets(cfg: DataConfig) -> Datasets:
    """Load the dataset named by ``cfg.name`` and split it deterministically by ``cfg.split_seed``.

    Args:
        cfg: Data configuration (already validated).

    Returns:
        Train, validation and test splits as uint8 tensors, and the dataset's info.

    Raises:
        DatasetUnavailableError: CIFAR files are absent and cannot be downloaded; the message names
            the directory searched and the archive to place there.
    """
    if cfg.name in ("cifar10", "cifar100"):
        return _load_cifar(cfg)
    if cfg.name == "digits":
        images, labels = _digits()
    else:
        images, labels = _synthetic(cfg.synthetic_size, cfg.split_seed)
    train, val, test = _stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    info = DatasetInfo(cfg.name, int(labels.max()) + 1, 1, 8, 8, HALF, HALF)
    return Datasets(
        train=Split(images[train], labels[train]),
        val=Split(images[val], labels[val]),
        test=Split(images[test], labels[test]),
        info=info,
    )


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, 0..16 intensities rescaled to uint8 0..255.

    Shape:
        Returns images (1797, 1, 8, 8) uint8 and labels (1797,) int64.
    """
    from sklearn.datasets import load_digits  # here: 1.5 s to import, and trial processes get the splits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(bunch.target.astype(np.int64))


def _synthetic(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes plus Gaussian noise: learnable, yet not trivially separable per pixel.

    Shape:
        Returns images (size, 1, 8, 8) uint8 and labels (size,) int64, classes balanced.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(SYNTHETIC_CLASSES, 1, 8, 8, generator=g)  # (K, 1, 8, 8)
    labels = (torch.arange(size) % SYNTHETIC_CLASSES)[torch.randperm(size, generator=g)]  # (N,)
    noise = SYNTHETIC_NOISE * torch.randn(size, 1, 8, 8, generator=g)  # (N, 1, 8, 8)
    pixels = (prototypes[labels] + noise).clamp(0, 1)  # (N, 1, 8, 8)
    return (pixels * 255).round().to(torch.uint8), labels


def _stratified_split(
    labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index tensors of a stratified train/val/test partition; both fractions are of the whole set.

    Stratification is skipped for a split too small to hold every class (tiny synthetic sets),
    where scikit-learn would refuse.
    """
    from sklearn.model_selection import train_test_split

    y = labels.numpy()
    n, num_classes = len(y), len(np.unique(y))
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))

    def split(idx: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        stratify = y[idx] if min(n_out, len(idx) - n_out) >= num_classes else None
        keep, out = train_test_split(idx, test_size=n_out, stratify=stratify, random_state=seed)
        return np.sort(keep), np.sort(out)

    rest, test = split(np.arange(n), n_test)
    train, val = split(rest, n_val)
    return torch.from_numpy(train), torch.from_numpy(val), torch.from_numpy(test)


def _load_cifar(cfg: DataConfig) -> Datasets:
    """CIFAR-10/100 through torchvision, downloading under a file lock when allowed.

    The lock keeps concurrent Ray workers on one machine from downloading or extracting the same
    archive twice. With ``download`` off, an official archive already placed in the root is still
    extracted: torchvision finds it with a matching md5 and never touches the network.
    """
    # imported here: digits and synthetic data need no torchvision (a bare GPU lease may lack it)
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import check_integrity

    cls = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    root = Path(cfg.root).expanduser()
    archive = root / cls.filename
    extract = cfg.download or (archive.is_file() and check_integrity(str(archive), cls.tgz_md5))
    try:
        if extract:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(root / ".acl_ray_download.lock")):
                train_ds = cls(root=str(root), train=True, download=True)
        else:
            train_ds = cls(root=str(root), train=True, download=False)
        test_ds = cls(root=str(root), train=False, download=False)
    # torchvision raises RuntimeError for missing/corrupt files, URLError (an OSError) offline.
    except (OSError, RuntimeError) as e:
        why = f"download failed ({e})" if cfg.download else "files not found and data.download is false"
        raise DatasetUnavailableError(
            f"Cannot load {cfg.name} from {root}: {why}; place the official {cls.filename} in {root} "
            f"or set data.download=true with network access"
        ) from e

    images, labels = _cifar_tensors(train_ds)
    perm = np.random.default_rng(cfg.split_seed).permutation(len(labels))
    n_val = max(1, round(len(labels) * CIFAR_VAL_FRACTION))  # never an empty val split
    val, train = (torch.from_numpy(np.sort(p)) for p in (perm[:n_val], perm[n_val:]))
    num_classes = 10 if cfg.name == "cifar10" else 100
    info = DatasetInfo(cfg.name, num_classes, 3, 32, 32, IMAGENET_MEAN, IMAGENET_STD)
    return Datasets(
        train=Split(images[train], labels[train]),
        val=Split(images[val], labels[val]),
        test=Split(*_cifar_tensors(test_ds)),
        info=info,
    )


def _cifar_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:  # a torchvision CIFAR dataset
    """torchvision's HWC numpy arrays as CHW tensors.

    Shape:
        Returns images (N, 3, 32, 32) uint8 and labels (N,) int64.
    """
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.int64)
