"""``speq-search`` command line: parses arguments and calls one library function per command.

Bad input ends with one line naming the field and what is accepted, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.samplers import SAMPLERS
from speq_search.space.model import SCHEDULERS
from speq_search.space.names import NAMES, flag_of
from speq_search.yamlio import parse_yaml

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


# The train command's flags: one per short name of a config field (--w-bits sets quant.w_bits).
_TRAIN_FLAGS = [(flag_of(name), n.field, n.type, n.help) for name, n in NAMES.items()]


def _parse_set(items: Sequence[str]) -> dict:
    changes = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "key=value, e.g. optim.epochs=2")
        changes[key.strip()] = parse_yaml(value, f"--set {key.strip()}", value)
    return changes


def build_parser() -> argparse.ArgumentParser:
    """The full ``speq-search`` parser (also used to render --help in the README)."""
    parser = _Parser(
        prog="speq-search",
        description="Find how few bits a neural network can run on: quantization-aware training with "
        "SPEQ (stochastic precision ensemble self-distillation) and searches over bit-widths.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_train, _add_run, _add_plot, _add_report, _add_sensitivity, _add_export, _add_listings):
        add(sub)
    return parser


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train one quantized network (QAT, KD or SPEQ)",
                           description="Train one network: a full-precision model first (cached), then "
                           "quantization-aware training with the chosen method. Writes OUT/config.yaml, "
                           "metrics.csv, metrics.json and checkpoint.pt.")
    train.add_argument("--config", help="YAML config (e.g. a run's config.yaml); flags override it")
    for flag, key, typ, help_text in _TRAIN_FLAGS:
        train.add_argument(flag, dest=key, type=typ, default=None, help=help_text)
    train.add_argument("--download", dest="data.download", action="store_true", default=None,
                       help="let torchvision download the data set into --data-dir")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set any config field, e.g. quant.overrides='{features.4: {w_bits: 4}}'")
    train.add_argument("--out", required=True, help="run folder to write (must be new unless --resume)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                       help="import a module or .py file that registers models or data sets (repeatable)")


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="multi-objective search over bits and SPEQ settings (Ray Tune + Optuna)",
                         description="Search a space file with Ray Tune and an Optuna sampler. Writes RUN_DIR = "
                         "OUT_DIR/NAME: trials.csv, pareto.csv, summary.json, pareto.html, study.db, space.yaml "
                         "and the Ray experiment.")
    run.add_argument("space", nargs="?", help="space file, or a shipped space's name (default: default)")
    run.add_argument("--name", help="run folder name (default: <space>-<timestamp>)")
    run.add_argument("--out-dir", default="runs", help="where run folders go (default: runs)")
    run.add_argument("--num-samples", type=int, help="number of trials")
    run.add_argument("--max-concurrent", type=int, help="trials at a time")
    run.add_argument("--sampler", help=f"{SAMPLERS.choices()}, or a class of optuna.samplers (with keywords: "
                     "--set search.sampler='{name: NSGAIIISampler, population_size: 8}')")
    run.add_argument("--scheduler", help=" | ".join(SCHEDULERS))
    run.add_argument("--seed", type=int, help="sampler seed")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs each trial holds (also its torch threads)")
    run.add_argument("--gpus-per-trial", type=float, help="GPUs each trial holds, e.g. 0.25")
    run.add_argument("--max-failures", type=int, help="stop after more failed trials than this")
    run.add_argument("--repeats", type=int, help="train each configuration with N seeds: its objectives are their "
                     "means, their spread is recorded (search.repeats; default 1)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field of the space file, e.g. train.epochs=2 or search.num_samples=8")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search")
    run.add_argument("--address", help="run on an existing Ray cluster: auto, or HOST:PORT of its head (start the "
                     "search on a node of the cluster; Ray Client's ray:// is not supported)")
    run.add_argument("--storage-path", help="where Ray keeps the experiments and checkpoints: a folder (on a cluster, "
                     "one every node sees), or s3://bucket/path or gs://bucket/path (default: the run folder)")
    run.add_argument("--verbose", action="store_true", help="show Ray's logs and each trial's epochs")
    run.add_argument("--logger", action="append", default=[], metavar="NAME",
                     help="track the trials in tensorboard, mlflow or wandb (repeatable)")
    run.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else RUN_DIR/mlruns)")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                     help="import a module or .py file that registers models or data sets, here and on every "
                     "worker (repeatable)")


_SOURCES_HELP = ("run folders of `speq-search run`, Ray Tune experiment folders, or Optuna storage URLs "
                 "(sqlite:///study.db[#study])")


def _add_plot(sub, sources_help: str = _SOURCES_HELP) -> None:
    plot = sub.add_parser("plot", help="draw the Pareto front (or another figure) of one or more runs",
                          description="Draw a figure of one or more runs; several runs are overlaid, and whether "
                          "their difference is real is printed. The format follows --out: .html (self-contained), "
                          ".png, .svg or .pdf (need kaleido and Chrome or Chromium; without them the HTML is written "
                          "instead).")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help=sources_help)
    from speq_search.analysis.figures import FIGURES  # the kinds only: no pandas, no plotly

    plot.add_argument("--kind", default="front", help=f"the figure: {FIGURES.choices()} (default: front)")
    plot.add_argument("--x", help="cost axis: avg_bits, avg_w_bits, avg_a_bits, size_bytes, bitops... "
                      "(default: the run's cost objective)")
    plot.add_argument("--y", help="accuracy axis: val_acc or test_acc (default: the run's accuracy objective)")
    plot.add_argument("--color", help="colour the points by a column, e.g. method, p_high, w_bits")
    plot.add_argument("--group-by", help="one front per value of a column, e.g. method (default: one per run)")
    plot.add_argument("--objectives", help="metric:mode pairs for sources that do not say, e.g. val_acc:max,bitops:min")
    plot.add_argument("--out", help="output file (default: <first RUN_DIR>/<kind>.html)")


def _add_report(sub, sources_help: str = _SOURCES_HELP) -> None:
    report = sub.add_parser("report", help="write report.md and report.html for one or more runs",
                            description="Front table, best configuration under each bit budget, hypervolume, "
                            "parameter importance and figures, as OUT/report.md and OUT/report.html.")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help=sources_help)
    report.add_argument("--out", required=True, help="folder to write the report into")
    report.add_argument("--budget-metric", default="avg_bits", help="the cost the budgets bound (default: avg_bits)")
    report.add_argument("--budgets", help="comma-separated budgets (default: from the run's own costs: the "
                        "cheapest trial's and the 25th, 50th and 75th percentiles)")
    report.add_argument("--objectives", help="metric:mode pairs for sources that do not say, e.g. val_acc:max,bitops:min")


def _add_sensitivity(sub) -> None:
    sens = sub.add_parser("sensitivity", help="score each layer: accuracy drop when only it goes to few bits",
                          description="Post-training per-layer sensitivity of a space's model (the FP model is "
                          "trained once and cached): the base model at 8 bits, then each layer alone at --bits.")
    sens.add_argument("space", nargs="?", help="space file or shipped space name (its train settings are used)")
    sens.add_argument("--bits", type=int, default=2, help="the probe precision (default: 2)")
    sens.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of the space")
    sens.add_argument("--out", help="also write the table to this CSV file (with --front: the front)")
    front = sens.add_argument_group("proxy front (a per-layer space: the assignment of least summed score under each "
                                    "budget, before any training)")
    front.add_argument("--front", action="store_true", help="score each per-layer choice and print the proxy front")
    front.add_argument("--points", type=int, default=8, help="budgets between the cheapest and the widest assignment "
                       "(default: 8)")
    front.add_argument("--metric", help="the cost the budgets bound (default: the space's cost objective)")
    front.add_argument("--score", default="loss", help="what is summed: loss (each choice's validation-loss "
                       "increase, the default) or acc (its accuracy drop)")
    front.add_argument("--figure", help="draw the front into this file (.html, or .png with a browser)")


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="write a trained model as an ONNX file (QDQ form), verified in onnxruntime",
                            description="Export a trained model as ONNX with integer weights (each layer's codes in "
                            "INT2/INT4/INT8) and QuantizeLinear/DequantizeLinear activations, run it in onnxruntime on the run's test "
                            "split "
                            "beside the PyTorch model, and write --out only if their accuracies agree within "
                            "--tolerance points. Needs: pip install 'speq-search[export]'.")
    export.add_argument("source", metavar="SOURCE", help="a `train` run folder, or a `run` folder with --trial or --budget")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    pick = export.add_mutually_exclusive_group()
    pick.add_argument("--trial", help="the trial id to export (a search run's trials.csv lists them)")
    pick.add_argument("--budget", help="export the best trial under a budget, e.g. 'avg_bits<=3' (the report's rule)")
    export.add_argument("--fold-batchnorm", action="store_true",
                        help="fold BatchNorm into the weight scales (default: keep it as a float op: exact)")
    export.add_argument("--tolerance", type=float, default=0.1,
                        help="largest accepted test-accuracy difference in points (default: 0.1)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset, 21 or later; 25 stores 2-bit weights as "
                        "INT2 (default: 25 where the installed onnx and onnxruntime run INT2, else 21)")


def _add_listings(sub) -> None:
    sub.add_parser("spaces", help="list the shipped search spaces")
    sub.add_parser("models", help="list the registered models")
    sub.add_parser("datasets", help="list the registered data sets")


def _train(args: argparse.Namespace) -> int:
    from speq_search.config import TrainConfig
    from speq_search.search.folder import ensure_writable
    from speq_search.train import run

    out = Path(args.out)
    ensure_writable(out, "--out")
    if not args.resume and ((out / "metrics.json").exists() or (out / "checkpoint.pt").exists()):
        raise ConfigError("--out", str(out), "a new folder (this one holds a run: add --resume to continue it)")
    if args.resume:
        given = [flag for flag, key, _, _ in _TRAIN_FLAGS if getattr(args, key) is not None]
        given += ["--config"] * bool(args.config) + ["--set"] * bool(args.set) + ["--plugin"] * bool(args.plugin)
        if given:
            raise ConfigError("--resume", given[0], "no other settings (a resumed run continues as its config.yaml "
                              "says)")
        cfg = TrainConfig.load(out / "config.yaml") if (out / "config.yaml").exists() else None
        if cfg is None:
            raise ConfigError("resume", str(out), "a run folder holding config.yaml and checkpoint.pt")
    else:
        cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
        changes = {key: getattr(args, key) for _, key, _, _ in _TRAIN_FLAGS if getattr(args, key) is not None}
        if getattr(args, "data.download"):
            changes["data.download"] = True
        changes.update(_parse_set(args.set))
        if args.quiet:
            changes["progress"] = False
        if args.plugin:
            from speq_search.plugins import check_plugins, load_plugins

            load_plugins(args.plugin, "--plugin")  # a failing one is named as the flag that gave it
            changes["plugins"] = [*cfg.plugins, *check_plugins(args.plugin, "--plugin")]
        cfg = cfg.replace(**changes)
    run(cfg, out, resume=args.resume)
    print(f"wrote {out}/metrics.json")
    return 0


_RUN_FLAGS = {"num_samples": "search.num_samples", "max_concurrent": "search.max_concurrent",
              "sampler": "search.sampler", "scheduler": "search.scheduler", "seed": "search.seed",
              "cpus_per_trial": "search.cpus_per_trial", "gpus_per_trial": "search.gpus_per_trial",
              "max_failures": "search.max_failures", "repeats": "search.repeats"}


def _run(args: argparse.Namespace) -> int:
    import time

    from speq_search.search import RunOptions, resume_search, run_search
    from speq_search.search.folder import ensure_writable
    from speq_search.space import check_run_name, load_space

    opts = RunOptions(address=args.address, storage_path=args.storage_path, verbose=args.verbose,
                      loggers=tuple(args.logger), mlflow_uri=args.mlflow_uri)
    if args.resume:
        ignored = [flag for flag in ("space", "name", *_RUN_FLAGS) if getattr(args, flag) is not None
                   and flag != "num_samples"] + (["set"] if args.set else []) + (["plugin"] if args.plugin else []) + (
            ["logger"] if args.logger else [])
        if ignored:
            raise ConfigError("--resume", "--" + ignored[0].replace("_", "-"), "no other search settings (a resumed "
                              "search runs as its space.yaml says; --num-samples to extend it, --address and --verbose "
                              "may be given)")
        ensure_writable(args.resume, "--resume")
        summary = resume_search(args.resume, opts, num_samples=args.num_samples)
    else:
        overrides = {key: getattr(args, flag) for flag, key in _RUN_FLAGS.items() if getattr(args, flag) is not None}
        overrides.update(_parse_set(args.set))
        if args.plugin:
            from speq_search.plugins import load_plugins

            load_plugins(args.plugin, "--plugin")
        spec = load_space(args.space, overrides, plugins=args.plugin)
        name = check_run_name(args.name, "--name") if args.name else f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        ensure_writable(args.out_dir, "--out-dir")
        if (Path(args.out_dir) / name / "run.json").exists():  # say it in the command line's terms
            raise ConfigError("--name", name, f"a new run folder ({Path(args.out_dir) / name} holds a search: continue "
                              f"it with speq-search run --resume {Path(args.out_dir) / name})")
        summary = run_search(spec, Path(args.out_dir) / name, opts)
    _print_front(summary)
    if summary.get("stopped_on_failures"):
        return 1
    return 130 if summary.get("interrupted") else 0


def _objectives(text: str | None) -> list[tuple[str, str]] | None:
    if not text:
        return None
    out = []
    for item in text.split(","):
        metric, _, mode = item.strip().partition(":")
        if not metric or mode not in ("max", "min"):
            raise ConfigError("--objectives", item, "metric:max or metric:min, comma-separated")
        out.append((metric, mode))
    return out


def _plot(args: argparse.Namespace) -> int:
    from speq_search.analysis.load import load_runs
    from speq_search.analysis.plots import ImageExportError, write_figure
    from speq_search.analysis.report import make_figure
    from speq_search.search.folder import ensure_writable

    first = Path(args.runs[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else Path(".")) / f"{args.kind}.html"
    ensure_writable(out.parent, "--out")
    runs, df = load_runs(args.runs, _objectives(args.objectives))
    fig = make_figure(runs, df, args.kind, args.x, args.y, args.color, args.group_by)
    if len(runs) > 1 and all(r.objectives for r in runs):  # several runs: is their difference real?
        from speq_search.analysis.compare import compare_runs

        for paired, hv in compare_runs(runs, metric=args.y):
            print(paired.text() + (f"\n{hv.text()}" if hv else ""))
    try:
        print(write_figure(fig, out, png=False, strict=True))
    except ImageExportError as err:  # the HTML is written; the image the user asked for is not
        print(f"error: --out: {err}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from speq_search.analysis.load import load_runs
    from speq_search.analysis.report import write_report

    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()] if args.budgets else None
    except ValueError:
        raise ConfigError("--budgets", args.budgets, "comma-separated numbers, e.g. 2,3,4,8") from None
    from speq_search.search.folder import ensure_writable

    ensure_writable(args.out, "--out")
    runs, df = load_runs(args.runs, _objectives(args.objectives))
    from speq_search.analysis.load import require_columns

    require_columns(df, [args.budget_metric], "--budget-metric")
    write_report(runs, df, args.out, args.budget_metric, budgets)
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from speq_search.sensitivity import layer_sensitivity, write_sensitivity_csv
    from speq_search.space import load_space

    spec = load_space(args.space, _parse_set(args.set))
    if args.front:
        return _proxy_front(spec, args)
    base, scores = layer_sensitivity(spec.train, probe_bits=args.bits,
                                     log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"base (every layer at 8 bits): val acc {base:.4f}")
    print(f"{'layer':<24} {'kind':<10} {'weights':>9} {'MACs':>10} {'val_acc':>8} {'drop':>8}")
    for s in sorted(scores, key=lambda s: -s.drop):
        print(f"{s.layer:<24} {s.shape_class:<10} {s.params:>9} {s.macs:>10} {s.val_acc:>8.4f} {s.drop:>+8.4f}")
    if args.out:
        write_sensitivity_csv(args.out, base, scores, args.bits)
        print(f"wrote {args.out}")
    return 0


def _proxy_front(spec, args: argparse.Namespace) -> int:
    """``sensitivity --front``: the proxy front of a per-layer space (speq_search.proxy), printed and drawn."""
    from speq_search.proxy import proxy_front, write_proxy_front_csv

    if args.points < 1:
        raise ConfigError("--points", args.points, "a whole number >= 1")
    front = proxy_front(spec, args.points, args.metric, score=args.score,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"base (every layer at 8 bits): val acc {front.base_acc:.4f}; summed score: {args.score}")
    names = list(front.points[0].params)
    print(f"{front.metric:>14} {'score':>9} {'pred_acc':>8}  " + " ".join(n.replace("_bits@", "@") for n in names))
    for p in front.points:
        print(f"{schema.format_value(front.metric, p.costs[front.metric]):>14} {p.score:>+9.4f} {p.predicted_acc:>8.4f}  "
              + " ".join(str(p.params[n]) for n in names))
    if args.out:
        write_proxy_front_csv(args.out, front)
        print(f"wrote {args.out}")
    if args.figure:
        import pandas as pd

        from speq_search.analysis.figures.proxy_front import proxy_front_data, render_proxy_front
        from speq_search.analysis.plots import write_figure

        data = proxy_front_data(pd.DataFrame(front.rows()), front.metric, title=f"{spec.name}: proxy front from sensitivity")
        print(write_figure(render_proxy_front(data), Path(args.figure), png=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    from speq_search.export import ExportMismatch, export_run

    try:
        export_run(args.source, args.out, trial=args.trial, budget=args.budget, fold_batchnorm=args.fold_batchnorm,
                   tolerance=args.tolerance, opset=args.opset)
    except ExportMismatch as err:
        print(f"speq-search export: failed: {err}", file=sys.stderr)
        return 1
    return 0


def _print_front(summary: dict) -> None:
    import pandas as pd

    run_dir = Path(summary["run_dir"])
    from speq_search.analysis.load import read_run_csv

    front = read_run_csv(run_dir / "pareto.csv") if (run_dir / "pareto.csv").stat().st_size > 1 else pd.DataFrame()
    objectives = [o["metric"] for o in summary["objectives"]]
    infeasible = f", {summary['n_infeasible']} over budget" if summary.get("n_infeasible") else ""
    if "n_evaluated" in summary:  # a one-shot search: its front is the fine-tuned trials'
        print(f"\none-shot search: {summary['n_evaluated']} assignments evaluated on the supernet, "
              f"{summary['n_finetuned']} fine-tuned, {summary['n_failed']} failed{infeasible}; hypervolume of the "
              f"fine-tuned front {summary['hypervolume']:.4f}")
    else:
        asked = summary.get("num_samples")
        # An interrupted search ran fewer trials than it was asked for: say both.
        of = f"{summary['n_trials']} trials" + (f" ({asked} asked)" if asked and asked != summary["n_trials"] else "")
        print(f"\n{summary['n_completed']} completed, {summary['n_failed']} failed, {summary['n_stopped']} stopped early"
              f"{infeasible} of {of}; hypervolume {summary['hypervolume']:.4f}")
    if summary.get("n_at_chance"):
        print(f"warning: {summary['n_at_chance']} of {summary['n_completed']} completed trials learned nothing "
              f"(validation accuracy near chance, {100 * summary['chance_acc']:.0f} %): their front means nothing")
    if len(front):
        skip = {"status", *schema.TRIAL_COLUMNS, *schema.hidden_metrics()}
        cols = [c for c in front.columns if c not in skip and front[c].notna().any()]
        cols = objectives + [c for c in cols if c not in objectives]
        # Trials that sampled the same configuration and got the same result are one point: one row.
        shown = front[cols].drop_duplicates(subset=[c for c in cols if c != "trial_id"])
        tied = f"; {len(front) - len(shown)} tied trials not repeated" if len(shown) < len(front) else ""
        # Points as the progress line counts them: distinct objective values (two configurations may share one).
        points = len(front[objectives].drop_duplicates())
        several = f", {len(shown)} configurations" if len(shown) != points else ""
        print(f"Pareto front ({points} points{several}{tied}):")
        print(_with_intervals(shown, front).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        _print_indistinguishable(front, summary["objectives"])
    written = [n for n in ("trials.csv", "pareto.csv", "summary.json", "pareto.html", "study.db")
               if (run_dir / n).exists()]
    print(f"\nwrote {run_dir}/ ({', '.join(written)})")
    me = invocation()
    print(f"next: {me} report {run_dir} --out {run_dir}/report   (or {me} plot {run_dir} --x avg_bits)")
    if summary.get("figure_note"):
        print(summary["figure_note"])
    if summary.get("stopped_on_failures"):
        print(f"the search stopped on failed trials (see the error column of {run_dir}/trials.csv); exit code 1")
    elif summary.get("interrupted"):
        print(f"the search did not finish; continue it with: {invocation()} run --resume {run_dir}")


def invocation() -> str:
    """How this command was started, for the hints it prints (``.venv/bin/speq-search`` when that is
    what was typed; ``python -m speq_search.cli`` when run as a module)."""
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "speq-search"
    if prog.endswith((".py", "__main__")):
        return f"{sys.executable} -m speq_search.cli"
    return prog


def _with_intervals(shown, front):
    """The printed front with each accuracy's 95 % interval beside it (``[95.12, 98.20]``)."""
    from speq_search.analysis import stats

    shown = shown.copy()
    for acc in stats.SPLIT_OF:
        lo, hi = stats.interval_columns(acc)
        if acc in shown and lo in front:
            rows = front.loc[shown.index]
            at = list(shown.columns).index(acc) + 1
            shown.insert(at, f"{acc} 95%", [f"[{100 * a:.2f}, {100 * b:.2f}]" if a == a and b == b else ""
                                            for a, b in zip(rows[lo], rows[hi])])
    return shown


