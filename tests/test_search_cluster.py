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

import yaml

from speq_search.analysis.load import read_run_csv

SPACE = {
    "name": "cluster",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 2}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2, "max_concurrent": 2},
}


def test_address_joins_an_existing_ray_cluster(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--num-cpus=2", f"--port={port}",
                             "--include-dashboard=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    try:
        # Wait until the head has written its address (`ray start` records it in this file).
        current = Path("/tmp/ray/ray_current_cluster")
        deadline = time.time() + 90
        while not (current.exists() and current.read_text().strip().endswith(f":{port}")):
            assert time.time() < deadline and head.poll() is None, "the Ray head did not start"
            time.sleep(0.5)
        address = current.read_text().strip()
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(SPACE))
        cmd = [sys.executable, "-m", "speq_search.cli", "run", str(space), "--out-dir", str(tmp_path / "runs"),
               "--name", "c", "--address", address]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        trials = read_run_csv(tmp_path / "runs" / "c" / "trials.csv")
        assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
        assert json.loads((tmp_path / "runs" / "c" / "run.json").read_text())["address"] == address
        assert "Started a local Ray instance" not in proc.stderr  # it joined the head, started none
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head and its daemons share the process group
        head.wait(timeout=30)
