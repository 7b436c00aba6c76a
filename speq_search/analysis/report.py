"""``speq-search report``: a Markdown/HTML report of runs (tables and figures).

It takes one or more loaded runs (:mod:`speq_search.analysis.load`); several runs are drawn on
one figure (:mod:`speq_search.analysis.figures`) and compared in a table. Nothing here needs Ray.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis import stats
from speq_search.analysis.compare import compare_runs
from speq_search.analysis.figures import default_axes, make_figure
from speq_search.analysis.figures.files import PLOTLYJS, ensure_plotlyjs, export_image, image_session
from speq_search.analysis.figures.importance import importance_data
from speq_search.analysis.load import LoadError, Run, require_columns
from speq_search.analysis.pareto import box_hypervolume, front_rows, hypervolume, reference_values
from speq_search.analysis.select import budget_picks

DEFAULT_BUDGETS = (2.0, 3.0, 4.0, 8.0)
FEW_TRIALS = 10  # fewer completed trials than this: the importance table says its estimate is rough

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|~])")
_MD_LINE_START = re.compile(r"^(\d+\.|[-+>=])")  # a list, quote or heading underline where a line begins


def md_escape(value: object, line_start: bool = True) -> str:
    """Text from a run (names, parameter values, paths) as Markdown that shows it literally.

    Markdown's punctuation is backslash-escaped, ``<`` and ``&`` become entities (no raw HTML
    reaches a viewer), and line breaks become spaces (a value cannot end a table row). With
    ``line_start`` (text that may begin a line), a list or quote marker there is escaped too; a
    table cell begins no line, where such an escape would show (``\\12.4 %``).
    """
    text = " ".join(str(value).splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_LINE_START.sub(r"\\\1", text) if line_start else text


def _cell(column: str, v) -> str:
    return schema.format_value(column, v) if isinstance(v, numbers.Number) else md_escape(v, line_start=False)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs an extra package); text is
    escaped, numbers formatted by column (:func:`speq_search.schema.format_value`)."""
    columns = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(md_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(columns, row)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def consistency_warnings(runs: Sequence[Run]) -> list[str]:
    """Where a run folder's trials.csv and summary.json disagree (a file cut short or edited by hand)."""
    notes = []
    for r in runs:
        if r.kind != "run" or not r.summary:
            continue
        counts = {"n_trials": len(r.trials), "n_completed": len(r.completed)}
        for key, have in counts.items():
            said = r.summary.get(key)
            if said is not None and int(said) != have:
                notes.append(f"{r.source}: trials.csv holds {have} {key[2:]} trials but summary.json says {said}; "
                             "trials.csv may be cut short (speq-search run --resume on the folder writes it again "
                             "from the Ray trial folders)")
                break
    return notes


@dataclass
class RunReport:
    """The numbers of one run's section of the report."""

    run: Run
    front: pd.DataFrame
    budgets: pd.DataFrame
    hypervolume: float
    reference: dict
    importance: pd.DataFrame


def default_budgets(costs: Sequence[float]) -> list[float]:
    """Budgets every one of which some trial meets: the cheapest trial's cost and the 25th, 50th
    and 75th percentiles, each rounded up to two significant digits (with first and last layers
    at 8 bits, an ``avg_bits <= 2`` budget is never met, so fixed round numbers can be empty)."""
    values = np.asarray([c for c in costs if np.isfinite(c)], dtype=float)
    if not len(values):
        return list(DEFAULT_BUDGETS)
    out = []
    for q in (0, 25, 50, 75):
        v = float(np.percentile(values, q))
        digits = 1 - int(np.floor(np.log10(abs(v)))) if v else 0
        out.append(float(np.ceil(v * 10**digits) / 10**digits))
    return sorted(set(out))


def run_report(run: Run, budget_metric: str = "avg_bits", budgets: Sequence[float] | None = DEFAULT_BUDGETS) -> RunReport:
    """Front, best configuration per budget, hypervolume (summary.json's rule) and importance.

    ``budgets=None`` chooses budgets from the run's own costs (:func:`default_budgets`). A budget
    no trial meets gets a row that says so and names the cheapest trial's cost."""
    if not run.objectives:
        raise LoadError("objectives", run.source, "a run whose objectives are known (a run folder or an Optuna "
                        "storage; pass objectives= for a bare Ray experiment)")
    metrics = [m for m, _ in run.objectives]
    require_columns(run.trials, metrics, "objective")
    done = run.completed.dropna(subset=metrics)
    if done.empty:
        raise LoadError("run", run.source, "a run with at least one completed trial")
    if not any(c.endswith("_lo") for c in done.columns):  # a table not read by load_run
        done = stats.add_intervals(done)
    front = front_rows(done, run.objectives)
    values = done[metrics].to_numpy(dtype=float)
    hv = hypervolume(values, metrics, [d for _, d in run.objectives], run.full_precision)
    reference = dict(zip(metrics, reference_values(metrics, values, run.full_precision)))
    best = pd.DataFrame()
    if budget_metric in done:
        if budgets is None:
            budgets = default_budgets(done[budget_metric].astype(float))
        best = budget_picks(run, budget_metric, budgets)
    return RunReport(run, front, best, hv, reference, importance_data(run))


def comparison_table(reports: Sequence[RunReport]) -> pd.DataFrame:
    """One row per run: trials, front size, hypervolume (fixed rule) and, for two or more runs
    with the same two objectives, the hypervolume in the box fitted to them all (from every
    run's best to every run's worst value; costs on a log scale), which separates close runs."""
    rows = [{"run": r.run.name, "trials": len(r.run.trials), "completed": len(r.run.completed),
             "front": len(r.front), "hypervolume": round(r.hypervolume, 5)} for r in reports]
    objectives = [r.run.objectives for r in reports]
    if len(reports) > 1 and all(o == objectives[0] for o in objectives) and len(objectives[0]) == 2:
        metrics = [m for m, _ in objectives[0]]
        values = [r.run.completed.dropna(subset=metrics)[metrics].to_numpy(dtype=float) for r in reports]
        both = np.vstack(values)
        ideal = [both[:, j].max() if d == "max" else both[:, j].min() for j, (_, d) in enumerate(objectives[0])]
        worst = [both[:, j].min() if d == "max" else both[:, j].max() for j, (_, d) in enumerate(objectives[0])]
        log_axes = [j for j, (m, _) in enumerate(objectives[0]) if not schema.is_score(m) and both[:, j].min() > 0]
        for row, v in zip(rows, values):
            row["hypervolume (shared box)"] = round(box_hypervolume(v, ideal, worst, log_axes), 4)
    return pd.DataFrame(rows)


class Figure(NamedTuple):
    """Where a figure goes in the report: beside the table it belongs to."""

    key: str


def _front_columns(rep: RunReport) -> list[str]:
    """The trial, its objectives, the metrics a front table shows (:func:`speq_search.schema.shown_metrics`),
    the accuracy's interval and whether it stands apart from the cheaper point, its parameters."""
    metrics = [m for m, _ in rep.run.objectives]
    shown = [c for c in schema.shown_metrics() if c in rep.front]
    extra = [c for c in (_INTERVAL, _VS_CHEAPER) if c in rep.front]
    return list(dict.fromkeys(["trial_id", *metrics, *shown, *extra, *rep.run.params]))


_INTERVAL = f"accuracy {stats.LEVEL} interval"
_VS_CHEAPER = "vs next cheaper"


def _score_and_cost(run: Run) -> tuple[str | None, str | None, str]:
    """The run's accuracy objective, its first cost objective, and the accuracy's mode."""
    score = next(((m, d) for m, d in run.objectives if schema.is_score(m)), None)
    cost = next((m for m, _ in run.objectives if score is None or m != score[0]), None)
    return (score[0] if score else None), cost, (score[1] if score else "max")


def _with_uncertainty(front: pd.DataFrame, run: Run) -> pd.DataFrame:
    """The front with its accuracy's interval as text and whether each point stands apart from the
    next cheaper one (:func:`speq_search.analysis.stats.front_overlaps`)."""
    score, cost, _ = _score_and_cost(run)
    lo, hi = stats.interval_columns(score) if score else ("", "")
    if front.empty or score is None or lo not in front:
        return front
    front = front.copy()
    front[_INTERVAL] = [stats.interval_text(a, b) for a, b in zip(front[lo], front[hi])]
    if cost is not None:
        front[_VS_CHEAPER] = [{None: "", True: "overlaps: no difference shown", False: "apart"}[o]
                              for o in stats.front_overlaps(front, score, cost)]
    return front


def indistinguishable_note(rep: RunReport) -> str:
    """One sentence naming the cheapest front point whose accuracy cannot be told from the best's."""
    score, cost, mode = _score_and_cost(rep.run)
    if score is None or cost is None:
        return ""
    pick = stats.cheapest_indistinguishable(rep.front, score, cost, mode)
    if pick is None:
        return (f"The split size of {score} is unknown, so no interval is given (runs since the split sizes were "
                "reported carry them).")
    best = rep.front.loc[rep.front[score].astype(float).idxmax() if mode == "max" else rep.front[score].astype(float).idxmin()]
    config = ", ".join(f"{p}={pick[p]:g}" if isinstance(pick[p], float) else f"{p}={pick[p]}"
                       for p in rep.run.params if p in pick and pd.notna(pick[p]))
    inferred = stats.SPLIT_OF.get(score, "") + "_inferred"
    how = (" (split size inferred from the accuracies)" if inferred in rep.front and rep.front[inferred].any() else "")
    if pick["trial_id"] == best["trial_id"]:
        return (f"The most accurate point, trial {md_escape(pick['trial_id'])}, is also the cheapest whose "
                f"{stats.LEVEL} interval overlaps its own{how}.")
    return (f"**Cheapest configuration statistically indistinguishable from the best:** trial "
            f"{md_escape(pick['trial_id'])} ({md_escape(config, False)}) at {schema.format_value(cost, pick[cost], 'text')}, "
            f"{md_escape(stats.with_interval(score, pick), False)}, against the best "
            f"{md_escape(stats.with_interval(score, best), False)} "
            f"at {schema.format_value(cost, best[cost], 'text')}: their {stats.LEVEL} intervals (Wilson, from the "
            f"split size{how}) overlap, so the split cannot tell them apart.")


def comparison_lines(runs: Sequence[Run]) -> tuple[list[str], pd.DataFrame]:
    """The comparisons of :func:`speq_search.analysis.compare.compare_runs`, as sentences and a table."""
    rows, lines = [], []
    for paired, hv in compare_runs(runs):
        lines += ["- " + md_escape(paired.text(), False)] + (["- " + md_escape(hv.text(), False)] if hv else [])
        rows.append({"compared": f"{paired.a} - {paired.b}", "paired configurations": paired.n,
                     "accuracy difference (points)": f"{paired.mean:+.2f}" if paired.n else "",
                     "95 % interval": f"[{paired.lo:+.2f}, {paired.hi:+.2f}]" if paired.n > 1 else "",
                     "accuracy": paired.verdict,
                     "hypervolume difference": f"{hv.value:+.4f}" if hv else "",
                     "bootstrap 95 % interval": f"[{hv.lo:+.4f}, {hv.hi:+.4f}]" if hv else "",
                     "hypervolume": hv.verdict if hv else ""})
    return lines, pd.DataFrame(rows)


def write_report(runs: Sequence[Run], df: pd.DataFrame, out: str | Path, budget_metric: str = "avg_bits",
                 budgets: Sequence[float] | None = None, log=print) -> Path:
    """Write ``out/report.md`` and ``out/report.html`` (each table beside its figure); return the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = [run_report(r, budget_metric, budgets) for r in runs]
    figures = report_figures(runs, df, reports, budget_metric)
    images = _write_images(figures, out)
    skipped = {k: why for k, why in images.items() if not k.endswith(".png")}
    blocks: list = ["# speq-search report", "", "Runs: " + ", ".join(md_escape(r.source) for r in runs), ""]
    for note in consistency_warnings(runs):
        log("warning: " + note)
        blocks += ["**Warning:** " + md_escape(note), ""]
    if skipped:
        blocks += ["PNG export skipped (" + md_escape(next(iter(skipped.values()))) + "); the figures are HTML files: "
                   + ", ".join(f"[{k}]({k}.html)" for k in skipped), ""]
    blocks += report_body(runs, reports, figures, budget_metric)
    md = [line if isinstance(line, str) else _image_line(line.key, images) for line in blocks]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    _write_html(blocks, figures, out)
    why = next(iter(skipped.values()), "")
    log(f"wrote {md_path} and {out / 'report.html'}" + (f"; PNG skipped for {', '.join(skipped)} ({why})"
                                                       if skipped else ""))
    return md_path


def _image_line(key: str, images: dict) -> str:
    return f"![{key}]({key}.png)" if key in images and images[key].endswith(".png") else f"[{key}]({key}.html)"


def report_body(runs: Sequence[Run], reports: Sequence[RunReport], figures: dict, budget_metric: str) -> list:
    """The report after its header: Markdown lines and :class:`Figure` markers, each figure before
    the table it belongs to; figures no table claims come last."""
    placed: set[str] = set()

    def fig(key: str) -> list:
        if key not in figures or key in placed:
            return []
        placed.add(key)
        return [Figure(key), ""]

    body: list = []
    if len(reports) > 1:
        note = ("Hypervolume: the fixed rule of summary.json; shared box: each objective scaled between the best "
                "and the worst value any run reached (costs in log10), so close runs separate. Whether a "
                "difference is real: below.")
        lines, table = comparison_lines(runs)
        body += ["## Runs compared", "", *fig("front"), markdown_table(comparison_table(reports)), "", note, "",
                 "### Are the differences real?", "",
                 "Accuracy: trials of the two runs with the same configuration are paired, and the mean difference "
                 "gets a t-interval over the pairs. Hypervolume: a bootstrap over the trials (the same "
                 "configurations for both runs when they share them; the runs, for searches repeated with --seed). "
                 "An interval that holds 0 says **no difference shown**.", "", *lines, ""]
        if not table.empty:
            body += [markdown_table(table), ""]
        body += fig("hypervolume")
    for rep in reports:
        body += run_section(rep, budget_metric, fig)
    rest = [k for k in figures if k not in placed]
    if rest:
        body += ["## Other figures", ""]
        for key in rest:
            body += fig(key)
    return body


def report_figures(runs: Sequence[Run], df: pd.DataFrame, reports: Sequence[RunReport], budget_metric: str) -> dict:
    """The report's figures by name: the front (and against the budget's axis when it is another
    cost), hypervolume, importance and parallel coordinates, and those the runs have data for."""
    figures = {"front": make_figure(runs, df, "front")}
    if budget_metric != default_axes(runs)[0] and budget_metric in df and df[budget_metric].notna().any():
        # The budget table bounds another cost: the front against that axis too, to read them together.
        figures[f"front-{budget_metric}"] = make_figure(runs, df, "front", x=budget_metric)
    figures["hypervolume"] = make_figure(runs, df, "hypervolume")
    if any(not r.importance.empty for r in reports):
        figures["importance"] = make_figure(runs, df, "importance")
    if any(r.params for r in runs):
        figures["parallel"] = make_figure(runs, df, "parallel")
    for kind, wanted in (("curves", any(r.experiment is not None for r in runs)),
                         ("sensitivity", any(r.sensitivity is not None for r in runs)),
                         ("layer-bits", any(c.startswith("w_bits@") for c in df.columns))):
        if wanted:
            try:
                figures[kind] = make_figure(runs, df, kind)
            except LoadError:  # e.g. no per-epoch results or no completed per-layer trial
                pass
    return figures


def _write_images(figures: dict, out: Path) -> dict[str, str]:
    """Each figure as ``out/<name>.png``: ``{name: "<name>.png"}``, or where no image could be made,
    its HTML instead and ``{name: why}``."""
    images = {}
    with image_session():
        for key, fig in figures.items():
            why = export_image(fig, out / f"{key}.png")
            images[key] = f"{key}.png" if why is None else why
            if why is not None:
                fig.write_html(str(out / f"{key}.html"), include_plotlyjs=PLOTLYJS)
    return images


def run_section(rep: RunReport, budget_metric: str, fig=lambda key: []) -> list:
    """A run's part of the report, as Markdown lines: counts, hypervolume, then its tables, each
    after its figure (``fig(key)``: the figure's lines, once; a single run's report holds them)."""
    r = rep.run
    s = r.trials["status"].value_counts().to_dict()
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(s.items()))
    ref = ", ".join(f"{k} {v:.4g}" for k, v in rep.reference.items())
    objectives = ", ".join(f"{m} ({d})" for m, d in r.objectives)
    # The name is the run's (escaped); the rest is the tool's own text: metric names, numbers.
    md = [f"## {md_escape(r.name)}", "", f"{len(r.trials)} trials ({counts}); objectives {objectives}.", "",
          f"Hypervolume **{rep.hypervolume:.4f}** (reference point: {ref}; rule in "
          "`speq_search.analysis.pareto`).", "", *fig("hypervolume")]
    for title, table in run_tables(rep, budget_metric):
        key = _FIGURE_OF.get(title.split(" (")[0].split(" with ")[0])
        md += [*(fig(key(budget_metric)) if key else []), f"### {title}", "", markdown_table(table), ""]
        if title == "Pareto front":
            note = indistinguishable_note(rep)
            md += ([note, ""] if note else []) + fig("layer-bits")
    return md


# The figure each of a run's tables stands beside (by the table's title).
_FIGURE_OF = {"Pareto front": lambda b: "front", "Best configuration": lambda b: f"front-{b}",
              "Per-layer sensitivity": lambda b: "sensitivity", "Parameter importance": lambda b: "importance"}


def run_tables(rep: RunReport, budget_metric: str) -> list[tuple[str, pd.DataFrame]]:
    """A run's tables, titled: its front, the best under each budget, sensitivity and importance where known."""
    r = rep.run
    front = _with_uncertainty(rep.front, r)
    tables = [("Pareto front", front[[c for c in _front_columns(replace(rep, front=front)) if c in front]])]
    if not rep.budgets.empty:
        budgets = _with_uncertainty(rep.budgets, r).drop(columns=[_VS_CHEAPER], errors="ignore")
        cols = [c for c in ["budget", *_front_columns(replace(rep, front=budgets))] if c in budgets]
        if budgets["note"].astype(bool).any():
            cols.append("note")
        tables.append((f"Best configuration with {budget_metric} <= budget", budgets[cols]))
    if r.sensitivity is not None:
        tables.append(("Per-layer sensitivity (validation accuracy drop in points, one layer at few bits)",
                       sensitivity_table(r.sensitivity)))
    if not rep.importance.empty:
        ranking = rep.importance.pivot(index="param", columns="objective", values="importance")
        order = [m for m, _ in r.objectives if m in ranking.columns]
        ranking = ranking[order].sort_values(order[0], ascending=False)
        ranking = ranking.apply(lambda col: col.map(lambda v: f"{100 * v:.1f} %" if pd.notna(v) else "")).reset_index()
        ranking.columns = ["param", *[f"importance for {m}" for m in order]]  # not read as the metric itself
        n = int(rep.importance["trials"].iloc[0])
        rough = f"; fewer than {FEW_TRIALS}: a rough estimate" if n < FEW_TRIALS else ""
        tables.append((f"Parameter importance (fANOVA, {n} trials{rough})", ranking))
    return tables


