"""Cheaper per-trial searches (issue 27), replayed on pools of trained configurations.

Each pool (``benchmarks/pool.py``) holds configurations of a per-layer space trained once, each
with its per-epoch validation curve. Searches are then replayed on the recorded results instead of
training again (training is seeded: a configuration always gives the same curve):

``schedulers``  fifo, accuracy-only ASHA (Ray's rule: stop below the (1 - 1/eta) quantile of the
                rung's accuracies) and the Pareto-aware rule (``speq_search.search.scheduler.ParetoRungs``,
                the code the Ray scheduler runs), on the same seeded random order of the pool, two
                trials at a time, epoch by epoch; fifo runs ``--trials`` trials, the others go on until
                they have trained as many epochs. Hypervolume of the completed trials' front against
                cumulative trained epochs. Also Spearman's rho between each epoch's accuracy (best
                so far, what a rung sees) and the final one: how much a rung can know.
``proxy``       Spearman correlation between the proxy's predicted order (summed loss increase, or
                accuracy drop) and the trained accuracy; hypervolume with and without the proxy warm
                start at 8, 16 and 24 trials (TPE).
``samplers``    tpe, nsga2, random and gp, with and without the proxy warm start: hypervolume at a
                third of the budget and trials to reach 0.95 of the pool front's.

Hypervolume: val_acc against log10(bitops), normalised to the range of the union of the fronts
compared (ideal: the best value of each objective there; reference: the worst plus 10 % of the range).

    python benchmarks/bench_cheaper.py schedulers --pool benchmarks/results/pool-digits-per-layer.jsonl --trials 24
    python benchmarks/bench_cheaper.py proxy --pool ... --space per-layer
    python benchmarks/bench_cheaper.py samplers --pool ... --space per-layer --budget 48 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from speq_search.analysis.pareto import box_hypervolume, pareto_mask

OBJECTIVES = [("val_acc", "max"), ("bitops", "min")]
WORKERS = 2


# ----------------------------------------------------------------------------------- the pool
def load_pool(path: str) -> list[dict]:
    """The pool's configurations (each: params, costs, feasible, curve, final)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def point(entry: dict) -> tuple[float, float]:
    return float(entry["final"]["val_acc"]), float(entry["costs"]["bitops"])


def box(fronts: list[np.ndarray], margin: float = 0.1) -> tuple[list[float], list[float]]:
    """Ideal and reference of the union of ``fronts`` (rows val_acc, bitops): bitops on a log10 axis."""
    pts = np.vstack([f for f in fronts if len(f)])
    pts = pts[pareto_mask(pts, ["max", "min"])]
    acc, cost = pts[:, 0], np.log10(pts[:, 1])
    ideal = [acc.max(), cost.min()]
    worst = [acc.min(), cost.max()]
    span = [max(ideal[0] - worst[0], 1e-9), max(worst[1] - ideal[1], 1e-9)]
    return ideal, [worst[0] - margin * span[0], worst[1] + margin * span[1]]


def hv(points, ideal, reference) -> float:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if not len(pts):
        return 0.0
    logged = np.column_stack([pts[:, 0], np.log10(pts[:, 1])])
    return box_hypervolume(logged, ideal, reference)


# ----------------------------------------------------------------------------- the schedulers
class AccuracyASHA:
    """Ray Tune's ASHA rule (``ray.tune.schedulers.AsyncHyperBandScheduler``, one bracket) on val_acc alone:
    at the highest rung a trial reaches, stop it below the (1 - 1/eta) quantile of the accuracies recorded there."""

    def __init__(self, rungs, eta):
        self.rungs, self.eta = sorted(rungs, reverse=True), eta
        self.recorded = {r: {} for r in self.rungs}

    def record(self, key, epoch, values):
        for rung in self.rungs:
            if epoch < rung or key in self.recorded[rung]:
                continue
            at = self.recorded[rung]
            cutoff = np.nanpercentile(list(at.values()), (1 - 1 / self.eta) * 100) if at else None
            at[key] = values["val_acc"]
            return cutoff is not None and values["val_acc"] < cutoff
        return False


def make_rule(kind: str, epochs: int, grace: int, eta: int):
    from speq_search.search.scheduler import ParetoRungs, milestones

    rungs = milestones(epochs, grace, eta)
    if kind == "fifo":
        return None
    if kind == "asha-first":
        return AccuracyASHA(rungs, eta)
    return ParetoRule(ParetoRungs(OBJECTIVES, rungs, eta))


class ParetoRule:
    """The Pareto-aware rule, as the Ray scheduler runs it: stop when the decision at a rung says so."""

    def __init__(self, rungs):
        self.rungs = rungs

    def record(self, key, epoch, values) -> bool:
        decision = self.rungs.record(key, epoch, values)
        return bool(decision and decision.stop)


