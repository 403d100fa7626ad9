"""GPU timing check: the profiler's figures against direct, trtexec-style timing on the same GPU.

For each GPU backend that can run here (torch-cuda, ort-cuda, tensorrt), a few ops of the
proxyless space and a few whole networks are timed two ways, side by side in one run:

- **profiler**: `hwnas.profile.profiler.measure_items`, the chunked, interleaved path
  `hwnas profile` uses (`measure_interleaved` -> `Runner.time`, CUDA events per run);
- **direct**: code independent of the protocol, in the way trtexec reports an engine: after
  `--warmup-ms` of untimed runs, `--iterations` runs, each bracketed by its own CUDA event pair
  on the runner's stream (trtexec's "GPU Compute Time", median), and one event pair around the
  same number of back-to-back runs (trtexec's throughput, as mean ms per run).
- **host wall, no sync**: `perf_counter` around each call without synchronizing, which is what
  the profiler recorded before the one-timing-path change (an asynchronous launch returns before
  the GPU has run: this is the launch time, not the run time).

The direct timing runs once before and once after the profiler on the same loaded runners, so
the table shows how much one item moves between two passes of the same code. Batch 1 is mostly
launch-bound on a large GPU (eager PyTorch: the GPU waits for the host between kernels); a large
batch makes the GPU the bottleneck, where a wall clock around an asynchronous call shows only
the launch. Target: the profiler's median within +-5% of the mean direct median for every item.
Without an NVIDIA GPU (or without a backend's runtime) the script says why per backend, writes
that, and exits 0.

    python benchmarks/gpu_check.py [--backends torch-cuda,ort-cuda,tensorrt] [--ops 6] [--nets 3]
                                   [--resolution 224] [--out benchmarks/results]

Writes `<out>/gpu_check.json` and `<out>/gpu_check.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.devices import Protocol, get_backend  # noqa: E402
from hwnas.devices.measurement import as_runner  # noqa: E402
from hwnas.profile.profiler import Item, build_op, measure_items, net_items  # noqa: E402
from hwnas.space import get_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def direct_timing(runner, iterations: int, warmup_ms: float) -> dict:
    """trtexec-style: per-run CUDA event pairs (median) and one pair around back-to-back runs."""
    stream = getattr(runner, "stream", None) or torch.cuda.current_stream()
    with torch.cuda.stream(stream):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        while (time.perf_counter() - t0) * 1e3 < warmup_ms:
            runner()
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iterations)]
        for start, end in events:
            start.record(stream)
            runner()
            end.record(stream)
        torch.cuda.synchronize()
        per_run = [s.elapsed_time(e) for s, e in events]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        for _ in range(iterations):
            runner()
        end.record(stream)
        torch.cuda.synchronize()
        back_to_back = start.elapsed_time(end) / iterations
        host = []
        for _ in range(iterations):  # what a wall clock around an asynchronous call sees
            t = time.perf_counter()
            runner()
            host.append((time.perf_counter() - t) * 1e3)
        torch.cuda.synchronize()
    return {"direct_median_ms": float(np.median(per_run)), "direct_p10_ms":
            float(np.percentile(per_run, 10)), "direct_p90_ms": float(np.percentile(per_run, 90)),
            "back_to_back_mean_ms": float(back_to_back),
            "host_wall_nosync_median_ms": float(np.median(host))}


def _batched(build, batch: int):
    def make():
        module, shape = build()
        return module, (batch, *shape[1:])
    return make


def check_backend(name: str, args, space, batch: int) -> dict:
    """Direct timing of every item, then the profiler's timing of all of them, then direct
    timing again: the two direct passes show how much the same item moves between passes."""
    backend = get_backend(name)
    ok, reason = backend.available()
    if not ok:
        return {"backend": name, "batch": batch, "available": False, "reason": reason,
                "rows": []}
    ops = sorted(space.distinct_ops(), key=lambda op: op.macs)
    pick = np.linspace(0, len(ops) - 1, args.ops).round().astype(int)
    items = [Item(ops[i].key, _batched(lambda op=ops[i]: build_op(op), batch), ops[i].input_shape)
             for i in pick]
    items += [Item(it.key, _batched(it.build, batch), it.shape)
              for it in net_items(space, [space.sample(seed) for seed in range(args.nets)])]
    for it in items:
        it.shape = (batch, *it.shape[1:])
    t0 = time.monotonic()
    direct: dict[str, list[dict]] = {it.key: [] for it in items}
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for it in items:
            torch.manual_seed(0)
            module, shape = it.build()
            path = backend.convert(module, shape, Path(tmp) / f"{len(runners)}.{backend.artifact}")
            runners[it.key] = as_runner(backend.load(path, shape))
        for it in items:
            direct[it.key].append(direct_timing(runners[it.key], args.iterations, args.warmup_ms))
        profiled = measure_items(backend, items, Protocol(), chunk=16, seed=0)
        for it in items:
            direct[it.key].append(direct_timing(runners[it.key], args.iterations, args.warmup_ms))
    rows = []
    for i, it in enumerate(items):
        a, b = direct[it.key]
        m = profiled[it.key]
        mean_direct = (a["direct_median_ms"] + b["direct_median_ms"]) / 2
        rows.append({"item": it.key if len(it.key) < 60 else it.key[:57] + "...",
                     "kind": "op" if i < len(pick) else "net", "batch": batch,
                     "profiler_median_ms": m.median, "profiler_runs": m.n,
                     "direct_before_ms": a["direct_median_ms"],
                     "direct_after_ms": b["direct_median_ms"],
                     "back_to_back_mean_ms": (a["back_to_back_mean_ms"]
                                              + b["back_to_back_mean_ms"]) / 2,
                     "host_wall_nosync_median_ms": (a["host_wall_nosync_median_ms"]
                                                    + b["host_wall_nosync_median_ms"]) / 2,
                     "profiler_over_direct": m.median / mean_direct,
                     "direct_after_over_before": b["direct_median_ms"] / a["direct_median_ms"]})
    return {"backend": name, "batch": batch, "available": True,
            "runtime": backend.runtime_version(), "fingerprint": backend.fingerprint(),
            "wall_s": time.monotonic() - t0, "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [f"GPU timing check ({result['date']}, `{result['command']}`)", ""]
    for b in result["backends"]:
        if not b["available"]:
            lines.append(f"- `{b['backend']}`: not run: {b['reason']}")
    lines.append("")
    for b in result["backends"]:
        if not b["available"]:
            continue
        fp = b["fingerprint"]
        lines += [f"**{b['backend']}, batch {b['batch']}** ({b['runtime']}; "
                  f"{fp.get('gpu_name', fp.get('gpu', '?'))})", "",
                  "| item | kind | profiler ms | direct ms before / after | back-to-back ms | "
                  "host wall, no sync ms | profiler / direct | direct after / before |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in b["rows"]:
            lines.append(f"| `{r['item']}` | {r['kind']} | {r['profiler_median_ms']:.4f} | "
                         f"{r['direct_before_ms']:.4f} / {r['direct_after_ms']:.4f} | "
                         f"{r['back_to_back_mean_ms']:.4f} | "
                         f"{r['host_wall_nosync_median_ms']:.4f} | "
                         f"{r['profiler_over_direct']:.3f} | {r['direct_after_over_before']:.3f} |")
        ratios = [r["profiler_over_direct"] for r in b["rows"]]
        noise = [r["direct_after_over_before"] for r in b["rows"]]
        within = sum(abs(x - 1) <= 0.05 for x in ratios)
        lines += ["", f"profiler / direct (mean of the two direct passes): median "
                      f"{np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}; "
                      f"{within}/{len(ratios)} items within +-5% (target: all). The same "
                      f"direct timing repeated: after / before {min(noise):.3f}-"
                      f"{max(noise):.3f}.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="torch-cuda,ort-cuda,tensorrt")
    ap.add_argument("--ops", type=int, default=6)
    ap.add_argument("--nets", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup-ms", type=float, default=200.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    space = get_space("proxyless", args.resolution)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
              "python": sys.version.split()[0], "torch": torch.__version__, "backends": []}
    for name in args.backends.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"{name} batch {batch} ...", flush=True)
            try:
                result["backends"].append(check_backend(name, args, space, batch))
            except Exception as e:  # one failing backend must not lose the others' figures
                result["backends"].append({"backend": name, "batch": batch, "available": False,
                                           "reason": f"failed: {type(e).__name__}: {e}",
                                           "rows": []})
            if not result["backends"][-1]["available"]:
                break
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = to_markdown(result)
    (args.out / "gpu_check.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
