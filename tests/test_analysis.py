"""Loading results, figure data, `speq-search plot` and `speq-search report`, on tables the tests write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from speq_search.analysis import plots
from speq_search.analysis.load import LoadError, learning_curves, load_run, load_runs
from speq_search.analysis.pareto import hypervolume, pareto_mask
from speq_search.analysis.report import make_figure, markdown_table, run_report
from speq_search.cli import main

FP = {"size_bytes": 40000, "bitops": 600_000_000, "macs": 600_000, "params": 9000}


def _trials(n: int = 14, seed: int = 0, methods=("qat", "speq")) -> pd.DataFrame:
    """Plausible trials: accuracy rises with bits; speq a little above qat; one failed trial."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        w, a = int(rng.choice([2, 3, 4, 8])), int(rng.choice([2, 4, 8]))
        method = methods[i % len(methods)]
        acc = 0.98 - 0.2 / (w * a) + (0.01 if method == "speq" else 0.0) + rng.normal(0, 0.003)
        rows.append({"trial_id": f"a{i:07d}", "status": "COMPLETED", "w_bits": w, "a_bits": a, "method": method,
                     "p_high": float(rng.uniform(0.2, 0.8)), "val_acc": acc, "test_acc": acc - 0.005,
                     "avg_bits": (w + a) / 2, "avg_w_bits": float(w), "avg_a_bits": float(a),
                     "bitops": 600_000 * w * a, "size_bytes": 9000 * w // 8 + 400, "fp_val_acc": 0.975,
                     "full_fidelity": True})
    rows[3].update(status="FAILED", val_acc=np.nan, test_acc=np.nan, error="TrainingDiverged: loss is nan")
    return pd.DataFrame(rows)


