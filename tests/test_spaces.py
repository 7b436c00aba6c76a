from __future__ import annotations

import pytest
import yaml

from speq_search.errors import ConfigError
from speq_search.space import SHIPPED_DIR, load_space, parse_space, shipped_spaces

BASE = {
    "name": "t",
    "train": {"data": {"dataset": "digits"}, "optim": {"epochs": 1, "fp_epochs": 1}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4]}, "p_high": {"type": "uniform", "low": 0.2, "high": 0.8}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 4},
}


def _with(path: str, value):
    import copy

    raw = copy.deepcopy(BASE)
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_every_shipped_space_is_valid(name):
    spec = load_space(name)
    assert spec.name == name and len(spec.objectives) >= 2 and spec.params


def test_default_space_is_what_run_takes_without_argument():
    assert load_space(None).name == "default"
    assert (SHIPPED_DIR / "default.yaml").is_file()


@pytest.mark.parametrize("path, value, field", [
    ("params.w_bits.values", [2, 9], "params.w_bits.values[1]"),
    ("params.w_bits.type", "normal", "params.w_bits.type"),
    ("params.p_high.high", 1.5, "params.p_high.high"),
    ("params.p_high.low", 0.9, "params.p_high.high"),
    ("params.p_high.step", 0.1, "params.p_high.step"),
    ("params.nonsense", {"type": "choice", "values": [1]}, "params.nonsense"),
    ("params.lr", {"type": "loguniform", "low": 0.0, "high": 1.0}, "params.lr.low"),
    ("objectives.0.metric", "test_acc", "objectives[0].metric"),
    ("objectives.1.metric", "joules", "objectives[1].metric"),
    ("objectives.1.mode", "minimize", "objectives[1].mode"),
    ("objectives", [{"metric": "val_acc", "mode": "max"}], "objectives"),
    ("search.sampler", "cmaes", "search.sampler"),
    ("search.scheduler", "pbt", "search.scheduler"),
    ("search.num_samples", 0, "search.num_samples"),
    ("search.gpus_per_trial", -1, "search.gpus_per_trial"),
    ("search.workers", 3, "search.workers"),
    ("train.quant.w_bits", 1, "train.quant.w_bits"),
    ("train.model.name", "vgg", "train.model.name"),
    ("train.optim.epochz", 3, "train.optim.epochz"),
    ("params.kd_schedule", {"type": "choice", "values": ["constant", "step"]}, "params.kd_schedule.values[1]"),
    ("extra", 1, "extra"),
])
def test_validation_errors_name_the_key(path, value, field):
    with pytest.raises(ConfigError) as err:
        parse_space(_with(path, value))
    assert err.value.field == field, str(err.value)


def test_grid_needs_discrete_parameters():
    with pytest.raises(ConfigError, match="params.p_high.type"):
        parse_space(_with("search.sampler", "grid"))


def test_a_grid_runs_every_point_or_the_fewer_num_samples_asks_for():
    grid = dict(BASE, params={"w_bits": {"type": "choice", "values": [2, 3, 4, 8]},
                              "a_bits": {"type": "choice", "values": [2, 4, 8]}}, search={"sampler": "grid"})
    assert parse_space(grid).search.num_samples == 12  # not the default 16: the grid's size
    assert parse_space(grid, {"search.num_samples": 5}).search.num_samples == 5
    assert parse_space(grid, {"search.num_samples": 40}).search.num_samples == 12
    spec = parse_space(grid, {"search.num_samples": 5})
    assert parse_space(spec.to_dict()).search.num_samples == 5  # the resolved space keeps it (resume)
    assert load_space("default").search.num_samples == 16 and load_space("default", {"search.num_samples": 2}).search.num_samples == 2


def test_set_overrides_are_validated_like_the_file():
    spec = parse_space(BASE, {"train.epochs": 3, "search.num_samples": 7, "train.speq.p_high": 0.3})
    assert spec.train.optim.epochs == 3 and spec.search.num_samples == 7 and spec.train.speq.p_high == 0.3
    with pytest.raises(ConfigError, match="train.optim.epochs"):
        parse_space(BASE, {"train.epochs": 0})
    with pytest.raises(ConfigError, match="search.sampler"):
        parse_space(BASE, {"search.sampler": "bayes"})
    with pytest.raises(ConfigError, match="--set"):
        parse_space(BASE, {"nope.x": 1})


