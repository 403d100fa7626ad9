"""Search strategies against the exact constrained optimum of NAS-Bench-201 (tabular benchmark).

Accuracy: NATS-Bench's test accuracy after 200 epochs of every NAS-Bench-201 cell on CIFAR-10,
CIFAR-100 and ImageNet16-120 (`../shared/data/accuracy/nats_bench.csv`). Latency: the six HELP
meta-test devices (titan_rtx_256, gold_6226, pixel2, raspi4, eyeriss, fpga) of
`../shared/data/latency/nb201_latency_help.csv` (HW-NAS-Bench / HELP). Both are read through the
library's table loaders (`hwnas.search.tables`, the same code as `hwnas search --accuracy-table
... --latency-table ...`), so their validation is exercised too.

For each dataset x device x budget (the 25/50/75% quantiles of the device's latency over all
15,625 cells) the exact constrained optimum is computed by enumerating all cells (vectorised),
then each strategy runs `--seeds` seeds with the library's run loop (`run_strategy`, constraint =
the device's latency column <= budget, evaluator = the accuracy column). One run per seed goes to
the largest evaluation count; the result at 100 / 300 / 1000 evaluations is the best feasible
candidate among the first 100 / 300 / 1000 evaluations of that run (every strategy here behaves
the same whatever its total budget, so this equals separate runs). A latency lookup costs no
evaluation; only feasible, not yet seen candidates spend one. `max_asks` (the cap on proposals,
infeasible and repeated ones included) is `--max-asks-factor` x the evaluations.

Per strategy and evaluation count: mean and worst regret (optimum - found, accuracy points, over
datasets, devices, budgets and seeds), share of runs whose result is feasible (its latency read
from the same table), share within 0.3 points of the optimum, mean evaluations actually used; and
per device (averaged over datasets, budgets and seeds) the mean regret of each strategy.

Optuna's TPE and NSGA-II cost O(trials) per proposal (seconds per run here become minutes), so
they run on a reduced grid (`--optuna-datasets`, `--optuna-seeds`, `--optuna-evaluations`); the
tables say which grid each strategy ran on.

Writes benchmarks/results/tabular_search.md and .json (date, command, host, seeds, settings,
per-strategy tables). Skips (exit 0, with a reason) when ../shared/data is absent.

    .venv/bin/python benchmarks/tabular_search.py            # full grid
    .venv/bin/python benchmarks/tabular_search.py --quick    # 2 seeds, CIFAR-10, no optuna
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, print_table  # noqa: E402

from hwnas.search.constraints import LatencyConstraint  # noqa: E402
from hwnas.search.evaluators import TableEvaluator  # noqa: E402
from hwnas.search.strategies import make_strategy  # noqa: E402
from hwnas.search.strategy import run_strategy  # noqa: E402
from hwnas.search.tables import TableLatencyPredictor, load_accuracy_table, load_latency_table  # noqa: E402
from hwnas.space import get_space  # noqa: E402

ACCURACY = SHARED_DATA / "accuracy" / "nats_bench.csv"
LATENCY = SHARED_DATA / "latency" / "nb201_latency_help.csv"
DATASETS = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
            "imagenet16": "ImageNetTestAccuracy200Epochs"}
DEVICES = ("titan_rtx_256", "gold_6226", "pixel2", "raspi4", "eyeriss", "fpga")
QUANTILES = (0.25, 0.50, 0.75)
STRATEGIES = ("random", "evolution", "evolution@20x5", "reinforce", "tpe", "nsga2")
OPTUNA = ("tpe", "nsga2")
OUT = ROOT / "benchmarks" / "results"


def host_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import optuna

    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "optuna": optuna.__version__, "platform": platform.platform()}


def settings_grid(space, datasets, devices) -> tuple[dict, dict, list[dict]]:
    """Accuracy tables, latency predictors and one row per dataset x device x budget with the
    exact constrained optimum (enumeration of all cells)."""
    acc = {d: load_accuracy_table(ACCURACY, space, DATASETS[d]) for d in datasets}
    lat = {d: load_latency_table(LATENCY, space, d) for d in devices}
    grid = []
    for ds in datasets:
        for dev in devices:
            ms = lat[dev].values
            for q in QUANTILES:
                budget = float(np.quantile(ms, q))
                feasible = ms <= budget
                k = int(np.flatnonzero(feasible)[np.argmax(acc[ds].values[feasible])])
                grid.append({"dataset": ds, "device": dev, "quantile": q, "budget_ms": budget,
                             "optimum": float(acc[ds].values[k]), "optimum_index": k,
                             "optimum_ms": float(ms[k]), "feasible_cells": int(feasible.sum())})
    return acc, lat, grid


def strategy_options(name: str, budget: float, args) -> dict:
    """Options of a strategy spec: a name, or `evolution@PxS` (population P, tournament S)."""
    if "@" in name:
        base, _, spec = name.partition("@")
        p, s = spec.split("x")
        return {**strategy_options(base, budget, args), "population_size": int(p),
                "sample_size": int(s)}
    if name == "reinforce":
        return {"target_ms": budget}
    if name == "evolution":
        return {k: v for k, v in (("population_size", args.population),
                                  ("sample_size", args.tournament),
                                  ("mutation", args.mutation)) if v is not None}
    if name == "nsga2":
        return {"population_size": args.nsga2_population}
    return {}


def run_grid(name: str, grid: list[dict], acc, lat, space, seeds: int, evals: list[int],
             args) -> list[dict]:
    """One row per (setting, seed) with the regret at each evaluation count."""
    rows = []
    top = max(evals)
    t_all = time.monotonic()
    for g in grid:
        evaluator = TableEvaluator(acc[g["dataset"]])
        predictor = TableLatencyPredictor(lat[g["device"]])
        for seed in range(seeds):
            strategy = make_strategy(name.partition("@")[0],
                                     [len(layer.choices) for layer in space.layers], seed,
                                     **strategy_options(name, g["budget_ms"], args))
            t0 = time.monotonic()
            res = run_strategy(strategy, evaluator,
                               [LatencyConstraint(predictor, g["budget_ms"])], evaluations=top,
                               max_asks=args.max_asks_factor * top)
            row = {"strategy": name, "seed": seed, **{k: g[k] for k in ("dataset", "device",
                                                                        "quantile")},
                   "asks": res.asks, "evaluations_used": res.evaluations,
                   "seconds": time.monotonic() - t0}
            for n in evals:
                best = res.best_at(n)
                if best is None:
                    row[f"regret@{n}"], row[f"feasible@{n}"] = float("nan"), False
                    continue
                ms = float(lat[g["device"]].lookup(np.asarray(best.indices)[None, :])[0])
                row[f"regret@{n}"] = g["optimum"] - float(best.score)
                row[f"feasible@{n}"] = bool(ms <= g["budget_ms"])
                row[f"used@{n}"] = min(n, res.evaluations)
            rows.append(row)
    print(f"{name}: {len(rows)} runs in {time.monotonic() - t_all:.0f} s", flush=True)
    return rows


def summarise(rows: list[dict], evals: list[int]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == name]
        for n in evals:
            if f"regret@{n}" not in rs[0]:
                continue  # this strategy ran to fewer evaluations
            reg = np.array([r[f"regret@{n}"] for r in rs], dtype=float)
            found = ~np.isnan(reg)
            out.append({
                "strategy": name, "evaluations": n, "runs": len(rs),
                "datasets": len({r["dataset"] for r in rs}), "seeds": len({r["seed"] for r in rs}),
                "mean regret": float(np.nanmean(reg)) if found.any() else float("nan"),
                "worst regret": float(np.nanmax(reg)) if found.any() else float("nan"),
                "feasible": float(np.mean([r[f"feasible@{n}"] for r in rs])),
                "within 0.3": float(np.mean(reg[found] <= 0.3 + 1e-9) * found.mean())
                if found.any() else 0.0,
                "evals used": float(np.mean([r.get(f"used@{n}", 0) for r in rs])),
            })
    return out


def per_device(rows: list[dict], evals: list[int], datasets: list[str],
               devices: list[str] = DEVICES) -> list[dict]:
    """Mean regret per device and strategy at each evaluation count, on the datasets given
    (all strategies on the same runs' settings)."""
    out = []
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    for n in evals:
        for dev in devices:
            row: dict = {"evaluations": n, "device": dev}
            for name in names:
                reg = [r[f"regret@{n}"] for r in rows if r["strategy"] == name
                       and r["device"] == dev and r["dataset"] in datasets
                       and f"regret@{n}" in r]
                row[name] = float(np.nanmean(reg)) if reg else float("nan")
            out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--evaluations", default="100,300,1000")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--optuna-seeds", type=int, default=3)
    ap.add_argument("--optuna-datasets", default="cifar10,cifar100,imagenet16")
    ap.add_argument("--optuna-evaluations", default="100,300")
    ap.add_argument("--max-asks-factor", type=int, default=20)
    ap.add_argument("--population", type=int, default=None, help="evolution population size")
    ap.add_argument("--tournament", type=int, default=None, help="evolution tournament size")
    ap.add_argument("--mutation", default=None, help="evolution mutation (edge | rate)")
    ap.add_argument("--nsga2-population", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 seeds, CIFAR-10, no optuna")
    ap.add_argument("--out", default=str(OUT / "tabular_search"),
                    help="output path without suffix (.md and .json are written)")
    ap.add_argument("--render", default=None,
                    help="re-write the tables from a results JSON of this script (no runs)")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        saved.setdefault("evaluations", [100, 300, 1000])
        saved.setdefault("seeds", 10)
        info = {k: v for k, v in saved.items() if k not in ("summary", "per_dataset",
                                                           "per_device", "targets", "settings",
                                                           "rows")}
        write_results(info, saved["rows"], saved["settings"], Path(args.out))
        print(f"\nwrote {Path(args.out).with_suffix('.md')} and .json (rendered)")
        return 0
    if not (ACCURACY.is_file() and LATENCY.is_file()):
        print(f"skipped: NAS-Bench-201 tables not found under {SHARED_DATA} "
              "(../shared/data is absent)")
        return 0
    if args.quick:
        args.seeds, args.datasets = 2, "cifar10"
        args.strategies = ",".join(s for s in args.strategies.split(",") if s not in OPTUNA)
    t_start = time.monotonic()
    space = get_space("nb201")
    datasets = args.datasets.split(",")
    devices = args.devices.split(",")
    evals = [int(v) for v in args.evaluations.split(",")]
    acc, lat, grid = settings_grid(space, sorted(set(datasets) | set(
        args.optuna_datasets.split(","))), devices)
    rows: list[dict] = []
    runs: dict[str, dict] = {}
    for name in args.strategies.split(","):
        if name in OPTUNA:
            ds = args.optuna_datasets.split(",")
            seeds, ev = args.optuna_seeds, [int(v) for v in args.optuna_evaluations.split(",")]
        else:
            ds, seeds, ev = datasets, args.seeds, evals
        sub = [g for g in grid if g["dataset"] in ds]
        runs[name] = {"datasets": ds, "seeds": seeds, "evaluations": ev,
                      "options": {k: ("the budget" if k == "target_ms" else v)
                                  for k, v in strategy_options(name, 1.0, args).items()}}
        rows += run_grid(name, sub, acc, lat, space, seeds, ev, args)
    wall = time.monotonic() - t_start
    command = " ".join([".venv/bin/python", "benchmarks/tabular_search.py", *sys.argv[1:]])
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "host": host_info(), "wall_s": round(wall, 1), "runs": runs,
            "quantiles": list(QUANTILES), "devices": devices, "datasets": datasets,
            "evaluations": evals, "seeds": args.seeds,
            "data": {"accuracy": str(ACCURACY.relative_to(ROOT.parent)),
                     "latency": str(LATENCY.relative_to(ROOT.parent))},
            "max_asks_factor": args.max_asks_factor}
    out = Path(args.out)
    write_results(info, rows, grid, out)
    print(f"\nwrote {out.with_suffix('.md')} and .json ({wall:.0f} s)")
    return 0