def write_run(folder: Path, df: pd.DataFrame, name: str = "synthetic", epochs: int = 3) -> Path:
    """A run folder as `speq-search run` writes it, with a Ray experiment for learning curves."""
    folder.mkdir(parents=True)
    df.to_csv(folder / "trials.csv", index=False)
    objectives = [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}]
    done = df[df.status == "COMPLETED"]
    hv = hypervolume(done[["val_acc", "bitops"]].to_numpy(float), ["val_acc", "bitops"], ["max", "min"], FP)
    (folder / "summary.json").write_text(json.dumps({"space": name, "objectives": objectives, "hypervolume": hv,
                                                     "full_precision_costs": FP}))
    (folder / "space.yaml").write_text(yaml.safe_dump({
        "name": name, "objectives": objectives,
        "params": {"w_bits": {"type": "choice", "values": [2, 3, 4, 8]}, "a_bits": {"type": "choice", "values": [2, 4, 8]},
                   "method": {"type": "choice", "values": ["qat", "speq"]},
                   "p_high": {"type": "uniform", "low": 0.2, "high": 0.8}}}, sort_keys=False))
    (folder / "run.json").write_text(json.dumps({"experiment_name": "ray", "storage_path": str(folder),
                                                 "reference": FP}))
    for _, r in df.iterrows():
        trial = folder / "ray" / f"speq_trainable_{r.trial_id}_{int(r.trial_id[1:]) + 1}_w_bits={r.w_bits}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps({"w_bits": r.w_bits, "a_bits": r.a_bits, "method": r.method,
                                                       "p_high": r.p_high}))
        lines = [{"trial_id": r.trial_id, "epoch": e, "val_acc": float(r.val_acc) - 0.01 * (epochs - e),
                  "bitops": int(r.bitops), "full_fidelity": e == epochs, "timestamp": 1000 + int(r.trial_id[1:])}
                 for e in range(1, epochs + 1)] if r.status == "COMPLETED" else []
        (trial / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
        if r.status == "FAILED":
            (trial / "error.txt").write_text("Traceback...\nTrainingDiverged: loss is nan\n")
    return folder


@pytest.fixture()
def run_dir(tmp_path):
    return write_run(tmp_path / "synthetic", _trials())


# --- loading -------------------------------------------------------------------------------------

def test_load_run_folder(run_dir):
    run = load_run(run_dir)
    assert run.kind == "run" and run.name == "synthetic"
    assert run.params == ["w_bits", "a_bits", "method", "p_high"]
    assert run.objectives == [("val_acc", "max"), ("bitops", "min")]
    assert run.full_precision == FP
    assert (run.trials["run"] == "synthetic").all() and len(run.trials) == 14
    assert len(run.completed) == 13
    curves = learning_curves(run)
    assert len(curves) == 13 * 3 and curves["epoch"].max() == 3


def test_load_bare_ray_experiment(run_dir):
    run = load_run(run_dir / "ray", objectives=[("val_acc", "max"), ("bitops", "min")])
    assert run.kind == "ray"
    assert sorted(run.params) == ["a_bits", "method", "p_high", "w_bits"]
    status = dict(zip(run.trials["trial_id"], run.trials["status"]))
    assert status["a0000003"] == "FAILED" and status["a0000000"] == "COMPLETED"
    assert "TrainingDiverged" in run.trials.set_index("trial_id").loc["a0000003", "error"]
    expected = _trials().set_index("trial_id")["val_acc"]
    got = run.trials.set_index("trial_id")["val_acc"]
    assert got["a0000005"] == pytest.approx(expected["a0000005"])


def test_load_ray_experiment_marks_stopped_trials(tmp_path):
    trial = tmp_path / "exp" / "fn_abc12_00000_x=1"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text('{"x": 1}')
    (trial / "result.json").write_text(json.dumps({"val_acc": 0.5, "full_fidelity": False}) + "\n")
    run = load_run(tmp_path / "exp")
    assert run.trials["status"].tolist() == ["STOPPED"]
    assert run.completed.empty


def test_load_optuna_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_acc", "bitops"])
    dist = {"w_bits": optuna.distributions.CategoricalDistribution([2, 4, 8])}
    for w in (2, 4, 8):
        study.add_trial(optuna.trial.create_trial(params={"w_bits": w}, distributions=dist,
                                                  values=[0.9 + w / 100, w * 100], user_attrs={"avg_bits": w}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"w_bits": 2},
                                              distributions=dist))
    run = load_run(url)
    assert run.kind == "optuna" and run.study_name == "s"
    assert run.objectives == [("val_acc", "max"), ("bitops", "min")]
    assert run.trials["status"].tolist() == ["COMPLETED"] * 3 + ["FAILED"]
    assert run.trials["avg_bits"].tolist()[:3] == [2, 4, 8]
    assert load_run(tmp_path / "study.db").trials["val_acc"].tolist()[:3] == pytest.approx([0.92, 0.94, 0.98])


def test_load_runs_concatenates_with_a_run_column(tmp_path):
    a = write_run(tmp_path / "a", _trials(seed=1))
    b = write_run(tmp_path / "b", _trials(seed=2))
    runs, df = load_runs([a, b])
    assert [r.name for r in runs] == ["a", "b"]
    assert df["run"].value_counts().to_dict() == {"a": 14, "b": 14}
    _, same = load_runs([a, a])
    assert sorted(same["run"].unique()) == ["a", "a-2"]


