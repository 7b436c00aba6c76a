"""ONNX export of a trained quantized model in QDQ form, checked in onnxruntime.

The graph (opset 21) is what ONNX runtimes recognise as a quantized model:

- **Activations.** Each quantized layer's input goes through ``Clip`` to the layer's learned
  range, then ``QuantizeLinear``/``DequantizeLinear`` with the layer's step as scale and zero
  point 0: ``uint8`` after a ReLU, ``int8`` for a signed input (the image, a linear bottleneck).
  The ``Clip`` keeps the codes within the b-bit range below 8 bits. It is used rather than
  ONNX's 4-bit types because those exist for 4 bits only, while a layer may run at 2 to 8,
  and a ``Clip`` before ``QuantizeLinear`` is a pattern every runtime executes.
- **Weights** are integer initializers, each layer's codes in its own bit-width's ONNX type where
  ONNX has one: ``INT2`` at 2 bits (opset 25, where the installed onnx and onnxruntime run it;
  else ``INT4``), ``INT4`` at 3 and 4 bits, ``INT8`` at 5 to 8 bits. The weight grid is the
  mid-point grid, levels ``(k + 1/2) * step`` with ``k`` in ``-2**(b-1) .. 2**(b-1) - 1``: the codes
  ``k`` are stored, ``DequantizeLinear`` (one scale, the step, per output channel: ``axis=0``)
  gives ``k * step``, and one ``Add`` per layer adds the half step (a zero point of -1/2 is not
  an integer). The file's weights thus take the b bits the run's size estimate counts (3 bits: 4).
  ``k * step + step / 2`` is the trained weight ``(k + 1/2) * step`` up to one float rounding.
  32-bit weights stay float. Every layer keeps the bits it was trained with (first and last
  layers, per-layer mixed precision).
- **BatchNorm** stays a float ``BatchNormalization`` op after its convolution by default, so
  the exported graph computes exactly what the trained model computes. Folding it into the
  layer's per-channel weight scale and float bias (``fold_batchnorm=True``) keeps the integer
  codes (a channel whose BatchNorm scale is negative has its codes' sign flipped) but changes the
  float rounding of the layer's output by an ulp, and at 2-4 bits such an ulp can move a value
  across the next layer's rounding boundary: measured on untrained ResNet-20s, logits moved by up
  to ~0.1. Folding applies to a BatchNorm fed by one quantized layer alone, found by tracing the
  model with ``torch.fx``; a model the tracer cannot follow keeps its BatchNorms.

Needs the optional packages onnx, onnxruntime and onnxscript: ``pip install 'speq-search[export]'``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.analysis.select import resolve_source  # the trial to export: the run folder's selection
from speq_search.compiling import use_compiled_kernels
from speq_search.errors import ConfigError
from speq_search.files import atomic_write
from speq_search.quant.convert import set_submodule
from speq_search.quant.modules import QUANT_LAYERS, ActQuantizer, QuantConv2d, QuantLinear
from speq_search.quant.primitives import FULL_PRECISION

OPSET = 21  # the first with INT4 in DequantizeLinear
INT2_OPSET = 25  # the first with INT2
INSTALL_HINT = "pip install 'speq-search[export]'"
# A deployed model must score as the trained one does: more than this many points apart fails.
DEFAULT_TOLERANCE = 0.1


def require_export_packages() -> None:
    """Raise a one-line :class:`ConfigError` unless onnx, onnxruntime and onnxscript import."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError("export", ", ".join(missing) + " not installed", f"install them with: {INSTALL_HINT}")


# ----------------------------------------------------------------------------- the two custom ops
# In PyTorch they compute what the ONNX nodes compute; the exporter maps each to its QDQ nodes.
@torch.library.custom_op("speq_search::quantize_act", mutates_args=())
def quantize_act(x: torch.Tensor, scale: torch.Tensor, low: float, high: float, qmin: int, qmax: int) -> torch.Tensor:
    """Clip to ``[low, high]``, round to the grid of ``scale`` (codes in ``[qmin, qmax]``), back to float."""
    return torch.clamp(torch.round(x.clamp(low, high) / scale), qmin, qmax) * scale