def per_dataset(rows: list[dict], runs: dict) -> list[dict]:
    """Mean / worst regret and share within 0.3 per strategy, dataset and evaluation count."""
    out = []
    for name, r in runs.items():
        for ds in r["datasets"]:
            for n in r["evaluations"]:
                reg = np.array([x[f"regret@{n}"] for x in rows if x["strategy"] == name
                                and x["dataset"] == ds], dtype=float)
                out.append({"strategy": name, "dataset": ds, "evaluations": n,
                            "runs": int(reg.size), "mean regret": float(np.nanmean(reg)),
                            "worst regret": float(np.nanmax(reg)),
                            "within 0.3": float(np.mean(reg <= 0.3 + 1e-9))})
    return out


def targets(rows: list[dict], summary: list[dict], per_ds: list[dict], dev_rows: list[dict]
            ) -> list[dict]:
    """The issue's targets for regularized evolution, met or not, by how much."""
    def mean(name, n, ds=None):
        src = per_ds if ds else summary
        for x in src:
            if x["strategy"] == name and x["evaluations"] == n and (ds is None
                                                                    or x["dataset"] == ds):
                return x["mean regret"]
        return float("nan")

    out = []
    datasets = list(dict.fromkeys(x["dataset"] for x in per_ds))
    for n, goal in ((300, 0.3), (1000, 0.1)):
        for ds in [None, *datasets]:
            v = mean("evolution", n, ds)
            out.append({"target": f"evolution mean regret <= {goal} at {n}",
                        "over": ds or "all datasets", "value": v, "met": bool(v <= goal),
                        "margin": goal - v})
    for n in sorted({r["evaluations"] for r in dev_rows}):
        worse = [r["device"] for r in dev_rows if r["evaluations"] == n
                 and not r.get("evolution", np.inf) < r.get("random", -np.inf)]
        out.append({"target": f"evolution beats random on every device at {n}",
                    "over": "all datasets", "value": float(len(dev_rows) / len(
                        {r['evaluations'] for r in dev_rows}) - len(worse)),
                    "met": not worse, "margin": ", ".join(worse) or "-"})
    feas = min((x["feasible"] for x in summary if x["strategy"] == "evolution"), default=0.0)
    out.append({"target": "100% of evolution results feasible", "over": "all runs",
                "value": feas, "met": feas == 1.0, "margin": feas - 1.0})
    return out


