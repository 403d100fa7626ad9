"""Cost of profiling: for each shipped profile, entries, whole nets, wall time, overhead ratio.

overhead ratio = wall time / time spent inside timed runs (the sum of all kept samples).
Also measures what bulk LiteRT conversion costs: N networks converted one after another in a fresh
process (what a naive loop pays) against `convert_many` (long-lived workers on every core).

    flock /tmp/hwnas_cpu.lock python benchmarks/profiling_cost.py [--litert-nets 6]

Writes benchmarks/results/profiling_cost.md and .json. The first table is read from the shipped
profiles' records (what profiling them cost, on the machine and day each was measured); the
second is timed now.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
from _common import PROFILES, Results

from hwnas.profile.reader import Profile


def profile_rows(res: Results) -> list[dict]:
    rows = []
    for d in sorted(PROFILES.glob("*/device.json")):
        prof = Profile.load(d.parent)
        res.profile(prof)
        rec, root = prof.record, d.parent
        ops = pd.read_parquet(root / "ops.parquet") if (root / "ops.parquet").exists() else []
        generic = int((ops["source"] == "generic").sum()) if len(ops) and "source" in ops else 0
        nets = pd.read_parquet(root / "nets.parquet") if (root / "nets.parquet").exists() else []
        knets = (len(pd.read_parquet(root / "kernel_nets.parquet"))
                 if (root / "kernel_nets.parquet").exists() else 0)
        wall, timed = rec.wall_s, rec.timed_s
        rows.append({"profile": root.name, "measured": rec.created[:10], "status": rec.status,
                     "space ops": len(ops) - generic, "generic ops": generic, "nets": len(nets),
                     "kernel nets": knets,
                     "wall min": wall / 60, "timed min": timed / 60,
                     "convert+load min": rec.convert_s / 60,
                     "overhead ratio": wall / timed if timed else float("nan")})
    return rows


def litert_conversion(n: int) -> list[dict]:
    """Seconds per 224x224 network: one fresh process per net vs the worker pool (cold cache)."""
    from hwnas.convert.tflite import convert_many
    from hwnas.profile.profiler import build_net
    from hwnas.space import get_space

    space = get_space("proxyless", 224)
    archs = [space.sample(1000 + i).to_json(indent=None) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        convert_many([(f"bench-{i}", functools.partial(build_net, a)) for i, a in enumerate(archs)],
                     cache_dir=__import__("pathlib").Path(tmp))
        pool_s = time.perf_counter() - t0
    script = ("import sys,functools; from hwnas.profile.profiler import build_net; "
              "from hwnas.convert.tflite import export_tflite; m,s=build_net(sys.argv[1]); "
              "export_tflite(m,s,sys.argv[2])")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, a in enumerate(archs[: max(2, n // 3)]):
            subprocess.run([sys.executable, "-c", script, a, os.path.join(tmp, f"{i}.tflite")],
                           check=True, capture_output=True)
        naive_s = (time.perf_counter() - t0) / max(2, n // 3) * n
    return [{"method": "one process per net (naive)", "nets": n, "s per net": naive_s / n},
            {"method": f"worker pool ({os.cpu_count()} procs, import once)", "nets": n,
             "s per net": pool_s / n}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--litert-nets", type=int, default=6, help="nets for the conversion benchmark "
                    "(0 skips it)")
    args = ap.parse_args()
    res = Results("profiling_cost", "Profiling cost", timing=True)
    res.text("What profiling each shipped profile cost, from its record (`device.json`: wall "
             "time, time inside timed runs, conversion and loading), on the machine and day it "
             "was measured. overhead ratio = wall time / time inside the items' timed runs (the "
             "drift reference, timed inside every chunk, counts as overhead, and so does the time "
             "of the kernel nets, profiled per node outside the timed runs). Targets (224x224, "
             "1 thread, table + 200 nets): at most 8 minutes, ratio at most 1.5; the kernel "
             "nets (any-model prediction) at most 5 more minutes (benchmarks/out_of_space.py "
             "times that part alone).")
    res.table(profile_rows(res), "Profiling cost of the shipped profiles")
    if args.litert_nets:
        res.text("LiteRT conversion of 224x224 networks, timed now (cold cache): one fresh "
                 "process per network against `convert_many`'s worker pool.")
        res.table(litert_conversion(args.litert_nets), "LiteRT conversion, proxyless 224x224")
    res.write()


if __name__ == "__main__":
    main()