@quantize_act.register_fake
def _(x, scale, low, high, qmin, qmax):
    return torch.empty_like(x)


@torch.library.custom_op("speq_search::dequantize_weight", mutates_args=())
def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Integer codes times one scale per output channel (dimension 0)."""
    return codes.float() * scale.reshape((-1,) + (1,) * (codes.dim() - 1))


@dequantize_weight.register_fake
def _(codes, scale):
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


def _translations() -> dict:
    import numpy as np
    from onnxscript import ir
    from onnxscript import opset21 as op

    def quantize_act_onnx(x, scale, low: float, high: float, qmin: int, qmax: int):
        zero = op.Constant(value=ir.tensor(np.array(0, dtype=np.int8 if qmin < 0 else np.uint8)))
        y = op.Clip(x, op.Constant(value_float=low), op.Constant(value_float=high))
        return op.DequantizeLinear(op.QuantizeLinear(y, scale, zero), scale, zero)

    def dequantize_weight_onnx(codes, scale):
        return op.DequantizeLinear(codes, scale, axis=0)

    return {torch.ops.speq_search.quantize_act.default: quantize_act_onnx,
            torch.ops.speq_search.dequantize_weight.default: dequantize_weight_onnx}


# ----------------------------------------------------------------------------- the deployable model
def weight_codes(layer: QuantConv2d | QuantLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scale)``: the layer's b-bit codes ``k`` and its step per output channel, with
    ``(codes + 1/2) * scale`` (per output channel) equal to ``layer.quantized_weight()``.

    Read from what the layer's weight quantizer returns (:meth:`WeightQuantizer.quantize`: its
    codes, scale and zero point, -1/2 on the mid-point grid)."""
    with torch.no_grad():
        q = layer.weight_quant.quantize(layer.weight)
    if q.bits >= FULL_PRECISION:
        raise ValueError("a 32-bit weight has no integer codes")
    if not bool(torch.all(torch.as_tensor(q.zero_point) == -0.5)):
        raise ValueError("export writes the mid-point grid (zero point -1/2); this weight quantizer's differs")
    half = 2 ** (q.bits - 1)
    codes = q.codes.to(torch.int16)
    if int(codes.min()) < -half or int(codes.max()) > half - 1:
        raise RuntimeError(f"export: weight codes outside {q.bits} bits; please report it")
    scale = torch.as_tensor(q.scale).reshape(-1)
    if scale.numel() == 1:  # a per-tensor clip: the same scale for every channel
        scale = scale.expand(codes.shape[0])
    return codes.to(torch.int8), scale.contiguous().clone()


def weight_type(bits: int, opset: int) -> str:
    """The ONNX type a layer's ``bits``-bit weight codes are stored in at ``opset``."""
    if bits <= 2 and opset >= INT2_OPSET and int2_supported():
        return "INT2"
    return "INT4" if bits <= 4 else "INT8" if bits <= 8 else "FLOAT"


_INT2: list[bool] = []


def int2_supported() -> bool:
    """Whether the installed onnx, ml_dtypes and onnxruntime write and run ``INT2`` weights: a
    one-node model is built, checked and run once per process."""
    if not _INT2:
        _INT2.append(_try_int2())
    return _INT2[0]


