"""The fast training step: fused kernels equal the reference, precision is data, compile modes agree."""

from __future__ import annotations

import math
import os
import stat

import pytest
import torch

from speq_search import compiling
from speq_search.compiling import compiled_forward, resolve_compile, use_compile_cache
from speq_search.config import TrainConfig
from speq_search.errors import ConfigError
from speq_search.quant import ActQuantizer, WeightQuantizer, quantize_model
from speq_search.quant.grids import MIDPOINT, SIGNED, UNSIGNED, fake_quantize
from speq_search.quant.kernels import compiled_fake_quantize
from speq_search.quant.primitives import (
    fake_quantize_signed,
    fake_quantize_unsigned,
    fake_quantize_weight,
    grad_scale,
)
from speq_search.quant.sawb import sawb_clip
from speq_search.speq import stochastic_precision
from speq_search.train import load_data, make_optimizer, make_step, prepare_student, run, train_epoch

BITS = (2, 3, 4, 5, 8, 32)
CPU = torch.device("cpu")
# The Makefile installs g++ and the Python headers where it can; elsewhere these are skipped.
needs_compiler = pytest.mark.skipif(not compiling.has_cxx_compiler(), reason="torch.compile needs g++ and Python.h")
# The one fake-quantizer with the precision as data: eager, compiled alone (the `kernels` mode),
# and traced into a compiled function (as in a compiled model, the `on` mode).
KINDS = ["data", pytest.param("compiled", marks=needs_compiler), pytest.param("in-model", marks=needs_compiler)]


def act_levels(bits, signed):
    return (SIGNED if signed else UNSIGNED).levels(bits)


def _in_model(grid, x, clip, levels, n):
    return fake_quantize(grid, x * 1.0, clip, levels, n) * 1.0  # traced among other ops


_IN_MODEL = torch.compile(_in_model, dynamic=True, fullgraph=True)


def _variant(kind, grid, levels, n):
    if kind == "compiled":
        return lambda a, c: compiled_fake_quantize(grid, a, c, levels, n)
    if kind == "in-model":
        return lambda a, c: _IN_MODEL(grid, a, c, levels, n)
    return lambda a, c: fake_quantize(grid, a, c, levels, n)
MODES = [pytest.param("kernels", marks=needs_compiler), pytest.param("on", marks=needs_compiler)]


def _reference_act(x, clip, bits, signed, scale_numel):
    c = clip
    if bits < 32 and scale_numel:
        c = grad_scale(clip, 1 / math.sqrt(scale_numel * act_levels(bits, signed)))
    return (fake_quantize_signed if signed else fake_quantize_unsigned)(x, c, bits)


