"""Samplers by name: the presets and Optuna's own classes, checked when a space is parsed."""

from __future__ import annotations

import copy
import pickle
import warnings

import optuna
import pytest
import yaml

from speq_search.cli import build_parser, main
from speq_search.errors import ConfigError
from speq_search.samplers import SAMPLERS, distribution, grid_size, make_sampler
from speq_search.space import parse_space

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # QMC, NSGA-III

SPACE = {
    "name": "samplers",
    "train": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small"}, "optim": {"epochs": 1, "fp_epochs": 1}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4, 8]}, "optim.epochs": {"type": "int", "low": 1, "high": 2}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "constraints": ["size_bytes <= 40000"],
    "search": {"num_samples": 24, "seed": 3},
}


def _space(sampler, **search):
    raw = copy.deepcopy(SPACE)
    raw["search"].update(sampler=sampler, **search)
    return raw


def _drive(sampler, spec, trials: int = 3) -> optuna.Study:
    """Ask and tell as the searcher does: constraints stored with Trial.set_constraint."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = {p.name: distribution(p) for p in spec.params}
    for _ in range(trials):
        trial = study.ask(dists)
        trial.set_constraint("size_bytes <= 40000", trial.params["w_bits"] - 4.0)
        study.tell(trial, [float(trial.params["w_bits"]), float(trial.params["optim.epochs"])])
    return study


@pytest.mark.parametrize("preset, cls", [("tpe", "TPESampler"), ("nsga2", "NSGAIISampler"), ("random", "RandomSampler"),
                                         ("grid", "GridSampler"), ("gp", "GPSampler")])
def test_every_preset_builds_from_a_parsed_space_and_samples_under_constraints(preset, cls):
    assert preset in SAMPLERS
    spec = parse_space(_space(preset.upper()))
    assert spec.search.sampler == preset
    sampler = make_sampler(spec)
    assert type(sampler).__name__ == cls
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated constraints_func: set_constraint is read
        study = _drive(sampler, spec)
    assert all(t.constraints for t in study.trials) and len(study.trials) == 3
    if preset == "nsga2":
        assert sampler.population_size == 6  # a quarter of the 24 trials
    if preset == "grid":
        assert spec.search.num_samples == grid_size(spec) == 6  # 3 bits x 2 epochs, every point


def test_presets_are_seeded_by_the_space():
    first = [t.params for t in _drive(make_sampler(parse_space(_space("random"))), parse_space(_space("random"))).trials]
    again = [t.params for t in _drive(make_sampler(parse_space(_space("random"))), parse_space(_space("random"))).trials]
    other = parse_space(_space("random", seed=4))
    assert first == again != [t.params for t in _drive(make_sampler(other), other, 3).trials]


def test_an_optuna_class_with_its_keywords_builds_seeded_and_survives_space_yaml():
    spec = parse_space(_space({"name": "NSGAIIISampler", "population_size": 8, "dividing_parameter": 2}))
    assert spec.search.sampler == {"name": "NSGAIIISampler", "population_size": 8, "dividing_parameter": 2}
    again = parse_space(yaml.safe_load(yaml.safe_dump(spec.to_dict())))  # what --resume reads
    assert again.search == spec.search
    pickle.loads(pickle.dumps(again))  # the space travels to every trial; the sampler is built where it is used
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = make_sampler(again)
        assert type(sampler).__name__ == "NSGAIIISampler" and sampler.population_size == 8
        draws = [t.params for t in _drive(sampler, again).trials]
        assert draws == [t.params for t in _drive(make_sampler(again), again).trials]  # search.seed seeds it
    bare = parse_space(_space("QMCSampler"))  # a class name alone: the class with its defaults
    assert bare.search.sampler == {"name": "QMCSampler"} and type(make_sampler(bare)).__name__ == "QMCSampler"


@pytest.mark.parametrize("sampler, field, words", [
    ("bayes", "search.sampler", "tpe | nsga2 | random | grid | gp"),
    ({"name": "NSGA3Sampler"}, "search.sampler.name", "NSGAIIISampler"),
    ({"name": "BaseSampler"}, "search.sampler.name", "a sampler class of optuna.samplers"),
    ({"name": "NSGAIIISampler", "populaton_size": 8}, "search.sampler.populaton_size", "population_size"),
    ({"name": "NSGAIIISampler", "population_size": 1}, "search.sampler", "greater than or equal to 2"),
    ({"name": "TPESampler", "seed": 1}, "search.sampler.seed", "search.seed"),
    ({"name": "TPESampler", "constraints_func": "f"}, "search.sampler.constraints_func", "set_constraint"),
    ({"name": "CmaEsSampler"}, "search.sampler", "multi-objective"),  # cannot search two objectives
    ({"population_size": 8}, "search.sampler", "{name: an optuna.samplers class"),
])
def test_a_bad_sampler_is_one_line_naming_the_field(sampler, field, words):
    with pytest.raises(ConfigError) as err:
        parse_space(_space(sampler))
    assert err.value.field == field and words in str(err.value) and "\n" not in str(err.value)


def test_grid_over_a_continuous_parameter_is_refused_for_the_class_too():
    raw = _space("grid")
    raw["params"]["p_high"] = {"type": "uniform", "low": 0.2, "high": 0.8}
    with pytest.raises(ConfigError) as err:
        parse_space(raw)
    assert err.value.field == "params.p_high.type"
    raw["search"]["sampler"] = {"name": "BruteForceSampler"}
    with pytest.raises(ConfigError, match="search.sampler: .*step must be given"):
        parse_space(raw)


@pytest.mark.parametrize("args", [["--sampler", "bayes"], ["--sampler", "NSGA3Sampler"],
                                  ["--set", "search.sampler={name: NSGAIIISampler, population_size: 1}"]])
def test_a_bad_sampler_exits_2_from_the_cli(tmp_path, capsys, args):
    assert main(["run", "default", "--out-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error: search.sampler" in err, err
    assert not list(tmp_path.iterdir())


def test_a_preset_is_one_registration_that_parse_and_help_know(capsys):
    @SAMPLERS.register("qmc", description="quasi-Monte Carlo (a test's preset)")
    def qmc(spec):
        return optuna.samplers.QMCSampler(seed=spec.search.seed, warn_independent_sampling=False)

    try:
        spec = parse_space(_space("QMC"))
        assert spec.search.sampler == "qmc" and type(make_sampler(spec)).__name__ == "QMCSampler"
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--sampler SAMPLER tpe | nsga2 | random | grid | gp | qmc, or a class of optuna.samplers" in help_text
    finally:
        SAMPLERS.unregister("qmc")
