"""Tests for acl_ray.algorithm.data: splits, determinism, CIFAR loading from tiny fake archives offline."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from sklearn.datasets import load_digits
from torchvision.datasets import CIFAR10, CIFAR100

from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.config.pretrain import DataConfig


def _rows(x: torch.Tensor) -> np.ndarray:
    """Images as rows sorted lexicographically, to compare multisets of images."""
    flat = x.reshape(len(x), -1).numpy()
    return flat[np.lexsort(flat.T[::-1])]


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_partition() -> None:
    ds = load_datasets(DataConfig(name="digits"))
    assert (ds.info.num_classes, ds.info.channels, ds.info.height, ds.info.width) == (10, 1, 8, 8)
    assert ds.info.mean == (0.5,) and ds.info.std == (0.5,)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 8, 8)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) <= 9
        assert set(split.labels.tolist()) == set(range(10)), "stratified: every class in every split"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1258, 180, 359)
    assert int(ds.train.images.max()) == 255

    # A partition: the multiset union of the splits is exactly the whole dataset, no row twice.
    whole = torch.from_numpy(np.rint(load_digits().images * 255 / 16).astype(np.uint8))
    union = torch.cat([ds.train.images, ds.val.images, ds.test.images]).squeeze(1)
    np.testing.assert_array_equal(_rows(union), _rows(whole))
    assert len(np.unique(_rows(union), axis=0)) == 1797  # digits has no duplicate images


def _same(a: Datasets, b: Datasets) -> bool:
    return all(
        torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
        for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test))
    )


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_split_is_deterministic_in_split_seed(name: str) -> None:
    a = load_datasets(DataConfig(name=name, split_seed=3))
    assert _same(a, load_datasets(DataConfig(name=name, split_seed=3)))
    assert not _same(a, load_datasets(DataConfig(name=name, split_seed=4)))


def test_digits_fractions_are_of_the_whole_set() -> None:
    ds = load_datasets(DataConfig(name="digits", val_fraction=0.3, test_fraction=0.1))
    assert (len(ds.val), len(ds.test)) == (round(0.3 * 1797), round(0.1 * 1797))


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_learnable() -> None:
    ds = load_datasets(DataConfig(name="synthetic", synthetic_size=600))
    assert sum(map(len, (ds.train, ds.val, ds.test))) == 600
    assert ds.train.images.shape[1:] == (1, 8, 8) and ds.train.images.dtype == torch.uint8
    x_train = ds.train.images.flatten(1).float()
    means = torch.stack([x_train[ds.train.labels == k].mean(0) for k in range(10)])  # (10, 64)
    pred = torch.cdist(ds.test.images.flatten(1).float(), means).argmin(1)
    acc = (pred == ds.test.labels).float().mean().item()
    assert acc > 0.5, f"nearest-class-mean accuracy {acc:.2f}"


def test_synthetic_smallest_size_splits() -> None:
    ds = load_datasets(DataConfig(name="synthetic", synthetic_size=20))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (14, 2, 4)


# ---------------------------------------------------------------- CIFAR from fake archives


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, obj: dict[str, Any]) -> str:
    # The official files are Python 2 pickles: torchvision reads them with encoding="latin1",
    # which yields str keys ("data", "labels"); bytes keys would only appear with encoding="bytes".
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return _md5(path)


def fake_cifar(
    root: Path, monkeypatch: pytest.MonkeyPatch, cifar100: bool, n_train: int = 20, n_test: int = 6
) -> dict[str, np.ndarray]:
    """Write a tiny archive in the official CIFAR python layout and point torchvision's md5s at it.

    Returns the written pixel rows (n, 3072): channel planes R, G, B, each 32x32 row-major.
    """
    rng = np.random.default_rng(0)
    cls, num_classes = (CIFAR100, 100) if cifar100 else (CIFAR10, 10)
    label_key = "fine_labels" if cifar100 else "labels"
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    names = ["train"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)]
    train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)

    def batch(data: np.ndarray) -> dict[str, Any]:
        labels = rng.integers(0, num_classes, len(data)).tolist()
        extra = {"coarse_labels": [k // 5 for k in labels]} if cifar100 else {}
        return {"data": data, label_key: labels, **extra}

    chunks = np.split(train, len(names))
    train_list = [[name, _dump(folder / name, batch(c))] for name, c in zip(names, chunks, strict=True)]
    test_name = "test" if cifar100 else "test_batch"
    test_list = [[test_name, _dump(folder / test_name, batch(test))]]
    meta_key = "fine_label_names" if cifar100 else "label_names"
    meta_name = "meta" if cifar100 else "batches.meta"
    meta_md5 = _dump(folder / meta_name, {meta_key: [f"class{k}" for k in range(num_classes)]})
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": meta_key, "md5": meta_md5})
    return {"train": train, "test": test}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_official_layout(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = fake_cifar(tmp_path, monkeypatch, cifar100=name == "cifar100")
    ds = load_datasets(DataConfig(name=name, root=str(tmp_path), download=False))
    n_train = len(written["train"])
    assert ds.info.num_classes == (100 if name == "cifar100" else 10)
    assert (ds.info.channels, ds.info.height, ds.info.width) == (3, 32, 32)
    assert ds.info.mean == (0.485, 0.456, 0.406) and ds.info.std == (0.229, 0.224, 0.225)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (n_train - 2, 2, 6)  # val = round(20 * 0.1)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64
        assert int(split.labels.max()) < ds.info.num_classes

    # Pixels round-trip: the test set keeps the official order; row = R plane, G plane, B plane.
    for c in range(3):
        plane = written["test"][1, c * 1024 : (c + 1) * 1024].reshape(32, 32)
        np.testing.assert_array_equal(ds.test.images[1, c].numpy(), plane)
    # Train and val partition the official training set.
    union = torch.cat([ds.train.images, ds.val.images])
    np.testing.assert_array_equal(_rows(union), _rows(torch.from_numpy(written["train"])))

    again = load_datasets(DataConfig(name=name, root=str(tmp_path), download=False))
    assert torch.equal(again.val.images, ds.val.images)
    other = load_datasets(DataConfig(name=name, root=str(tmp_path), download=False, split_seed=1))
    assert not torch.equal(other.val.images, ds.val.images)


def test_cifar_extracts_a_placed_archive_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, root = tmp_path / "staging", tmp_path / "root"
    written = fake_cifar(staging, monkeypatch, cifar100=False)
    root.mkdir()
    archive = root / CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(archive))
    ds = load_datasets(DataConfig(name="cifar10", root=str(root), download=False))
    assert len(ds.test) == len(written["test"]) and (root / CIFAR10.base_folder).is_dir()


def test_cifar_missing_files_name_the_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(RuntimeError, match=r"cifar-10-python\.tar\.gz") as err:
        load_datasets(DataConfig(name="cifar10", root=str(root), download=False))
    assert str(root) in str(err.value) and "data.download" in str(err.value)


def test_cifar_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"cifar-100-python\.tar\.gz") as err:
        load_datasets(DataConfig(name="cifar100", root="~/data", download=False))
    assert str(tmp_path / "data") in str(err.value)


def test_cifar_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match="download failed") as err:
        load_datasets(DataConfig(name="cifar10", root=str(tmp_path), download=True))
    assert str(tmp_path) in str(err.value) and isinstance(err.value.__cause__, urllib.error.URLError)
    assert (tmp_path / ".acl_ray_download.lock").exists()
