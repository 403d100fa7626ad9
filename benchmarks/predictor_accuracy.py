"""Predictor accuracy on held-out networks of each shipped profile, side by side on the same nets.

FLOPs-linear (latency ~ a * MACs + b), the lookup-table sum, and the learned correction (family
chosen by cross-validation on the train nets), each on the same 40% held-out nets (seeded split):
share within +-5% / +-10%, RMSPE, bias, Kendall tau, and the empirical coverage of the 90%
intervals. The "passes tau" column is Kendall tau between two measurement passes of the same nets
(benchmarks/repeatability.py, when its results file exists): the ceiling for any predictor.

    python benchmarks/predictor_accuracy.py [--profiles DIR ...] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import PROFILES, Results, load_results

from hwnas.latency.validate import validate
from hwnas.profile.reader import Profile


def passes_tau(name: str) -> str:
    """Kendall tau between two passes of the same nets (benchmarks/results/repeatability.json)."""
    rep = load_results("repeatability")
    for row in rep["tables"][0]["rows"] if rep else []:
        if row.get("profile") == name:
            tau = row.get("kendall tau")
            return f"{tau:.3f}" if isinstance(tau, float) else "-"
    return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    args = ap.parse_args()
    dirs = args.profiles or sorted(str(p.parent) for p in PROFILES.glob("*/nets.parquet"))
    res = Results("predictor_accuracy", "Predictor accuracy on held-out networks",
                  seed=args.seeds, timing=True)
    res.text("Each profile's whole networks are split 60/40 (seeded); every predictor is fitted "
             "on the 60% (the learned correction picks its model family by cross-validation "
             "inside that 60%) and scored on the 40% it never saw: the test set. \"passes tau\" is "
             "Kendall tau between two measurement passes of the same nets (the repeatability "
             "results), the ceiling for any predictor. Coverage: the share of test nets inside "
             "the predictor's 90% interval.")
    rows = []
    for d in dirs:
        prof = Profile.load(d)
        res.profile(prof)
        reports = [validate(prof, seed=s) for s in args.seeds]
        for name in ("flops_linear", "lut_sum", "learned"):
            rs = [r["results"][name] for r in reports]

            def avg(key: str, rs=rs) -> float:
                return float(np.mean([r[key] for r in rs]))

            label = name if name != "learned" else \
                "learned (" + ",".join(sorted({r["family"] for r in rs})) + ")"
            rows.append({
                "profile": prof.name, "predictor": label, "test nets": rs[0]["n"],
                "within 5%": f"{avg('within_5'):.1%}", "within 10%": f"{avg('within_10'):.1%}",
                "RMSPE": f"{avg('rmspe'):.2%}", "bias": f"{avg('bias'):+.2%}",
                "Kendall tau": f"{avg('kendall_tau'):.3f}", "passes tau": passes_tau(prof.name),
                "90% interval coverage": f"{avg('coverage'):.0%}" if "coverage" in rs[0]
                else "-",
            })
    res.table(rows, f"Held-out accuracy (40% of each profile's nets, seeds {args.seeds})")
    res.table(ranking_speed(Profile.load(dirs[0])), "Ranking 100,000 random archs")
    res.write()


def ranking_speed(prof: Profile, n: int = 100_000) -> list[dict]:
    """Seconds to predict n archs given as an (n, layers) index matrix (median of 5 runs)."""
    import time

    from hwnas.latency.learned import NetworkPredictor
    from hwnas.latency.lut import LookupTablePredictor

    lut = LookupTablePredictor.from_profile(prof)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, len(layer.choices), n) for layer in lut.space_.layers], 1)
    learned = NetworkPredictor(seed=0).fit(lut, prof.archs(), prof.net_latency())
    rows = []
    for name, fn in (("lookup-table sum", lut.predict_indices),
                     (f"learned ({learned.family_})", learned.predict_indices)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            order = np.argsort(fn(idx))
            times.append(time.perf_counter() - t0)
        rows.append({"profile": prof.name, "predictor": name, "archs": n,
                     "seconds (median of 5)": float(np.median(times)), "ranked": order.size})
    return rows


if __name__ == "__main__":
    main()
