"""Object storage (``s3://``, ``gs://``) through pyarrow's file systems, as Ray Tune itself uses them:
where a run's experiments and checkpoints live when they are not in a folder.

pyarrow comes with Ray Tune and is imported only when a URI is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from speq_search.errors import ConfigError

CHECK_TIMEOUT_S = 10  # a store that does not answer within this is reported, not waited for


def object_store(uri: str, timeout: float | None = None):
    """``(pyarrow file system, path within it)`` of an object-store URI; with ``timeout``, an S3 client
    that gives up after that many seconds (and one retry) instead of pyarrow's long default."""
    import pyarrow.fs

    if timeout is not None and uri.startswith("s3://"):
        endpoint = {}
        if os.environ.get("AWS_ENDPOINT_URL"):  # an S3-compatible server of the user's own
            scheme, _, host = os.environ["AWS_ENDPOINT_URL"].rpartition("://")
            endpoint = {"endpoint_override": host.rstrip("/"), "scheme": scheme or "https"}
        fs = pyarrow.fs.S3FileSystem(connect_timeout=timeout, request_timeout=timeout, **endpoint,
                                     retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=2))
        return fs, uri[len("s3://"):]
    return pyarrow.fs.FileSystem.from_uri(uri)


def check_object_store(uri: str) -> None:
    """One line unless this machine can write to ``uri`` (an object is written and removed)."""
    hint = ("an s3:// or gs:// location this machine can write (for S3 and S3-compatible servers: AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and, for a server of your own, AWS_ENDPOINT_URL)")
    try:
        fs, path = object_store(uri, timeout=CHECK_TIMEOUT_S)
        probe = f"{path}/.speq-search-write-check-{os.getpid()}"
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except Exception as err:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ... for a bad location
        raise ConfigError("storage_path", uri, f"{hint}; here: {type(err).__name__}: {str(err)[:160]}") from None


def remote_checkpoints(trial_uri: str) -> list[str]:
    """The checkpoint folders of a trial kept in object storage, newest first, as URIs."""
    import pyarrow.fs

    fs, path = object_store(trial_uri)
    scheme = trial_uri.split("://", 1)[0]
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    names = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and i.base_name.startswith("checkpoint_")), reverse=True)
    return [f"{scheme}://{path}/{name}" for name in names]


def download(uri: str, folder: Path) -> Path:
    """Copy the object-store folder ``uri`` into the local ``folder``; returns ``folder``."""
    import pyarrow.fs

    fs, path = object_store(uri)
    folder.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(folder), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return folder