def simulate(order: list[dict], kind: str, epochs: int, trials: int, epoch_budget: int | None, grace=1, eta=3) -> dict:
    """One replayed search: ``WORKERS`` trials at a time, an epoch per step each. Returns the events
    (cumulative epochs at each completion, and the completed points then) and what was stopped."""
    rule = make_rule(kind, epochs, grace, eta)
    queue, running, done, stopped, history = list(order), [], [], [], []
    used, started = 0, 0
    while queue or running:
        while len(running) < WORKERS and queue and (epoch_budget is None and started < trials
                                                    or epoch_budget is not None and used < epoch_budget):
            entry = queue.pop(0)
            started += 1
            if entry["feasible"]:
                running.append([entry, 0])
        if not running:
            break
        for slot in list(running):
            entry, e = slot
            e = slot[1] = e + 1
            used += 1
            values = {"val_acc": entry["curve"][e - 1]["val_acc"], "bitops": entry["costs"]["bitops"]}
            if e >= epochs:
                running.remove(slot)
                done.append(point(entry))
                history.append((used, list(done)))
            elif rule is not None and rule.record(id(entry), e, values):
                running.remove(slot)
                stopped.append((entry, e))
    return {"history": history, "epochs": used, "done": done, "stopped": stopped, "started": started}


def hv_at(history, epochs, ideal, reference) -> float:
    last = [pts for used, pts in history if used <= epochs]
    return hv(last[-1], ideal, reference) if last else 0.0


def run_schedulers(pool: list[dict], trials: int, seeds: list[int], epochs: int, grace: int, eta: int) -> dict:
    feasible = [e for e in pool if e["feasible"]]
    cheap = float(np.percentile([e["costs"]["bitops"] for e in feasible], 25))
    runs = {}
    for seed in seeds:
        order = list(pool)
        np.random.default_rng(seed).shuffle(order)
        fifo = simulate(order, "fifo", epochs, trials, None)
        runs[("fifo", seed)] = fifo
        for kind in ("asha-first", "pareto"):
            runs[(kind, seed)] = simulate(order, kind, epochs, 0, fifo["epochs"], grace, eta)
    ideal, reference = box([np.array(r["done"]) for r in runs.values()])
    out = {"cheap_bitops": cheap, "ideal": ideal, "reference": reference, "runs": {}}
    for (kind, seed), r in runs.items():
        fifo = runs[("fifo", seed)]
        target = 0.95 * hv(fifo["done"], ideal, reference)
        reach = next((used for used, pts in r["history"] if hv(pts, ideal, reference) >= target), None)
        cheap_done = [a for a, b in r["done"] if b <= cheap]
        out["runs"][f"{kind}/{seed}"] = {
            "epochs": r["epochs"], "trials": r["started"], "completed": len(r["done"]), "stopped": len(r["stopped"]),
            "hv_final": hv(r["done"], ideal, reference),
            "hv_at_third": hv_at(r["history"], fifo["epochs"] / 3, ideal, reference),
            "epochs_to_095_fifo": reach, "fifo_epochs": fifo["epochs"],
            "cheap_completed": len(cheap_done), "cheap_best_acc": max(cheap_done) if cheap_done else None,
            "cheap_stopped": sum(e["costs"]["bitops"] <= cheap for e, _ in r["stopped"]),
            "curve": [(used, round(hv(pts, ideal, reference), 5)) for used, pts in r["history"]],
        }
    return out


def rung_correlation(pool: list[dict], epochs: int) -> dict[int, float]:
    """Spearman's rho between the accuracy after each epoch (best so far) and after the last."""
    from scipy.stats import spearmanr

    curves = [e["curve"] for e in pool if e["feasible"]]
    final = [c[-1]["val_acc"] for c in curves]
    return {k: round(float(spearmanr([c[k - 1]["val_acc"] for c in curves], final).statistic), 3)
            for k in range(1, epochs)}


def _join(rows, key, fmt="{:.3f}", sep=", ") -> str:
    return sep.join(fmt.format(r[key]) if r[key] is not None else "-" for r in rows)


