"""Is the one-shot search better and cheaper than the per-trial search? (issue 26)

For each seed, on the same space (the shipped ``oneshot`` space's model, data, per-layer choices and
objectives, or ``--setting``), two searches:

- ``oneshot``: the one-shot search as shipped (a supernet, ``search.num_samples`` evaluations, the
  best ``oneshot.finetune_top`` fine-tuned): its fine-tuned front;
- ``pertrial``: the per-trial search (TPE, the same per-layer parameters, each trial trained for
  ``train.optim.epochs``), with ``--trials`` trials (enough to spend several times the one-shot's compute).

Compute is counted in image-epochs of training (forward and backward passes over one training
image): per-trial, the epochs every trial trained; one-shot, the supernet's epochs times its paths
per step (the highest, the lowest, ``paths`` random), the fine-tunes' epochs, and the evaluations'
forward passes (calibration batches and the validation split) at a third of a training pass each.
The per-trial front is taken at equal compute (its trials in the order they finished, up to the
one-shot's compute), at three times it, and at its end. Fronts are compared on (val_acc, BitOps) by
hypervolume in a box fitted to the union of the fronts compared (accuracy from the worst to the best
point of either, log10 BitOps from the cheapest to the dearest), and by the share of each front the
other weakly dominates. ``--teachers`` repeats the one-shot search with other supernet teachers
(SPEQ's in-place cosine distillation, its stochastic teacher, none) on the same seeds.
``--evaluations N ...`` repeats it with N evaluations instead of ``search.num_samples``, searching the
seed's trained supernet again (``oneshot.supernet``; its training still counted in the compute),
against the same per-trial search: what fewer evaluations cost the front.

    .venv/bin/python benchmarks/bench_oneshot_search.py --seeds 0 1 2 --out benchmarks/results/oneshot-search.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from speq_search.analysis.pareto import box_hypervolume, pareto_mask

OBJ = ["val_acc", "bitops"]


def _front(df: pd.DataFrame) -> np.ndarray:
    v = df[OBJ].dropna().to_numpy(dtype=float)
    return v[pareto_mask(v, ["max", "min"])] if len(v) else v


def _finetuned(trials: pd.DataFrame) -> pd.DataFrame:
    """A one-shot search's fine-tuned trials that completed: the rows its front comes from."""
    return trials[(trials["fidelity"] == "finetuned") & (trials["status"] == "COMPLETED")]


def coverage(a: np.ndarray, b: np.ndarray) -> float:
    """The share of ``a``'s points that some point of ``b`` weakly dominates."""
    if not len(a):
        return float("nan")
    return float(np.mean([any(q[0] >= p[0] and q[1] <= p[1] for q in b) for p in a]))


def compare(fronts: dict[str, np.ndarray]) -> dict:
    """Hypervolume of each front in the box of their union, and pairwise coverage."""
    union = np.vstack([f for f in fronts.values() if len(f)])
    ideal, reference = [union[:, 0].max(), union[:, 1].min()], [union[:, 0].min(), union[:, 1].max()]
    if ideal[0] == reference[0]:
        reference[0] -= 1e-3
    if ideal[1] == reference[1]:
        reference[1] *= 1.01
    out = {f"hv_{k}": round(box_hypervolume(f, ideal, reference, log_axes=[1]), 4) if len(f) else 0.0
           for k, f in fronts.items()}
    keys = list(fronts)
    for a in keys:
        for b in keys:
            if a != b:
                out[f"{b}_covers_{a}"] = round(coverage(fronts[a], fronts[b]), 3)
    return out


def _space(base: dict, name: str, seed: int, **changes) -> dict:
    raw = json.loads(json.dumps(base))
    raw["name"] = name
    raw["search"] = {**raw.get("search", {}), "seed": seed}
    raw["train"] = {**raw["train"], "seed": seed, "progress": False}
    for key, value in changes.items():
        raw[key] = value
    return {k: v for k, v in raw.items() if v is not None}


def _run(raw: dict, folder: Path) -> tuple[pd.DataFrame, dict, float]:
    from speq_search.search import RunOptions, run_search
    from speq_search.space import parse_space

    started = time.perf_counter()
    summary = run_search(parse_space(raw), folder / raw["name"], RunOptions(log=lambda msg: None))
    wall = time.perf_counter() - started
    trials = pd.read_csv(folder / raw["name"] / "trials.csv", dtype={"trial_id": str})
    return trials, summary, wall


