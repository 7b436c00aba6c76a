"""A search no one else can join, a run folder one search owns, and a resume that always works."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from speq_search.analysis.load import read_run_csv
from speq_search.cli import main
from speq_search.search import RunOptions, run_search
from speq_search.search.folder import RunLock
from speq_search.space import parse_space

TINY = {
    "name": "hard",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 1}},
    "params": {"w_bits": {"type": "choice", "values": [2, 3, 4, 8]}, "a_bits": {"type": "choice", "values": [2, 4, 8]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2, "max_concurrent": 1, "seed": 0},
}


def _quiet():
    return RunOptions(log=lambda msg: None)


def _ray_temp_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "speq-ray-*")))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-trial search, and the private Ray folders that existed before it."""
    before = _ray_temp_dirs()
    run_dir = tmp_path_factory.mktemp("hardening") / "done"
    summary = run_search(parse_space(TINY), run_dir, _quiet())
    return run_dir, summary, before


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def test_a_search_cleans_up_its_ray_session(finished_run):
    import ray

    run_dir, summary, before = finished_run
    assert summary["n_completed"] == 2
    assert not ray.is_initialized()  # the instance the search started is shut down...
    assert _ray_temp_dirs() <= before  # ...and its session folder is gone
    assert json.loads((run_dir / "run.json").read_text())["storage_path"] == "."
    assert "RAY_AUTH_TOKEN" not in (run_dir / "run.json").read_text() + (run_dir / "space.yaml").read_text()


def test_local_ray_instance_refuses_clients_without_the_token():
    import ray

    from speq_search.search.session import RaySession

    code = ("import sys, ray\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "print('JOINED', ray.get(ray.remote(lambda: 41 + 1).remote()))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    stale = Path(tempfile.gettempdir()) / "speq-ray-999999999-left"  # a killed search's folder (no such PID)
    stale.mkdir(exist_ok=True)
    with RaySession(parse_space(TINY), None, False, lambda msg: None) as session:
        assert not stale.exists()
        assert os.stat(session.temp_dir).st_mode & 0o777 == 0o700  # Ray's own folder inside is 0777
        gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
        node_ip = ray.util.get_node_ip_address()  # the machine's address, not loopback, where one exists
        address = f"{node_ip}:{gcs_port}"
        stranger = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True,
                                  timeout=180)
        owner = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=180,
                               env=dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.environ["RAY_AUTH_TOKEN"]))
    assert stranger.returncode != 0 and "JOINED" not in stranger.stdout
    assert "JOINED 42" in owner.stdout  # the same join with the run's token works: the refusal is the token's


