"""``torch.compile`` for training: which mode a run uses, and where compiled artefacts live.

Modes (``train.compile``, ``--compile``):

- ``off``: plain eager PyTorch (the fake-quantizers of ``quant.grids``, precision as a number);
- ``kernels``: only the fake-quantizer is compiled (``quant.kernels``: its forward and the
  backward AOTAutograd derives from it, one C++ or Triton loop each, any shape): seconds to
  compile, once per process;
- ``on``: the whole model's forward is compiled as well (inductor fuses BatchNorm, ReLU and
  the quantizers around each convolution; the backward is compiled with it): the fastest
  step, but tens of seconds of compiling per architecture;
- ``auto``: what ``benchmarks/bench_step.py`` shows is faster for the device and the run's
  length (see :func:`resolve_compile`).

Compiled artefacts go to inductor's on-disk cache, which speq-search places in its own cache
folder (``$SPEQ_SEARCH_CACHE/inductor``, default ``~/.cache/speq-search/inductor``) unless
``TORCHINDUCTOR_CACHE_DIR`` is set: trials of a search, and later runs, load what an earlier
process compiled instead of compiling again.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from speq_search.config import COMPILE_MODES, check_choice
from speq_search.errors import ConfigError

# ``auto``'s thresholds, from benchmarks/bench_step.py (BENCHMARKS.md, "Time per training step").
# On a CPU the compiled kernels save about 15 ns per quantized activation value per step and
# cost about 20 s per process the first time on a machine (seconds once inductor's cache holds
# them): a run must repay a cold compile on its own, about 1.5e9 value-steps (a short
# Fashion-MNIST search with a lower bar ran 1.14x slower end to end, bench_search.py); the
# whole-model compile (one to three minutes per architecture the first time, on 2 cores) saves
# 7 ms (cnn-small, digits) to 300 ms (resnet20) a step and pays from thousands of steps. On a
# GPU the step is bound by kernel launches (1,912 in a resnet20 QAT step, issue 10's H200
# figures): compiling the model saved 20 ms a step for 44 s of compile, about 2,000 steps.
_KERNELS_MIN_VALUE_STEPS = {"cpu": 1.5e9, "cuda": 0.0}
_MODEL_COMPILE_MIN_STEPS = {"cpu": 10_000, "cuda": 2_000}
_RECOMPILE_LIMIT = 64  # graphs per compiled frame: every model of a run (train, teacher, eval shapes)


def cache_root() -> Path:
    """``$SPEQ_SEARCH_CACHE``, else ``~/.cache/speq-search`` (the FP models live here too)."""
    root = os.environ.get("SPEQ_SEARCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "speq-search"


def use_compile_cache(folder: str | Path | None = None) -> Path:
    """Point inductor's on-disk cache at ``folder`` (default: :func:`cache_root` / inductor).

    A ``TORCHINDUCTOR_CACHE_DIR`` the user set wins. Returns the folder in use. The folder is
    made private (0700): inductor loads compiled code from it, so nobody else may write there.
    """
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen:
        chosen = str(Path(folder) if folder is not None else cache_root() / "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def has_cxx_compiler() -> bool:
    """Whether inductor can build CPU kernels here: the compiler it calls (``$CXX``, else g++)
    and the Python headers its kernels include (``Python.h``) are present."""
    compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.is_file()


def resolve_compile(mode: str, device: torch.device, steps: int, quantized_values: int = 0) -> str:
    """``off``, ``kernels`` or ``on``: what a run uses.

    ``steps`` is the run's number of training steps and ``quantized_values`` the activation
    values its fake-quantizers see per step. ``auto`` compiles the whole model when the run is
    long enough to repay it, else the kernels when the values they save repay their compile,
    else nothing; and nothing on a CPU without a C++ compiler. ``on`` and ``kernels`` without
    one are errors.
    """
    return resolve_config_compile(check_choice("compile", mode, COMPILE_MODES), device, steps, quantized_values)


def resolve_config_compile(mode: str, device: torch.device, steps: int, quantized_values: int = 0) -> str:
    """:func:`resolve_compile` of a ``TrainConfig.compile`` (checked when the config was made)."""
    if mode == "off":
        return "off"
    kind = "cpu" if device.type == "cpu" else "cuda"
    if kind == "cpu" and not has_cxx_compiler():
        if mode == "auto":
            return "off"
        raise ConfigError("compile", mode, "off | auto (torch.compile on a CPU needs a C++ compiler and the "
                          "Python headers: e.g. apt-get install g++ python3-dev)")
    if mode != "auto":
        return mode
    if steps >= _MODEL_COMPILE_MIN_STEPS[kind]:
        return "on"
    if quantized_values > 0 and steps * quantized_values >= _KERNELS_MIN_VALUE_STEPS[kind]:
        return "kernels"
    return "off"


def limit_compile_threads(threads: int) -> None:
    """Compile with at most ``threads`` worker processes (a search trial's CPUs).

    Inductor's default starts a pool of compile workers sized for the whole machine in every
    process that compiles; in a search every trial process would. A
    ``TORCHINDUCTOR_COMPILE_THREADS`` the user set wins.
    """
    if os.environ.get("TORCHINDUCTOR_COMPILE_THREADS"):
        return
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = max(1, int(threads))


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (dynamo and inductor, forward and backward)."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:  # a private API: a torch without it reports no compile time
        return float("nan")


def compiled_forward(model: nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a training step calls to run ``model`` in the resolved ``mode`` (off, kernels, on).

    ``kernels`` switches ``model``'s quantizers to the compiled kernels (for evaluation too);
    ``on`` also returns ``torch.compile(model)``, which shares ``model``'s parameters and
    buffers, so ``model`` itself (its state dict, copies, evaluation) stays an eager module.
    """
    if mode not in ("off", "kernels", "on"):
        raise ValueError(f"compile mode {mode!r} is not resolved (see resolve_compile)")
    kernels = mode != "off"
    use_compiled_kernels(model, kernels)
    if kernels:
        use_compile_cache()
    if mode != "on":
        return model
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    return torch.compile(model)


def use_compiled_kernels(model: nn.Module, enabled: bool) -> None:
    """Switch every fake-quantizer of ``model`` to the compiled kernels (``enabled=False``: back)."""
    from speq_search.quant.modules import ActQuantizer, WeightQuantizer

    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            m.compiled_kernels = enabled
