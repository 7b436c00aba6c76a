"""The shipped data sets: digits (bundled with scikit-learn), torchvision's on-disk formats
(MNIST, Fashion-MNIST, CIFAR-10/100) and a folder of the user's own images.

The torchvision formats are read by torchvision when it imports, else by the small readers
below, which read the same files (``<data_dir>/FashionMNIST/raw/train-images-idx3-ubyte``,
``<data_dir>/cifar-10-batches-py/data_batch_1``, ...). Nothing is downloaded unless asked.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from speq_search.data._registry import Split, Splits, normalise, register_dataset, split_off
from speq_search.data.idx import read_idx
from speq_search.errors import ConfigError


def _torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
    except Exception:  # not installed, or built for another torch (operator ... does not exist)
        return None
    return datasets


@register_dataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images); 60/20/20 split; the default")
def digits(data_dir: str | None = None, download: bool = False, **_) -> Splits:
    """Bundled with scikit-learn: no folder, no download. Stratified 60/20/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    rest, test = split_off(x, y, 0.2)
    train, val = split_off(rest.x, rest.y, 0.25)  # 0.25 of 80 % = 20 %
    splits = Splits(train, val, test, num_classes=10)
    return normalise(splits, train.x.mean(), train.x.std())


@register_dataset("random32", "seeded noise: 1,200 3x32x32 images whose labels carry no signal; for costs and smoke tests, "
                  "not accuracy")
def random32(data_dir: str | None = None, download: bool = False, **_) -> Splits:
    """Gaussian images with labels unrelated to them (always the same ones): exercises 32x32 models such as
    resnet20 and mobilenetv2 without a data set on disk. Accuracy on it means nothing."""
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, 3, 32, 32, generator=gen), torch.arange(n) % 10)

    return Splits(split(800), split(200), split(200), num_classes=10)


# How to get a data set that cannot be downloaded where the tool runs (no internet).
_OFFLINE = {"FashionMNIST": "`make data` in the speq-search repository (or python benchmarks/data/fetch_fashion_mnist.py "
                            "--out DIR) writes an offline copy to .data; download=true fetches it with torchvision"}


def _require_dir(data_dir: str | None, dataset: str, expected: str) -> Path:
    how = _OFFLINE.get(dataset, "download=true fetches it with torchvision")
    hint = f"a folder holding {expected} ({how}; see README 'Data')"
    if not data_dir:
        raise ConfigError("data_dir", data_dir, f"for {dataset}: {hint}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ConfigError("data_dir", str(path), f"for {dataset}: {hint}")
    return path


def _mnist_like(folder: str, data_dir, download, val_fraction, mean, std, tv_class: str) -> Splits:
    expected = f"{folder}/raw/train-images-idx3-ubyte and the other three IDX files"
    tv = _torchvision()
    if download:
        if tv is None:
            raise ConfigError("download", True, "needs a working torchvision (pip install torchvision) or the files in data_dir")
        root = Path(data_dir or "data").expanduser()
        arrays = []
        for train in (True, False):
            ds = getattr(tv, tv_class)(str(root), train=train, download=True)
            arrays.append((ds.data.numpy(), ds.targets.numpy()))
    else:
        root = _require_dir(data_dir, folder, expected)
        raw = root / folder / "raw"
        arrays = []
        for prefix in ("train", "t10k"):
            files = []
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                p = raw / f"{prefix}-{kind}"
                if not p.exists() and (raw / f"{p.name}.gz").exists():
                    p = raw / f"{p.name}.gz"
                if not p.exists():
                    how = _OFFLINE.get(folder, "download=true fetches it with torchvision")
                    raise ConfigError("data_dir", str(root), f"a folder holding {expected} ({how}); missing {p}")
                files.append(read_idx(p))
            arrays.append(tuple(files))
    (xtr, ytr), (xte, yte) = arrays
    to_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1) / 255.0  # noqa: E731
    train, val = split_off(to_x(xtr), torch.tensor(ytr, dtype=torch.long), val_fraction)
    test = Split(to_x(xte), torch.tensor(yte, dtype=torch.long))
    return normalise(Splits(train, val, test, num_classes=10), mean, std)


@register_dataset("mnist", "MNIST in torchvision's layout under --data-dir (MNIST/raw/*-ubyte)")
def mnist(data_dir=None, download=False, val_fraction=0.1, **_) -> Splits:
    """MNIST, 60,000/10,000; validation carved from the training set."""
    return _mnist_like("MNIST", data_dir, download, val_fraction, 0.1307, 0.3081, "MNIST")


