"""A search on a real multi-node Ray cluster on this machine: what a lost node costs, and what object
storage costs against a shared folder.

The cluster is a head and two worker nodes (separate raylets, ``ray.cluster_utils.Cluster``, as Ray's
own tests make them), token authentication, every server on 127.0.0.1; object storage is moto's S3
server on 127.0.0.1. The same search (cnn-small x0.5 on digits, W in {2, 3, 4, 8} x A in {2, 4, 8},
``--trials`` trials of ``--epochs`` epochs, up to 3 at a time) runs:

- ``shared``: experiments in a folder every node sees;
- ``s3``: experiments in ``s3://bench/...``;
- ``lost``: as ``shared``, and the worker node running a trial is killed (its raylet and every process
  it started) once that trial has finished ``--kill-at`` epochs: the trial is retried from its last
  checkpoint on another node.

Printed (and written as JSON with ``--out``): wall time of each search, the ratio s3 / shared, the
seconds the lost node cost (lost - shared) and the epochs trained again (result rows beyond each
trial's epochs). On this 2-core machine the three nodes share two cores: the figures say what the
mechanisms cost here, not what a real cluster's machines would.

    .venv/bin/python benchmarks/bench_cluster.py --out benchmarks/results/cluster.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address, "raylets": [n.all_processes["raylet"][0].process.pid for n in nodes]}),
      flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _parent(pid: int) -> int:
    try:
        return int(next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if ln.startswith("PPid:")).split()[1])
    except (OSError, StopIteration):
        return -1


def _lose_node(raylet: int) -> None:
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(int(p.name)) == raylet]
    for pid in [raylet, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rows(result: Path) -> list[dict]:
    return [json.loads(line) for line in result.read_text().splitlines() if line.strip()] if result.exists() else []


def _search(address, env, folder: Path, name: str, storage: str, args, raylets=None) -> dict:
    space = {
        "name": name,
        "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "compile": "off",
                  "optim": {"epochs": args.epochs, "fp_epochs": 2}},
        "params": {"w_bits": {"type": "choice", "values": [2, 3, 4, 8]}, "a_bits": {"type": "choice", "values": [2, 4, 8]}},
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
        "search": {"num_samples": args.trials, "max_concurrent": 3, "sampler": "grid", "seed": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    cmd = [sys.executable, "-m", "speq_search.cli", "run", str(path), "--out-dir", str(folder / "runs"), "--name", name,
           "--address", address, "--storage-path", storage]
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    while raylets and killed is None and proc.poll() is None:
        for result in Path(storage).glob("*/*/result.json"):
            rows = _rows(result)
            if rows and rows[-1].get("epochs_done", 0) >= args.kill_at and _parent(rows[-1].get("pid", -1)) in raylets:
                killed = _parent(rows[-1]["pid"])
                _lose_node(killed)
                print(f"{name}: killed the worker node of raylet {killed} after epoch {rows[-1]['epochs_done']}",
                      flush=True)
                break
        time.sleep(0.2)
    out, _ = proc.communicate()
    wall = time.time() - started
    run_dir = folder / "runs" / name
    meta = json.loads((run_dir / "run.json").read_text())
    root = run_dir / "experiments" if storage.startswith("s3://") else Path(storage)
    results = [_rows(p) for seg in meta["segments"] for p in (root / seg).glob("*/result.json")]
    trained = sum(len(r) for r in results)
    statuses = [line.split(",")[1] for line in (run_dir / "trials.csv").read_text().splitlines()[1:]]
    return {"search": name, "exit": proc.returncode, "wall_s": round(wall, 1), "trials": len(statuses),
            "completed": statuses.count("COMPLETED"), "epochs_trained": trained,
            "epochs_retrained": trained - args.trials * args.epochs, "killed_node": killed, "tail": out[-400:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--kill-at", type=int, default=2, help="kill the node after this many epochs of its trial")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    port = _port()
    s3 = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.urandom(24).hex(),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", SPEQ_SEARCH_CACHE=str(folder / "cache"),
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1")
    time.sleep(2)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench", aws_secret_access_key="bench",
                 region_name="us-east-1").create_bucket(Bucket="bench")
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        info = json.loads(cluster.stdout.readline())
        figures = {"nodes": 3, "cpus": 3, "trials": args.trials, "epochs": args.epochs, "runs": []}
        for name, storage, raylets in (("shared", str(folder / "shared"), None),
                                       ("s3", "s3://bench/experiments", None),
                                       ("lost", str(folder / "shared-lost"), info["raylets"])):
            figures["runs"].append(_search(info["address"], env, folder, name, storage, args, raylets))
            print(json.dumps({k: v for k, v in figures["runs"][-1].items() if k != "tail"}), flush=True)
        by = {r["search"]: r for r in figures["runs"]}
        figures["s3_over_shared"] = round(by["s3"]["wall_s"] / by["shared"]["wall_s"], 3)
        figures["lost_node_cost_s"] = round(by["lost"]["wall_s"] - by["shared"]["wall_s"], 1)
        figures["lost_node_epochs_retrained"] = by["lost"]["epochs_retrained"]
        print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
        s3.kill()


if __name__ == "__main__":
    main()
