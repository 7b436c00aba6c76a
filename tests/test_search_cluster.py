"""--address: a search joins an existing Ray cluster instead of starting its own.

In a module of its own: the other search tests keep a local Ray instance alive in the test
process, and a driver on a machine that runs a second local instance does not find the head.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from speq_search.analysis.load import read_run_csv

SPACE = {
    "name": "cluster",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 2}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2, "max_concurrent": 2},
}


# ------------------------------------------------------------------ a multi-node cluster on this machine
# A head and two worker nodes (separate raylets, ray.cluster_utils.Cluster), token authentication, every
# server on 127.0.0.1; a real S3-compatible server (moto's) on 127.0.0.1. The search runs as a user runs
# it: `speq-search run --address ...` in a process of its own, with the cluster's token.
TOKEN = "speq-search-cluster-test-token-0123456789abcdef"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback, with a bucket; yields the environment that reaches it."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        deadline = time.time() + 30
        while True:
            try:
                client.create_bucket(Bucket="runs")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                assert time.time() < deadline, "moto_server did not start"
                time.sleep(0.3)
        yield env, client
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """``(address, worker raylet pids, environment of a driver with the cluster's token)``."""
    aws, _ = s3_server
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               SPEQ_SEARCH_CACHE=str(tmp_path_factory.mktemp("cluster-cache")), **aws)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_cluster.py"), "1", "2"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline())
        yield info["address"], info["raylets"], env
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


CLUSTER_SPACE = {
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 2},
              "compile": "off"},
    "params": {"w_bits": {"type": "choice", "values": [2, 4, 8]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2, "max_concurrent": 2, "sampler": "grid"},
}


def _search(cluster, folder: Path, name: str, *extra: str, space: dict | None = None, cwd: Path | None = None,
            env: dict | None = None, wait: bool = True):
    address, _, cluster_env = cluster
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(space or CLUSTER_SPACE, name=name)))
    cmd = [sys.executable, "-m", "speq_search.cli", "run", str(path), "--out-dir", str(folder / "runs"), "--name", name,
           "--address", address, *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env or cluster_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, env=env or cluster_env, cwd=cwd, capture_output=True, text=True, timeout=400)


