"""Plugins: a model and a data set defined in a file outside the package, from the CLI, a config, a
space file, an installed package's entry points, and on Ray workers that are separate processes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from speq_search import plugins
from speq_search.cli import main
from speq_search.config import TrainConfig
from speq_search.errors import ConfigError

PLUGIN = '''
"""A user's model and data set, outside speq_search."""
import os

import torch
from torch import nn

from speq_search import register_dataset, register_model
from speq_search.data import Split, Splits

with open({log!r}, "a") as f:  # who imported this file, and from where
    f.write(f"{{os.getpid()}} {{__file__}}\\n")


@register_model("tiny-plugin-mlp")  # no description and no docstring, as most users write them
def tiny_plugin_mlp(num_classes=10, in_channels=1, width=1.0, input_size=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


@register_dataset("plugin-blobs")
def plugin_blobs(data_dir=None, download=False, val_fraction=0.1, **_):
    gen = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 2
        x = torch.randn(n, 1, 4, 4, generator=gen) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
        return Split(x, y)

    return Splits(split(256), split(64), split(64), num_classes=2)
'''


@pytest.fixture
def plugin_file(tmp_path, monkeypatch):
    """A plugin file in a folder outside the package; forgotten again after the test."""
    folder = tmp_path / "user code"
    folder.mkdir()
    log = tmp_path / "imports.log"
    path = folder / "my_plugin_models.py"
    path.write_text(PLUGIN.format(log=str(log)))
    yield path, log
    _forget("my_plugin_models")


def _forget(module: str, model: str = "tiny-plugin-mlp", dataset: str = "plugin-blobs") -> None:
    """Undo a plugin's import and registrations, so that other tests see the registries as shipped."""
    from speq_search.data import _registry as data_registry
    from speq_search.models import _registry as model_registry

    for name in list(plugins._loaded):
        if module in name:
            del plugins._loaded[name]
    sys.modules.pop(module, None)
    model_registry.MODELS.unregister(model)
    data_registry.DATASETS.unregister(dataset)


def test_train_with_a_plugin_file_from_the_cli(plugin_file, tmp_path, capsys):
    path, log = plugin_file
    out = tmp_path / "run"
    args = ["train", "--plugin", str(path), "--dataset", "plugin-blobs", "--model", "tiny-plugin-mlp", "--epochs", "1",
            "--fp-epochs", "1", "--w-bits", "4", "--a-bits", "4", "--compile", "off", "--quiet", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] > 0.9  # two separable blobs: the plugin's model learned the plugin's data
    saved = TrainConfig.load(out / "config.yaml")  # the run folder names its plugin, so it reloads alone
    assert saved.plugins == (str(path.resolve()),) and saved.model.name == "tiny-plugin-mlp"


def test_a_plugin_without_docstrings_or_descriptions_registers_and_is_listed(plugin_file, capsys):
    path, _ = plugin_file
    plugins.load_plugins([str(path)], "--plugin")
    from speq_search import list_datasets, list_models

    assert list_models()["tiny-plugin-mlp"] == "" and list_datasets()["plugin-blobs"] == ""
    assert main(["models"]) == 0 and "tiny-plugin-mlp" in capsys.readouterr().out


def test_a_config_file_names_its_plugin_relative_to_itself(plugin_file, tmp_path):
    path, _ = plugin_file
    config = path.parent / "train.yaml"
    config.write_text("plugins: [./my_plugin_models.py]\ndata: {dataset: plugin-blobs}\nmodel: {name: tiny-plugin-mlp}\n")
    cfg = TrainConfig.load(config)
    assert cfg.plugins == (str(path.resolve()),) and cfg.data.dataset == "plugin-blobs"


def test_a_plugin_that_fails_to_import_is_one_line_naming_it(tmp_path, capsys):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import not_a_module_anywhere\n")
    for spec in (str(broken), "no_such_package.models", str(tmp_path / "missing.py")):
        assert main(["train", "--plugin", spec, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error: --plugin" in err and spec in err, err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_entry_points_of_an_installed_package_register_on_first_use(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "entry_plugin_pkg").mkdir(parents=True)
    (site / "entry_plugin_pkg" / "__init__.py").write_text(
        "from torch import nn\nfrom speq_search import register_model\n\n"
        "@register_model('entry-point-model', 'from an entry point')\n"
        "def build(num_classes=10, in_channels=1, width=1.0, input_size=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size ** 2, num_classes))\n")
    dist = site / "entry_plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: entry-plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[speq_search.models]\nentry = entry_plugin_pkg\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    from speq_search.models import _registry, create_model, list_models

    try:
        assert "entry-point-model" in list_models()
        assert create_model("entry-point-model", num_classes=3)(__import__("torch").zeros(2, 1, 8, 8)).shape == (2, 3)
    finally:
        _registry.MODELS.unregister("entry-point-model")
        sys.modules.pop("entry_plugin_pkg", None)


def test_runtime_env_ships_file_plugins_and_local_packages_not_installed_ones(tmp_path, monkeypatch):
    local = tmp_path / "local_pkg"
    local.mkdir()
    (local / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = plugins.runtime_env_for([str(tmp_path / "a_plugin.py"), "local_pkg", "yaml"])
    assert env["py_modules"] == [str((tmp_path / "a_plugin.py").resolve()), str(local)]  # yaml is installed
    assert env["env_vars"][plugins.SHIPPED_ENV] == "a_plugin"
    assert plugins.runtime_env_for(["yaml"]) == {}


def test_a_search_runs_a_plugin_on_workers_that_received_it_through_the_runtime_env(plugin_file, tmp_path):
    """Two trials on a local Ray instance: the workers are other processes, and they import the plugin
    from the copy Ray's py_modules gave them, not from the file's own path."""
    path, log = plugin_file
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(f"""
        name: plugin-search
        plugins: [{path.name}]
        train:
          data: {{dataset: plugin-blobs}}
          model: {{name: tiny-plugin-mlp}}
          optim: {{epochs: 1, fp_epochs: 1}}
          compile: "off"
        params:  # a_bits: the two-layer model's weights are all pinned by first_last_bits (issue 28)
          a_bits: {{type: choice, values: [2, 8]}}
        objectives: [{{metric: val_acc, mode: max}}, {{metric: bitops, mode: min}}]
        search: {{num_samples: 2, max_concurrent: 2, seed: 0}}
    """))
    space_in_plugin_folder = path.parent / "space.yaml"  # `plugins:` is relative to the space file
    space_in_plugin_folder.write_text(space.read_text())
    run_dir = tmp_path / "runs" / "p"
    assert main(["run", str(space_in_plugin_folder), "--out-dir", str(tmp_path / "runs"), "--name", "p"]) == 0
    trials = (run_dir / "trials.csv").read_text()
    assert trials.count("COMPLETED") == 2
    imports = [line.split(" ", 1) for line in log.read_text().splitlines()]
    workers = [(pid, where) for pid, where in imports if int(pid) != os.getpid()]
    assert workers, imports  # the trials ran in other processes, which imported the plugin themselves
    assert all(Path(where) != path for _, where in workers), workers  # from Ray's copy


def test_a_searched_bit_width_that_changes_nothing_is_refused_before_anything_trains(tmp_path, monkeypatch):
    """A two-layer model's weights are all pinned by first_last_bits: searching w_bits would train one
    model again and again."""
    (tmp_path / "two_layers.py").write_text(
        "from torch import nn\nfrom speq_search import register_model\n\n"
        "@register_model('two-layers', in_channels=1, input_size=8)\n"
        "def two_layers(num_classes=10, in_channels=1, width=1.0, input_size=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size**2, 16), nn.ReLU(), "
        "nn.Linear(16, num_classes))\n")
    space = {"name": "two", "plugins": ["./two_layers.py"], "train": {"model": {"name": "two-layers"}},
             "params": {"w_bits": {"type": "choice", "values": [2, 4, 8]}},
             "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(space))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["run", str(tmp_path / "two.yaml"), "--out-dir", str(tmp_path / "runs")]) == 2
        assert not (tmp_path / "runs").exists()
        from speq_search.space import load_space

        with pytest.raises(ConfigError, match=r"^params.w_bits: got \[2, 4, 8\]; accepted: a parameter that changes "
                                              r"the model: .*first_last_bits 8.*layers of model two-layers: 1, 3\)"):
            load_space(str(tmp_path / "two.yaml"))
        space["params"] = {"a_bits": {"type": "choice", "values": [2, 4]}}  # the second layer's input: it matters
        (tmp_path / "two.yaml").write_text(yaml.safe_dump(space))
        assert load_space(str(tmp_path / "two.yaml")).params[0].name == "a_bits"
        space["train"]["quant"] = {"first_last_bits": None}  # no rule: w_bits reaches both layers
        space["params"] = {"w_bits": {"type": "choice", "values": [2, 4]}}
        (tmp_path / "two.yaml").write_text(yaml.safe_dump(space))
        assert load_space(str(tmp_path / "two.yaml")).params[0].name == "w_bits"
    finally:
        _forget("two_layers", "two-layers")


def test_a_failing_plugin_is_named_as_the_key_that_lists_it(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("raise ImportError('boom')\n")
    base = {"name": "b", "params": {"a_bits": {"type": "choice", "values": [2, 4]}},
            "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}]}
    for key, space in (("plugins", {**base, "plugins": ["./broken.py"]}),
                       ("train.plugins", {**base, "train": {"plugins": [str(tmp_path / "missing.py")]}})):
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
        assert main(["run", str(tmp_path / "s.yaml"), "--out-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"speq-search run: error: {key}: got "), err
    _forget("broken")


def test_the_readme_example_plugin_and_space_work_as_written(tmp_path, monkeypatch):
    import re

    from speq_search.space import load_space

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Your own model and data", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    space = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "my_models.py").write_text(code)
    (tmp_path / "my-space.yaml").write_text(space)
    monkeypatch.chdir(tmp_path)
    try:
        spec = load_space(str(tmp_path / "my-space.yaml"))
        assert spec.train.plugins == (str(tmp_path / "my_models.py"),) and spec.train.model.name == "my-mlp"
        assert spec.trial_config({"hidden": 8}).model.kwargs == {"hidden": 8}  # the dimension my-mlp declares
        from speq_search.models import build_model
        from speq_search.quant import layer_bits, quantize_model

        def bits(w):  # the searched w_bits reaches a layer: the example searches a setting that matters
            cfg = spec.trial_config({"w_bits": w, "a_bits": 4, "hidden": 8})
            return layer_bits(quantize_model(build_model(cfg.model), cfg.quant))

        assert bits(2) != bits(8) and [b["w_bits"] for b in bits(2).values()] == [8, 2, 8]
        assert main(["train", "--plugin", "my_models.py", "--dataset", "my-blobs", "--model", "my-mlp", "--epochs", "1",
                     "--fp-epochs", "1", "--compile", "off", "--quiet", "--out", str(tmp_path / "mine")]) == 0
        assert (tmp_path / "mine" / "metrics.json").exists()
    finally:
        _forget("my_models", "my-mlp", "my-blobs")