def test_a_second_search_on_a_held_folder_exits_2_naming_the_owner(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "busy"
    with RunLock(run_dir):
        assert main(["run", "default", "--out-dir", str(tmp_path / "runs"), "--name", "busy"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"process {os.getpid()}" in err
    assert (run_dir / "run.lock").read_text().strip() == str(os.getpid())


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "stale"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text("999999\n")  # its owner died without unlocking
    with RunLock(run_dir):
        assert (run_dir / "run.lock").read_text().strip() == str(os.getpid())


def test_a_lock_is_released_when_its_process_is_killed(tmp_path):
    code = ("import sys, time\nfrom speq_search.search.folder import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "k")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with RunLock(tmp_path / "k"):
        pass


@pytest.mark.parametrize("storage", ["s3://bucket/runs", "hdfs://x/y"])
def test_storage_that_cannot_be_written_is_refused_before_anything_starts(tmp_path, capsys, storage, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: the S3 endpoint refuses at once
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.time()
    assert main(["run", "default", "--out-dir", str(tmp_path / "runs"), "--storage-path", storage]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--storage-path" in err
    assert not (tmp_path / "runs").exists() and time.time() - started < 60


@pytest.mark.parametrize("flag, value", [("--gpus-per-trial", "1"), ("--cpus-per-trial", "4096")])
def test_resources_no_node_has_are_refused_at_once(tmp_path, capsys, flag, value):
    import torch

    if flag == "--gpus-per-trial" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["run", "default", "--out-dir", str(tmp_path), "--name", "r", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "search." + flag[2:].replace("-", "_") in err
    assert not (tmp_path / "r").exists()


def test_resume_of_a_corrupt_study_is_one_line(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run[0], tmp_path / "corrupt")
    (run_dir / "study.db").write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    assert main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "study.db" in err and "report" in err


def test_resume_rebuilds_a_missing_float_model(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run[0], tmp_path / "nofp")
    (run_dir / "fp_model.pt").unlink()
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert (run_dir / "fp_model.pt").stat().st_size > 1000
    assert "fp_model.pt is missing" in capsys.readouterr().err


def test_exit_codes_follow_how_the_search_ended(monkeypatch, tmp_path):
    import speq_search.search as search

    base = {"run_dir": str(_write_empty_run(tmp_path)), "objectives": [{"metric": "val_acc"}], "n_completed": 0,
            "n_failed": 0, "n_stopped": 0, "n_trials": 0, "hypervolume": 0.0}
    for outcome, code in (({}, 0), ({"interrupted": True}, 130), ({"stopped_on_failures": True}, 1)):
        monkeypatch.setattr(search, "run_search", lambda *a, o=outcome, **k: dict(base, **o))
        assert main(["run", "default", "--out-dir", str(tmp_path / "x")]) == code


def _write_empty_run(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-run"
    folder.mkdir(exist_ok=True)
    (folder / "pareto.csv").write_text("")
    return folder


def test_search_stopped_on_failures_exits_1(tmp_path, capsys):
    space = tmp_path / "fails.yaml"
    space.write_text(yaml.safe_dump(dict(TINY, name="fails", params={"temperature": {"type": "choice",
                                                                                       "values": [1e-40, 2e-40]}},
                                         search={"sampler": "grid", "max_concurrent": 1, "max_failures": 0})))
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs"), "--name", "f"]) == 1
    assert "stopped on failed trials" in capsys.readouterr().out


def test_kill_between_the_study_commit_and_ray_snapshot_then_resume_a_moved_folder(tmp_path):
    """The driver dies right after telling Optuna a trial finished, before Ray saves that; the folder
    is then moved, and resumed from its new place: every trial runs once, nothing is told twice."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(dict(TINY, name="killed", search=dict(TINY["search"], num_samples=3))))
    env = dict(os.environ, SPEQ_SEARCH_TEST_KILL_AFTER_TELL="1", TUNE_GLOBAL_CHECKPOINT_S="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_AUTH_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "speq_search.cli", "run", str(space), "--out-dir", str(tmp_path / "a"),
                           "--name", "r"], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    original = tmp_path / "a" / "r"
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{original / 'study.db'}")
    assert [t.state.name for t in study.trials].count("COMPLETE") == 1  # told, then killed before Ray's snapshot
    moved = tmp_path / "b" / "r"
    moved.parent.mkdir()
    shutil.move(str(original), str(moved))
    assert main(["run", "--resume", str(moved)]) == 0
    assert not original.exists()  # nothing written at the old place
    trials = read_run_csv(moved / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique and set(trials["status"]) == {"COMPLETED"}
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{moved / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def test_searcher_does_not_tell_a_trial_the_study_already_finished(tmp_path):
    """The study commits a trial, then the driver dies before the run files say so: the resumed search
    runs the trial again (it is carried) and must not tell the study a second time."""
    from speq_search.search.searcher import Carried, StudySearcher

    spec = parse_space(dict(TINY, params={"temperature": {"type": "choice", "values": [1.0, 2.0]}}))
    s = StudySearcher(spec, tmp_path / "study.db")
    config = s.suggest("x")
    s.study.tell(config["optuna_trial"], [0.9, 5.0])  # told before a crash
    resumed = StudySearcher(spec, tmp_path / "study.db",
                            carried=[Carried(config["optuna_trial"], {"temperature": config["temperature"]})])
    again = resumed.suggest("y")
    assert again["optuna_trial"] == config["optuna_trial"]  # the same Optuna trial, run again
    resumed.on_trial_complete("y", {"val_acc": 0.5, "bitops": 3.0, "full_fidelity": True})  # must not raise
    assert [t.values for t in s.study.trials] == [[0.9, 5.0]]


def test_a_search_that_fails_before_its_trials_leaves_no_folder_behind(tmp_path, capsys):
    args = ["run", "default", "--out-dir", str(tmp_path / "runs"), "--name", "r", "--set", "train.data.dataset=mnist",
            "--set", f"train.data.data_dir={tmp_path / 'no-such-data'}"]
    assert main(args) == 2
    assert "data_dir" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "r").exists()  # the same name can be run again
    assert main(args) == 2 and "--resume" not in capsys.readouterr().err


def _listening_sockets() -> dict[int, str]:
    """``{socket inode: local address}`` of every listening TCP socket on this machine (Linux /proc)."""
    import ipaddress

    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            raw = fields[1].split(":")[0]
            packed = bytes.fromhex(raw)
            # /proc writes each 32-bit word in host (little-endian) order
            words = b"".join(packed[i:i + 4][::-1] for i in range(0, len(packed), 4))
            address = ipaddress.ip_address(words)
            if getattr(address, "ipv4_mapped", None):
                address = address.ipv4_mapped
            found[int(fields[9])] = str(address)
    return found


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(next(ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("PPid:")).split()[1])
            except (OSError, StopIteration):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_a_local_instance_listens_on_loopback_only():
    from speq_search.search.session import RaySession

    lines = []
    with RaySession(parse_space(TINY), None, False, lines.append):
        sockets = _listening_sockets()
        ours = {}
        for pid in _descendants(os.getpid()):
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and int(target[8:-1]) in sockets:
                        ours.setdefault(pid, []).append(sockets[int(target[8:-1])])
            except OSError:
                continue
    assert ours, "Ray's servers were not found"
    assert {a for addresses in ours.values() for a in addresses} == {"127.0.0.1"}, ours
    assert any("listening on 127.0.0.1 only" in line for line in lines), lines
