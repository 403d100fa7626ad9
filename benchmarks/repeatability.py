"""Repeatability: the same 50 whole networks measured in two separate passes.

The share of nets whose two medians agree within +-2% and +-5%, the median absolute difference,
and Kendall tau between the passes: the ceiling of any predictor's accuracy on that device.
The nets are spread over the latency range (every k-th net of the shipped profile's plan, or a
fresh `plan_nets` sample when there is no profile).

    flock /tmp/hwnas_cpu.lock python benchmarks/repeatability.py [--configs ort-cpu:1:224 ...]

Writes benchmarks/results/repeatability.md and .json (times the device: run it alone).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import PROFILES, Results
from scipy.stats import kendalltau

from hwnas.devices.measurement import Protocol
from hwnas.devices.registry import get_backend
from hwnas.profile.drift import reference_item
from hwnas.profile.profiler import measure_items, net_items
from hwnas.profile.reader import Profile
from hwnas.profile.sampling import plan_nets
from hwnas.space import Arch, get_space

DEFAULT = ["ort-cpu:1:224", "ort-cpu:1:128", "ort-cpu:2:224", "litert:1:224"]


def pick_archs(device: str, threads: int, resolution: int, n: int) -> list[Arch]:
    plan = PROFILES / f"{device}-{threads}t-proxyless-{resolution}" / "plan.json"
    if plan.exists():
        archs = [Arch.from_dict(d) for d in json.loads(plan.read_text())["archs"]]
        step = max(1, len(archs) // n)
        return archs[::step][:n]
    return plan_nets(get_space("proxyless", resolution), n, seed=7)


def run(config: str, n: int, res: Results) -> dict:
    device, threads, resolution = config.split(":")
    backend = get_backend(device, threads=int(threads))
    ok, reason = backend.available()
    if not ok:
        return {"config": config, "nets": 0, "within 2%": reason}
    space = get_space("proxyless", int(resolution))
    shipped = PROFILES / f"{device}-{threads}t-proxyless-{resolution}"
    if (shipped / "device.json").exists():
        res.profile(Profile.load(shipped))
    items = net_items(space, pick_archs(device, int(threads), int(resolution), n))
    # the space's drift reference (a fixed mid-cost net), timed inside every chunk
    ref = reference_item(space)
    t0 = time.perf_counter()
    a = measure_items(backend, items, Protocol(), seed=1, reference=ref)
    b = measure_items(backend, items, Protocol(), seed=2, reference=ref)
    ma = np.array([a[it.key].median for it in items])
    mb = np.array([b[it.key].median for it in items])
    rel = np.abs(ma - mb) / ((ma + mb) / 2)
    ra = np.array([a[it.key].extra["reference_ms"] for it in items])
    rb = np.array([b[it.key].extra["reference_ms"] for it in items])
    base = np.median(np.concatenate([ra, rb]))
    ca, cb = ma * base / ra, mb * base / rb
    crel = np.abs(ca - cb) / ((ca + cb) / 2)
    return {"config": f"{device} {threads}t {resolution}x{resolution}",
            "profile": f"{device}-{threads}t-proxyless-{resolution}", "nets": len(items),
            "latency ms": f"{ma.min():.2f}-{ma.max():.2f}",
            "within 2%": f"{np.mean(rel <= 0.02):.0%}", "within 5%": f"{np.mean(rel <= 0.05):.0%}",
            "median diff": f"{np.median(rel):.2%}", "max diff": f"{rel.max():.1%}",
            "kendall tau": float(kendalltau(ma, mb).statistic),
            "drift-corrected within 2%": f"{np.mean(crel <= 0.02):.0%}",
            "corrected within 5%": f"{np.mean(crel <= 0.05):.0%}",
            "corrected median diff": f"{np.median(crel):.2%}",
            "corrected tau": float(kendalltau(ca, cb).statistic),
            "reference drift": f"{(max(ra.max(), rb.max()) / min(ra.min(), rb.min()) - 1):.1%}",
            "bench min": (time.perf_counter() - t0) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT, help="device:threads:resolution")
    ap.add_argument("--nets", type=int, default=50)
    args = ap.parse_args()
    res = Results("repeatability", "Repeatability: the same networks measured in two passes",
                  seed=[1, 2], timing=True)
    res.text(f"{args.nets} networks per configuration (every k-th net of the shipped profile's "
             "plan, spanning its latency range), each measured in two separate passes (round "
             "orders seeded 1 and 2) with the space's drift reference timed inside every chunk; "
             "\"drift-corrected\" divides each pass by its reference. Differences are |a - b| / "
             "mean(a, b); tau is Kendall's tau between the passes: the ceiling for any predictor "
             "on that device.")
    rows = [run(c, args.nets, res) for c in args.configs]
    res.table(rows, "Repeatability of whole-network latency (two separate passes)")
    res.write()


if __name__ == "__main__":
    main()
