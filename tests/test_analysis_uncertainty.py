"""Every accuracy with its interval, and comparisons of runs that say when a difference is real (issue 28)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from test_analysis import _trials, write_run

from speq_search.analysis import plots, stats
from speq_search.analysis.compare import (
    NO_DIFFERENCE,
    compare_runs,
    group_runs,
    hypervolume_difference,
    paired_difference,
)
from speq_search.analysis.load import load_runs
from speq_search.analysis.report import write_report
from speq_search.cli import main

N = 360  # digits' validation split


def _grid(offset: float = 0.0, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """The 16 bit-width pairs of the default space, accuracies whole images out of 360."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (w, a) in enumerate((w, a) for w in (2, 3, 4, 8) for a in (2, 3, 4, 8)):
        acc = 0.955 + 0.02 * (1 - 1 / (w * a)) + offset + rng.normal(0, noise)
        rows.append({"trial_id": f"t{i:07d}", "status": "COMPLETED", "w_bits": w, "a_bits": a, "method": "qat",
                     "p_high": 0.5, "val_acc": round(acc * N) / N, "test_acc": round((acc - 0.002) * N) / N,
                     "val_images": N, "test_images": N, "avg_bits": (w + a) / 2, "avg_w_bits": float(w),
                     "avg_a_bits": float(a), "bitops": 600_000 * w * a, "size_bytes": 9000 * w // 8 + 400,
                     "fp_val_acc": 0.975, "full_fidelity": True})
    return pd.DataFrame(rows)


# --- intervals -----------------------------------------------------------------------------------

def test_wilson_interval_matches_the_textbook_values():
    lo, hi = stats.wilson_interval(0.9, 100)
    assert (round(float(lo), 4), round(float(hi), 4)) == (0.8256, 0.9448)  # Wilson (1927), z = 1.96
    lo, hi = stats.wilson_interval([1.0, 0.0, 0.5], [360, 360, np.nan])
    assert hi[0] == 1.0 and 0.98 < lo[0] < 1 and lo[1] == 0.0 and np.isnan(lo[2])
    # One image of 360 is 0.28 points; the interval is about 4 points wide at 97 %.
    lo, hi = stats.wilson_interval(349 / 360, 360)
    assert 3.0 < 100 * (hi - lo) < 4.5


def test_split_size_is_inferred_from_accuracies_when_a_run_did_not_report_it():
    assert stats.infer_split_size([349 / 360, 346 / 360, 0.95]) == 360
    assert stats.infer_split_size([9123 / 10000, 8888 / 10000]) == 10000
    assert stats.infer_split_size([0.1234567891234]) is None and stats.infer_split_size([]) is None
    old = _grid().drop(columns=["val_images", "test_images"])
    out = stats.add_intervals(old)
    assert out["val_images_inferred"].all() and out["val_acc_lo"].notna().all()
    assert np.allclose(out["val_acc_lo"], stats.add_intervals(_grid())["val_acc_lo"])


def test_repeats_widen_the_interval_by_the_seed_spread():
    df = pd.DataFrame({"val_acc": [0.95, 0.95], "val_images": [N, N], "val_acc_sd": [0.0, 0.01], "repeats": [3, 3]})
    out = stats.add_intervals(df)
    assert out.loc[1, "val_acc_lo"] < out.loc[0, "val_acc_lo"] and out.loc[1, "val_acc_hi"] > out.loc[0, "val_acc_hi"]
    half_seed = stats.t_quantile(2) * 0.01 / np.sqrt(3)
    assert out.loc[1, "val_acc_lo"] == pytest.approx(0.95 - np.hypot(0.95 - out.loc[0, "val_acc_lo"], half_seed), abs=1e-6)


def test_a_front_point_inside_its_cheaper_neighbours_interval_says_so():
    front = stats.add_intervals(pd.DataFrame({"trial_id": ["a", "b", "c"], "bitops": [1, 2, 3],
                                              "val_acc": [0.90, 0.91, 0.99], "val_images": [N, N, N]}))
    assert stats.front_overlaps(front, "val_acc", "bitops") == [None, True, False]
    pick = stats.cheapest_indistinguishable(front, "val_acc", "bitops")
    assert pick["trial_id"] == "c"  # nothing cheaper is within reach of 99 %
    front.loc[2, "val_acc"], front.loc[2, "val_acc_lo"] = 0.92, 0.89
    assert stats.cheapest_indistinguishable(front, "val_acc", "bitops")["trial_id"] == "a"


