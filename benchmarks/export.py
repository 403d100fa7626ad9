"""Export: per target, export time, file size, parity and predicted vs measured latency.

Five sampled proxyless networks at 224x224 (seeds 0-4) go through `hwnas.export.pipeline.export`
exactly as `hwnas export ARCH --target onnx,tflite,torch --verify --profile ...` runs it:
onnx is predicted from the shipped ort-cpu 1-thread profile and timed by `ort-cpu`, tflite from
the shipped litert profile and timed by `litert`, torch is timed by `torch-cpu` (no shipped
profile, so no prediction). Verification times the file interleaved with the profile's drift
reference net and scales it to the profile's reference speed (see `hwnas.export.pipeline`); both
the raw and the corrected ratio are reported. Target (issue): measured within +-10% of predicted
on ort-cpu and litert.

    flock /tmp/hwnas_cpu.lock python benchmarks/export.py [--nets 5] [--targets onnx,tflite,torch]

Writes benchmarks/results/export.md and .json (times the device: run it alone).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import PROFILES, Results

from hwnas.export.pipeline import ExportConfig, export
from hwnas.profile.reader import Profile
from hwnas.space import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--targets", default="onnx,tflite,torch")
    ap.add_argument("--resolution", type=int, default=224)
    args = ap.parse_args()
    targets = tuple(args.targets.split(","))
    profiles = tuple(p for p in (PROFILES / f"ort-cpu-1t-proxyless-{args.resolution}",
                                 PROFILES / f"litert-1t-proxyless-{args.resolution}") if p.is_dir())
    space = get_space("proxyless", args.resolution)
    res = Results("export", "Export: parity, size and latency of the exported files",
                  seed=list(range(args.nets)), timing=True)
    for p in profiles:
        res.profile(Profile.load(p))
    res.text(f"{args.nets} sampled proxyless networks (seeds 0-{args.nets - 1}) at "
             f"{args.resolution}x{args.resolution}, random weights, exported as `hwnas export "
             f"ARCH --target {args.targets} --verify` with the shipped profiles: each file is "
             "timed on its device (1 thread) interleaved with the profile's drift reference. "
             "\"measured\" is that raw time; \"scaled to profile\" multiplies it by the "
             "reference's profiled / current time (refused when they differ by more than "
             "1.25x: a busy or different machine). Target: measured within +-10% of predicted on "
             "ort-cpu and litert.")
    rows, manifests = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.nets):
            arch_path = Path(tmp) / f"arch{seed}.json"
            space.sample(seed).save(arch_path)
            for m in export(ExportConfig(arch=arch_path, targets=targets, out=Path(tmp) / str(seed),
                                         profiles=profiles, verify=True),
                            log=lambda msg: print(msg, flush=True)):
                m["net"] = seed
                manifests.append(m)
    for m in manifests:
        pred, ver = m["predicted"], m["verified"]
        raw_ratio = ver["measured_ms"] / pred["latency_ms"] if pred else None
        rows.append({"net": m["net"], "target": m["target"], "device": ver["device"],
                     "export s": m["export_s"], "MB": m["artifact"]["bytes"] / 1e6,
                     "parity max abs": f"{m['parity']['max_abs']:.1e}",
                     "predicted ms": pred["latency_ms"] if pred else "-",
                     "measured ms": ver["measured_ms"],
                     "scaled to profile ms": ver["corrected_ms"] or "-",
                     "measured / predicted": raw_ratio or "-",
                     "scaled / predicted": ver["ratio_to_predicted"] or "-",
                     "drift note": ver.get("drift_note") or "-"})
    summary = []
    for target in targets:
        ms = [m for m in manifests if m["target"] == target]
        s = {"target": target, "nets": len(ms),
             "median export s": float(np.median([m["export_s"] for m in ms])),
             "median MB": float(np.median([m["artifact"]["bytes"] for m in ms]) / 1e6),
             "max parity abs": f"{max(m['parity']['max_abs'] for m in ms):.1e}"}
        pred = [m for m in ms if m["predicted"]]
        for label, key in (("measured", "measured_ms"), ("scaled", "corrected_ms")):
            r = np.array([m["verified"][key] / m["predicted"]["latency_ms"] for m in pred
                          if m["verified"][key]])
            s[f"within 10% ({label})"] = f"{int((np.abs(r - 1) <= 0.10).sum())}/{len(r)}" \
                if len(r) else "-"
            s[f"median meas/pred ({label})"] = float(np.median(r)) if len(r) else "-"
        summary.append(s)
    res.table(summary, "Summary per target")
    res.table(rows, "Per network and target")
    res.write(data={"manifests": manifests})


if __name__ == "__main__":
    main()
