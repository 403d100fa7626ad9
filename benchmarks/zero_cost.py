"""Zero-cost proxies and ParZC on NAS-Bench-201: do they rank cells as training does?

Ground truth: NATS-Bench 200-epoch test accuracy of every NB201 cell
(`../shared/data/accuracy/nats_bench.csv`; the benchmark skips when it is absent). Cells: one
seeded permutation of the 15,625 indices (seed 0); its first 1,000 are the **evaluation
cells**, the next 781 the **training pool** of ParZC.

1. synflow (data-free, float64, |weights|, input of ones, BatchNorm off) on the 1,000 evaluation
   cells with the matching head and input: CIFAR-10 and CIFAR-100 (32x32, 10 / 100 classes) and
   ImageNet16-120 (16x16, 120 classes). Spearman rho (the published metric, |rho|) and Kendall tau
   against the test accuracy, beside the published rho (0.737 / 0.763 / 0.751, all 15,625 cells)
   and two counting baselines on the same cells: `9*n3 + n1` (the cell's conv weight count: NB201
   FLOPs and params rank exactly so; published full-space rho 0.753 / 0.728 / 0.691) and the
   parameter count of the network the proxies ran on.
2. The data-dependent proxies on one minibatch of scikit-learn digits (64 images at 32x32, 3
   channels; CIFAR cannot be downloaded here), beside their published CIFAR values (not expected
   to match: other images): grad_norm and snip on the 1,000 cells; grasp, fisher, jacob_cov and
   naswot on the first `--data-cells` of them (grasp costs two backward passes with a graph).
3. ParZC (`hwnas.search.parzc`: MABN, DiffKendall) trained on 78 / 156 / 781 cells (0.5 / 1 /
   5 % of NB201) of the training pool, 5 seeds (the 78 and 156 cells are drawn per seed from the
   pool; 781 is the whole pool, so its seeds differ only in initialisation and batches), on the
   node-wise features of grad_norm, snip and synflow (the official NB201 input; 3 x 98) and on
   synflow alone (data-free, 98). Labels: CIFAR-10 test accuracy (the official code trains on
   validation accuracy, which the shared file does not hold). Evaluated on the 1,000 evaluation
   cells, none of which it saw (the official code evaluates on all 15,625, training cells
   included). Beside, on the same cells: summed synflow, the training-free ParZC (`sin` depth
   weighting of the per-layer synflow sums) and `9*n3 + n1`. Targets: ParZC beats summed synflow
   and the conv count in >= 4 of 5 seeds at 78 cells; Kendall >= 0.706 at 781 cells (the ParZC
   figure for NB201 CIFAR-10 reported by third-party notes, second-hand).

    .venv/bin/python benchmarks/zero_cost.py                 (what the README quotes)
    .venv/bin/python benchmarks/zero_cost.py --compute-only  (only fill the proxy caches)

Proxy scores are cached in `benchmarks/out/zero_cost_*.parquet` (`hwnas proxies` files; an
interrupted run resumes). Writes benchmarks/results/zero_cost.md and .json. Not a timing
benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, SHARED_DATA  # noqa: E402

ACCURACY = SHARED_DATA / "accuracy" / "nats_bench.csv"
OUT = ROOT / "benchmarks" / "out"
N_EVAL, N_POOL = 1000, 781
TRAIN_SIZES = (78, 156, 781)
DATASETS = {  # name: (accuracy column, resolution, classes)
    "cifar10": ("CIFAR10TestAccuracy200Epochs", 32, 10),
    "cifar100": ("CIFAR100TestAccuracy200Epochs", 32, 100),
    "imagenet16-120": ("ImageNetTestAccuracy200Epochs", 16, 120),
}
PUBLISHED_PARZC_KENDALL = 0.706  # NB201 CIFAR-10, third-party notes (second-hand)
DATA_PROXIES = ("grasp", "fisher", "jacob_cov", "naswot")


def cells() -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(0).permutation(15625)
    return perm[:N_EVAL], perm[N_EVAL:N_EVAL + N_POOL]


def compute(data_cells: int, threads: int, only: list[str] | None = None) -> dict[str, Path]:
    """Fill the proxy caches (resumable `hwnas proxies` files)."""
    from hwnas.search.proxy_table import ProxiesConfig, run_proxies

    ev, pool = cells()
    OUT.mkdir(parents=True, exist_ok=True)
    runs = {
        "cifar10": ProxiesConfig(out=OUT / "zero_cost_cifar10.parquet",
                                 proxies=("synflow", "grad_norm", "snip", "params", "conv_count"),
                                 indices=[int(k) for k in np.concatenate([ev, pool])],
                                 threads=threads),
        "cifar10_data": ProxiesConfig(out=OUT / "zero_cost_cifar10_data.parquet",
                                      proxies=DATA_PROXIES,
                                      indices=[int(k) for k in ev[:data_cells]], threads=threads),
    }
    for name in ("cifar100", "imagenet16-120"):
        _, res, classes = DATASETS[name]
        runs[name] = ProxiesConfig(out=OUT / f"zero_cost_{name}.parquet",
                                   proxies=("synflow", "params", "conv_count"),
                                   indices=[int(k) for k in ev], resolution=res,
                                   num_classes=classes, threads=threads)
    for name, cfg in runs.items():
        if only and name not in only:
            continue
        t0 = time.monotonic()
        last = [0.0]

        def progress(done: int, total: int, name: str = name, last: list = last) -> None:
            if time.monotonic() - last[0] > 30 or done == total:
                last[0] = time.monotonic()
                print(f"  {name}: {done}/{total}", flush=True)

        s = run_proxies(cfg, progress)
        print(f"{name}: {s['scored']} scored, {s['resumed']} cached, "
              f"{time.monotonic() - t0:.0f} s", flush=True)
    return {k: v.out for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compute-only", action="store_true")
    ap.add_argument("--only", action="append",
                    choices=("cifar10", "cifar10_data", "cifar100", "imagenet16-120"),
                    help="compute only these proxy caches (repeatable)")
    ap.add_argument("--data-cells", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not ACCURACY.exists():
        print(f"skipped: {ACCURACY} not found (the shared reference data)")
        return 0
    paths = compute(args.data_cells, args.threads, args.only)
    if args.compute_only:
        return 0
    return analyse(paths, args)


def analyse(paths: dict[str, Path], args: argparse.Namespace) -> int:
    raise NotImplementedError


if __name__ == "__main__":
    sys.exit(main())