def _try_int2() -> bool:
    try:
        import ml_dtypes
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        codes = numpy_helper.from_array(np.array([-2, -1, 0, 1], dtype=np.int8).astype(ml_dtypes.int2), "w")
        scale = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "s")
        graph = helper.make_graph([helper.make_node("DequantizeLinear", ["w", "s"], ["y"])], "int2", [],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], [codes, scale])
        opsets = [helper.make_opsetid("", INT2_OPSET)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return bool(np.array_equal(session.run(None, {})[0], np.array([-1.0, -0.5, 0.0, 0.5], dtype=np.float32)))
    except Exception:  # noqa: BLE001 - any part missing or too old: INT4 instead
        return False


def default_opset() -> int:
    """The opset an export is written at: 25 where INT2 weights are supported (:func:`int2_supported`), else 21."""
    return INT2_OPSET if int2_supported() else OPSET


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class _InputQDQ(nn.Module):
    """A layer's activation quantizer, frozen: Clip, then QuantizeLinear/DequantizeLinear."""

    def __init__(self, q: ActQuantizer) -> None:
        super().__init__()
        clip = q.current_clip().detach().reshape(())  # the clip of the current bits
        self.low, self.high = (-float(clip), float(clip)) if q.signed else (0.0, float(clip))
        levels = int(q.grid.levels(q.bits))
        self.qmin, self.qmax = (-levels if q.signed else 0), levels
        # The step of the quantizer's grid; None at 32 bits.
        self.register_buffer("scale", q.grid.step(clip, levels) if levels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.scale is None:  # 32 bits: the learned clip stays part of the activation function
            return x.clamp(self.low, self.high)
        return quantize_act(x, self.scale, self.low, self.high, self.qmin, self.qmax)


class _DeployLayer(nn.Module):
    """A quantized conv or linear layer as it is deployed: input QDQ, integer weights, float bias,
    and the BatchNorm after it (if any) folded into the weight scale and the bias."""

    def __init__(self, layer: QuantConv2d | QuantLinear, bn: nn.modules.batchnorm._BatchNorm | None) -> None:
        super().__init__()
        self.input_qdq = _InputQDQ(layer.act_quant)
        self.is_conv = isinstance(layer, QuantConv2d)
        if self.is_conv:
            if layer.padding_mode != "zeros":
                raise ConfigError("model", f"{layer.padding_mode} padding", "convolutions with zero padding (ONNX Conv)")
            self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        self.w_bits = layer.weight_quant.bits
        out_channels = layer.weight.shape[0]
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        gain = None
        if bn is not None:
            gain = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
                1 / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * gain
            bias = shift + (bias * gain if bias is not None else 0)
        self.register_buffer("bias", bias)
        self.register_buffer("weight", None)
        self.register_buffer("codes", None)
        self.register_buffer("offset", None)
        if self.w_bits < FULL_PRECISION:
            codes, scale = weight_codes(layer)
            trained = layer.quantized_weight().detach()
            if not torch.equal((codes.float() + 0.5) * _per_channel(scale, codes), trained):
                raise RuntimeError("export: the integer weight codes do not reproduce the layer's weights; please report it")
            if gain is not None:
                # A negative gain flips the weight: (k + 1/2) * -s is (-1 - k + 1/2) * s, a code of the same bits.
                codes = torch.where(_per_channel(gain < 0, codes), -1 - codes, codes).to(torch.int8)
                scale = scale * gain.abs()
            self.codes = codes
            self.register_buffer("scale", scale.reshape(out_channels))
            self.offset = _per_channel(scale / 2, codes).clone()  # the half step: one Add in the graph
        else:
            w = layer.weight.detach().clone()
            self.weight = w * gain.reshape((-1,) + (1,) * (w.dim() - 1)) if gain is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.input_qdq(x)
        w = dequantize_weight(self.codes, self.scale) + self.offset if self.codes is not None else self.weight
        if self.is_conv:
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, w, self.bias)


def _batchnorm_pairs(model: nn.Module) -> tuple[dict[str, str], str]:
    """``{layer name: BatchNorm name}`` for each BatchNorm fed by a quantized layer alone, and
    why none were found when the model cannot be traced (``""`` otherwise)."""
    from torch import fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:  # noqa: D102
            return isinstance(m, QUANT_LAYERS) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # a model with data-dependent control flow: keep its BatchNorms as ops
        return {}, f"the model cannot be traced ({type(err).__name__}), so its BatchNorms stay float ops"
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], QUANT_LAYERS) or len(node.users) != 1:
            continue
        (user,) = node.users
        bn = modules.get(user.target) if user.op == "call_module" else None
        if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats and calls[user.target] == 1
                and calls[node.target] == 1 and len(user.all_input_nodes) == 1):
            pairs[node.target] = user.target
    return pairs, ""


