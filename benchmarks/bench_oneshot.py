"""Does the one-shot supernet rank per-layer assignments as stand-alone training does? (issue 26)

Draws N distinct random assignments of a per-layer space (granularity ``layer``, w/a bits in
{2, 3, 4, 8}), trains each stand-alone with QAT (``speq_search.train.run``, as a search trial
does) for every seed, trains supernets (``train_supernet``: a base design and its variants,
for every supernet seed) and evaluates every assignment on each (``evaluate_assignment``).
Reports Kendall's tau between the supernet's accuracy and the stand-alone mean, on validation
(and test), with a 95 % bootstrap interval over assignments, beside the noise ceiling: tau
between one stand-alone seed and the mean of the others, averaged over the choice of seed.

Every finished piece (a stand-alone run, a supernet with its evaluations) is appended to
``--out`` as one JSON line at once, and running the same command again skips what is there;
a supernet cut mid-training resumes from its checkpoint in ``--work``. Processes use one torch
thread each; ``--jobs`` (at most 2 here) run side by side.

    python benchmarks/bench_oneshot.py rank --setting digits --out benchmarks/results/oneshot-digits.jsonl
    python benchmarks/bench_oneshot.py rank --setting digits --variants base teacher-none --supernet-seeds 0 1 2 ...
    python benchmarks/bench_oneshot.py report benchmarks/results/oneshot-digits.jsonl
    python benchmarks/bench_oneshot.py throughput [--out FILE]
    python benchmarks/bench_oneshot.py rank --quick --out /tmp/q.jsonl       # a smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BITS = [2, 3, 4, 8]
# Each setting: the TrainConfig changes of a normal per-layer search (QAT, 8 epochs) on that data.
SETTINGS: dict[str, dict] = {
    "digits": {"data.dataset": "digits", "data.batch_size": 64, "model.name": "cnn-small", "model.width": 0.25,
               "speq.method": "qat", "optim.epochs": 8, "optim.fp_epochs": 30, "optim.lr": 0.02},
    "fashion": {"data.dataset": "fashion-mnist", "data.data_dir": str(ROOT / ".data"), "data.train_size": 6000,
                "data.batch_size": 64, "model.name": "cnn-small", "model.width": 0.5, "speq.method": "qat",
                "optim.epochs": 8, "optim.fp_epochs": 15, "optim.lr": 0.02,
                "speq.eval_draws": 0},  # no teacher diagnostic (QAT): it would evaluate 6,000 images twice more per epoch
}
# Supernet designs: changes of the config (quant.*) or of the OneShotConfig (oneshot.*) from the base.
BASE_ONESHOT = {"supernet_epochs": 15, "paths": 2, "teacher": "inplace", "kd_weight": 1.0}
VARIANTS: dict[str, dict] = {
    "base": {},
    "teacher-stochastic": {"oneshot.teacher": "stochastic"},
    "teacher-none": {"oneshot.teacher": "none"},
    "paths-0": {"oneshot.paths": 0},
    "paths-4": {"oneshot.paths": 4},
    "shared-scales": {"quant.per_bit_scales": False},
    "epochs-8": {"oneshot.supernet_epochs": 8},
    "epochs-30": {"oneshot.supernet_epochs": 30},
}
# How an assignment is evaluated on a trained supernet (OneShotConfig fields; no retraining).
EVALS: dict[str, dict] = {
    "recalibrate": {"bn": "recalibrate", "calibration_batches": 8},
    "batch": {"bn": "batch"},
    "recalibrate-32": {"bn": "recalibrate", "calibration_batches": 32},
}


# ----------------------------------------------------------------------------- configs
def base_config(setting: str, quick: bool = False, sets: dict | None = None):
    from speq_search import TrainConfig

    changes = dict(SETTINGS[setting], **(sets or {}))
    if quick:
        changes.update({"optim.epochs": 2, "optim.fp_epochs": 3})
    return TrainConfig(progress=False, compile="off").replace(**changes)


def setting_key(cfg) -> str:
    """A short hash of the stand-alone config: rows of another config never mix."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]