def test_two_runs_sharing_a_storage_folder_each_keep_exactly_their_trials(cluster, tmp_path):
    """Also: paths a trial reads, given relative to where the search starts, work on every node."""
    shared = tmp_path / "shared"
    work = tmp_path / "user"
    work.mkdir()
    table = (Path(__file__).resolve().parents[1] / "speq_search" / "cost_tables" / "int-accel.yaml").read_text()
    (work / "my-table.yaml").write_text(table)
    space = dict(CLUSTER_SPACE, train=dict(CLUSTER_SPACE["train"], cost_model="my-table.yaml"))
    first = _search(cluster, tmp_path, "c1", "--storage-path", str(shared), space=space, cwd=work)
    assert first.returncode == 0, first.stdout[-1500:] + first.stderr[-3000:]
    assert "nodes see the experiments' storage" in first.stderr
    assert "started a local ray instance" not in first.stderr.lower()  # it joined the cluster, started none
    assert json.loads((tmp_path / "runs" / "c1" / "run.json").read_text())["address"] == cluster[0]
    second = _search(cluster, tmp_path, "c2", "--storage-path", str(shared))
    assert second.returncode == 0, second.stderr[-3000:]
    runs = {}
    for name in ("c1", "c2"):
        run_dir = tmp_path / "runs" / name
        trials = read_run_csv(run_dir / "trials.csv")
        assert len(trials) == 2 and set(trials["status"]) == {"COMPLETED"}, trials
        runs[name] = (set(trials["trial_id"]), json.loads((run_dir / "run.json").read_text())["experiment_name"])
    assert not runs["c1"][0] & runs["c2"][0]  # neither run lists the other's trials
    assert runs["c1"][1] != runs["c2"][1] and {p.name for p in shared.iterdir() if p.is_dir()} >= {runs["c1"][1],
                                                                                                   runs["c2"][1]}
    assert read_run_csv(tmp_path / "runs" / "c1" / "trials.csv")["latency_ms"].notna().all()  # the relative table
    resumed = subprocess.run([sys.executable, "-m", "speq_search.cli", "run", "--resume", str(tmp_path / "runs" / "c1")],
                             env=cluster[2], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert set(read_run_csv(tmp_path / "runs" / "c1" / "trials.csv")["trial_id"]) == runs["c1"][0]  # its own, still


def test_every_node_is_asked_for_the_paths_a_trial_reads(cluster, tmp_path):
    """Every node of a real cluster answers for itself (one machine here, so the refusal is shown with a
    path missing everywhere; on separate machines the same check names the node that lacks it)."""
    code = ("import sys, ray\n"
            "from speq_search.config import TrainConfig\n"
            "from speq_search.errors import ConfigError\n"
            "from speq_search.search.cluster import check_nodes\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "print('NODES', check_nodes(sys.argv[2], TrainConfig(), print))\n"
            "try:\n"
            "    check_nodes(sys.argv[2], TrainConfig().replace(**{'data.data_dir': sys.argv[3]}), print)\n"
            "except ConfigError as err:\n"
            "    print('REFUSED', err)\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    proc = subprocess.run([sys.executable, "-c", code, cluster[0], str(shared), str(tmp_path / "no-data")], env=cluster[2],
                          capture_output=True, text=True, timeout=300)
    assert "NODES 3" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    refused = next(line for line in proc.stdout.splitlines() if line.startswith("REFUSED"))
    assert "train.data.data_dir" in refused and "does not see it" in refused and str(tmp_path / "no-data") in refused
    assert not list(shared.iterdir())  # the marker the driver wrote for the nodes is gone again


@pytest.mark.parametrize("auth_mode", ["token", None])
def test_a_driver_without_the_cluster_token_is_refused_in_one_line(cluster, tmp_path, auth_mode):
    env = {k: v for k, v in cluster[2].items() if not k.startswith("RAY_AUTH")}
    if auth_mode:
        env["RAY_AUTH_MODE"] = auth_mode
    started = time.time()
    proc = _search(cluster, tmp_path, "stranger", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "--address" in lines[0] and "token" in lines[0], proc.stderr[-2000:]
    assert time.time() - started < 60 and not (tmp_path / "runs" / "stranger").exists()


def test_object_storage_keeps_the_experiments_and_the_run_folder_its_files(cluster, s3_server, tmp_path):
    _, client = s3_server
    proc = _search(cluster, tmp_path, "s3run", "--storage-path", "s3://runs/experiments")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "s3run"
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"COMPLETED"}
    experiment = json.loads((run_dir / "run.json").read_text())["experiment_name"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="runs", Prefix=f"experiments/{experiment}/")["Contents"]]
    assert any("/checkpoint_" in k and k.endswith("checkpoint.pt") for k in keys), keys  # checkpoints in the bucket
    assert not (run_dir / "ray").exists() and (run_dir / "experiments" / experiment).is_dir()  # a copy of the results
    env = cluster[2]
    report = subprocess.run([sys.executable, "-m", "speq_search.cli", "report", str(run_dir), "--out", str(tmp_path / "r")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and (tmp_path / "r" / "report.md").exists(), report.stderr[-2000:]
    export = subprocess.run([sys.executable, "-m", "speq_search.cli", "export", str(run_dir), "--trial",
                             str(trials["trial_id"].iloc[0]), "--out", str(tmp_path / "m.onnx")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0 and (tmp_path / "m.onnx").exists(), export.stderr[-2000:]


def test_an_interrupted_search_in_object_storage_resumes_from_its_checkpoints_there(cluster, tmp_path):
    space = dict(CLUSTER_SPACE, train=dict(CLUSTER_SPACE["train"], optim={"epochs": 4, "fp_epochs": 2}))
    proc = _search(cluster, tmp_path, "s3resume", "--storage-path", "s3://runs/resumed", space=space, wait=False)
    run_dir = tmp_path / "runs" / "s3resume"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            copies = [json.loads(line) for f in run_dir.glob("experiments/*/*/result.json")
                      for line in f.read_text().splitlines() if line.strip()]
            if any(1 <= r.get("epochs_done", 0) < 4 for r in copies):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    resumed = subprocess.run([sys.executable, "-m", "speq_search.cli", "run", "--resume", str(run_dir)], env=cluster[2],
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"COMPLETED"}, trials
    meta = json.loads((run_dir / "run.json").read_text())
    assert len(meta["segments"]) == 2  # the first run of the search and its resume, both in the bucket
    firsts = [json.loads(f.read_text().splitlines()[0]) for f in run_dir.glob(f"experiments/{meta['segments'][1]}/*/result.json")]
    assert firsts and any(r["epochs_done"] > 1 for r in firsts)  # continued from a checkpoint in the bucket, not over


# Last: it loses a node of the module's cluster for good.
def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _lose_node(raylet: int) -> None:
    """What losing a machine does: its raylet and every process it started die at once."""
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(int(p.name)) == raylet]
    for pid in [raylet, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lost_worker_node_costs_a_retry_and_every_trial_completes(cluster, tmp_path):
    _, raylets, _ = cluster
    space = dict(CLUSTER_SPACE, train=dict(CLUSTER_SPACE["train"], optim={"epochs": 6, "fp_epochs": 2}),
                 search={"num_samples": 3, "max_concurrent": 3, "sampler": "grid"})
    shared = tmp_path / "shared"
    proc = _search(cluster, tmp_path, "lost", "--storage-path", str(shared), space=space, wait=False)
    killed = None
    deadline = time.time() + 300
    try:
        while killed is None and time.time() < deadline and proc.poll() is None:
            for result in shared.glob("*/*/result.json"):
                rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
                pid = rows[-1].get("pid") if rows else None
                if pid and rows[-1].get("epochs_done", 0) < 4 and Path(f"/proc/{pid}").exists() and _parent(pid) in raylets:
                    killed = _parent(pid)
                    _lose_node(killed)  # the worker node is lost mid-trial
                    break
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    run_dir = tmp_path / "runs" / "lost"
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"COMPLETED"}, trials[["trial_id", "status", "error"]]
    assert list(shared.glob("*/*/error.txt")), "no trial was lost: the node held none"  # the loss left its trace
    study = optuna.load_study(study_name="lost", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
