"""ONNX export: QDQ graphs that onnxruntime runs as the PyTorch model does, from trained digits runs.

Exports from a search run (``--trial``, ``--budget``) are tested in test_search.py, on its search.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from onnx import numpy_helper  # noqa: E402

from speq_search.cli import main  # noqa: E402
from speq_search.config import TrainConfig  # noqa: E402
from speq_search.export import (  # noqa: E402
    default_opset,
    deploy_model,
    export_onnx,
    export_run,
    int2_supported,
    verify_onnx,
)
from speq_search.models import create_model  # noqa: E402
from speq_search.quant import calibrating, quantize_model  # noqa: E402
from speq_search.quant.modules import QUANT_LAYERS  # noqa: E402
from speq_search.train import load_data, load_trained  # noqa: E402
from speq_search.train import run as run_training  # noqa: E402

# Trained on digits for 2 epochs: real weights, clips and BatchNorm statistics.
CASES = {
    "cnn-w2a2": {"quant.w_bits": 2, "quant.a_bits": 2},
    "cnn-w4a4": {"quant.w_bits": 4, "quant.a_bits": 4},
    "cnn-w8a8": {"quant.w_bits": 8, "quant.a_bits": 8},
    "cnn-mixed": {"quant.w_bits": 3, "quant.a_bits": 4, "quant.first_last_bits": None,
                  "quant.overrides": {"features.4": {"w_bits": 5, "a_bits": 2}, "classifier": {"w_bits": 32, "a_bits": 6}}},
    "mlp-w3a3": {"model.name": "mlp", "quant.w_bits": 3, "quant.a_bits": 3, "quant.weight_quantizer": "sawb"},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``{case: run folder}``, each a finished `train` run."""
    base = TrainConfig(progress=False).replace(**{"optim.epochs": 2, "optim.fp_epochs": 3, "model.width": 0.5,
                                                  "speq.method": "qat", "compile": "off"})
    folders = {}
    for name, changes in CASES.items():
        out = tmp_path_factory.mktemp("export") / name
        run_training(base.replace(**changes), out, log=lambda msg: None)
        folders[name] = out
    return folders


def _graph(path):
    model = onnx.load(str(path))
    return model, {t.name: t for t in model.graph.initializer}, list(model.graph.node)


