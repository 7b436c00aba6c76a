from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from speq_search import create_dataset, list_datasets
from speq_search.data import iterate_batches
from speq_search.data.idx import read_idx, write_idx
from speq_search.errors import ConfigError


def test_digits_split_is_fixed_stratified_and_normalised():
    a = create_dataset("digits")
    b = create_dataset("digits")
    assert (len(a.train), len(a.val), len(a.test)) == (1077, 360, 360)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert a.train.x.shape[1:] == (1, 8, 8) and a.num_classes == 10
    assert abs(a.train.x.mean().item()) < 1e-4 and abs(a.train.x.std().item() - 1) < 1e-3
    counts = torch.bincount(a.test.y)
    assert counts.min() >= 35  # stratified: every class present in proportion
    # no example is in two splits
    rows = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    assert not rows(a.train) & rows(a.test) and not rows(a.val) & rows(a.test)


def test_train_size_keeps_a_stratified_seeded_subset():
    a = create_dataset("digits", train_size=200)
    b = create_dataset("digits", train_size=200)
    assert len(a.train) == 200 and torch.equal(a.train.x, b.train.x)
    assert torch.bincount(a.train.y).min() >= 18
    assert len(a.test) == 360  # only the training split shrinks
    with pytest.raises(ConfigError, match="train_size"):
        create_dataset("digits", train_size=5000)


def _write_mnist(root, folder, n_train=200, n_test=20, gz=False):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        if gz:
            import gzip

            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                p = raw / f"{prefix}-{kind}"
                with gzip.open(str(p) + ".gz", "wb") as f:
                    f.write(p.read_bytes())
                p.unlink()
    return images, labels


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_loaders_read_torchvision_layout(tmp_path, name, folder):
    test_images, test_labels = _write_mnist(tmp_path, folder)
    splits = create_dataset(name, data_dir=str(tmp_path))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 20)
    assert splits.train.x.shape[1:] == (1, 28, 28) and splits.in_channels == 1
    assert torch.equal(splits.test.y, torch.tensor(test_labels, dtype=torch.long))
    mean, std = (0.1307, 0.3081) if name == "mnist" else (0.2860, 0.3530)
    expected = (torch.tensor(test_images[0], dtype=torch.float32) / 255 - mean) / std
    assert torch.allclose(splits.test.x[0, 0], expected, atol=1e-5)


def test_gzipped_idx_files_are_read(tmp_path):
    _write_mnist(tmp_path, "MNIST", gz=True)
    assert len(create_dataset("mnist", data_dir=str(tmp_path)).test) == 20


def test_too_small_a_data_set_for_the_split_names_val_fraction(tmp_path):
    _write_mnist(tmp_path, "MNIST", n_train=30)
    with pytest.raises(ConfigError, match="val_fraction"):
        create_dataset("mnist", data_dir=str(tmp_path))


def test_idx_round_trip_and_truncated_file(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr)
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    (tmp_path / "b").write_bytes((tmp_path / "a").read_bytes()[:-3])
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(tmp_path / "b")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"])
def test_missing_data_folder_is_one_clear_error(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        create_dataset(name, data_dir=str(tmp_path / "missing"))
    assert err.value.field == "data_dir" and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="data_dir"):
        create_dataset(name)  # no folder given at all


def test_folder_without_the_files_names_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte"):
        create_dataset("fashion-mnist", data_dir=str(tmp_path))


def test_cifar10_reads_python_pickles_and_augments(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                         b"labels": [i % 10 for i in range(20)]}, f)
    splits = create_dataset("cifar10", data_dir=str(tmp_path))
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (100, 20)
    assert splits.train.x.shape[1:] == (3, 32, 32) and splits.augment
    g = torch.Generator().manual_seed(0)
    x, _ = next(iterate_batches(splits.train, 8, shuffle=True, generator=g, augment=True))
    assert x.shape == (8, 3, 32, 32)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 200), ("test", 100)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((n, 3072), dtype=np.uint8), b"fine_labels": [i % 100 for i in range(n)]}, f)
    splits = create_dataset("cifar100", data_dir=str(tmp_path), val_fraction=0.5)
    assert splits.num_classes == 100 and int(splits.test.y.max()) == 99


def test_corrupt_cifar_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="CIFAR batch"):
        create_dataset("cifar10", data_dir=str(tmp_path))


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for cls in ("cat", "dog", "eel"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(d / f"{i}.png")
    splits = create_dataset("imagefolder", data_dir=str(tmp_path), val_fraction=0.2)
    assert splits.num_classes == 3 and splits.train.x.shape[1:] == (3, 32, 32)
    assert len(splits.test) == 9 and len(splits.train) + len(splits.val) == 30


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        create_dataset("imagenet")
    assert all(name in str(err.value) for name in list_datasets())


def test_download_without_torchvision_is_a_clear_error(tmp_path):
    from speq_search.data import builtin

    if builtin._torchvision() is not None:
        pytest.skip("torchvision is installed here; --download would really download")
    with pytest.raises(ConfigError, match="download"):
        create_dataset("mnist", data_dir=str(tmp_path), download=True)


def test_random32_is_seeded_noise_for_32x32_models():
    from speq_search.data import create_dataset

    a, b = create_dataset("random32"), create_dataset("random32")
    assert a.train.x.shape == (800, 3, 32, 32) and a.in_channels == 3 and a.image_size == 32
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert sorted(a.train.y.unique().tolist()) == list(range(10))


def test_missing_fashion_mnist_says_how_to_get_the_offline_copy(tmp_path):
    for data_dir in (str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(ConfigError) as err:
            create_dataset("fashion-mnist", data_dir=data_dir)
        assert "make data" in str(err.value) and "fetch_fashion_mnist.py" in str(err.value)
        assert "--" not in str(err.value).split("accepted:")[1].replace("--out", "")  # no CLI flags from Python