def oneshot_compute(raw: dict, trials: pd.DataFrame, n_train: int, n_val: int) -> dict:
    """Image-epochs of a one-shot search (see the module docstring)."""
    shot = raw["oneshot"]
    paths = 2 + shot.get("paths", 2) + (shot.get("paths", 2) + 1 if shot.get("teacher") == "stochastic" else 0) / 3
    supernet = shot.get("supernet_epochs", 15) * paths * n_train
    tuned = trials[trials["fidelity"] == "finetuned"]
    finetune = float(tuned["epochs_done"].sum()) * n_train
    batch = raw["train"].get("data", {}).get("batch_size", 64)
    evaluations = (trials["fidelity"] == "supernet").sum() * (shot.get("calibration_batches", 8) * batch + n_val) / 3
    return {"supernet": supernet, "finetune": finetune, "evaluations": float(evaluations),
            "total": supernet + finetune + float(evaluations)}


def pertrial_prefix(trials: pd.DataFrame, n_train: int, budget: float) -> pd.DataFrame:
    """The per-trial search's trials that finished within ``budget`` image-epochs (in finishing order)."""
    done = trials[trials["status"].isin(["COMPLETED", "INFEASIBLE"])].copy()
    spent = (done["epochs_done"].fillna(0) * n_train).cumsum()
    return done[spent <= budget + 1e-9]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=48, help="per-trial search budget")
    parser.add_argument("--space", default="oneshot", help="a one-shot space (shipped name or file)")
    parser.add_argument("--teachers", nargs="*", default=[], help="also run the one-shot search with these teachers")
    parser.add_argument("--evaluations", type=int, nargs="*", default=[],
                        help="also run the one-shot search with these many evaluations (reusing the supernet)")
    parser.add_argument("--folder", default="/tmp/bench-oneshot-search")
    parser.add_argument("--out", help="write the figures as JSON here (kept between runs: seeds done are skipped)")
    parser.add_argument("--summary", action="store_true", help="only print the summary of --out")
    args = parser.parse_args()
    if args.summary:
        summarise(json.loads(Path(args.out).read_text()))
        return
    from speq_search.space import load_space
    from speq_search.train import load_data

    spec = load_space(args.space)
    base = spec.to_dict()  # the resolved space (absolute data folder)
    splits = load_data(spec.train)
    n_train, n_val = len(splits.train), len(splits.val)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).exists() else {"runs": []}
    done = {(r["seed"], r.get("teacher", "inplace")) for r in results["runs"]}
    done_evals = {(r["seed"], r["evaluations"]) for r in results.get("fewer_evaluations", [])}
    for seed in args.seeds:
        todo = [(teacher, None) for teacher in ["inplace", *args.teachers] if (seed, teacher) not in done]
        todo += [("inplace", n) for n in args.evaluations if (seed, n) not in done_evals]
        for teacher, evaluations in todo:
            if evaluations is None:
                results["runs"].append(one_seed(base, folder, seed, teacher, args.trials, n_train, n_val))
                record = results["runs"][-1]
            else:
                record = fewer_evaluations(base, folder, seed, evaluations, n_train, n_val)
                results.setdefault("fewer_evaluations", []).append(record)
            print(json.dumps(record), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    summarise(results)


def one_seed(base: dict, folder: Path, seed: int, teacher: str, budget: int, n_train: int, n_val: int) -> dict:
    shot = {**base["oneshot"], "teacher": teacher}
    raw_shot = _space(base, f"oneshot-{teacher}-s{seed}", seed, oneshot=shot)
    shot_trials, shot_summary, shot_wall = _run(raw_shot, folder)
    compute = oneshot_compute(raw_shot, shot_trials, n_train, n_val)
    record = {"seed": seed, "teacher": teacher, "oneshot_wall_s": round(shot_wall, 1), "oneshot_compute": compute}
    tuned = _finetuned(shot_trials)
    predicted = tuned[["supernet_val_acc", "val_acc"]].dropna()
    if len(predicted) >= 3:
        from scipy.stats import kendalltau

        record["finetuned_tau"] = round(float(kendalltau(predicted["supernet_val_acc"], predicted["val_acc"]).statistic), 3)
    if teacher != "inplace":
        record["front"] = _front(tuned).tolist()
        return record
    raw_trial = _space(base, f"pertrial-s{seed}", seed, oneshot=None,
                       search={**base.get("search", {}), "num_samples": budget, "seed": seed})
    trial_trials, _, trial_wall = _run(raw_trial, folder)
    record.update(pertrial_wall_s=round(trial_wall, 1))
    record.update(against_pertrial(_front(tuned), compute["total"], trial_trials, n_train, {"equal": 1, "triple": 3, "end": None}))
    return record


def against_pertrial(front: np.ndarray, compute: float, trial_trials: pd.DataFrame, n_train: int, labels: dict) -> dict:
    """The one-shot ``front`` (of ``compute`` image-epochs) against the per-trial search's fronts taken
    at each ``labels`` multiple of that compute (None: its end): hypervolumes, coverage, trial counts."""
    spent = float((trial_trials["epochs_done"].fillna(0) * n_train).sum())
    out = {"pertrial_compute": spent, "compute_ratio_oneshot_over_pertrial": round(compute / spent, 3)}
    fronts = {"oneshot": front}
    for label, factor in labels.items():
        part = trial_trials if factor is None else pertrial_prefix(trial_trials, n_train, compute * factor)
        fronts[f"pertrial_{label}"] = _front(part)
        out[f"pertrial_{label}_trials"] = int(len(part))
        out[label] = compare({"oneshot": front, "pertrial": fronts[f"pertrial_{label}"]})
    out["fronts"] = {k: v.tolist() for k, v in fronts.items()}
    return out


def fewer_evaluations(base: dict, folder: Path, seed: int, evaluations: int, n_train: int, n_val: int) -> dict:
    """The seed's in-place one-shot search again with ``evaluations`` evaluations of its trained supernet,
    against the seed's per-trial search (both must have run)."""
    supernet = folder / f"oneshot-inplace-s{seed}" / "supernet.pt"
    pertrial = folder / f"pertrial-s{seed}" / "trials.csv"
    if not supernet.exists() or not pertrial.exists():
        raise SystemExit(f"--evaluations needs seed {seed}'s one-shot and per-trial runs in {folder} first")
    raw = _space(base, f"oneshot-inplace-s{seed}-e{evaluations}", seed, oneshot={**base["oneshot"], "supernet": str(supernet)},
                 search={**base.get("search", {}), "num_samples": evaluations, "seed": seed})
    trials, _, wall = _run(raw, folder)
    compute = oneshot_compute(raw, trials, n_train, n_val)
    tuned = _finetuned(trials)
    trial_trials = pd.read_csv(pertrial, dtype={"trial_id": str})
    record = {"seed": seed, "evaluations": evaluations, "wall_s_without_supernet": round(wall, 1), "oneshot_compute": compute}
    record.update(against_pertrial(_front(tuned), compute["total"], trial_trials, n_train, {"equal": 1, "end": None}))
    return record


def summarise(results: dict) -> None:
    for r in results.get("fewer_evaluations", []):
        print(f"seed {r['seed']}, {r['evaluations']} evaluations: compute {r['compute_ratio_oneshot_over_pertrial']}x the "
              f"per-trial search's; HV one-shot / per-trial at its end {r['end']['hv_oneshot']:.3f} / "
              f"{r['end']['hv_pertrial']:.3f}, one-shot covers {r['end']['oneshot_covers_pertrial']:.0%} of it")
    rows = [r for r in results["runs"] if r["teacher"] == "inplace" and "equal" in r]
    if not rows:
        return
    for label in ("equal", "triple", "end"):
        ratio = [r[label]["hv_oneshot"] / max(r[label]["hv_pertrial"], 1e-9) for r in rows]
        print(f"{label:>6}: one-shot / per-trial hypervolume {np.mean(ratio):.3f} (seeds: "
              + ", ".join(f"{x:.3f}" for x in ratio) + ")")
    print("compute one-shot / per-trial (whole): " + ", ".join(str(r["compute_ratio_oneshot_over_pertrial"]) for r in rows))
    summarise_teachers(results)


def summarise_teachers(results: dict) -> None:
    """Per seed, the fine-tuned fronts of the supernet teachers in one box (hypervolume, coverage),
    and Kendall's tau of each between the supernet's and the fine-tuned accuracy."""
    by_seed: dict[int, dict[str, dict]] = {}
    for r in results["runs"]:
        by_seed.setdefault(r["seed"], {})[r["teacher"]] = r
    teachers = sorted({r["teacher"] for r in results["runs"]}, key=["inplace", "stochastic", "none"].index)
    if len(teachers) < 2:
        return
    hv: dict[str, list[float]] = {t: [] for t in teachers}
    for seed, runs in sorted(by_seed.items()):
        if set(runs) != set(teachers):
            continue
        fronts = {t: np.array(runs[t]["front"] if "front" in runs[t] else runs[t]["fronts"]["oneshot"]) for t in teachers}
        cmp = compare(fronts)
        for t in teachers:
            hv[t].append(cmp[f"hv_{t}"])
        print(f"seed {seed}: " + ", ".join(f"{t} HV {cmp[f'hv_{t}']:.3f} tau {runs[t].get('finetuned_tau', float('nan')):+.2f}"
                                        for t in teachers))
    for t in teachers:
        taus = [r.get("finetuned_tau", np.nan) for r in results["runs"] if r["teacher"] == t]
        print(f"{t:>10}: mean HV in the teachers' box {np.mean(hv[t]):.3f}, mean tau {np.nanmean(taus):+.2f}")


if __name__ == "__main__":
    main()