def _dequantized(init, node):
    codes = numpy_helper.to_array(init[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
    return codes, scale


def _weights(codes, scale):
    """What a layer's weight is: the mid-point grid's (k + 1/2) * step (the graph adds the half step)."""
    return (codes + np.float32(0.5)) * scale.reshape((-1,) + (1,) * (codes.ndim - 1))


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_matches_pytorch_on_the_test_split(trained, case, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained[case]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime (CPUExecutionProvider) on the test split, 360 images" in printed and f"wrote {out}" in printed
    model, init, nodes = _graph(out)
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", default_opset())}  # 25 where INT2 runs
    cfg = TrainConfig.load(trained[case] / "config.yaml")
    splits = load_data(cfg)
    torch_model = load_trained(trained[case], splits)
    check = verify_onnx(out, torch_model, splits.test.x, splits.test.y)
    assert abs(check.onnx_acc - check.torch_acc) * 100 <= 0.1
    # Runtimes round floats differently (BatchNorm, division): an ulp can move an activation across
    # a rounding boundary, so a few logits may differ by a step; predictions must not.
    assert check.agreement >= 0.99 and check.max_logit_diff < 0.1
    # Every quantized layer: the bits it was trained with, recorded in the file.
    bits = {n: {"w_bits": m.weight_quant.bits, "a_bits": m.act_quant.bits}
            for n, m in torch_model.named_modules() if isinstance(m, QUANT_LAYERS)}
    props = {p.key: p.value for p in model.metadata_props}
    import json

    assert json.loads(props["layer_bits"]) == bits
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) == sum(b["a_bits"] < 32 for b in bits.values())
    assert not [t for t in init.values() if t.data_type == onnx.TensorProto.FLOAT and t.name.endswith(".codes")]


@pytest.mark.parametrize("case", ["cnn-w2a2", "cnn-w8a8", "cnn-mixed", "mlp-w3a3"])
def test_onnx_weights_are_integer_codes_that_dequantize_to_quantized_weight(trained, case, tmp_path):
    cfg = TrainConfig.load(trained[case] / "config.yaml")
    splits = load_data(cfg)
    torch_model = load_trained(trained[case], splits)
    result = export_onnx(torch_model, splits.test.x[:4], tmp_path / "m.onnx")
    _, init, nodes = _graph(tmp_path / "m.onnx")
    # Each layer's codes in its own bit-width's type (issue 28; once the odd codes 2k+1, a bit more).
    expected_type = {2: "INT2" if int2_supported() else "INT4", 3: "INT4", 4: "INT4", 5: "INT8", 6: "INT8", 7: "INT8",
                     8: "INT8", 32: "FLOAT"}
    checked = 0
    for name, layer in torch_model.named_modules():
        if not isinstance(layer, QUANT_LAYERS):
            continue
        bits = layer.weight_quant.bits
        assert result.weight_types[name] == expected_type[bits]
        if bits == 32:
            assert numpy_helper.to_array(init[f"{name}.weight"]).dtype == np.float32
            continue
        dq = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}.codes")
        assert next(a.i for a in dq.attribute if a.name == "axis") == 0  # one scale per output channel
        codes, scale = _dequantized(init, dq)
        assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1  # the b-bit grid's codes
        assert len(np.unique(codes)) <= 2**bits
        add = next(n for n in nodes if n.op_type == "Add" and dq.output[0] in n.input)  # the half step
        half = numpy_helper.to_array(init[next(i for i in add.input if i != dq.output[0])])
        assert np.array_equal(half.reshape(-1), scale / 2)
        assert torch.equal(torch.from_numpy(_weights(codes, scale)), layer.quantized_weight().detach())
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("case", list(CASES))
def test_the_file_delivers_the_size_the_search_optimised(trained, case, tmp_path):
    """A W2A2 cnn-small's weights took 48.1 KiB against the run's 26.8 KiB estimate: 2-bit codes were
    INT4 and 8-bit ones INT16. Each layer's codes now take its bits (3 bits: INT4, 5-7: INT8)."""
    summary = export_run(trained[case], tmp_path / "m.onnx", log=lambda msg: None)
    # The worst a type of its own can do: 5-bit codes in INT8 (8/5); 3-bit ones in INT4 (4/3).
    assert summary["weight_bytes"] <= 1.6 * summary["weight_bytes_at_bits"]
    assert summary["weight_bytes"] <= 1.6 * summary["size_bytes_estimate"]
    if case in ("cnn-w2a2", "cnn-w4a4", "cnn-w8a8"):  # a type of its own bits for every layer: nothing more
        assert summary["weight_bytes"] <= summary["weight_bytes_at_bits"] + 8 * (not int2_supported())


def test_activation_qdq_clips_to_the_layer_range_and_keeps_codes_in_b_bits(trained, tmp_path):
    cfg = TrainConfig.load(trained["cnn-mixed"] / "config.yaml")
    splits = load_data(cfg)
    torch_model = load_trained(trained["cnn-mixed"], splits)
    export_onnx(torch_model, splits.test.x[:2], tmp_path / "m.onnx")
    _, init, nodes = _graph(tmp_path / "m.onnx")
    consts = {o: n for n in nodes if n.op_type == "Constant" for o in n.output}

    def value(name):
        if name in init:
            return numpy_helper.to_array(init[name])
        return numpy_helper.to_array(consts[name].attribute[0].t)

    quantizers = [m.act_quant for m in torch_model.modules() if isinstance(m, QUANT_LAYERS)]
    quantize_nodes = [n for n in nodes if n.op_type == "QuantizeLinear"]
    assert len(quantize_nodes) == len(quantizers)
    producer = {o: n for n in nodes for o in n.output}
    for q, node in zip(quantizers, quantize_nodes):
        clip_node = producer[node.input[0]]
        assert clip_node.op_type == "Clip"
        low, high = float(value(clip_node.input[1])), float(value(clip_node.input[2]))
        clip = float(q.clip.detach())
        assert (low, high) == ((-clip, clip) if q.signed else (0.0, clip))
        scale, zero = value(node.input[1]), value(node.input[2])
        levels = 2 ** (q.bits - 1) - 1 if q.signed else 2**q.bits - 1
        assert zero.dtype == (np.int8 if q.signed else np.uint8) and int(zero) == 0
        assert round(high / float(scale)) == levels  # the largest code is the b-bit range's end


@pytest.mark.parametrize("name,bits", [("resnet20", 2), ("mobilenetv2", 4)])
def test_shape_level_round_trip_of_32px_models_with_a_dynamic_batch(name, bits, tmp_path):
    splits = load_data(TrainConfig(progress=False).replace(**{"data.dataset": "random32"}))
    torch.manual_seed(0)
    model = create_model(name, num_classes=splits.num_classes, in_channels=3, width=0.5)
    x = splits.train.x[:64]
    model.train()
    model(x)  # BatchNorm statistics that are not the identity
    quantize_model(model, w_bits=bits, a_bits=bits)
    with calibrating(model):
        model(x)
    model.eval()
    export_onnx(model, x[:2], tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3, 17):  # the batch dimension is not fixed by the example
        out = session.run(None, {"input": splits.test.x[:n].numpy()})[0]
        assert out.shape == (n, splits.num_classes)
        with torch.no_grad():
            diff = np.abs(out - model(splits.test.x[:n]).numpy())
        # Equal but where an ulp of another runtime's rounding moved an activation across a 2-bit
        # boundary (that can move a logit of an untrained network by a lot); a wrong graph moves them all.
        assert np.median(diff) < 1e-4 and (diff > 1e-4).mean() < 0.1
    depthwise = [m for m in model.modules() if isinstance(m, QUANT_LAYERS) and getattr(m, "groups", 1) > 1]
    assert (name == "mobilenetv2") == bool(depthwise)


def test_a_model_with_per_bit_scales_exports_its_current_bits_codes_and_clips(tmp_path):
    splits = load_data(TrainConfig(progress=False))
    torch.manual_seed(0)
    model = create_model("cnn-small", in_channels=1, width=0.5)
    x = splits.train.x[:64]
    model.train()
    model(x)
    quantize_model(model, w_bits=4, a_bits=4, per_bit_scales=True)
    with calibrating(model):
        model(x)
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    for layer, bits in zip(layers, (8, 3, 5, 2)):  # switched after quantizing, as a supernet step does
        layer.weight_quant.bits = layer.act_quant.bits = bits
    model.eval()
    result = export_onnx(model, x[:2], tmp_path / "m.onnx")
    assert [b["w_bits"] for b in result.layers.values()] == [8, 3, 5, 2]
    _, init, nodes = _graph(tmp_path / "m.onnx")
    for name, layer in model.named_modules():
        if not isinstance(layer, QUANT_LAYERS):
            continue
        dq = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}.codes")
        codes, scale = _dequantized(init, dq)
        assert torch.equal(torch.from_numpy(_weights(codes, scale)), layer.quantized_weight().detach())
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": splits.test.x[:64].numpy()})[0]
    with torch.no_grad():
        ref = model(splits.test.x[:64]).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95 and np.median(np.abs(out - ref)) < 1e-4


