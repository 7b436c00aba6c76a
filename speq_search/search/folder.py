"""A run folder: who owns it (a lock), where its Ray experiments live (a folder, or object storage
reached through pyarrow's file systems), and that it can be written.

No Ray here: the CLI and the resume path check a folder before anything starts.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from speq_search.errors import ConfigError
from speq_search.schema import IN_RUN_DIR, is_uri
from speq_search.storage import check_object_store

LOCK_NAME = "run.lock"


class RunLock:
    """Exclusive ownership of a run folder by one process, with its PID written in ``run.lock``.

    An ``fcntl.flock`` lock: the kernel drops it when its process dies (even by ``kill -9``), so
    a stale lock never blocks, and a second search on the same folder fails at once with a
    line naming the owner. The lock file stays behind (it holds only the last owner's PID).
    """

    def __init__(self, run_dir: Path, field: str = "name") -> None:
        self.run_dir, self.field = Path(run_dir), field
        self._fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        import fcntl

        if not self.run_dir.exists():
            ensure_writable(self.run_dir, self.field)
            self.run_dir.mkdir(parents=True)
            self.created = True
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(self.field, str(self.run_dir), f"a writable folder ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(self.field, str(self.run_dir), f"a run folder no other search is using (process {owner} "
                              "is running a search in it)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def keep(self) -> None:
        """From now on the folder holds results: :meth:`discard` leaves it in place."""
        self.created = False

    def discard(self) -> None:
        """Remove the folder if this lock made it: a search that failed before it started leaves nothing."""
        self.release()
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def storage_root(storage_path: str | None) -> str:
    """What run.json records as the experiments' storage: ``.`` (in the run folder), an absolute
    folder (``file://`` URIs are read as folders), or an ``s3://``/``gs://`` location; checked to be
    writable here, before anything starts."""
    if not storage_path:
        return IN_RUN_DIR
    text = str(storage_path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif is_uri(text):
        check_object_store(text.rstrip("/"))
        return text.rstrip("/")
    elif "://" in text:
        raise ConfigError("storage_path", storage_path, "a local or mounted shared folder, a file:// URI, or s3:// or "
                          "gs:// object storage")
    path = Path(text).expanduser().resolve()
    ensure_writable(path, "storage_path")
    return str(path)


def ensure_writable(path: str | Path, field: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` unless ``path`` (a folder, made if missing) can be written."""
    p = Path(path).expanduser()
    probe = p
    while not probe.exists():  # the nearest existing parent decides whether the folder can be made
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(field, str(p), f"a folder ({probe} is a file)")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        reason = "read-only" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else err.strerror
        raise ConfigError(field, str(p), f"a folder this user can write ({probe}: {reason})") from None
