"""Does the supernet rank architectures as training them would? One-shot vs few-shot vs GM-NAS.

For one space per run (`--space nb201` or `--space proxyless`), `hwnas.search.ranking.
run_supernet_rank` (the flow behind `hwnas supernet-rank`):

1. ground truth: `--archs` architectures drawn uniformly (seed 0), each trained from scratch on
   the proxy task with `--seeds` seeds (`--standalone-epochs` epochs, SGD Nesterov, cosine LR
   from 0.05, label smoothing 0.1); the mean test accuracy. Its own reliability is measured: the
   mean Kendall tau between the seeds' accuracies (a ranking of single runs agrees with another
   seed's only that well, a ceiling for any estimate of it);
2. one-shot (one supernet), few-shot (Zhao et al. 2021: one sub-supernet per op of layer 0) and
   GM-NAS (Hu et al. 2022: 2 splits into 2 groups by gradient matching, re-initialised after the
   last split as the NB201 code; `gm-inherit`: the same without the re-initialisation)
   supernets, trained by uniform single-path sampling for `--supernet-epochs` epochs each
   (every sub-supernet runs the whole schedule, so a split multiplies the compute after it: the
   wall time column says what that costs);
3. the inherited accuracy (validation split, BatchNorm re-calibrated per path) of every
   architecture, and Kendall tau (tau-b), Spearman rho, top-5 overlap and top-1 regret against
   the stand-alone test accuracy.

The proxy task: `digits-shift` at 16x16 (scikit-learn's digits pasted 4 times at random places on
a 16x16 canvas with noise: on plain digits every NB201 cell ends within 2 points, nothing to
rank). nb201: the micro-NB201 of the research notes (C = 8, one cell per stage, 16x16 inputs,
15,625 cells); proxyless: the ProxylessNAS space at width 0.35 and 16x16. For nb201 the
NATS-Bench CIFAR-10 test accuracy (200 epochs) of the same cells is a second ground truth (from
`../shared/data/accuracy/nats_bench.csv`, skipped when absent), with the caveat that digits is
not CIFAR.

    .venv/bin/python benchmarks/supernet_ranking.py --space nb201
    .venv/bin/python benchmarks/supernet_ranking.py --space proxyless --data digits --archs 20 \
        --seeds 2 --standalone-epochs 6   (what the README quotes; digits-shift at 16x16 left
        the stand-alone proxyless networks at chance after 3 epochs)

Writes benchmarks/results/supernet_ranking_<space>.md and .json. Not a timing benchmark (the wall
times are those of the run, side by side, one thread).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import SHARED_DATA, Results  # noqa: E402

ACCURACY = SHARED_DATA / "accuracy" / "nats_bench.csv"
TARGET_TAU = 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", choices=("nb201", "proxyless"), required=True)
    ap.add_argument("--archs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--standalone-epochs", type=int, default=3)
    ap.add_argument("--supernet-epochs", type=int, default=20)
    ap.add_argument("--gm-batches", type=int, default=None,
                    help="minibatches per GM distance (default 10 nb201, 4 proxyless)")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="digits-shift", help="proxy task (a data spec)")
    ap.add_argument("--limit", type=int, default=None,
                    help="at most this many training + validation images (default: all 5,752)")
    args = ap.parse_args(argv)

    import torch
    from scipy import stats

    from hwnas.data import load_data
    from hwnas.search.ranking import RankConfig, run_supernet_rank
    from hwnas.space import get_space

    torch.set_num_threads(args.threads)
    data = load_data(args.data, args.resolution, limit=args.limit)
    if args.space == "nb201":
        space = get_space("nb201", args.resolution, 1.0, data.num_classes, (8, 16, 32))
        cells, gm_batches = 1, args.gm_batches or 10
    else:
        space = get_space("proxyless", args.resolution, 0.35, data.num_classes)
        cells, gm_batches = None, args.gm_batches or 4
    cfg = RankConfig(space, data, archs=args.archs, seeds=tuple(range(args.seeds)),
                     standalone_epochs=args.standalone_epochs,
                     supernet_epochs=args.supernet_epochs, cells_per_stage=cells,
                     gm_batches=gm_batches, methods=("oneshot", "fewshot", "gm", "gm-inherit"))
    t0 = time.monotonic()
    res = Results(f"supernet_ranking_{args.space}",
                  f"Supernet ranking on {args.space}: one-shot, few-shot and GM-NAS vs training "
                  "from scratch", seed=0)

    def progress(row: dict) -> None:
        m = (time.monotonic() - t0) / 60
        if row["stage"] == "standalone":
            print(f"[{m:5.1f} min] stand-alone {row['done']}/{row['total']}", flush=True)
        elif row["stage"] == "supernet" and (row["epoch"] + 1) % 5 == 0:
            print(f"[{m:5.1f} min] {row['method']} epoch {row['epoch'] + 1}/{row['epochs']}: "
                  f"{row['supernets']} supernet(s), train acc {row['train_acc']:.3f}", flush=True)
        elif row["stage"] == "method":
            print(f"[{m:5.1f} min] {row['method']}: Kendall tau {row['kendall_tau']:.3f}",
                  flush=True)

    cache = Path(__file__).resolve().parent / "out" / f"supernet_ranking_{args.space}.jsonl"
    out = run_supernet_rank(cfg, progress, cache=cache)  # the ground truth survives a restart
    archs = out["archs"]
    per_seed = np.asarray([a["standalone_per_seed"] for a in archs])
    seed_taus = [stats.kendalltau(per_seed[:, i], per_seed[:, j]).statistic
                 for i, j in itertools.combinations(range(per_seed.shape[1]), 2)]
    ceiling = float(np.mean(seed_taus)) if seed_taus else float("nan")

    table = None
    if args.space == "nb201" and ACCURACY.exists():
        from hwnas.search.tables import load_accuracy_table
        from hwnas.space import NB201Space

        acc = load_accuracy_table(ACCURACY, NB201Space(), "CIFAR10TestAccuracy200Epochs")
        table = acc.lookup(np.asarray([a["indices"] for a in archs]))

    truth = np.asarray([a["standalone_acc"] for a in archs])
    rows = []
    for method, m in out["methods"].items():
        row = {"method": method, "sub-supernets": m["supernets"],
               "Kendall tau": round(m["kendall_tau"], 3),
               "Spearman rho": round(m["spearman_rho"], 3),
               "top-5 overlap": m["top_k_overlap"], "top-1 regret": round(m["top1_regret"], 4),
               "mean inherited acc": round(m["mean_inherited_acc"], 3),
               "supernet time s": round(m["wall_s"], 1)}
        if table is not None:
            est = np.asarray([a[f"inherited_{method}"] for a in archs])
            row["Kendall tau vs NB201 C10"] = round(
                float(stats.kendalltau(est, table).statistic), 3)
        rows.append(row)
    if table is not None:
        rows.append({"method": "stand-alone (the ground truth)", "sub-supernets": "",
                     "Kendall tau": 1.0, "Spearman rho": 1.0, "top-5 overlap": 1.0,
                     "top-1 regret": 0.0, "mean inherited acc": round(float(truth.mean()), 3),
                     "supernet time s": "",
                     "Kendall tau vs NB201 C10": round(
                         float(stats.kendalltau(truth, table).statistic), 3)})

    desc = ("micro-NB201 (C = 8, one cell per stage)" if args.space == "nb201"
            else "ProxylessNAS space at width 0.35")
    res.text(
        f"{args.archs} architectures of {desc}, drawn uniformly (seed 0), trained from scratch "
        f"on `{args.data}` at {args.resolution}x{args.resolution} "
        f"({len(data.train)} training, {len(data.valid)} validation, {len(data.test)} test "
        f"images) for "
        f"{args.standalone_epochs} epochs with {args.seeds} seeds each: the ground truth is the "
        f"mean test accuracy ({out['standalone_s'] / 60:.1f} min in this run"
        + (f", {out['standalone_cached']} of {args.archs} read from the ground-truth cache of "
           "an earlier run with the same settings" if out["standalone_cached"] else "")
        + f"; mean "
        f"{out['standalone_mean']:.3f}, spread {out['standalone_spread']:.3f}). Its reliability: "
        f"the seeds' rankings agree with Kendall tau {ceiling:.3f} on average (pairs of seeds), "
        f"the ceiling of any estimate of a single training run. Supernets: "
        f"{args.supernet_epochs} epochs of uniform single-path training per (sub-)supernet; GM "
        f"distances over {gm_batches} minibatches per layer. Target: one-shot Kendall tau >= "
        f"{TARGET_TAU}, and GM >= few-shot >= one-shot (the paper's ordering).")
    res.table(rows, f"Inherited vs stand-alone accuracy ({args.space})")
    splits = {m: v["splits"] for m, v in out["methods"].items()}
    gm_split = splits.get("gm", [[]])[0]
    if gm_split:
        names = [layer.choices for layer in space.layers]
        desc_splits = "; ".join(
            f"layer {s['layer']}: " + " | ".join("{" + ", ".join(names[s['layer']][j] for j in g)
                                                  + "}" for g in s["groups"])
            for s in gm_split)
        res.text(f"GM-NAS splits of the first sub-supernet: {desc_splits}.")
    oneshot = out["methods"].get("oneshot", {}).get("kendall_tau", float("nan"))
    res.text(f"One-shot Kendall tau {oneshot:.3f}: target {TARGET_TAU} "
             f"{'met' if oneshot >= TARGET_TAU else 'missed'}.")
    taus = {m: v["kendall_tau"] for m, v in out["methods"].items()}
    if {"oneshot", "fewshot", "gm"} <= set(taus):
        verdict = []
        for gm_name in ("gm", "gm-inherit"):
            if gm_name not in taus:
                continue
            g, f, o = taus[gm_name], taus["fewshot"], taus["oneshot"]
            holds = g >= f >= o
            verdict.append(f"{gm_name} {g:.3f} >= few-shot {f:.3f} >= one-shot {o:.3f}: "
                           + ("holds" if holds else
                              f"fails (GM - few-shot {g - f:+.3f}, few-shot - one-shot "
                              f"{f - o:+.3f})"))
        res.text("The paper's ordering, by Kendall tau: " + "; ".join(verdict) + ".")
    res.write(data={"archs": archs, "methods": out["methods"], "seed_tau": seed_taus,
                    "nb201_c10": None if table is None else table.tolist(),
                    "config": {k: v for k, v in vars(args).items()},
                    "gm_batches": gm_batches})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