@register_dataset("fashion-mnist", "Fashion-MNIST in torchvision's layout under --data-dir (FashionMNIST/raw/*-ubyte)")
def fashion_mnist(data_dir=None, download=False, val_fraction=0.1, **_) -> Splits:
    """Fashion-MNIST, 60,000/10,000; see benchmarks/data/fetch_fashion_mnist.py for an offline copy."""
    return _mnist_like("FashionMNIST", data_dir, download, val_fraction, 0.2860, 0.3530, "FashionMNIST")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ConfigError("data_dir", str(path), f"a CIFAR batch file in torchvision's layout ({err})") from None


def _cifar(data_dir, download, val_fraction, num_classes: int) -> Splits:
    folder, train_files, test_files, label_key, tv_class = (
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "CIFAR10")
        if num_classes == 10 else ("cifar-100-python", ["train"], ["test"], b"fine_labels", "CIFAR100")
    )
    tv = _torchvision()
    if download:
        if tv is None:
            raise ConfigError("download", True, "needs a working torchvision (pip install torchvision) or the files in data_dir")
        getattr(tv, tv_class)(str(Path(data_dir or "data").expanduser()), train=True, download=True)
        getattr(tv, tv_class)(str(Path(data_dir or "data").expanduser()), train=False, download=True)
    root = _require_dir(data_dir or ("data" if download else None), tv_class, f"{folder}/ as torchvision extracts it")
    if not (root / folder).is_dir():
        raise ConfigError("data_dir", str(root), f"a folder holding {folder}/ as torchvision extracts it")

    def load(names):
        xs, ys = [], []
        for name in names:
            d = _unpickle(root / folder / name)
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return torch.tensor(np.concatenate(xs), dtype=torch.float32) / 255.0, torch.tensor(np.concatenate(ys))

    xtr, ytr = load(train_files)
    xte, yte = load(test_files)
    train, val = split_off(xtr, ytr, val_fraction)
    splits = Splits(train, val, Split(xte, yte), num_classes=num_classes, augment=True)
    mean = (0.4914, 0.4822, 0.4465) if num_classes == 10 else (0.5071, 0.4865, 0.4409)
    std = (0.2470, 0.2435, 0.2616) if num_classes == 10 else (0.2673, 0.2564, 0.2762)
    return normalise(splits, mean, std)


@register_dataset("cifar10", "CIFAR-10 in torchvision's layout under --data-dir (cifar-10-batches-py/)")
def cifar10(data_dir=None, download=False, val_fraction=0.1, **_) -> Splits:
    """CIFAR-10, 50,000/10,000; random crop and flip on training batches."""
    return _cifar(data_dir, download, val_fraction, 10)


@register_dataset("cifar100", "CIFAR-100 in torchvision's layout under --data-dir (cifar-100-python/)")
def cifar100(data_dir=None, download=False, val_fraction=0.1, **_) -> Splits:
    """CIFAR-100, 50,000/10,000; random crop and flip on training batches."""
    return _cifar(data_dir, download, val_fraction, 100)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _read_image_folder(folder: Path, classes: list[str] | None, image_size: int, grayscale: bool):
    from PIL import Image

    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = classes or found
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).glob("*")) if (folder / cls).is_dir() else []:
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(path) as img:
                img = img.convert("L" if grayscale else "RGB").resize((image_size, image_size))
                arr = np.asarray(img, dtype=np.uint8)
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError("data_dir", str(folder), "a folder with one sub-folder of images per class")
    return torch.tensor(np.stack(xs), dtype=torch.float32) / 255.0, torch.tensor(ys), classes


@register_dataset("imagefolder", "your images: --data-dir with train/<class>/*.png (val/, test/ optional)")
def imagefolder(data_dir=None, download=False, val_fraction=0.1, image_size: int = 32, grayscale: bool = False, **_) -> Splits:
    """A folder ``train/<class>/<image>``; ``val/`` and ``test/`` are split off when absent."""
    root = _require_dir(data_dir, "imagefolder", "train/<class>/<images> (val/ and test/ optional)")
    if not (root / "train").is_dir():
        raise ConfigError("data_dir", str(root), "a folder holding train/<class>/<images> (val/ and test/ optional)")
    x, y, classes = _read_image_folder(root / "train", None, image_size, grayscale)
    train = Split(x, y)
    if (root / "test").is_dir():
        test = Split(*_read_image_folder(root / "test", classes, image_size, grayscale)[:2])
    else:
        train, test = split_off(train.x, train.y, 0.2)
    if (root / "val").is_dir():
        val = Split(*_read_image_folder(root / "val", classes, image_size, grayscale)[:2])
    else:
        train, val = split_off(train.x, train.y, val_fraction)
    splits = Splits(train, val, test, num_classes=len(classes))
    mean = train.x.mean(dim=(0, 2, 3))
    std = train.x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return normalise(splits, mean, std)
