"""The Ray instance a search runs on: a cluster it joins, or a local instance it starts and stops.

A local instance demands token authentication (no process without this run's token can join it
or run work on it) and keeps its session files in a private temporary folder, removed when the
search ends. Ray reads two settings when it is first imported, so they are set here before that,
through Ray's public environment variables: ``RAY_AUTH_MODE=token`` (without it, ``ray.init``
turns token authentication on by itself for a new local instance, with a warning) and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (a single-node instance: every server on 127.0.0.1).
A process that imported Ray before asking for a search keeps what Ray read then: the start line
says where the instance really listens.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import sys
import tempfile

from speq_search.errors import ConfigError
from speq_search.space import SearchSpec

LOOPBACK = "127.0.0.1"
OBJECT_STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")


def auth_token() -> str:
    """The token this process's local Ray instance demands of every client: the user's, or made now.

    Made once per process (Ray caches the token it loaded), kept in this process's environment
    alone (inherited by Ray's daemons and workers), never in a run file.
    """
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        token = secrets.token_hex(32)
        os.environ["RAY_AUTH_TOKEN"] = token
    return token


def prepare_local_ray() -> None:
    """Settings Ray reads at import, for a local instance: token authentication, loopback only."""
    auth_token()
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def check_address(address: str | None) -> str | None:
    """``auto`` or ``HOST:PORT`` of a cluster's head; Ray Client's ``ray://`` is refused in one line."""
    if address and address.startswith("ray://"):
        raise ConfigError("address", address, "auto, or HOST:PORT of the cluster's head, with the search started on a "
                          "node of the cluster (ray:// is Ray Client, which speq-search does not support: the driver "
                          "writes the run folder and must see the cluster's storage)")
    return address


class RaySession:
    """A context manager: inside, Ray is initialised for ``spec``'s search (see the module docstring)."""

    def __init__(self, spec: SearchSpec, address: str | None, verbose: bool, log) -> None:
        self.spec, self.address, self.verbose, self.log = spec, check_address(address), verbose, log
        self.started = False
        self.temp_dir: str | None = None

    def _runtime_env(self) -> dict:
        from speq_search.plugins import runtime_env_for

        env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONUNBUFFERED": "1"}}
        # Where the object store is (not who may use it: credentials stay in each node's own environment).
        env["env_vars"].update({k: os.environ[k] for k in OBJECT_STORE_SETTINGS if os.environ.get(k)})
        plugins = runtime_env_for(self.spec.train.plugins)  # ship the plugins to every worker
        if plugins:
            env["py_modules"] = plugins["py_modules"]
            env["env_vars"].update(plugins["env_vars"])
        return env

    def _quiet(self) -> None:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        if self.verbose:
            return
        # The legacy reporter honours verbose=0 (the new one prints a header and hints regardless).
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # Tune's warnings about its own snapshots (their frequency, their syncing) flood a cluster run.
        import logging

        logging.getLogger("ray.tune").setLevel(logging.ERROR)

    def __enter__(self) -> RaySession:
        self._quiet()
        if self.spec.constraints:
            # An over-budget trial reports its costs and no accuracy (it is never trained).
            os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        if not self.address:
            prepare_local_ray()
        import ray

        if ray.is_initialized():  # the caller's own Ray (Python API): use it as it is
            return self
        if self.address:
            self._join()
        else:
            self._start_local()
        return self

    def _join(self) -> None:
        import ray

        self.log(f"connecting to the Ray cluster at {self.address}")
        token_hint = ("a cluster whose token this machine has: RAY_AUTH_MODE=token and the cluster's token in "
                      "RAY_AUTH_TOKEN or ~/.ray/auth_token")
        with _c_stderr() as captured:  # Ray's C++ client logs every refused attempt there, for about 20 s
            try:
                ray.init(address=self.address, log_to_driver=self.verbose, runtime_env=self._runtime_env(),
                         logging_level="ERROR" if not self.verbose else "INFO")
                failure = None
            except ray.exceptions.AuthenticationError as err:
                failure = f"{token_hint} (Ray: {str(err).split('. ')[0]})"
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
                failure = ("the address of a running Ray cluster's head, HOST:PORT or auto "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})")
        if failure is not None:
            if "InvalidAuthToken" in captured.text or "Unauthenticated" in captured.text:
                failure = f"{token_hint} (the cluster refused this driver: it demands a token)"
            raise ConfigError("address", self.address, failure)
        if self.verbose:
            sys.stderr.write(captured.text)
        self.started = True
        from speq_search.search.resources import check_resources

        check_resources(self.spec, ray.cluster_resources(), self.address, self.log)

    def _start_local(self) -> None:
        import ray

        remove_stale_sessions()
        # Ray makes its own temp folder world-writable: it goes inside a private (0700) one.
        self.temp_dir = tempfile.mkdtemp(prefix=f"speq-ray-{os.getpid()}-")
        # address="local": always a new instance, even where `ray start` left a cluster (or its
        # stale address file) on this machine, which a bare ray.init() would try to join.
        previous = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.temp_dir  # Ray's session folder goes in here (read by ray.init)
        try:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=local_gpus(), include_dashboard=False,
                     log_to_driver=self.verbose, object_store_memory=256 * 1024 * 1024,
                     runtime_env=self._runtime_env(), logging_level="ERROR" if not self.verbose else "INFO")
        except BaseException:
            self.__exit__()
            raise
        finally:
            if previous is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = previous
        self.started = True
        where = ray.util.get_node_ip_address()
        listening = f"listening on {LOOPBACK} only" if where == LOOPBACK else \
            f"its servers listen on {where} and every other interface of this machine"
        self.log(f"started a local Ray instance ({listening}; token authentication: no process without this "
                 "run's token can join it)")

    def __exit__(self, *exc) -> None:
        import ray

        if self.started:
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


class _Captured:
    text = ""


@contextlib.contextmanager
def _c_stderr():
    """Inside, what is written to this process's standard error file (fd 2, where Ray's C++ code logs)
    goes to a temporary file; its text is read into the yielded object on exit."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode(errors="replace")


def remove_stale_sessions() -> None:
    """Remove the private Ray folders of this user's searches whose process is gone (killed with -9)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), "speq-ray-*-*")):
        try:
            pid = int(os.path.basename(folder).split("-")[2])
            if os.stat(folder).st_uid != os.getuid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


def local_gpus() -> int:
    """CUDA devices this machine has (0 without a usable CUDA)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs
        return 0