def test_folding_batchnorm_keeps_the_codes_and_the_function(trained, tmp_path):
    cfg = TrainConfig.load(trained["cnn-w4a4"] / "config.yaml")
    splits = load_data(cfg)
    model = load_trained(trained["cnn-w4a4"], splits)
    kept = export_onnx(model, splits.test.x[:2], tmp_path / "kept.onnx")
    folded = export_onnx(model, splits.test.x[:2], tmp_path / "folded.onnx", fold_batchnorm=True)
    assert kept.folded == {} and folded.folded == {"features.0": "features.1", "features.4": "features.5",
                                                   "features.8": "features.9"}
    ops = [n.op_type for n in _graph(tmp_path / "folded.onnx")[2]]
    assert "BatchNormalization" not in ops and "BatchNormalization" in [n.op_type for n in _graph(tmp_path / "kept.onnx")[2]]
    _, init_k, _ = _graph(tmp_path / "kept.onnx")
    _, init_f, _ = _graph(tmp_path / "folded.onnx")
    for layer in folded.folded:
        codes_k = numpy_helper.to_array(init_k[f"{layer}.codes"]).astype(np.float32) + 0.5  # the levels k + 1/2
        codes_f = numpy_helper.to_array(init_f[f"{layer}.codes"]).astype(np.float32) + 0.5
        assert np.array_equal(np.abs(codes_k), np.abs(codes_f))  # a negative BatchNorm scale only flips signs
    check = verify_onnx(tmp_path / "folded.onnx", model, splits.test.x, splits.test.y)
    assert abs(check.onnx_acc - check.torch_acc) * 100 <= 0.1 and check.agreement > 0.99