def test_trial_config_maps_short_names_and_dotted_fields():
    raw = _with("params.optim.lr", {"type": "loguniform", "low": 0.001, "high": 0.1})
    raw["params"] = {"w_bits": {"type": "choice", "values": [2]}, "optim.lr": {"type": "loguniform", "low": 0.001,
                                                                             "high": 0.1}}
    spec = parse_space(raw)
    cfg = spec.trial_config({"w_bits": 2, "optim.lr": 0.01})
    assert cfg.quant.w_bits == 2 and cfg.optim.lr == 0.01


def test_kd_schedule_is_searchable_by_its_short_name():
    raw = _with("params.kd_schedule", {"type": "choice", "values": ["constant", "cosine-decay"]})
    spec = parse_space(raw)
    assert spec.trial_config({"w_bits": 2, "p_high": 0.5, "kd_schedule": "cosine-decay"}).speq.kd_schedule == "cosine-decay"


def test_resolved_space_round_trips(tmp_path):
    from speq_search.space import dump_space

    spec = parse_space(BASE)
    dump_space(spec, tmp_path / "space.yaml")
    again = load_space(str(tmp_path / "space.yaml"))
    assert again.to_dict() == spec.to_dict()
    assert yaml.safe_load((tmp_path / "space.yaml").read_text())["params"]["w_bits"]["values"] == [2, 4]


def test_unknown_space_lists_the_shipped_ones():
    with pytest.raises(ConfigError) as err:
        load_space("no-such-space")
    assert "default" in str(err.value)


def test_a_relative_data_dir_in_a_space_file_is_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    raw = _with("train.data", {"dataset": "digits", "data_dir": "my-data"})
    (folder / "s.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert load_space(str(folder / "s.yaml")).train.data.data_dir == str(folder / "my-data")
    # given on the command line, it is relative to the working directory, as any path there
    spec = load_space(str(folder / "s.yaml"), {"train.data.data_dir": "cli-data"})
    assert spec.train.data.data_dir == "cli-data"
    assert load_space(str(folder / "s.yaml"), paths_relative_to_file=False).train.data.data_dir == "my-data"


def test_the_shipped_fashion_space_points_at_the_repositorys_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = load_space("fashion-mnist").train.data.data_dir
    assert data_dir == str(SHIPPED_DIR.parent.resolve() / ".data")


def test_near_misses_are_suggested():
    with pytest.raises(ConfigError, match=r"did you mean train\.epochs\?"):
        parse_space(BASE, {"train.epoch": 1})
    with pytest.raises(ConfigError, match=r"did you mean epochs\?"):
        parse_space(BASE, {"train.optim.epoch": 1})
    with pytest.raises(ConfigError, match=r"did you mean num_samples\?"):
        parse_space(BASE, {"search.num_sample": 1})


def test_sampler_and_scheduler_names_are_case_insensitive():
    spec = parse_space(BASE, {"search.sampler": "TPE", "search.scheduler": "ASHA"})
    assert spec.search.sampler == "tpe" and spec.search.scheduler == "asha"


def test_the_old_package_name_still_imports_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("speq_search.spec", None)
    with pytest.warns(DeprecationWarning, match="speq_search.space"):
        old = importlib.import_module("speq_search.spec")
    from speq_search import space

    assert old.load_space is space.load_space and old.SearchSpec is space.SearchSpec


def test_shipped_space_descriptions_say_what_their_files_do():
    """joint said per-stage bits while its file searches per layer; speq-hparams fixes its bits."""
    import re

    from speq_search.space import load_space, shipped_spaces

    for name, description in shipped_spaces().items():
        spec = load_space(name)
        said = [a or b for a, b in re.findall(r"per-(layer|block|stage) bits|bits per (layer|block|stage)", description)]
        if spec.per_layer:
            assert said == [spec.per_layer.get("granularity", "layer")], name
        else:
            assert said == [], name
    assert "no cost varies" in shipped_spaces()["speq-hparams"]