def space_choices(cfg) -> dict:
    from speq_search.quant import layer_groups
    from speq_search.train import build_model, load_data

    groups = layer_groups(build_model(cfg, load_data(cfg)), "layer", cfg.quant.first_last_bits)
    choices = {g: {k: list(BITS) for k, searchable in kinds.items() if searchable} for g, kinds in groups.items()}
    return {g: kinds for g, kinds in choices.items() if kinds}


def draw_assignments(choices: dict, n: int, seed: int = 1234) -> list[dict]:
    """``n`` distinct random assignments (the same for every run of the benchmark)."""
    import torch

    from speq_search.train import random_assignment

    gen, seen, out = torch.Generator().manual_seed(seed), set(), []
    while len(out) < n:
        a = random_assignment(choices, gen)
        key = json.dumps(a, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def variant_configs(cfg, variant: str, quick: bool):
    """(TrainConfig, OneShotConfig) of a supernet design; per-bit scales on unless the variant says."""
    from speq_search.config import OneShotConfig

    oneshot = dict(BASE_ONESHOT, **({"supernet_epochs": 2} if quick else {}))
    quant = {"quant.per_bit_scales": True}
    for key, value in VARIANTS[variant].items():
        section, _, name = key.partition(".")
        (oneshot if section == "oneshot" else quant)[name if section == "oneshot" else key] = value
    return cfg.replace(**quant), OneShotConfig(**oneshot)


# ----------------------------------------------------------------------------- work (in worker processes)
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def standalone_task(cfg_dict: dict, index: int, assignment: dict, seed: int) -> dict:
    """One stand-alone QAT run of ``assignment``: what a search trial would report."""
    from speq_search import TrainConfig
    from speq_search.train import assignment_quant, run

    cfg = TrainConfig.from_dict(cfg_dict).replace(seed=seed)
    cfg = cfg.evolve({"quant": assignment_quant(cfg.quant, assignment)})
    t0 = time.time()
    m = run(cfg, None, log=lambda msg: None)
    keep = ("val_acc", "test_acc", "avg_w_bits", "avg_a_bits", "avg_bits", "bitops", "size_bytes",
            "fp_val_acc", "fp_test_acc", "best_epoch", "step_time_s")
    return {"kind": "standalone", "index": index, "seed": seed, "assignment": assignment,
            **{k: m[k] for k in keep}, "seconds": round(time.time() - t0, 1)}


def supernet_task(cfg_dict: dict, oneshot_dict: dict, variant: str, seed: int, choices: dict,
                  assignments: list[dict], work: str) -> dict:
    """Train (or resume) one supernet and evaluate every assignment on it, every way of :data:`EVALS`."""
    import torch

    from speq_search import TrainConfig
    from speq_search.config import OneShotConfig
    from speq_search.train import evaluate_assignment, load_data, load_supernet, train_supernet

    cfg = TrainConfig.from_dict(cfg_dict).replace(seed=seed)
    oneshot = OneShotConfig(**oneshot_dict)
    folder = Path(work)
    if not (folder / "supernet.pt").exists():
        resume = (folder / "checkpoint.pt").exists()
        train_supernet(cfg, oneshot, choices, folder, resume=resume, log=lambda msg: None)
    meta_metrics = json.loads((folder / "metrics.json").read_text())
    train_s = meta_metrics["train_time_s"]  # of the last session when resumed
    splits = load_data(cfg)
    model, _ = load_supernet(folder / "supernet.pt", cfg, splits, choices)
    device = torch.device("cpu")
    evals, eval_s = {}, {}
    for name, changes in EVALS.items():
        how = oneshot.evolve(changes)
        t1 = time.time()
        rows = [evaluate_assignment(model, a, splits, cfg, how, device, test=True) for a in assignments]
        eval_s[name] = round((time.time() - t1) / len(assignments), 4)
        evals[name] = [{"val_acc": r["val_acc"], "test_acc": r["test_acc"], "val_loss": r["val_loss"]} for r in rows]
    return {"kind": "supernet", "variant": variant, "seed": seed, "oneshot": oneshot_dict,
            "per_bit_scales": cfg.quant.per_bit_scales, "metrics": meta_metrics, "evals": evals,
            "eval_s_per_assignment": eval_s, "train_s": round(train_s, 1)}


# ----------------------------------------------------------------------------- statistics
def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic  # tau-b: ties (equal accuracies) are common on small data
    return float(tau) if tau == tau else 0.0


def mean_over(rows: list[dict], n: int, key: str) -> list[float]:
    """Per assignment, the mean of ``key`` over ``rows`` (stand-alone runs)."""
    sums = [[] for _ in range(n)]
    for r in rows:
        sums[r["index"]].append(r[key])
    return [statistics.fmean(v) for v in sums]


def ceiling(by_seed: dict[int, list[float]], idx: list[int]) -> float:
    """Tau between one seed and the mean of the others, averaged over the seed left out."""
    seeds = sorted(by_seed)
    if len(seeds) < 2:  # one seed has no others to be compared with
        return float("nan")
    taus = []
    for s in seeds:
        rest = [statistics.fmean(by_seed[o][i] for o in seeds if o != s) for i in idx]
        taus.append(kendall([by_seed[s][i] for i in idx], rest))
    return statistics.fmean(taus)


def bootstrap(stat, n: int, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` over assignments resampled with replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = sorted(stat(list(rng.integers(0, n, n))) for _ in range(reps))
    return values[int(0.025 * reps)], values[int(0.975 * reps) - 1]


# ----------------------------------------------------------------------------- the benchmark
def read_rows(path: Path, key: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if key is None or r.get("key") == key]


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def rank(args) -> int:
    cfg = base_config(args.setting, args.quick, _sets(args.set))
    cfg = cfg.replace(fp_cache_dir=str(Path(args.work) / "fp"))
    key = setting_key(cfg)
    choices = space_choices(cfg)
    assignments = draw_assignments(choices, args.n)
    out = Path(args.out)
    rows = read_rows(out, key)
    done_sa = {(r["index"], r["seed"]) for r in rows if r["kind"] == "standalone"}
    # A supernet is done when it evaluated every assignment (a larger --n evaluates it again).
    done_sn = {(r["variant"], r["seed"]) for r in rows
               if r["kind"] == "supernet" and len(r["evals"]["recalibrate"]) >= len(assignments)}
    jobs = []
    if not args.supernets_only:
        jobs += [("sa", i, s) for s in args.seeds for i in range(len(assignments)) if (i, s) not in done_sa]
    jobs += [("sn", v, s) for v in args.variants for s in args.supernet_seeds if (v, s) not in done_sn]
    print(f"{args.setting} ({key}): {len(choices)} groups, {len(assignments)} assignments, {len(jobs)} jobs to do",
          file=sys.stderr, flush=True)
    # The float models first, one per seed (every later job of that seed reads it from the cache).
    seeds = sorted({s for kind, _, s in jobs})
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, initializer=_init_worker) as pool:
        list(pool.map(_fp_model, [cfg.replace(seed=s).to_dict() for s in seeds]))
        futures = {}
        for kind, what, seed in jobs:
            if kind == "sa":
                fut = pool.submit(standalone_task, cfg.to_dict(), what, assignments[what], seed)
            else:
                scfg, oneshot = variant_configs(cfg, what, args.quick)
                work = Path(args.work) / f"{args.setting}-{key}" / f"{what}-s{seed}"
                fut = pool.submit(supernet_task, scfg.to_dict(), oneshot.to_dict(), what, seed, choices, assignments,
                                  str(work))
            futures[fut] = (kind, what, seed)
        for i, fut in enumerate(cf.as_completed(futures), 1):
            row = dict(fut.result(), key=key, setting=args.setting)
            append(out, row)
            kind, what, seed = futures[fut]
            label = f"assignment {what}" if kind == "sa" else f"supernet {what}"
            acc = row["val_acc"] if kind == "sa" else statistics.fmean(e["val_acc"] for e in row["evals"]["recalibrate"])
            print(f"[{i}/{len(jobs)}] {label} seed {seed}: val {100 * acc:.2f} "
                  f"({row.get('seconds', row.get('train_s'))} s)", file=sys.stderr, flush=True)
    print(report(read_rows(out, key), args.setting))
    return 0


def _fp_model(cfg_dict: dict) -> None:
    from speq_search import TrainConfig
    from speq_search.train import full_precision_model, load_data, resolve_device

    cfg = TrainConfig.from_dict(cfg_dict)
    full_precision_model(cfg, load_data(cfg), resolve_device("cpu"), log=lambda msg: None)


def _sets(items: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in items)}


# ----------------------------------------------------------------------------- the report
def report(rows: list[dict], setting: str = "") -> str:
    """Markdown: tau of every supernet design and evaluation against the stand-alone mean, the ceiling."""
    sa = [r for r in rows if r["kind"] == "standalone"]
    if not sa:
        return "no stand-alone runs yet"
    n = max(r["index"] for r in sa) + 1
    seeds = sorted({r["seed"] for r in sa})
    complete = [i for i in range(n) if sum(r["index"] == i for r in sa) == len(seeds)]
    by_seed = {s: {r["index"]: r for r in sa if r["seed"] == s} for s in seeds}
    val = {s: {i: by_seed[s][i]["val_acc"] for i in complete} for s in seeds}
    test = {s: {i: by_seed[s][i]["test_acc"] for i in complete} for s in seeds}
    mean_val = {i: statistics.fmean(val[s][i] for s in seeds) for i in complete}
    mean_test = {i: statistics.fmean(test[s][i] for s in seeds) for i in complete}
    accs = [100 * v for v in mean_val.values()]
    lines = [f"### {setting}: {len(complete)} assignments x {len(seeds)} seeds stand-alone",
             f"stand-alone mean val accuracy: {min(accs):.2f} to {max(accs):.2f} % (median {statistics.median(accs):.2f}); "
             f"seed sd per assignment {_seed_sd(val, complete):.2f} points", ""]

    def sub(idx_positions):
        return [complete[p] for p in idx_positions]

    ceil_val = ceiling(val, complete)
    ceil_test = ceiling(test, complete)
    lo, hi = bootstrap(lambda p: ceiling(val, sub(p)), len(complete))
    lines.append(f"noise ceiling (one seed against the mean of the others): val {ceil_val:.3f} [{lo:.3f}, {hi:.3f}], "
                 f"test {ceil_test:.3f}")
    proxy = kendall([by_seed[seeds[0]][i]["avg_bits"] for i in complete], [mean_val[i] for i in complete])
    lines.append(f"a cost as ranker (average bits, no training): val {proxy:.3f}")
    lines += ["", "| design | evaluation | supernet seeds | tau val [95 % CI] | tau test | per seed (val) | "
              "− base per seed | top-1 regret (pts) | highest / lowest val | train s | eval s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    latest = {}  # per design and seed, its last record that evaluated every assignment in the table
    for r in rows:
        if r["kind"] == "supernet" and len(r["evals"]["recalibrate"]) > max(complete):
            latest[(r["variant"], r["seed"])] = r
    sn = list(latest.values())
    base_tau = {}
    for variant in [v for v in VARIANTS if any(r["variant"] == v for r in sn)]:
        for how in EVALS:
            runs = sorted((r for r in sn if r["variant"] == variant and how in r["evals"]), key=lambda r: r["seed"])
            if not runs:
                continue
            lines.append(_design_row(variant, how, runs, complete, mean_val, mean_test, base_tau))
            if len(runs) > 1 and how == "recalibrate":
                lines.append(_ensemble_row(variant, how, runs, complete, mean_val, mean_test))
    return "\n".join(lines)


def _ensemble_row(variant, how, runs, complete, mean_val, mean_test) -> str:
    """The supernets of every seed as one ranker: each assignment's accuracy averaged over them."""
    avg = {key: {i: statistics.fmean(r["evals"][how][i][key] for r in runs) for i in complete}
           for key in ("val_acc", "test_acc")}

    def tau(idx, key="val_acc", target=mean_val):
        return kendall([avg[key][i] for i in idx], [target[i] for i in idx])

    lo, hi = bootstrap(lambda p: tau([complete[j] for j in p]), len(complete))
    regret = 100 * (max(mean_val.values()) - mean_val[max(complete, key=lambda i: avg["val_acc"][i])])
    return (f"| {variant}, mean of the {len(runs)} supernets | {how} | {len(runs)} | {tau(complete):.3f} "
            f"[{lo:.3f}, {hi:.3f}] | {tau(complete, 'test_acc', mean_test):.3f} | - | - | {regret:.2f} | | | |")


def _seed_sd(val: dict, complete: list[int]) -> float:
    seeds = sorted(val)
    if len(seeds) < 2:
        return float("nan")
    return 100 * statistics.fmean(statistics.stdev(val[s][i] for s in seeds) for i in complete)


def _design_row(variant, how, runs, complete, mean_val, mean_test, base_tau) -> str:
    def taus(run, idx, target, key="val_acc"):
        return kendall([run["evals"][how][i][key] for i in idx], [target[i] for i in idx])

    per_seed = {r["seed"]: taus(r, complete, mean_val) for r in runs}
    tau_val = statistics.fmean(per_seed.values())
    tau_test = statistics.fmean(taus(r, complete, mean_test, "test_acc") for r in runs)
    lo, hi = bootstrap(lambda p: statistics.fmean(taus(r, [complete[j] for j in p], mean_val) for r in runs),
                       len(complete))
    if variant == "base":
        base_tau[how] = per_seed
    ref = base_tau.get(how, {})
    diffs = [per_seed[s] - ref[s] for s in per_seed if s in ref] if variant != "base" else []
    best = max(mean_val.values())
    regret = statistics.fmean(
        100 * (best - mean_val[max(complete, key=lambda i: r["evals"][how][i]["val_acc"])]) for r in runs)
    hl = statistics.fmean(r["metrics"]["high_val_acc"] for r in runs), statistics.fmean(
        r["metrics"]["low_val_acc"] for r in runs)
    sd = f" ± {statistics.stdev(per_seed.values()):.3f}" if len(runs) > 1 else ""
    return (f"| {variant} | {how} | {len(runs)} | {tau_val:.3f}{sd} [{lo:.3f}, {hi:.3f}] | {tau_test:.3f} | "
            f"{', '.join(f'{t:.2f}' for t in per_seed.values())} | "
            f"{', '.join(f'{d:+.2f}' for d in diffs) if diffs else '-'} | {regret:.2f} | "
            f"{100 * hl[0]:.1f} / {100 * hl[1]:.1f} | {statistics.fmean(r['train_s'] for r in runs):.0f} | "
            f"{statistics.fmean(r['eval_s_per_assignment'][how] for r in runs):.3f} |")


# ----------------------------------------------------------------------------- throughput
def throughput(args) -> int:
    """Evaluations per second on a supernet, and the supernet step against a QAT step."""
    import torch

    torch.set_num_threads(1)
    results = [_throughput_one(name, args.quick) for name in ("cnn-small-digits", "resnet20-random32")]
    for r in results:
        print(json.dumps(r))
        if args.out:
            append(Path(args.out), r)
    return 0


def _throughput_one(name: str, quick: bool) -> dict:
    import tempfile

    import torch

    from speq_search import TrainConfig
    from speq_search.config import OneShotConfig
    from speq_search.train import evaluate_assignment, load_data, load_supernet, random_assignment, train_supernet

    changes = {"cnn-small-digits": {"model.width": 0.25, "optim.fp_epochs": 3},
               "resnet20-random32": {"model.name": "resnet20", "data.dataset": "random32", "optim.fp_epochs": 1}}[name]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(progress=False, compile="off", fp_cache_dir=f"{tmp}/fp").replace(
            **{"speq.method": "qat", "quant.per_bit_scales": True, **changes})
        choices = space_choices(cfg)
        oneshot = OneShotConfig(supernet_epochs=1)
        train_supernet(cfg, oneshot, choices, f"{tmp}/sn", log=lambda m: None)
        splits = load_data(cfg)
        model, _ = load_supernet(f"{tmp}/sn/supernet.pt", cfg, splits, choices)
        gen = torch.Generator().manual_seed(0)
        out = {"workload": name, "groups": len(choices), "val_size": len(splits.val), "threads": 1}
        for how in ("recalibrate", "batch"):
            evaluate_assignment(model, random_assignment(choices, gen), splits, cfg, oneshot.evolve({"bn": how}),
                                torch.device("cpu"))  # warm-up
            k = 5 if quick else 30
            t0 = time.perf_counter()
            for _ in range(k):
                evaluate_assignment(model, random_assignment(choices, gen), splits, cfg, oneshot.evolve({"bn": how}),
                                    torch.device("cpu"))
            out[f"evals_per_s_{how}"] = round(k / (time.perf_counter() - t0), 2)
        out.update(_step_ratio(cfg, oneshot, choices, splits, rounds=5 if quick else 30))
    return out


def _step_ratio(cfg, oneshot, choices, splits, rounds: int) -> dict:
    """Median time of the supernet step (highest, lowest, 2 random paths) and of a QAT step, interleaved."""
    import torch

    from speq_search.train import SupernetTraining, make_optimizer, make_step, prepare_student, resolve_device

    device = resolve_device("cpu")
    sn = SupernetTraining(cfg, oneshot, choices, splits, device, log=lambda m: None)
    qat_cfg = cfg.replace(**{"quant.per_bit_scales": False, "quant.w_bits": 4, "quant.a_bits": 4})
    from speq_search.train import full_precision_model

    fp, _ = full_precision_model(qat_cfg, splits, device, log=lambda m: None)
    student = prepare_student(qat_cfg, fp, splits, device)
    qat_step = make_step(qat_cfg, student, None, torch.Generator().manual_seed(0), device)
    qat_opt = make_optimizer(student, qat_cfg, 0.01)
    x, y = splits.train.x[:cfg.data.batch_size], splits.train.y[:cfg.data.batch_size]

    def qat():
        qat_opt.zero_grad(set_to_none=True)
        qat_step(x, y)[0].backward()
        qat_opt.step()

    def supernet():
        sn.optimizer.zero_grad(set_to_none=True)
        sn.step(x, y)
        sn.optimizer.step()

    times = {"qat": [], "supernet": []}
    for r in range(rounds + 3):
        for label, fn in (("qat", qat), ("supernet", supernet)):
            t0 = time.perf_counter()
            fn()
            if r >= 3:
                times[label].append(time.perf_counter() - t0)
    q, s = statistics.median(times["qat"]), statistics.median(times["supernet"])
    return {"qat_step_s": round(q, 5), "supernet_step_s": round(s, 5), "supernet_over_qat": round(s / q, 2),
            "paths": 2 + oneshot.paths, "batch": cfg.data.batch_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rank", help="stand-alone runs, supernets, and the report")
    r.add_argument("--setting", choices=list(SETTINGS), default="digits")
    r.add_argument("--n", type=int, default=24, help="random assignments")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="stand-alone seeds")
    r.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["base"])
    r.add_argument("--supernet-seeds", nargs="+", type=int, default=[0])
    r.add_argument("--supernets-only", action="store_true", help="skip stand-alone runs not yet done")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--work", default=str(ROOT / ".bench-oneshot"), help="float models and supernet folders")
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true", help="6 assignments, 2 seeds, 2 epochs: a smoke run")
    rep = sub.add_parser("report", help="the tables of a results file")
    rep.add_argument("rows")
    t = sub.add_parser("throughput", help="evaluations per second; supernet step against a QAT step")
    t.add_argument("--out")
    t.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.command == "report":
        rows = read_rows(Path(args.rows))
        for key in dict.fromkeys(r["key"] for r in rows):
            mine = [r for r in rows if r["key"] == key]
            print(report(mine, f"{mine[0]['setting']} ({key})") + "\n")
        return 0
    if args.command == "throughput":
        return throughput(args)
    if args.quick:
        args.n, args.seeds, args.supernet_seeds = 6, args.seeds[:2], args.supernet_seeds[:1]
    return rank(args)


if __name__ == "__main__":
    sys.exit(main())