@dataclass
class DeployPlan:
    """What :func:`deploy_model` did: layers replaced, BatchNorms folded, and why not, if not."""

    layers: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {"w_bits", "a_bits"}
    folded: dict[str, str] = field(default_factory=dict)  # layer name -> the BatchNorm folded into it
    note: str = ""


def deploy_model(model: nn.Module, fold_batchnorm: bool = False) -> tuple[nn.Module, DeployPlan]:
    """A copy of ``model`` (eval mode) whose quantized layers compute with integer codes as the
    exported graph does, with BatchNorms folded where they directly follow such a layer."""
    model = copy.deepcopy(model).eval().cpu()
    use_compiled_kernels(model, False)  # the eager forward: the one the codes are read from
    plan = DeployPlan()
    pairs, plan.note = _batchnorm_pairs(model) if fold_batchnorm else ({}, "")
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]:
        bn_name = pairs.get(name)
        bn = model.get_submodule(bn_name) if bn_name else None
        set_submodule(model, name, _DeployLayer(layer, bn))
        plan.layers[name] = {"w_bits": layer.weight_quant.bits, "a_bits": layer.act_quant.bits}
        if bn_name:
            set_submodule(model, bn_name, nn.Identity())
            plan.folded[name] = bn_name
    model.requires_grad_(False)
    return model, plan


# ----------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    opset: int
    file_bytes: int
    layers: dict[str, dict[str, int]]
    folded: dict[str, str]
    weight_types: dict[str, str]  # layer name -> the ONNX type of its weight initializer
    weight_bytes: int  # what the weight initializers take in the file
    note: str = ""


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a line per missing optional package (torchvision's ops) and its progress."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # a deprecation inside torch.export's own pytree code
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    opset: int | None = None,
    fold_batchnorm: bool = False,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Write ``model`` (a quantized model from :func:`speq_search.quantize_model`, or a float one)
    as an ONNX file in QDQ form, with a dynamic batch dimension, and check it with ``onnx.checker``.

    Args:
        model: the trained model; it is not changed (a copy is exported).
        example_input: a batch of inputs of the model's shape (at least 2 images: the batch
            dimension is exported as dynamic).
        path: the ``.onnx`` file to write (written whole or not at all).
        opset: ONNX opset; 21 or later (INT4 weights need it); 25 or later stores 2-bit weights as
            INT2. Default: :func:`default_opset` (25 where the installed onnx and onnxruntime run
            INT2, else 21).
        fold_batchnorm: fold BatchNorms into the layers before them (see the module docstring).
        metadata: extra ``metadata_props`` of the model (strings).
    """
    require_export_packages()
    import onnx

    opset = default_opset() if opset is None else opset
    if opset < OPSET:
        raise ConfigError("opset", opset, f"an ONNX opset >= {OPSET} (INT4 weight codes need it)")
    x = example_input.detach().cpu()
    if x.shape[0] < 2:
        x = torch.cat([x, x])  # torch.export specialises a batch of 1; 2 keeps the dimension dynamic
    deploy, plan = deploy_model(model, fold_batchnorm)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            deploy, (x,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), custom_translation_table=_translations(),
            optimize=True, verbose=False, report=False,
        )
    proto = program.model_proto
    weight_types, weight_bytes = _pack_weights(proto, deploy, opset)
    for node in proto.graph.node:  # the exporter's per-node stack traces: most of a small model's bytes
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.value_info[:]  # intermediate shapes, which runtimes infer themselves
    props = {"producer": "speq-search", "layer_bits": json.dumps(plan.layers),
             "folded_batchnorm": json.dumps(plan.folded),
             "weights": "per layer: DequantizeLinear(codes k, step per output channel) + step/2 (the mid-point grid)",
             **(metadata or {})}
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in props.items()})
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    return ExportResult(path, opset, path.stat().st_size, plan.layers, plan.folded, weight_types, weight_bytes, plan.note)


def _pack_weights(proto, deploy: nn.Module, opset: int) -> tuple[dict[str, str], int]:
    """Store each layer's codes in its bit-width's type (:func:`weight_type`: INT2 or INT4 packed
    two or four to a byte, INT8); return each layer's weight type and the bytes all weights take."""
    import ml_dtypes
    import numpy as np
    import onnx
    from onnx import numpy_helper

    packed_types = {"INT2": ml_dtypes.int2, "INT4": ml_dtypes.int4}
    initializers = {t.name: t for t in proto.graph.initializer}
    types, total = {}, 0
    for name, m in deploy.named_modules():
        if not isinstance(m, _DeployLayer):
            continue
        key = f"{name}.codes" if m.codes is not None else f"{name}.weight"
        tensor = initializers.get(key)
        if tensor is None:  # an exporter that renamed it: the graph is still right, only not packed
            types[name] = "?"
            continue
        kind = weight_type(m.w_bits, opset) if m.codes is not None else "FLOAT"
        if kind in packed_types:
            codes = numpy_helper.to_array(tensor).astype(np.int8)
            tensor.CopyFrom(numpy_helper.from_array(codes.astype(packed_types[kind]), key))
        types[name] = onnx.TensorProto.DataType.Name(tensor.data_type)
        total += len(tensor.raw_data)
    if "INT2" in types.values():  # the file's IR version must know INT2
        proto.ir_version = max(proto.ir_version, onnx.helper.find_min_ir_version_for(list(proto.opset_import)))
    return types, total