# --- comparisons ---------------------------------------------------------------------------------

def test_a_difference_inside_the_noise_is_no_difference(tmp_path):
    """The issue's case: two runs of the same 16 configurations whose accuracies differ by noise."""
    a = write_run(tmp_path / "speq", _grid(noise=0.006, seed=1), name="speq")
    b = write_run(tmp_path / "qat", _grid(noise=0.006, seed=2), name="qat")
    runs, _ = load_runs([a, b])
    paired = paired_difference(runs[0], runs[1])
    assert paired.n == 16 and paired.configuration == ["w_bits", "a_bits", "method", "p_high"]
    assert paired.lo < 0 < paired.hi and paired.verdict == NO_DIFFERENCE
    diffs = 100 * (runs[0].completed.val_acc.to_numpy() - runs[1].completed.val_acc.to_numpy())
    assert paired.mean == pytest.approx(diffs.mean()) and paired.sd == pytest.approx(diffs.std(ddof=1))
    hv = hypervolume_difference(runs[0], runs[1], runs[0].objectives, resamples=300)
    assert hv.over == "paired configurations" and hv.lo <= hv.hi
    assert "no difference shown" in paired.text()


def test_a_real_difference_is_shown_with_its_sign(tmp_path):
    a = write_run(tmp_path / "better", _grid(offset=0.02, noise=0.003, seed=1), name="better")
    b = write_run(tmp_path / "base", _grid(noise=0.003, seed=2), name="base")
    runs, _ = load_runs([a, b])
    (paired, hv), = compare_runs(runs, resamples=300)
    assert paired.lo > 0 and paired.verdict == "better higher" and paired.a == "better" and paired.b == "base"
    assert hv.value > 0 and hv.lo > 0 and hv.verdict == "better larger"
    (back, _), = compare_runs(runs[::-1], resamples=10)
    assert back.hi < 0 and back.verdict == "better higher"


def test_runs_without_a_configuration_in_common_are_not_compared(tmp_path):
    a = write_run(tmp_path / "a", _grid().query("w_bits <= 3"))
    b = write_run(tmp_path / "b", _grid().query("w_bits >= 4"))
    runs, _ = load_runs([a, b])
    paired = paired_difference(runs[0], runs[1])
    assert paired.n == 0 and paired.verdict == NO_DIFFERENCE and "no configuration in common" in paired.text()
    assert hypervolume_difference(runs[0], runs[1], runs[0].objectives, resamples=50).over == "trials"


def _seeded(folder, df, seed: int, name: str = "grid"):
    write_run(folder, df, name=name)
    space = yaml.safe_load((folder / "space.yaml").read_text())
    space["search"] = {"sampler": "grid", "seed": seed}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    return folder


def test_searches_repeated_with_seeds_are_compared_over_the_seeds(tmp_path):
    folders = [_seeded(tmp_path / f"a{s}", _grid(offset=0.02, noise=0.003, seed=s), s) for s in (0, 1, 2)]
    other = _grid(noise=0.003, seed=9)
    folders += [_seeded(tmp_path / f"b{s}", other, s) for s in (0, 1)]
    # Another space (its w_bits choices differ): its own group, of two seeds.
    for f in folders[3:]:
        space = yaml.safe_load((f / "space.yaml").read_text())
        space["params"]["w_bits"]["values"] = [2, 3, 4, 8, 5]
        (f / "space.yaml").write_text(yaml.safe_dump(space))
    runs, _ = load_runs(folders)
    groups = group_runs(runs)
    assert [len(g.runs) for g in groups] == [3, 2] and groups[0].name == "a0 (3 seeds)"
    (paired, hv), = compare_runs(runs, resamples=200)
    assert hv.over == "seeds (runs)" and hv.value > 0
    assert paired.n == 16  # a configuration's accuracy is its mean over the seeds
    # The same search twice with one seed is two runs, not repeats.
    same = [_seeded(tmp_path / f"c{i}", _grid(), 0) for i in (0, 1)]
    assert [len(g.runs) for g in group_runs(load_runs(same)[0])] == [1, 1]


# --- the report and the figures ------------------------------------------------------------------