def sensitivity_table(table: pd.DataFrame) -> pd.DataFrame:
    """sensitivity.csv for reading: the drop in accuracy points (as the accuracies are in percent), largest first."""
    out = table.sort_values("drop", ascending=False).copy()
    out["drop"] = [f"{100 * v:+.2f}" for v in out["drop"].astype(float)]
    return out.rename(columns={"drop": "drop (points)"})


def _write_html(blocks: Sequence, figures: dict, out: Path) -> None:
    """``out/report.html``: the Markdown rendered, each figure interactive where the Markdown has its image."""
    import markdown

    # Text from runs is escaped by md_escape (no raw HTML reaches the page).
    parts, text, first = [], [], True

    def flush() -> None:
        if text:
            parts.append(markdown.markdown("\n".join(text), extensions=["tables"], output_format="html"))
            text.clear()

    for line in blocks[1:]:
        if isinstance(line, Figure):
            flush()
            if first:
                ensure_plotlyjs(out)  # one copy of plotly.js for the report and its figures
            parts.append(f"<h3>{line.key}</h3>" + figures[line.key].to_html(
                full_html=False, include_plotlyjs=PLOTLYJS if first else False))
            first = False
        elif not line.startswith("PNG export skipped"):
            text.append(line)
    flush()
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>speq-search report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}"
            "table{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%}"  # wide tables scroll
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;white-space:nowrap}</style></head><body>"
            "<h1>speq-search report</h1>" + "".join(parts) + "</body></html>")
    (out / "report.html").write_text(page)


__all__ = ["DEFAULT_BUDGETS", "Figure", "RunReport", "budget_picks", "comparison_lines", "comparison_table", "default_axes",
           "default_budgets", "indistinguishable_note", "make_figure", "markdown_table", "md_escape", "report_body",
           "run_report", "run_section", "run_tables", "sensitivity_table", "write_report"]