def test_folding_is_exact_up_to_float_rounding_with_negative_batchnorm_scales():
    torch.manual_seed(0)
    model = create_model("cnn-small", in_channels=1, width=0.5)
    x = torch.randn(32, 1, 8, 8)
    model.train()
    model(x)
    quantize_model(model, w_bits=3, a_bits=32, input_bits=32)  # no activation rounding to amplify an ulp
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(-1, 1)  # negative scales on about half the channels
    model.eval()
    deployed, plan = deploy_model(model, fold_batchnorm=True)
    assert len(plan.folded) == 3
    with torch.no_grad():
        ref = model(x)
        assert (deployed(x) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_a_float_run_exports_without_qdq(tmp_path):
    out = tmp_path / "fp"
    cfg = TrainConfig(progress=False).replace(**{"optim.fp_epochs": 2, "model.width": 0.25, "speq.method": "fp",
                                                 "compile": "off"})
    run_training(cfg, out, log=lambda msg: None)
    export_run(out, tmp_path / "fp.onnx", log=lambda msg: None)
    ops = {n.op_type for n in _graph(tmp_path / "fp.onnx")[2]}
    assert "Conv" in ops and not ops & {"QuantizeLinear", "DequantizeLinear"}


def _one_error_line(capsys, field: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"error: {field}" in err, err
    return err


def test_a_run_folder_without_a_checkpoint_exits_2(trained, tmp_path, capsys):
    folder = tmp_path / "unfinished"
    folder.mkdir()
    (folder / "config.yaml").write_text((trained["cnn-w2a2"] / "config.yaml").read_text())
    assert main(["export", str(folder), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint.pt" in _one_error_line(capsys, "SOURCE")
    assert not (tmp_path / "m.onnx").exists()


def test_a_corrupt_checkpoint_exits_2_and_leaves_the_run(trained, tmp_path, capsys):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(trained["cnn-w2a2"], folder)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(folder), "--out", str(tmp_path / "m.onnx")]) == 2
    _one_error_line(capsys, "checkpoint")
    assert (folder / "checkpoint.pt").read_bytes() == b"not a checkpoint" and (folder / "metrics.json").exists()


@pytest.mark.parametrize("args,field", [
    (["--trial", "abc"], "--trial"),
    (["--budget", "avg_bits<=3"], "--budget"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--opset", "17"], "--opset"),
])
def test_bad_flags_exit_2_with_one_line(trained, tmp_path, capsys, args, field):
    assert main(["export", str(trained["cnn-w2a2"]), "--out", str(tmp_path / "m.onnx"), *args]) == 2
    _one_error_line(capsys, field)
    assert not list(tmp_path.iterdir())


def test_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.onnx")]) == 2
    _one_error_line(capsys, "SOURCE")


def test_without_the_export_packages_one_line_says_how_to_install_them(trained, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert main(["export", str(trained["cnn-w2a2"]), "--out", str(tmp_path / "m.onnx")]) == 2
    line = _one_error_line(capsys, "export")
    assert "onnxruntime" in line and "pip install 'speq-search[export]'" in line


def test_an_accuracy_mismatch_fails_and_keeps_the_file_aside(trained, tmp_path, capsys, monkeypatch):
    import speq_search.export as export

    real = export.verify_onnx

    def off_by_one_image(*args, **kwargs):
        check = real(*args, **kwargs)
        check.onnx_acc -= 1 / check.images
        return check

    monkeypatch.setattr(export, "verify_onnx", off_by_one_image)
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained["cnn-w2a2"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "differs from PyTorch's" in err and "more than 0.1" in err
    assert not out.exists() and (tmp_path / "m.unverified.onnx").exists()