def test_report_gives_every_accuracy_its_interval_and_names_the_cheapest_indistinguishable(tmp_path):
    a = write_run(tmp_path / "speq", _grid(noise=0.006, seed=1), name="speq")
    b = write_run(tmp_path / "qat", _grid(noise=0.006, seed=2), name="qat")
    runs, df = load_runs([a, b])
    write_report(runs, df, tmp_path / "rep", "avg_bits", log=lambda m: None)
    md = (tmp_path / "rep" / "report.md").read_text()
    front = md.split("### Pareto front")[1].split("###")[0]
    assert "accuracy 95 % interval" in front and re.search(r"\\\[\d\d\.\d\d, \d\d\.\d\d\\\] %", front)
    assert "overlaps: no difference shown" in front
    assert "Cheapest configuration statistically indistinguishable from the best" in md
    assert "### Are the differences real?" in md and "paired configurations" in md
    assert "no difference shown" in md.split("### Are the differences real?")[1].split("## speq")[0]
    # Each table beside its figure: the front figure before the first front table, importance before its table.
    assert md.index("front.") < md.index("### Pareto front") and md.index("importance.") < md.index(
        "### Parameter importance")
    assert not re.search(r"\\\d", md)  # no list-marker escape (\95.83 %) shows in a table cell or a sentence


def test_importance_table_is_in_percent_for_every_objective_and_sensitivity_in_points(tmp_path):
    df = _trials()
    folder = write_run(tmp_path / "r", df)
    pd.DataFrame({"layer": ["features.0", "classifier"], "shape_class": ["conv", "linear"], "params": [72, 640],
                  "macs": [4608, 640], "val_acc": [0.95, 0.90], "drop": [0.0306, 0.0812], "base_val_acc": 0.98,
                  "probe_bits": 2}).to_csv(folder / "sensitivity.csv", index=False)
    runs, all_trials = load_runs([folder])
    write_report(runs, all_trials, tmp_path / "rep", log=lambda m: None)
    md = (tmp_path / "rep" / "report.md").read_text()
    importance = md.split("### Parameter importance")[1].split("##")[0]
    rows = [line for line in importance.splitlines() if line.startswith("| ") and "importance for" not in line]
    cells = [c.strip() for line in rows for c in line.strip("|").split("|")[1:]]
    assert cells and all(re.fullmatch(r"\d+\.\d %", c) or c == "" for c in cells)
    sensitivity = md.split("### Per-layer sensitivity")[1].split("##")[0]
    assert "drop \\(points\\)" in sensitivity and "+8.12" in sensitivity and "95.00 %" in sensitivity
    fig = plots.render_sensitivity(runs[0].sensitivity)
    assert list(fig.data[0].y) == pytest.approx([3.06, 8.12]) and "points" in fig.layout.yaxis.title.text


def test_front_figure_draws_each_accuracy_with_its_interval(tmp_path):
    runs, df = load_runs([write_run(tmp_path / "r", _grid())])
    data = plots.front_data(df, "bitops", "val_acc")
    f = data.fronts[0]
    lo, hi = stats.wilson_interval(f.y_front, N)
    assert np.allclose(np.array(f.y_front) - np.array(f.error_front[0]), lo, atol=1e-6)
    assert np.allclose(np.array(f.y_front) + np.array(f.error_front[1]), hi, atol=1e-6)
    fig = plots.render_fronts(data)
    front = next(t for t in fig.data if t.mode == "lines+markers")
    assert front.error_y.visible is not False and len(front.error_y.array) == len(f.x_front)


def test_a_run_keeps_its_colour_in_every_figure(tmp_path):
    """speq given first: it is the first colour on the front, the hypervolume and the importance figures."""
    a = write_run(tmp_path / "speq", _trials(seed=1, methods=("speq",)), name="speq")
    b = write_run(tmp_path / "qat", _trials(seed=2, methods=("qat",)), name="qat")
    runs, df = load_runs([a, b])

    def colours(fig, key=lambda t: t.name):
        return {key(t): t.marker.color for t in fig.data if t.name in ("speq", "qat") or "speq" in (t.name or "")}

    front = plots.make_figure(runs, df, "front")
    line = {t.name: t.line.color for t in front.data if t.mode == "lines+markers"}
    hv = {t.name: t.line.color for t in plots.make_figure(runs, df, "hypervolume").data}
    assert line == hv and line["speq"] == plots.PALETTE[0] and line["qat"] == plots.PALETTE[1]
    importance = plots.make_figure(runs, df, "importance")
    by_run = {t.name.split(":")[0]: t.marker.color for t in importance.data}
    assert by_run == {"speq": plots.PALETTE[0], "qat": plots.PALETTE[1]}