def _print_indistinguishable(front, objectives: list[dict]) -> None:
    """The cheapest front point the validation split cannot tell from the most accurate one."""
    from speq_search.analysis import stats

    score = next((o for o in objectives if schema.is_score(o["metric"])), None)
    cost = next((o["metric"] for o in objectives if score is None or o["metric"] != score["metric"]), None)
    if score is None or cost is None:
        return
    pick = stats.cheapest_indistinguishable(front, score["metric"], cost, score.get("mode", "max"))
    if pick is not None:
        print(f"cheapest point within the 95 % interval of the most accurate one: trial {pick['trial_id']} at "
              f"{schema.format_value(cost, pick[cost], 'text')}, {stats.with_interval(score['metric'], pick)} "
              f"(the split cannot tell them apart)")


def _listing(entries: dict[str, str]) -> int:
    width = max(len(k) for k in entries)
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc or '(no description)'}")
    return 0


# The library names arguments as Python does; the command line names its flags.
_FLAGS = {"plot": {"kind": "--kind", "x": "--x", "y": "--y", "color": "--color", "group": "--group-by"},
          "run": {"storage_path": "--storage-path", "address": "--address"},
          "train": {"out": "--out"},
          "export": {"tolerance": "--tolerance", "opset": "--opset"}}


def _as_flags(err: ConfigError, command: str) -> str:
    flag = _FLAGS.get(command, {}).get(err.field)
    return str(err) if flag is None else str(ConfigError(flag, err.value, err.accepted))


def _spaces(args: argparse.Namespace) -> int:
    from speq_search.space import shipped_spaces

    return _listing(shipped_spaces())


def _models(args: argparse.Namespace) -> int:
    from speq_search.models import list_models

    return _listing(list_models())


def _datasets(args: argparse.Namespace) -> int:
    from speq_search.data import list_datasets

    return _listing(list_datasets())


# One library call per command.
_COMMANDS = {"train": _train, "run": _run, "sensitivity": _sensitivity, "plot": _plot, "report": _report,
             "export": _export, "spaces": _spaces, "models": _models, "datasets": _datasets}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speq-search`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"speq-search {args.command}: error: {_as_flags(err, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"speq-search {args.command}: interrupted; results written so far are kept "
              "(train: continue with --resume)", file=sys.stderr)
        return 130
    except PermissionError as err:  # a folder that became unwritable after the checks at the start
        print(f"speq-search {args.command}: error: cannot write {err.filename}: {err.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:  # e.g. TrainingDiverged
        print(f"speq-search {args.command}: failed: {str(err).strip().splitlines()[0][:300]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
