"""Writing a run's files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Write ``content`` (text, bytes, or a function that writes the file it is given) to a
    temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a part. The temporary name is unique per
    writer: concurrent trials that train the same new architecture both write its cached float
    model, and a shared name let one rename the other's file away.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