def test_a_colour_bar_never_covers_the_legend(tmp_path):
    runs, df = load_runs([write_run(tmp_path / "r", _trials())])
    fig = plots.make_figure(runs, df, "front", group="method", color="w_bits")
    assert any(t.marker.showscale for t in fig.data)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the plot, the bar beside it


def test_plot_of_two_runs_says_whether_their_difference_is_real(tmp_path, capsys):
    a = write_run(tmp_path / "speq", _grid(noise=0.006, seed=1), name="speq")
    b = write_run(tmp_path / "qat", _grid(noise=0.006, seed=2), name="qat")
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "f.html")]) == 0
    out = capsys.readouterr().out
    assert "speq - qat, val_acc:" in out and "16 paired configurations" in out and NO_DIFFERENCE in out
    assert "hypervolume (shared box)" in out and "bootstrap 95 % interval" in out


def test_run_files_carry_the_intervals(tmp_path):
    from speq_search.search.results import write_outputs
    from speq_search.space import load_space

    df = _grid()
    run_dir = write_run(tmp_path / "r", df, epochs=1)
    for result in (run_dir / "ray").glob("*/result.json"):  # as a finished trial reports
        lines = [json.loads(x) for x in result.read_text().splitlines()]
        row = df[df.trial_id == lines[-1]["trial_id"]].iloc[0]
        lines[-1].update(test_acc=float(row.test_acc), val_images=N, test_images=N, epochs_done=1, epochs_total=1)
        result.write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_outputs(run_dir, load_space(str(run_dir / "space.yaml")), run_dir / "ray", {"bitops": 6e8}, plots=False)
    for name in ("trials.csv", "pareto.csv"):
        table = pd.read_csv(run_dir / name)
        for col in ("val_images", "val_acc_lo", "val_acc_hi", "test_acc_lo", "test_acc_hi"):
            assert table[col].notna().all(), (name, col)
        assert (table.val_acc_lo < table.val_acc).all() and (table.val_acc < table.val_acc_hi).all()


# --- repeats: a configuration trained with several seeds -----------------------------------------

def test_run_repeats_trains_each_seed_and_reports_the_mean_and_spread(tmp_path, tiny_cfg):
    from speq_search.train import run, run_repeats

    rows = []
    metrics = run_repeats(tiny_cfg, tmp_path / "r", 2, callback=rows.append, log=lambda m: None)
    seeds = [json.loads((tmp_path / "r" / f"repeat-{k}" / "metrics.json").read_text()) for k in (0, 1)]
    assert [s["val_images"] for s in seeds] == [N, N] and seeds[0]["test_images"] == N
    assert metrics["repeats"] == 2 and metrics["val_acc"] == pytest.approx(np.mean([s["val_acc"] for s in seeds]))
    assert metrics["val_acc_sd"] == pytest.approx(np.std([s["val_acc"] for s in seeds], ddof=1))
    assert metrics["val_acc_seeds"] == ";".join(f"{s['val_acc']:.6g}" for s in seeds)
    assert metrics["bitops"] == seeds[0]["bitops"] and isinstance(metrics["bitops"], int)
    alone = run(tiny_cfg.replace(seed=1), tmp_path / "alone", log=lambda m: None)  # seed + 1 is the second repeat
    assert alone["val_acc"] == seeds[1]["val_acc"]
    # Epochs numbered on from seed to seed; the last report is the summary.
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["repeats"] == 2 and "repeats" not in rows[0]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["val_acc"] == metrics["val_acc"]
    # A finished seed is read, not trained again: an interrupted repeat goes on from there.
    (tmp_path / "r" / "repeat-1" / "metrics.json").unlink()
    (tmp_path / "r" / "repeat-1" / "checkpoint.pt").unlink()
    import shutil

    shutil.rmtree(tmp_path / "r" / "repeat-1")
    again = run_repeats(tiny_cfg, tmp_path / "r", 2, log=lambda m: None)
    assert again["val_acc"] == pytest.approx(metrics["val_acc"])


def test_repeats_are_a_search_setting_checked_when_the_space_is_read():
    from speq_search.errors import ConfigError
    from speq_search.space import load_space

    assert load_space("default", {"search.repeats": 3}).search.repeats == 3
    assert load_space("default").search.repeats == 1
    with pytest.raises(ConfigError, match="^search.repeats: got 0"):
        load_space("default", {"search.repeats": 0})
    with pytest.raises(ConfigError, match="^search.repeats: .*scheduler fifo"):
        load_space("default", {"search.repeats": 2, "search.scheduler": "asha"})
    assert main(["run", "default", "--repeats", "0"]) == 2