def write_results(info: dict, rows: list[dict], grid: list[dict], out: Path) -> None:
    """The Markdown and JSON results (also from a saved JSON: --render)."""
    runs, datasets, devices = info["runs"], info["datasets"], info["devices"]
    evals, seeds = info["evaluations"], info["seeds"]
    all_evals = sorted({n for r in runs.values() for n in r["evaluations"]})
    summary = [s for s in summarise(rows, all_evals)
               if s["evaluations"] in runs[s["strategy"]]["evaluations"]]
    text = print_table(summary, "Regret to the exact constrained optimum (accuracy points), "
                                "over datasets, devices, budgets and seeds")
    per_ds = per_dataset(rows, runs)
    text += "\n" + print_table(per_ds, "Per dataset (over devices, budgets and seeds)")
    main_grid = [n for n, r in runs.items() if r["evaluations"] == evals and r["seeds"] == seeds]
    dev_rows = per_device([r for r in rows if r["strategy"] in main_grid], evals, datasets,
                          devices)
    text += "\n" + print_table(dev_rows, f"Mean regret per device (datasets: "
                                         f"{', '.join(datasets)})")
    common = [d for d in datasets if all(d in r["datasets"] for r in runs.values())] or datasets
    if any(n in OPTUNA for n in runs):
        small = min(r["seeds"] for r in runs.values())
        dev_small = per_device([r for r in rows if r["dataset"] in common and r["seed"] < small],
                               [n for n in evals if all(n in r["evaluations"]
                                                        for r in runs.values())], common,
                               devices)
        text += "\n" + print_table(dev_small, f"Mean regret per device, all strategies on the "
                                              f"same runs (datasets: {', '.join(common)}; "
                                              f"seeds 0..{small - 1})")
    goals = targets(rows, summary, per_ds, dev_rows) if "evolution" in runs else []
    if goals:
        text += "\n" + print_table(goals, "Targets (issue 13) for regularized evolution")
    opt_rows = [{"dataset": g["dataset"], "device": g["device"], "quantile": g["quantile"],
                 "budget ms": g["budget_ms"], "optimum": g["optimum"],
                 "optimum index": g["optimum_index"], "feasible cells": g["feasible_cells"]}
                for g in grid]
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["# Tabular search benchmark (NAS-Bench-201)\n",
          f"- date: {info['date']}", f"- command: `{info['command']}`",
          f"- host: {info['host']['cpu']}, {info['host']['cores']} cores, python "
          f"{info['host']['python']}, optuna {info['host']['optuna']}",
          f"- wall time: {info['wall_s']:.0f} s",
          "- grids: " + "; ".join(f"{k}: datasets {', '.join(v['datasets'])}, {v['seeds']} seeds, "
                                  f"evaluations {', '.join(map(str, v['evaluations']))}"
                                  + (f", options {v['options']}" if v['options'] else "")
                                  for k, v in runs.items()),
          "- regret = exact constrained optimum (all 15,625 cells) - accuracy of the best "
          "feasible candidate found, in accuracy points; budgets at the 25/50/75% latency "
          "quantiles of each device; `evolution` is the default (population 50, tournament 10), "
          "`evolution@20x5` population 20, tournament 5", "", text, "",
          print_table(opt_rows, "Settings and their exact optima")]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    compact = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
               for r in rows]  # one run per line, 4 decimals: the file stays small
    head = json.dumps({**info, "summary": summary, "per_dataset": per_ds,
                       "per_device": dev_rows, "targets": goals, "settings": grid}, indent=1)
    body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in compact)
    out.with_suffix(".json").write_text(f"{head[:-2]},\n \"rows\": [\n{body}\n]\n}}\n")


if __name__ == "__main__":
    sys.exit(main())
