"""FBNetV5 on the `fbnetv5` space: three tasks searched in one run vs one run per task vs random.

1. A real ort-cpu profile (1 thread) of the `fbnetv5` space at `--resolution` (every block, the
   fusions and all three heads, plus `--nets` whole networks), in benchmarks/out/ (resumable).
2. Per-task budgets: the table latency of the task's network with half of its blocks' cost
   (fixed + 0.5 * sum of the blocks' keep costs: the middle of the task's range).
3. `run_fbnetv5` (what `hwnas search --method fbnetv5` runs) on the multi-task digits proxy data
   at 32x32: once with tasks cls,seg,det together, and once per task alone, all at `--steps`
   steps (one step = one backbone forward and backward, whatever the number of tasks). Wall time
   of each run, side by side on this machine.
4. Each task's derived network (from the multi-task run and from its single-task run) trained
   from scratch on the proxy data (`train_task_net`, `--retrain-steps`) and its test metric
   (accuracy, mIoU, box IoU), beside `--random` random architectures of the same task whose
   table latency is nearest the multi-task result's (the random baseline at equal predicted
   latency).
5. The derived networks of the multi-task run measured on ort-cpu at `--resolution` (one
   interleaved run with the drift reference): measured / predicted and within budget.

Targets (issue): search wall time for T = 3 <= 1.3x that of one task; each task's result at or
above the random baseline's median; derived nets within +-10 % of their prediction and within
their budgets.

    .venv/bin/python benchmarks/fbnetv5.py     (what the README quotes; takes the CPU lock for
                                                the profile and the measurements)

Writes benchmarks/results/fbnetv5.md and .json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, Results, cpu_lock  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
TASKS = ("cls", "seg", "det")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--nets", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--retrain-steps", type=int, default=200)
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from hwnas.data.multitask import load_multitask
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.latency import predict
    from hwnas.profile.profiler import ProfileConfig, Profiler, measure_beside_reference
    from hwnas.profile.reader import Profile
    from hwnas.profile.sampling import net_id
    from hwnas.search.fbnetv5_run import (
        FBNetV5Config,
        keep_costs,
        run_fbnetv5,
        task_tables,
        train_task_net,
    )
    from hwnas.space import Arch, get_space

    torch.set_num_threads(args.threads)
    res = Results("fbnetv5", "FBNetV5: several tasks in one search, each under its own budget",
                  seed=args.seed)
    prof_dir = OUT / f"ort-cpu-1t-fbnetv5-{args.resolution}"
    with cpu_lock():
        Profiler(ProfileConfig(device="ort-cpu", space="fbnetv5", resolution=args.resolution,
                               threads=1, nets=args.nets, out=prof_dir)).run(resume=True)
    prof = Profile.load(prof_dir)
    tables = task_tables(prof, prof.space, TASKS)
    budgets = {}
    for t in TASKS:
        c, fixed = keep_costs(tables[t])
        budgets[t] = round(fixed + 0.5 * float(c.sum()), 4)
    # 1-3: the searches
    runs, walls = {}, {}
    for name, tasks in (("multi", TASKS), *((t, (t,)) for t in TASKS)):
        out = OUT / f"fbnetv5_{name}"
        cfg = FBNetV5Config(profile=prof_dir, out=out, tasks=tasks,
                            budgets_ms={t: budgets[t] for t in tasks}, steps=args.steps,
                            seed=args.seed, threads=args.threads, resume=False)
        t0 = time.monotonic()
        runs[name] = run_fbnetv5(cfg)
        walls[name] = time.monotonic() - t0
        print(f"search {name}: {walls[name]:.0f} s", flush=True)
    single = float(np.median([walls[t] for t in TASKS]))
    rows = [{"search": name, "tasks": len(r["tasks"]), "steps": args.steps,
             "wall s": walls[name], "s / step": walls[name] / args.steps,
             "wall / single-task median": walls[name] / single} for name, r in runs.items()]
    res.table(rows, "1. search wall time at equal steps (target: 3 tasks <= 1.3x one task)")
    rows = []
    for name, r in runs.items():
        for t, p in r["per_task"].items():
            rows.append({"search": name, "task": t, "bits": p["bits"], "budget ms": p["budget_ms"],
                         "predicted ms": p["predicted_ms"], "within budget": p["met"],
                         f"supernet {p['metric']}": p["valid_metric"],
                         "mean keep prob": float(np.mean(p["keep_probs"]))})
    res.table(rows, "2. derived architectures (bits: 1 = block kept, layers s1.p0.b1 .. "
                    "s3.p1.b2) and their predicted latency (each task's table, linearly "
                    "corrected on the profile's networks) at "
                    f"{args.resolution}x{args.resolution}")
    # 4: retrain from scratch; random at equal predicted latency
    data = load_multitask("multitask:digits", 32, args.seed)
    rng = np.random.default_rng(args.seed)
    rows, retrain = [], {}
    for t in TASKS:
        tspace = get_space("fbnetv5", 32).for_task(t)
        lspace = prof.space.for_task(t)
        target = runs["multi"]["per_task"][t]["predicted_ms"]
        pool = [lspace.sample(rng) for _ in range(2000)]
        ms = tables[t].predict(pool)
        order = np.argsort(np.abs(ms - target))
        picked, seen = [], set()
        for i in order:
            if pool[i].choices not in seen:
                seen.add(pool[i].choices)
                picked.append(int(i))
            if len(picked) == args.random:
                break

        def score(choices, seed=args.seed, tspace=tspace):
            return train_task_net(tspace, tspace.arch(list(choices)), data,
                                  steps=args.retrain_steps, seed=seed)["value"]

        multi = score(runs["multi"]["per_task"][t]["choices"])
        alone = score(runs[t]["per_task"][t]["choices"])
        rand = [score(pool[i].choices) for i in picked]
        retrain[t] = {"multi": multi, "single": alone, "random": rand,
                      "random_ms": [float(ms[i]) for i in picked]}
        rows.append({"task": t, "metric": runs["multi"]["per_task"][t]["metric"],
                     "multi-task search": multi, "single-task search": alone,
                     "random median": float(np.median(rand)), "random min": float(np.min(rand)),
                     "random max": float(np.max(rand)),
                     "multi >= random median": bool(multi >= np.median(rand)),
                     "multi predicted ms": target,
                     "random predicted ms": f"{min(retrain[t]['random_ms']):.3g}-"
                                        f"{max(retrain[t]['random_ms']):.3g}"})
        print(f"retrain {t}: multi {multi:.3f} single {alone:.3f} random {rand}", flush=True)
    res.table(rows, f"3. derived nets trained from scratch ({args.retrain_steps} steps, test "
                    f"split) vs {args.random} random nets of the nearest table latency")
    # 5: measured
    archs = [Arch.load(OUT / "fbnetv5_multi" / t / "arch.json") for t in TASKS]
    backend = get_backend("ort-cpu", threads=1)
    with cpu_lock():
        meas = measure_beside_reference(backend, prof, archs, Protocol(), args.seed)
    rows = []
    for t, a in zip(TASKS, archs, strict=True):
        m = meas[net_id(a)]
        pred = predict(prof, a).ms
        measured = m["measured_ms"] / m["drift"]
        rows.append({"task": t, "predicted ms": pred, "measured ms": measured,
                     "measured / predicted": measured / pred,
                     "within +-10 %": bool(abs(measured / pred - 1) <= 0.10),
                     "budget ms": budgets[t], "measured within budget": bool(measured <= budgets[t])})
    res.table(rows, f"4. the multi-task run's derived nets measured on ort-cpu at "
                    f"{args.resolution}x{args.resolution} (drift-corrected)")
    res.write(data={"runs": runs, "walls": walls, "budgets": budgets, "retrain": retrain})
    return 0


if __name__ == "__main__":
    sys.exit(main())