def print_schedulers(result: dict, seeds: list[int]) -> None:
    print(f"cheap end: bitops <= {result['cheap_bitops']:.4g} (the pool's 25th percentile)")
    print("| scheduler | epochs | trials started / completed / stopped | HV at the end (fifo's epochs) | mean | "
          "HV at 1/3 of fifo's epochs | epochs to 0.95 of fifo's final HV (fraction of fifo's) | cheap end: "
          "completed, stopped, best val_acc |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("fifo", "asha-first", "pareto"):
        rows = [result["runs"][f"{kind}/{s}"] for s in seeds]
        reach = ", ".join("{} ({:.2f})".format(r["epochs_to_095_fifo"], r["epochs_to_095_fifo"] / r["fifo_epochs"])
                          if r["epochs_to_095_fifo"] else "never" for r in rows)
        counts = "; ".join("{}/{}/{}".format(r["trials"], r["completed"], r["stopped"]) for r in rows)
        cheap = "; ".join("{}, {}, {}".format(r["cheap_completed"], r["cheap_stopped"],
                                              "-" if r["cheap_best_acc"] is None else "{:.4f}".format(r["cheap_best_acc"]))
                          for r in rows)
        mean = statistics.fmean(r["hv_final"] for r in rows)
        print(f"| {kind} | {_join(rows, 'epochs', '{}')} | {counts} | {_join(rows, 'hv_final')} | {mean:.3f} | "
              f"{_join(rows, 'hv_at_third')} | {reach} | {cheap} |")


# -------------------------------------------------------------------------- replayed samplers
def replay(spec, pool: list[dict], sampler: str, seed: int, budget: int, warm: list[dict]) -> list[tuple]:
    """A search of ``budget`` trials with ``sampler`` on the pool's results (each ask is a trial; an
    infeasible configuration is told with placeholder values and its constraint, as the searcher does)."""
    import optuna

    from speq_search.samplers import distribution, make_sampler
    from speq_search.space import parse_space

    raw = spec.to_dict()
    raw.pop("warm_start", None)
    raw["search"].update(sampler=sampler, seed=seed, num_samples=budget)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(parse_space(raw)))
    for p in warm:
        study.enqueue_trial(p, skip_if_exists=True)
    names = [p.name for p in spec.params]
    lookup = {tuple(e["params"][n] for n in names): e for e in pool}
    dists = {p.name: distribution(p) for p in spec.params}
    told = []
    for _ in range(budget):
        trial = study.ask(dists)
        entry = lookup[tuple(trial.params[n] for n in names)]
        for name, violation in spec.violations(entry["costs"]).items():
            trial.set_constraint(name, violation)
        values = list(point(entry)) if entry["feasible"] else [0.0, 1e12]
        study.tell(trial, values)
        told.append((entry, values))
    return told


def history_hv(told, ideal, reference) -> list[float]:
    pts, out = [], []
    for entry, values in told:
        if entry["feasible"]:
            pts.append(values)
        out.append(hv(pts, ideal, reference))
    return out


def proxy_points(spec, count: int, cache: Path, score: str = "loss"):
    """The proxy front of the space (its scores measured once, kept in ``cache``) and its warm-start points."""
    from speq_search.proxy import front_from_scores, warm_start_points
    from speq_search.sensitivity import BitSensitivity, bit_sensitivity

    if cache.exists():
        saved = json.loads(cache.read_text())
        base, scores = saved["base"], [BitSensitivity(**s) for s in saved["scores"]]
    else:
        base, scores = bit_sensitivity(spec.train, spec.group_choices())
        cache.write_text(json.dumps({"base": base, "scores": [s.as_dict() for s in scores]}))
    front = front_from_scores(spec, base, scores, points=count, score=score)
    return base, scores, front, warm_start_points(front, count)


def predicted(params: dict, scores, attr: str) -> float:
    table = {(s.group, s.kind, s.bits): getattr(s, attr) for s in scores}
    return sum(table[(n.partition("@")[2], n.partition("@")[0], b)] for n, b in params.items())


def run_proxy(spec, pool, seeds, cache, warm_count, budget=24) -> dict:
    from scipy.stats import spearmanr

    base, scores, front, warm = proxy_points(spec, warm_count, cache)
    feasible = [e for e in pool if e["feasible"]]
    acc = [e["final"]["val_acc"] for e in feasible]
    out = {"base_acc": base, "proxy_points": [p.params for p in front.points], "warm_start": warm, "spearman": {}}
    for attr in ("loss_increase", "drop"):
        rho = spearmanr([-predicted(e["params"], scores, attr) for e in feasible], acc).statistic
        out["spearman"][f"{attr}, every feasible configuration ({len(feasible)})"] = float(rho)
    runs = {(w, s): replay(spec, pool, "tpe", s, budget, warm if w else []) for w in (False, True) for s in seeds}
    trained = {json.dumps(e["params"], sort_keys=True): e for told in runs.values() for e, _ in told if e["feasible"]}
    for attr in ("loss_increase", "drop"):
        rho = spearmanr([-predicted(e["params"], scores, attr) for e in trained.values()],
                        [e["final"]["val_acc"] for e in trained.values()]).statistic
        out["spearman"][f"{attr}, the configurations the TPE searches trained ({len(trained)})"] = float(rho)
    ideal, reference = box([np.array([v for e, v in told if e["feasible"]]) for told in runs.values()])
    out["hv"] = {f"{'warm' if w else 'cold'}/{s}": [history_hv(runs[(w, s)], ideal, reference)[k - 1] for k in (8, 16, 24)]
                 for (w, s) in runs}
    return out


