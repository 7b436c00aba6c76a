"""Shared by the benchmark scripts: run a command and sample its memory until it exits."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence


def run_polling(cmd: Sequence[str], sample: Callable[[int], float], interval: float,
                env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd`` (output discarded; environment ``env``); return (wall seconds, largest ``sample(pid)`` seen).

    Exits the calling script with a message if the command fails.
    """
    t0 = time.time()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, sample(proc.pid))
        time.sleep(interval)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed with exit code {proc.returncode}")
    return time.time() - t0, peak