# ----------------------------------------------------------------------------- verification
@dataclass
class Verification:
    """onnxruntime against PyTorch on one labelled split."""

    images: int
    onnx_acc: float
    torch_acc: float
    max_logit_diff: float
    agreement: float  # fraction of images where both predict the same class
    provider: str = "CPUExecutionProvider"

    @property
    def acc_diff_points(self) -> float:
        return 100 * abs(self.onnx_acc - self.torch_acc)


@torch.no_grad()
def verify_onnx(path: str | Path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> Verification:
    """Run the ONNX file in onnxruntime (CPU) and ``model`` in PyTorch on ``(x, y)``; compare."""
    require_export_packages()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model = model.eval().cpu()
    correct_onnx = correct_torch = same = 0
    diff = 0.0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].cpu(), y[i:i + batch_size].cpu()
        ours = torch.from_numpy(session.run(None, {name: xb.numpy()})[0])
        theirs = model(xb)
        diff = max(diff, float((ours - theirs).abs().max()))
        correct_onnx += int((ours.argmax(1) == yb).sum())
        correct_torch += int((theirs.argmax(1) == yb).sum())
        same += int((ours.argmax(1) == theirs.argmax(1)).sum())
    n = max(len(y), 1)
    return Verification(len(y), correct_onnx / n, correct_torch / n, diff, same / n)