def test_loading_errors(tmp_path, run_dir):
    with pytest.raises(LoadError, match="an existing run folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="trials.csv"):
        load_run(tmp_path / "empty")
    no_trials = tmp_path / "none"
    no_trials.mkdir()
    _trials().iloc[0:0].to_csv(no_trials / "trials.csv", index=False)
    with pytest.raises(LoadError, match="at least one trial"):
        load_run(no_trials)
    bad = tmp_path / "bad"
    bad.mkdir()
    _trials().drop(columns="status").to_csv(bad / "trials.csv", index=False)
    with pytest.raises(LoadError, match="column status"):
        load_run(bad)
    with pytest.raises(LoadError, match="storage"):
        load_run("sqlite:///" + str(run_dir / "trials.csv"))
    url = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("x", "y"):
        optuna.create_study(study_name=name, storage=url)
    with pytest.raises(LoadError, match="#STUDY_NAME"):
        load_run(url)
    with pytest.raises(LoadError, match="study"):
        load_run(url + "#z")
    with pytest.raises(LoadError, match="at least one trial"):
        load_run(url + "#y")


# --- figure data ---------------------------------------------------------------------------------

def test_front_data_is_the_brute_force_front_without_failed_trials(run_dir):
    df = load_run(run_dir).trials
    data = plots.front_data(df, "bitops", "val_acc", color="method")
    (front,) = data.fronts
    done = df[df.status == "COMPLETED"]
    mask = pareto_mask(done[["bitops", "val_acc"]].to_numpy(float), ["min", "max"])
    assert sorted(front.x_front) == sorted(done[mask]["bitops"].astype(float))
    assert len(front.x_front) + len(front.x_dominated) == 13  # the failed trial is left out
    assert front.x_front == sorted(front.x_front)
    assert all("w_bits:" in h and "method:" in h for h in front.hover_front)
    assert set(front.color_front) <= {"qat", "speq"}
    assert data.reference == pytest.approx({"full precision": 0.975})
    fig = plots.render_fronts(data)
    names = [t.name for t in fig.data]
    assert "Pareto front" in names and "dominated" in names and "method=speq" in names
    assert any(s.line.dash == "dash" for s in fig.layout.shapes)


def test_front_data_groups_by_a_column(run_dir):
    df = load_run(run_dir).trials
    data = plots.front_data(df, "avg_bits", "val_acc", group="method")
    assert [f.label for f in data.fronts] == ["qat", "speq"]
    for f in data.fronts:
        rows = df[(df.method == f.label) & (df.status == "COMPLETED")]
        mask = pareto_mask(rows[["avg_bits", "val_acc"]].to_numpy(float), ["min", "max"])
        assert len(f.x_front) == mask.sum()
    fig = plots.render_fronts(data)
    assert {t.name for t in fig.data} >= {"qat", "speq", "qat dominated", "speq dominated"}


def test_parallel_axes_of_discrete_choices_have_ticks_at_the_choices(run_dir):
    df = load_run(run_dir).trials
    data = plots.parallel_data(df, ["w_bits", "p_high"], ["val_acc", "bitops"])
    ticks = dict(zip(data.columns, data.ticks))
    assert ticks["w_bits"][0] == sorted({float(v) for v in df[df.status == "COMPLETED"]["w_bits"]})
    assert ticks["p_high"] is None  # continuous
    fig = plots.render_parallel(data)
    assert fig.data[0].line.colorbar.title.text == "validation accuracy (%)"


def test_parallel_data_codes_categories(run_dir):
    df = load_run(run_dir).trials
    data = plots.parallel_data(df, ["w_bits", "method"], ["val_acc", "bitops"])
    assert data.columns == ["w_bits", "method", "val_acc", "bitops"]
    ticks = data.ticks[1]
    assert ticks[1] == ["qat", "speq"]
    done = df[df.status == "COMPLETED"]
    assert data.values[1] == [float(m == "speq") for m in done["method"]]
    assert len(plots.render_parallel(data).data[0].dimensions) == 4


def test_importance_ranks_the_parameter_that_drives_the_objective(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    w = rng.choice([2, 4, 8], n)
    df = pd.DataFrame({"trial_id": [str(i) for i in range(n)], "status": "COMPLETED", "w_bits": w,
                       "noise": rng.uniform(0, 1, n), "val_acc": 0.5 + w / 20, "bitops": 1000.0 * w})
    run = load_run(write_minimal(tmp_path, df))
    table = plots.importance_data(run)
    assert set(table["objective"]) == {"val_acc", "bitops"}
    rows = table[table.objective == "val_acc"].set_index("param")["importance"]
    assert rows["w_bits"] > 0.9 > rows["noise"]
    # BitOps is known before training: only parameters that can change it (bits, model) are ranked.
    rows = table[table.objective == "bitops"].set_index("param")["importance"]
    assert list(rows.index) == ["w_bits"]
    assert (table["trials"] == n).all()


def write_minimal(tmp_path: Path, df: pd.DataFrame) -> Path:
    folder = tmp_path / "minimal"
    folder.mkdir()
    df.to_csv(folder / "trials.csv", index=False)
    (folder / "space.yaml").write_text(yaml.safe_dump({"params": {c: {} for c in ("w_bits", "noise")},
                                                      "objectives": [{"metric": "val_acc", "mode": "max"},
                                                                     {"metric": "bitops", "mode": "min"}]},
                                                     sort_keys=False))
    return folder


def test_hypervolume_data_ends_at_the_summary_value(run_dir):
    run = load_run(run_dir)
    table = plots.hypervolume_data(run)
    assert len(table) == 13
    assert table["hypervolume"].iloc[-1] == pytest.approx(run.summary["hypervolume"])
    assert table["hypervolume"].is_monotonic_increasing


def test_report_numbers(run_dir):
    rep = run_report(load_run(run_dir), "avg_bits", [2, 4, 8])
    assert rep.hypervolume == pytest.approx(load_run(run_dir).summary["hypervolume"])
    done = _trials().query("status == 'COMPLETED'")
    for _, row in rep.budgets.iterrows():
        ok = done[done.avg_bits <= row.budget]
        assert row.val_acc == pytest.approx(ok.val_acc.max())
    assert set(rep.front["trial_id"]) == set(done[pareto_mask(done[["val_acc", "bitops"]].to_numpy(float),
                                                              ["max", "min"])]["trial_id"])
    assert markdown_table(pd.DataFrame({"a": [1.5, np.nan], "b": ["x|y", "z"]})).splitlines()[2] == "| 1.5 | x\\|y |"


def test_make_figure_kinds(run_dir):
    runs, df = load_runs([run_dir])
    for kind in ("front", "parallel", "importance", "curves", "hypervolume"):
        assert len(make_figure(runs, df, kind).data) >= 1
    from speq_search.errors import ConfigError

    with pytest.raises(ConfigError, match="^kind: "):  # from Python: the argument's name, not a CLI flag
        make_figure(runs, df, "pie")


# --- CLI -----------------------------------------------------------------------------------------

def test_plot_overlay_and_errors(tmp_path, capsys):
    a = write_run(tmp_path / "speq", _trials(seed=1, methods=("speq",)))
    b = write_run(tmp_path / "qat", _trials(seed=2, methods=("qat",)))
    out = tmp_path / "fig" / "overlay.html"
    assert main(["plot", str(a), str(b), "--x", "avg_bits", "--out", str(out)]) == 0
    text = out.read_text()
    assert "plotly" in text and '"name":"speq"' in text and '"name":"qat"' in text
    assert main(["plot", str(a), "--x", "nope"]) == 2
    assert "--x" in capsys.readouterr().err
    assert main(["plot", str(a), "--x", "bitop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speq-search plot: error: --x: got 'bitop'") and "(did you mean bitops?)" in err
    offered = err.split("a column of the results: ")[1]
    assert "val_acc" in offered and not any(c in offered for c in ("trial_id", "status", "full_fidelity", "error"))
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert main(["plot", str(a), "--kind", "pie"]) == 2
    assert main(["plot", str(a), "--kind", "sensitivity"]) == 2  # the run has no sensitivity.csv
    assert main(["plot", str(a), "--kind", "layer-bits"]) == 2  # nor a layer_bits column
    assert main(["plot", str(a), "--objectives", "val_acc:up"]) == 2


def test_image_asked_for_without_a_browser_writes_html_and_fails_in_one_line(run_dir, monkeypatch, capsys):
    from speq_search.analysis.figures import files

    monkeypatch.setattr(files, "browser_path", lambda: None)
    assert main(["plot", str(run_dir), "--out", str(run_dir / "front.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plotly_get_chrome" in err and "BROWSER_PATH" in err
    assert (run_dir / "front.html").exists() and not (run_dir / "front.png").exists()


def test_browser_is_found_as_kaleido_finds_it(tmp_path, monkeypatch):
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # nothing on PATH
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert plots.browser_path() == str(fake) and plots.browser_available()
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    assert plots.browser_path() != str(tmp_path / "missing")  # a path that is not there is no browser


@pytest.mark.skipif(not plots.browser_available(), reason="no Chromium: PNG export is skipped (CI installs it)")
def test_png_export_with_chromium(run_dir):
    assert main(["plot", str(run_dir), "--out", str(run_dir / "front.png")]) == 0
    assert (run_dir / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_writes_markdown_and_html(tmp_path, run_dir, capsys):
    other = write_run(tmp_path / "other", _trials(seed=3))
    out = tmp_path / "report"
    assert main(["report", str(run_dir), str(other), "--out", str(out), "--budgets", "2,4"]) == 0
    md = (out / "report.md").read_text()
    assert "## synthetic" in md and "## other" in md and "## Runs compared" in md and "shared box" in md
    assert "### Pareto front" in md and "### Best configuration with avg_bits <= budget" in md
    assert "Parameter importance (fANOVA, 13 trials)" in md and "Hypervolume **" in md
    page = (out / "report.html").read_text()
    assert page.count("<table") >= 6 and "plotly" in page
    figures = {"front", "hypervolume", "importance", "parallel", "curves"}
    for key in figures:
        assert (out / f"{key}.png").exists() or (out / f"{key}.html").exists()
    # plotly.js once, beside the pages, which load it from there (offline): not 4.8 MB per page
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in page
    pages = [out / "report.html", *out.glob("*.html")]
    assert all(p.stat().st_size < 1_000_000 for p in pages)
    assert main(["report", str(run_dir), "--out", str(out), "--budgets", "two"]) == 2
    assert main(["report", str(run_dir), "--out", str(out), "--budget-metric", "joules"]) == 2


def test_comparison_table_ranks_a_dominating_run_first(tmp_path):
    from speq_search.analysis.report import comparison_table

    base = _trials(seed=4)
    better = base.assign(val_acc=base.val_acc + 0.01)  # the same costs, every accuracy higher
    a = run_report(load_run(write_run(tmp_path / "base", base)))
    b = run_report(load_run(write_run(tmp_path / "better", better)))
    table = comparison_table([a, b]).set_index("run")
    assert table.loc["better", "hypervolume (shared box)"] > table.loc["base", "hypervolume (shared box)"]
    assert table.loc["better", "hypervolume"] > table.loc["base", "hypervolume"]
    assert table.loc["base", "completed"] == 13 and "hypervolume (shared box)" not in comparison_table([a]).columns


def test_layer_bits_data_follows_the_front():
    df = pd.DataFrame({"trial_id": ["c", "a", "b"], "status": "COMPLETED", "val_acc": [0.9, 0.95, 0.8],
                       "bitops": [30, 50, 40],
                       "layer_bits": ["conv=8/8;fc=2/4", "conv=8/8;fc=4/8", "conv=8/8;fc=2/2"]})
    data = plots.layer_bits_data(df, [("val_acc", "max"), ("bitops", "min")])
    assert data.w_bits.index.tolist() == ["c", "a"]  # b is dominated; cheapest first
    assert data.w_bits.columns.tolist() == ["conv", "fc"]
    assert data.w_bits.loc["a", "fc"] == 4 and data.a_bits.loc["c", "fc"] == 4
    fig = plots.render_layer_bits(data)
    assert fig.data[0].text[0] == ["8/8", "2/4"]


def test_trial_ids_that_look_like_numbers_stay_strings(tmp_path):
    from speq_search.analysis.load import read_run_csv

    (tmp_path / "trials.csv").write_text("trial_id,val_acc\n228736e2,0.9\n11689144,0.8\n")
    assert read_run_csv(tmp_path / "trials.csv")["trial_id"].tolist() == ["228736e2", "11689144"]


def test_learning_curves_draw_each_epochs_own_accuracy(tmp_path):
    """A trial reports the best epoch so far as val_acc (its objective) and each epoch's own as
    epoch_val_acc: the curves show the latter, dips included."""
    df = _trials().iloc[:1]
    run_dir = write_run(tmp_path / "r", df)
    trial = next((run_dir / "ray").iterdir())
    own = [0.90, 0.85, 0.93]
    lines = [{"trial_id": df.trial_id.iloc[0], "epoch": e, "val_acc": max(own[:e]), "epoch_val_acc": own[e - 1],
              "bitops": 1} for e in (1, 2, 3)]
    (trial / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    curves = learning_curves(load_run(run_dir))
    assert curves["val_acc"].tolist() == own
    fig = plots.render_curves(curves)
    assert list(fig.data[0].y) == own


def test_summary_counts_trials_at_chance_level(tmp_path):
    from speq_search.search.results import write_outputs
    from speq_search.space import load_space

    df = _trials()
    df.loc[[0, 1, 2], "val_acc"] = [0.10, 0.12, 0.14]  # 10 classes: chance is 0.10
    run_dir = write_run(tmp_path / "r", df, epochs=1)
    for result in (run_dir / "ray").glob("*/result.json"):  # as a finished trial reports
        lines = [json.loads(x) for x in result.read_text().splitlines()]
        if lines:
            lines[-1].update(test_acc=lines[-1]["val_acc"], epochs_done=1, epochs_total=1)
        result.write_text("".join(json.dumps(x) + "\n" for x in lines))
    spec = load_space(str(run_dir / "space.yaml"))
    files = write_outputs(run_dir, spec, run_dir / "ray", FP, plots=False, chance_acc=0.1)
    assert files.summary["n_at_chance"] == 3 and files.summary["chance_acc"] == 0.1
    assert json.loads((run_dir / "summary.json").read_text())["n_at_chance"] == 3


def test_front_figure_reads_well(run_dir):
    df = load_run(run_dir).trials
    fig = plots.render_fronts(plots.front_data(df, "bitops", "val_acc", group="method"), "synthetic")
    assert fig.layout.xaxis.title.text == "BitOps per image"
    assert fig.layout.yaxis.title.text == "validation accuracy (%)" and fig.layout.yaxis.tickformat == ".1%"
    assert fig.layout.legend.title.text == "method" and fig.layout.legend.orientation is None  # beside the plot
    fronts = [t for t in fig.data if t.mode == "lines+markers"]
    assert len({t.marker.symbol for t in fronts}) == 2  # groups differ in shape, not colour alone
    (line,) = fig.layout.shapes
    assert line.layer == "below"  # trials above the float model stay visible
    assert fig.layout.title.text == "synthetic"
    colored = plots.render_fronts(plots.front_data(df, "avg_bits", "val_acc", color="p_high"))
    bar = [t for t in colored.data if t.marker.showscale]
    assert bar and bar[0].marker.colorbar.title.text.startswith("teacher's high-precision probability")
    assert plots.axis_title("avg_bits").startswith("average bits") and plots.axis_title("custom") == "custom"


def test_budgets_by_default_can_be_met_and_an_unmet_one_says_why(run_dir):
    from speq_search.analysis.report import default_budgets, run_report

    assert default_budgets([2.4, 3.0, 5.0, 8.0]) == [2.4, 2.9, 4.0, 5.8]
    run = load_run(run_dir)
    rep = run_report(run, "avg_bits", None)
    assert rep.budgets["trial_id"].notna().all() and not rep.budgets["note"].astype(bool).any()
    rep = run_report(run, "avg_bits", [1.0, 8.0])
    assert rep.budgets.loc[0, "note"].startswith("no trial meets it: the cheapest has avg_bits")
    assert pd.isna(rep.budgets.loc[0, "trial_id"]) and rep.budgets.loc[1, "note"] == ""


def test_report_html_renders_the_markdown_and_formats_numbers_by_column(tmp_path, run_dir):
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # every text outside the figures' scripts
    assert "<strong>" in text and "**" not in text and "|---|" not in text and "`" not in text
    assert "<th></th>" not in text and "<th>importance for val_acc</th>" in text
    assert "overflow-x:auto" in page  # wide tables scroll instead of widening the page
    md = (out / "report.md").read_text()
    front = md.split("### Pareto front")[1].split("###")[0]
    assert re.search(r"\| \d+\.\d\d % \| \d+\.\d\d M \|", front)  # val_acc in %, bitops in M
    assert "KiB" in front and "e+0" not in front


def test_curves_of_many_trials_are_labelled_by_parameters_and_coloured_by_a_cost(run_dir):
    runs, df = load_runs([run_dir])
    fig = make_figure(runs, df, "curves")
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 13 and not any(t.showlegend for t in lines)  # no legend of 13 ids
    assert all(t.name.startswith("w_bits=") and "method=" in t.name for t in lines)
    assert len({t.line.color for t in lines}) > 3  # coloured by BitOps on a scale
    (bar,) = [t for t in fig.data if t.mode == "markers"]
    assert bar.marker.colorbar.title.text == "BitOps per image"


def test_report_draws_the_front_against_the_budget_axis_too(tmp_path, run_dir):
    from speq_search.analysis.load import load_runs
    from speq_search.analysis.report import write_report

    runs, df = load_runs([run_dir])
    write_report(runs, df, tmp_path / "rep", "avg_bits", log=lambda m: None)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<h3>front-avg_bits</h3>" in page and "<h3>front</h3>" in page


def test_report_front_table_shows_the_metrics_the_schema_shows(tmp_path):
    from speq_search import schema
    from speq_search.analysis.report import write_report

    df = _trials().assign(latency_ms=lambda t: t.bitops / 1e6, macs=600_000)  # a cost table's metric; a hidden one
    runs, all_trials = load_runs([write_run(tmp_path / "r", df)])
    write_report(runs, all_trials, tmp_path / "rep", log=lambda m: None)
    front = (tmp_path / "rep" / "report.md").read_text().split("### Pareto front")[1].split("###")[0]
    header = [c.strip() for c in front.strip().splitlines()[0].strip("|").split("|")]
    shown = [c for c in schema.shown_metrics() if c in df and c not in ("val_acc", "bitops")]
    assert header[:3] == ["trial\\_id", "val\\_acc", "bitops"] and header[3:3 + len(shown)] == [
        c.replace("_", "\\_") for c in shown]
    assert "latency\\_ms" in header and "macs" not in header


# --- figures: the registry, infeasible trials ---------------------------------------------------

def _with_infeasible(df: pd.DataFrame) -> pd.DataFrame:
    """Two trials over a budget (never trained): costs, no accuracy."""
    over = df.iloc[:2].assign(trial_id=["b0000001", "b0000002"], status="INFEASIBLE", val_acc=np.nan, test_acc=np.nan,
                              bitops=[200_000_000, 300_000_000], feasible=False, constraint_violation=[0.5, 1.25])
    return pd.concat([df, over], ignore_index=True)


def test_front_data_draws_infeasible_trials_apart_at_their_cost(tmp_path):
    df = load_run(write_run(tmp_path / "r", _with_infeasible(_trials()))).trials
    data = plots.front_data(df, "bitops", "val_acc")
    assert data.infeasible.x == [200_000_000.0, 300_000_000.0]  # at their cost, never on a front
    assert all("constraint_violation:" in h for h in data.infeasible.hover)
    (front,) = data.fronts
    assert len(front.x_front) + len(front.x_dominated) == 13 and max(front.x_front + front.x_dominated) < 200_000_000
    assert data.log_x and not plots.front_data(_trials(), "bitops", "val_acc").log_x  # the axis holds them too
    fig = plots.render_fronts(data)
    (grey,) = [t for t in fig.data if t.name == "infeasible (over budget)"]
    assert list(grey.x) == data.infeasible.x and grey.yaxis == "y2"  # a strip of its own below the accuracy axis
    assert fig.layout.xaxis.anchor == "y2" and fig.layout.yaxis2.domain[1] < fig.layout.yaxis.domain[0]
    grouped = plots.front_data(df, "bitops", "val_acc", group="method")
    assert sorted(grouped.infeasible.x) == data.infeasible.x and all(h.startswith("method: ") or "method:" in h
                                                                    for h in grouped.infeasible.hover)
    assert plots.front_data(_trials(), "bitops", "val_acc").infeasible.x == []  # none: no strip
    assert "yaxis2" not in plots.render_fronts(plots.front_data(_trials(), "bitops", "val_acc")).to_plotly_json()["layout"]


def test_the_plot_command_draws_the_run_figure_with_its_infeasible_trials(tmp_path):
    run = write_run(tmp_path / "r", _with_infeasible(_trials()))
    assert main(["plot", str(run), "--out", str(tmp_path / "front.html")]) == 0
    assert "infeasible (over budget)" in (tmp_path / "front.html").read_text()


def test_figure_kinds_are_one_registry_whose_listing_imports_no_pandas():
    import subprocess
    import sys

    from speq_search.analysis.figures import FIGURES

    assert FIGURES.names() == ("front", "parallel", "importance", "curves", "hypervolume", "sensitivity", "layer-bits",
                               "oneshot")
    for entry in FIGURES:
        assert callable(entry.obj.data_fn) and callable(entry.obj.render_fn) and entry.description
    code = ("import sys; from speq_search.cli import build_parser; build_parser(); "
            "from speq_search.analysis.figures import FIGURES; FIGURES.choices(); "
            "assert not {'pandas', 'plotly', 'numpy'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]


def test_every_kind_draws_from_its_data_and_an_unknown_kind_lists_the_registry(run_dir, capsys):
    from speq_search.analysis.figures import FIGURES, FigureRequest
    from speq_search.errors import ConfigError

    runs, df = load_runs([run_dir])
    request = FigureRequest("bitops", "val_acc")
    for kind in ("front", "parallel", "importance", "curves", "hypervolume"):
        figure = FIGURES.get(kind).obj
        data = figure.data_fn(runs, df, request)
        assert isinstance(data, tuple) and hasattr(data, "_fields")  # a NamedTuple of what to draw
        assert len(figure.render_fn(data).data) >= 1
    with pytest.raises(ConfigError, match="layer_bits column"):  # no per-layer bits in this run
        FIGURES.get("layer-bits").obj.data_fn(runs, df, request)
    with pytest.raises(ConfigError, match="one-shot search"):  # a per-trial search has no supernet accuracies
        FIGURES.get("oneshot").obj.data_fn(runs, df, request)
    with pytest.raises(ConfigError, match=r"^kind: .*front \| parallel .*layer-bits \| oneshot \(did you mean front\?\)"):
        make_figure(runs, df, "fronts")
    assert main(["plot", str(run_dir), "--kind", "pie"]) == 2
    assert f"--kind: got 'pie'; accepted: {FIGURES.choices()}" in capsys.readouterr().err
    from speq_search.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    (kind,) = [a for a in commands.choices["plot"]._actions if a.dest == "kind"]
    assert FIGURES.choices() in kind.help  # the help is the registry's list


def test_curves_data_labels_trials_by_their_parameters_and_colours_them_by_a_cost(run_dir):
    runs, _ = load_runs([run_dir])
    data = plots.curves_data(runs)
    assert data.metric == "val_acc" and len(data.curves) == 13 * 3
    label = data.labels[("synthetic", "a0000000")]
    assert label.startswith("w_bits=") and "method=" in label and "p_high=" in label
    cost, values = data.color_by
    assert cost == "bitops" and values[("synthetic", "a0000000")] == float(_trials().bitops[0])


def test_without_kaleido_the_error_names_kaleido_and_its_install_command(run_dir, monkeypatch, capsys, tmp_path):
    """From a plain wheel install: `PNG not made: RuntimeError: ` said nothing, and report blamed Chromium."""
    import sys

    from speq_search.analysis.figures.files import error_reason

    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed: importing it fails
    assert main(["plot", str(run_dir), "--out", str(run_dir / "front.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kaleido is not installed" in err and "pip install 'speq-search[png]'" in err
    assert "Chrom" not in err
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "kaleido is not installed" in md and "Chromium" not in md
    assert error_reason(RuntimeError("\n\nKaleido requires Google Chrome to be installed.\n")) == (
        "RuntimeError: Kaleido requires Google Chrome to be installed.")
    assert error_reason(RuntimeError("")) == "RuntimeError"
