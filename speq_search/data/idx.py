"""The IDX file format of MNIST and Fashion-MNIST (unsigned bytes), plain or gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from speq_search.errors import ConfigError


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes; a malformed or truncated file is a ConfigError."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ConfigError("data_dir", str(path), "an IDX file of unsigned bytes (MNIST format)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ConfigError("data_dir", str(path), f"an IDX file with {int(np.prod(shape))} values (file is truncated)")
    return body.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, the layout torchvision's MNIST loaders read."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(header + array.tobytes())