class ExportMismatch(RuntimeError):
    """onnxruntime's accuracy is further from PyTorch's than the tolerance allows."""


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    trial: str | None = None,
    budget: str | None = None,
    fold_batchnorm: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    log=print,
) -> dict:
    """Export a trained model (see :func:`resolve_source`) to ``out`` and verify it in onnxruntime.

    The ONNX model runs on the run's own test split beside the PyTorch model; ``out`` is written
    only when their accuracies are within ``tolerance`` points (otherwise the file is kept as
    ``<out>.unverified.onnx`` and :class:`ExportMismatch` is raised). Returns what was measured.
    """
    require_export_packages()
    from speq_search.config import TrainConfig
    from speq_search.search.folder import ensure_writable
    from speq_search.train import load_data, load_trained

    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ConfigError("tolerance", tolerance, "a number of accuracy points >= 0, e.g. 0.1")
    out = Path(out).expanduser()
    if out.is_dir():
        raise ConfigError("--out", str(out), "a file path ending in .onnx (this is a folder)")
    ensure_writable(out.parent if str(out.parent) else Path("."), "--out")
    src = resolve_source(source, trial, budget)
    log(f"export: {src.label}")
    cfg = TrainConfig.load(src.folder / "config.yaml")
    splits = load_data(cfg)
    model = load_trained(src.folder, splits)
    metadata = {"source": src.label, "method": cfg.speq.method, "dataset": cfg.data.dataset, "model": cfg.model.name}
    staging = out.with_name(out.stem + ".unverified.onnx")
    result = export_onnx(model, splits.test.x[:2], staging, opset=opset, fold_batchnorm=fold_batchnorm, metadata=metadata)
    check = verify_onnx(staging, model, splits.test.x, splits.test.y)
    summary = {
        "out": str(out), "source": src.label, "opset": result.opset, "file_bytes": result.file_bytes,
        "weight_bytes": result.weight_bytes, "weight_bytes_at_bits": weight_bytes_at_bits(model),
        "size_bytes_estimate": src.metrics.get("size_bytes"),
        "weight_types": result.weight_types, "folded_batchnorm": len(result.folded), "test_images": check.images,
        "onnx_test_acc": check.onnx_acc, "torch_test_acc": check.torch_acc, "max_logit_diff": check.max_logit_diff,
        "agreement": check.agreement,
    }
    types = ", ".join(f"{t} x{n}" for t, n in sorted(Counter(result.weight_types.values()).items()))
    estimate = src.metrics.get("size_bytes")
    log(f"ONNX opset {result.opset}: {len(result.layers)} quantized layers (weights {types}), "
        + (f"{len(result.folded)} BatchNorms folded" if fold_batchnorm else "BatchNorms kept as float ops"))
    at_bits = summary["weight_bytes_at_bits"]
    log(f"size: {_kib(result.file_bytes)} file, {_kib(result.weight_bytes)} of weights ({result.weight_bytes / max(at_bits, 1):.2f}x "
        f"the {_kib(at_bits)} they take at their bits: each layer's codes in INT2/INT4/INT8, the half step an Add); "
        "the run's estimate " + (f"{_kib(estimate)}" if estimate else "(not recorded)")
        + " (weights at their bits, scales, BatchNorm)")
    log(f"onnxruntime ({check.provider}) on the test split, {check.images} images: {100 * check.onnx_acc:.2f} %; "
        f"PyTorch {100 * check.torch_acc:.2f} %; same prediction on {100 * check.agreement:.2f} %; "
        f"largest logit difference {check.max_logit_diff:.3g}")
    if check.acc_diff_points > tolerance:
        raise ExportMismatch(
            f"onnxruntime's test accuracy {100 * check.onnx_acc:.2f} % differs from PyTorch's {100 * check.torch_acc:.2f} % "
            f"by {check.acc_diff_points:.2f} points (more than {tolerance:g}); the model is kept as {staging} for inspection, "
            f"not written to {out}" + ("" if not fold_batchnorm else " (try without --fold-batchnorm)"))
    os.replace(staging, out)
    log(f"wrote {out}")
    return summary


def weight_bytes_at_bits(model: nn.Module) -> int:
    """The bytes the quantized layers' weights take at their bits (what the run's ``size_bytes``
    counts for them): ``b / 8`` per weight, 4 bytes at 32 bits."""
    total = 0.0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):  # the quantized layers are their subclasses
            bits = m.weight_quant.bits if isinstance(m, QUANT_LAYERS) else FULL_PRECISION
            total += m.weight.numel() * min(bits, FULL_PRECISION) / 8
    return int(round(total))


def _kib(n: float | None) -> str:
    return f"{n / 1024:.1f} KiB" if n is not None else "?"