def _grads(fn, *inputs):
    """Output and the gradients of ``sum(out * g)`` for a fixed random ``g``."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(g)
    return [out.detach()] + [t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("bits", BITS)
def test_fast_activation_quantizers_equal_the_reference(bits, signed, kind):
    x = torch.randn(16, 8, 5, 5) * 2
    clip = torch.tensor(1.5)
    # Ties with the clip (and zero) get torch.minimum/maximum's half gradient in both.
    x[0, 0, 0, :4] = torch.tensor([1.5, -1.5, 0.0, 3.0])
    n = x[0].numel()
    levels = torch.tensor(act_levels(bits, signed))
    ref = _grads(lambda a, c: _reference_act(a, c, bits, signed, n), x, clip)
    fused = _grads(_variant(kind, SIGNED if signed else UNSIGNED, levels, n), x, clip)
    for r, f, name in zip(ref, fused, ("output", "grad x", "grad clip")):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("bits", BITS)
def test_fast_weight_quantizers_equal_the_reference(bits, per_channel, kind):
    w = torch.randn(12, 6, 3, 3)
    clip = torch.rand(12, 1, 1, 1) + 0.3 if per_channel else torch.rand(1, 1, 1, 1) + 0.3
    n = w[0].numel() if per_channel else w.numel()

    def reference(a, c):
        if bits >= 32:
            return a * 1.0
        return fake_quantize_weight(a, grad_scale(c, 1 / math.sqrt(n * max(2 ** (bits - 1) - 1, 1))), bits)

    levels = torch.tensor(MIDPOINT.levels(bits))
    fast = _variant(kind, MIDPOINT, levels, n)
    ref = _grads(reference, w, clip)
    fused = _grads(fast, w, clip)
    for r, f, name in zip(ref, fused, ("output", "grad w", "grad clip")):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("bits", BITS)
def test_sawb_weight_quantizer_equals_the_reference(bits):
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    q = WeightQuantizer(w.detach(), bits, weight_quantizer="sawb")
    expected = w if bits >= 32 else fake_quantize_weight(w, sawb_clip(w, bits, (1, 2, 3)), bits)
    torch.testing.assert_close(q(w), expected)
    q(w).sum().backward()  # SAWB's clip is a statistic: the weight's gradient is straight-through
    assert w.grad is not None


def test_bits_stay_a_settable_int_and_the_forward_reads_only_the_buffer():
    q = ActQuantizer(4)
    assert q.bits == 4 and q.levels.item() == 15
    q.bits = 2
    assert q.bits == 2 and q.levels.item() == 3
    q.bits = 32
    assert q.levels.item() == 0
    x = torch.linspace(-1, 7, 101)
    torch.testing.assert_close(q(x), x.clamp(0, 6))  # 32 bits: clip only
    with pytest.raises(ConfigError, match="a_bits"):
        q.bits = 9
    s = ActQuantizer(3, signed=True)
    assert s.levels.item() == 3  # signed: 2**(b-1) - 1
    w = WeightQuantizer(torch.randn(4, 3), 3)
    assert w.levels.item() == 7
    w.bits = 5
    assert w.bits == 5 and w.levels.item() == 31
    assert "levels" not in dict(q.state_dict()) and "levels" not in dict(w.state_dict())  # checkpoints unchanged


def _digits_student(method="speq", **changes):
    cfg = TrainConfig(progress=False).replace(**{"speq.method": method, "model.width": 0.5, "quant.w_bits": 2,
                                                 "quant.a_bits": 2, **changes})
    splits = load_data(cfg)
    from speq_search.train import build_model

    torch.manual_seed(0)
    fp = build_model(cfg, splits)
    return cfg, splits, prepare_student(cfg, fp, splits, CPU), fp


@needs_compiler
@pytest.mark.parametrize(("mode", "model"), [("kernels", "cnn-small"), ("on", "mlp")])
def test_compiled_training_agrees_with_eager_over_20_steps(mode, model):
    """Along one 20-step SPEQ trajectory, each step's loss and clip gradients match eager's.

    Both paths start every step from the same weights and the same teacher draw; the
    trajectory follows the eager path (at 2 bits a rounding flip from a reordered float sum
    would otherwise grow from step to step and say nothing about either path). Every clip's
    gradient is checked: the input's, the activations', the weights' per channel.

    The whole-model compile is checked on the MLP: with 2-bit inputs, max-pooling windows hold
    equal maxima, and inductor's max-pool sends the gradient to another of them than eager
    torch does (both are valid; the gradients of the layers below then differ).
    """
    cfg, splits, student, fp = _digits_student(**{"model.name": model})
    fast_forward = compiled_forward(student, mode)
    optimizer = make_optimizer(student, cfg, cfg.optim.lr)
    gen_eager, gen_fast = torch.Generator(), torch.Generator()
    eager_step = make_step(cfg, student, fp, gen_eager, CPU)
    fast_step = make_step(cfg, student, fp, gen_fast, CPU, fast_forward)
    clips = [p for n, p in student.named_parameters() if n.endswith("clip")]
    batches = torch.Generator().manual_seed(4)
    for i in range(20):
        idx = torch.randperm(len(splits.train), generator=batches)[:64]
        x, y = splits.train.x[idx], splits.train.y[idx]
        results = []
        for step, gen, kernels in ((fast_step, gen_fast, True), (eager_step, gen_eager, False)):
            gen.manual_seed(100 + i)
            compiling.use_compiled_kernels(student, kernels)
            loss = step(x, y)[0]
            optimizer.zero_grad()
            loss.backward()
            results.append((loss.detach(), [c.grad.clone() for c in clips]))
        (l1, g1), (l0, g0) = results
        torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5, msg=lambda m, i=i: f"loss at step {i}: {m}")
        for j, (a, b) in enumerate(zip(g1, g0)):
            # In norm, per clip: the input clip's gradient is a sum that mostly cancels.
            err = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
            assert err < 1e-2, f"gradient of clip {j} at step {i}: relative error {err:.2e}"
        optimizer.step()  # with the eager gradients


@pytest.mark.parametrize("mode", MODES)
def test_200_speq_draws_compile_once(mode):
    cfg, splits, student, fp = _digits_student()
    forward = compiled_forward(student, mode)
    optimizer = make_optimizer(student, cfg, cfg.optim.lr)
    gen = torch.Generator().manual_seed(0)
    x, y = splits.train.x[:32], splits.train.y[:32]
    drawn = set()

    def one_step():
        # The teacher pass of speq_search.speq.teacher_logits, keeping the drawn bits.
        with torch.no_grad(), stochastic_precision(student, 0.5, 8, gen) as bits:
            t = forward(x)
        drawn.add(tuple(bits))
        loss = torch.nn.functional.cross_entropy(forward(x), y) + 0 * t.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    one_step()
    one_step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(200):
            one_step()
    assert len(drawn) >= 8  # the draws did change the precision (4 quantizers, 16 possible draws)


@pytest.mark.parametrize("mode", MODES)
def test_per_bit_scales_switch_every_step_without_recompiling(mode):
    """The one-shot supernet's case: weight and activation bits drawn at every step, each picking
    its own learned clip, in one compiled graph per pass (the clip is gathered by an index buffer)."""
    from speq_search.quant.primitives import PER_BIT

    cfg, splits, student, fp = _digits_student("qat", **{"quant.per_bit_scales": True})
    forward = compiled_forward(student, mode)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)  # no momentum: an unused clip stays put
    quantizers = [m for m in student.modules() if isinstance(m, (ActQuantizer, WeightQuantizer))]
    gen = torch.Generator().manual_seed(0)
    x, y = splits.train.x[:32], splits.train.y[:32]
    used = set()

    def one_step():
        for q in quantizers:
            q.set_checked_bits(PER_BIT[int(torch.randint(len(PER_BIT), (), generator=gen))])
        clips = [p.detach().clone() for n, p in student.named_parameters() if n.endswith("clip")]
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for (n, p), before in zip([(n, p) for n, p in student.named_parameters() if n.endswith("clip")], clips):
            moved = (p.detach() != before).reshape(len(PER_BIT), -1).any(dim=1)
            assert moved.sum() <= 1, n  # only the clip of the drawn bits learns
            used.update((n, int(i)) for i in moved.nonzero())

    one_step()
    one_step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(30):
            one_step()
    assert len({i for _, i in used}) == len(PER_BIT)  # every bit-width's clip was used and learned


def test_resolve_compile_modes(monkeypatch):
    cuda = torch.device("cuda")
    assert resolve_compile("off", CPU, 10**9, 10**9) == "off"
    assert resolve_compile("on", CPU, 1) == "on"
    assert resolve_compile("kernels", cuda, 1) == "kernels"
    assert resolve_compile("auto", CPU, 10**6) == "on"  # a long run repays the whole-model compile
    assert resolve_compile("auto", CPU, 100, 10**8) == "kernels"  # big activations repay the kernels
    assert resolve_compile("auto", CPU, 500, 10**6) == "off"  # a Fashion-MNIST subset trial does not
    assert resolve_compile("auto", CPU, 100, 10**4) == "off"  # a short, small run repays nothing
    assert resolve_compile("auto", cuda, 100, 10**4) == "kernels"
    with pytest.raises(ConfigError, match="compile"):
        resolve_compile("fast", CPU, 1)
    monkeypatch.setattr(compiling, "has_cxx_compiler", lambda: False)
    assert resolve_compile("auto", CPU, 10**6, 10**9) == "off"
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        resolve_compile("on", CPU, 1)
    assert resolve_compile("on", cuda, 1) == "on"  # the GPU compiles with Triton


def test_compile_cache_is_private_and_a_user_choice_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("SPEQ_SEARCH_CACHE", str(tmp_path / "cache"))
    path = use_compile_cache()
    assert path == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine"


def test_an_epoch_reads_the_device_only_every_few_steps(monkeypatch):
    cfg, splits, student, fp = _digits_student("qat", **{"data.batch_size": 16})
    optimizer = make_optimizer(student, cfg, cfg.optim.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 100)
    step = make_step(cfg, student, fp, torch.Generator(), CPU)
    reads = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _o=original, _n=name: (reads.append(_n), _o(self))[1])
    import speq_search.train as train

    totals, times = train_epoch(student, splits, optimizer, scheduler, step, torch.Generator().manual_seed(0), 16, CPU,
                           "test", False)
    steps = len(splits.train) // 16
    assert len(times) == steps and totals["n"] == steps * 16
    assert 0 < len(reads) <= steps // train.READ_EVERY + 1, reads
    assert 0 <= totals["correct"] <= totals["n"] and math.isfinite(totals["loss"])


@pytest.fixture(scope="module")
def eager_default_run(tmp_path_factory):
    """The default ``train`` on digits (30 FP epochs, 15 SPEQ epochs), eager."""
    out = tmp_path_factory.mktemp("eager") / "run"
    return run(TrainConfig(progress=False, compile="off"), out, log=lambda m: None)


@pytest.mark.parametrize("mode", MODES)
def test_a_seeded_train_run_selects_the_same_accuracy_compiled_or_not(tmp_path, eager_default_run, mode):
    fast = run(TrainConfig(progress=False, compile=mode), tmp_path / mode, log=lambda m: None)
    eager = eager_default_run
    assert eager["compile"] == "off" and fast["compile"] == mode
    assert fast["compile_s"] > 0 and eager["compile_s"] == 0
    # Compiled float sums differ in their last bits, and at 2 bits a rare rounding flip then
    # takes the run along another path: the selected accuracy agrees, not every weight.
    assert abs(fast["val_acc"] - eager["val_acc"]) * 360 <= 1 + 1e-6
    assert TrainConfig.load(tmp_path / mode / "config.yaml").compile == mode


def test_quantize_model_bits_reach_the_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    quantize_model(model, w_bits=3, a_bits=5, first_last_bits=None, input_bits=32)
    assert model[2].act_quant.levels.item() == 31 and model[2].weight_quant.levels.item() == 7
    assert model[0].act_quant.levels.item() == 0  # the input at 32 bits


def test_compile_on_without_a_compiler_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from speq_search.cli import main

    monkeypatch.setattr(compiling, "has_cxx_compiler", lambda: False)
    assert main(["train", "--out", str(tmp_path / "r"), "--compile", "on", "--device", "cpu", "--epochs", "1",
                 "--fp-epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compile" in err[0] and "g++" in err[0]
    assert not (tmp_path / "r").exists()  # refused before any work


def test_yaml_on_and_off_mean_the_compile_modes(tmp_path):
    from speq_search.space import load_space

    assert load_space("default", {"train.compile": False}).train.compile == "off"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("compile: on\n")
    cfg = TrainConfig.load(cfg_file)
    assert cfg.compile == "on"
    cfg.save(tmp_path / "again.yaml")
    assert TrainConfig.load(tmp_path / "again.yaml").compile == "on"


def test_a_trial_compiles_with_its_own_cpus(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    # inductor's own patch restores the setting (pytest's monkeypatch deletes it from torch's config module)
    with inductor_config.patch(compile_threads=inductor_config.compile_threads):
        compiling.limit_compile_threads(1)
        assert inductor_config.compile_threads == 1
        monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")
        compiling.limit_compile_threads(2)
        assert inductor_config.compile_threads == 1  # the user's setting is left to inductor
    assert inductor_config.compile_threads >= 1
