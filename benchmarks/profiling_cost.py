"""Cost of profiling: for each shipped profile, entries, whole nets, wall time, overhead ratio.

overhead ratio = wall time / time spent inside timed runs (the sum of all kept samples).
Also measures what bulk LiteRT conversion costs: N networks converted one after another in a fresh
process (what a naive loop pays) against `convert_many` (long-lived workers on every core).

    python benchmarks/profiling_cost.py [--litert-nets 6]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
from _common import PROFILES, print_table


def profile_rows() -> list[dict]:
    rows = []
    for d in sorted(PROFILES.glob("*/device.json")):
        dev = json.loads(d.read_text())
        root = d.parent
        ops = pd.read_parquet(root / "ops.parquet") if (root / "ops.parquet").exists() else []
        nets = pd.read_parquet(root / "nets.parquet") if (root / "nets.parquet").exists() else []
        wall, timed = dev.get("wall_s", 0.0), dev.get("timed_s", 0.0)
        rows.append({"profile": root.name, "status": dev.get("status"), "ops": len(ops),
                     "nets": len(nets), "wall min": wall / 60, "timed min": timed / 60,
                     "convert+load min": dev.get("convert_s", float("nan")) / 60,
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
    print_table(profile_rows(), "Profiling cost of the shipped profiles")
    if args.litert_nets:
        print_table(litert_conversion(args.litert_nets), "LiteRT conversion, proxyless 224x224")


if __name__ == "__main__":
    main()