def print_proxy(result: dict, seeds: list[int]) -> None:
    print(f"base accuracy (every layer at 8 bits, post-training): {result['base_acc']:.4f}; "
          f"{len(result['warm_start'])} warm-start points")
    print("| Spearman: predicted order (less summed score first) against trained val_acc | rho |")
    print("|---|---|")
    for name, rho in result["spearman"].items():
        print(f"| {name} | {rho:+.3f} |")
    print("\n| TPE | HV at 8 trials, per seed | mean | at 16 | mean | at 24 | mean |")
    print("|---|---|---|---|---|---|---|")
    for w in ("cold", "warm"):
        rows = [result["hv"][f"{w}/{s}"] for s in seeds]
        cells = [f"{', '.join(f'{r[k]:.3f}' for r in rows)} | {statistics.fmean(r[k] for r in rows):.3f}" for k in range(3)]
        print(f"| {'without' if w == 'cold' else 'with'} the proxy warm start | " + " | ".join(cells) + " |")


def run_samplers(spec, pool, seeds, budget, cache, warm_count) -> dict:
    _, _, _, warm = proxy_points(spec, warm_count, cache)
    feasible = [e for e in pool if e["feasible"]]
    true_front = np.array([point(e) for e in feasible])
    true_front = true_front[pareto_mask(true_front, ["max", "min"])]
    ideal, reference = box([true_front])
    target = hv(true_front, ideal, reference)
    out = {"pool_front_hv": target, "budget": budget, "runs": {}}
    for sampler in ("tpe", "nsga2", "random", "gp"):
        for w in (False, True):
            for s in seeds:
                told = replay(spec, pool, sampler, s, budget, warm if w else [])
                h = history_hv(told, ideal, reference)
                distinct = len({json.dumps(e["params"], sort_keys=True) for e, _ in told})
                out["runs"][f"{sampler}{'+proxy' if w else ''}/{s}"] = {
                    "hv_third": h[budget // 3 - 1] / target, "hv_half": h[budget // 2 - 1] / target,
                    "hv_final": h[-1] / target, "distinct": distinct,
                    "reach_095": next((i + 1 for i, v in enumerate(h) if v >= 0.95 * target), None)}
                print(sampler, w, s, round(h[budget // 3 - 1] / target, 3), file=sys.stderr, flush=True)
    return out


def print_samplers(result: dict, seeds: list[int]) -> None:
    b = result["budget"]
    print(f"| sampler | HV / pool front HV at {b // 3} trials (a third), per seed | mean | mean at {b} | "
          f"trials to reach 0.95 (of {b}), per seed | distinct configurations of {b} |")
    print("|---|---|---|---|---|---|")
    for name in ("tpe", "nsga2", "random", "gp"):
        for suffix in ("", "+proxy"):
            rows = [result["runs"][f"{name}{suffix}/{s}"] for s in seeds]
            reach = ", ".join(str(r["reach_095"]) if r["reach_095"] else f">{b}" for r in rows)
            third = statistics.fmean(r["hv_third"] for r in rows)
            final = statistics.fmean(r["hv_final"] for r in rows)
            distinct = statistics.fmean(r["distinct"] for r in rows)
            print(f"| {name}{suffix} | {_join(rows, 'hv_third')} | {third:.3f} | {final:.3f} | {reach} | {distinct:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("schedulers", "proxy", "samplers"))
    p.add_argument("--pool", required=True)
    p.add_argument("--space", default="per-layer", help="the pool's space (proxy, samplers)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--trials", type=int, default=24, help="fifo's trials (schedulers)")
    p.add_argument("--budget", type=int, default=48, help="trials per replayed search (samplers)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--grace", type=int, default=1)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--warm", type=int, default=6, help="proxy warm-start points")
    p.add_argument("--json", help="also write the raw result here")
    args = p.parse_args(argv)
    import optuna
    import torch
    import yaml

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pool = load_pool(args.pool)
    epochs = len(next(e for e in pool if e["feasible"])["curve"])
    if args.part == "schedulers":
        result = run_schedulers(pool, args.trials, args.seeds, epochs, args.grace, args.eta)
        result["rung_rho"] = rung_correlation(pool, epochs)
        print_schedulers(result, args.seeds)
        print("Spearman rho, accuracy after epoch k against the final one: "
              + ", ".join(f"{k}: {rho:+.2f}" for k, rho in result["rung_rho"].items()))
    else:
        from speq_search.space import load_space

        spec = load_space(args.space, {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)})
        cache = Path(args.pool).with_suffix(".scores.json")
        if args.part == "proxy":
            result = run_proxy(spec, pool, args.seeds, cache, args.warm)
            print_proxy(result, args.seeds)
        else:
            result = run_samplers(spec, pool, args.seeds, args.budget, cache, args.warm)
            print_samplers(result, args.seeds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
