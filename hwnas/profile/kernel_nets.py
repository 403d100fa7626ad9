"""Measuring random networks kernel by kernel: the training data of `hwnas predict MODEL.onnx`.

For each random network (`hwnas.profile.random_nets.random_cnn`, seeded): its ONNX file is timed
end to end with the profile's protocol, in interleaved chunks with the drift reference, like any
profile row; then the runtime's own per-node profile of the same file gives its kernels (the
nodes of the optimised graph it executes, `Backend.node_profile`) and their median times
(`hwnas.devices.kernels.runtime_kernels`). Both keep the chunk's reference time (`reference_ms`),
so `correct_kernels` puts them on the profile's speed as `correct_drift` does for the other rows.

Two tables, written into the profile after every chunk (an interruption loses at most the chunk
in flight; `--resume` skips the networks already there):

- `kernel_nets.parquet`: one row per network (net, seed, resolution, MACs, median_ms end to end,
  kernel_sum_ms, n_kernels, reference_ms, what was drawn);
- `kernels.parquet`: one row per kernel (net, node, op, configuration, ms, reference_ms).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.devices.kernels import runtime_kernels
from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.profile.drift import time_with_reference
from hwnas.profile.items import load_item
from hwnas.profile.random_nets import random_cnn
from hwnas.profile.store import read_parquet, write_parquet

KERNELS_FILE, NETS_FILE = "kernels.parquet", "kernel_nets.parquet"


def supports_kernels(backend) -> bool:
    """Whether the backend can split a model into the runtime's kernels and time each one."""
    return callable(getattr(backend, "node_profile", None))


def _reference_now(runner, runs: int = 10) -> float:
    """The reference's median over a few runs now (after two untimed ones)."""
    runner()
    runner()
    return float(np.median(runner.time(runs)))


def read_kernel_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kernels, kernel_nets) of a profile, empty frames when it has none."""
    root = Path(root)
    if not (root / NETS_FILE).exists():
        return pd.DataFrame(), pd.DataFrame()
    return read_parquet(root / KERNELS_FILE), read_parquet(root / NETS_FILE)


def correct_kernels(kernels: pd.DataFrame, nets: pd.DataFrame,
                    base_ms: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scale every row by base / its chunk's reference (the profile's speed), as
    `hwnas.profile.drift.correct_drift` does for ops and nets; unchanged without a base."""
    if base_ms is None or not len(nets) or nets["reference_ms"].isna().all():
        return kernels, nets
    k, n = kernels.copy(), nets.copy()
    n_scale = base_ms / n["reference_ms"].to_numpy(float)
    for c in ("median_ms", "kernel_sum_ms"):
        n[c] = n[c] * n_scale
    k["ms"] = k["ms"] * (base_ms / k["reference_ms"].to_numpy(float))
    return k, n


def measure_kernel_nets(backend, root: Path, count: int, protocol: Protocol, reference=None,
                        seed: int = 0, chunk: int = 8, node_runs: int = 20,
                        progress: Callable[[int, int], None] | None = None,
                        deadline: float | None = None, resolution: int | None = None) -> int:
    """Measure `count` random networks (seeds seed .. seed+count-1) into `root`'s kernel
    tables, skipping those already there; returns how many are left (0: all measured; more
    when `deadline`, a `time.monotonic()` value, stopped it between chunks).

    `reference`: the profile's drift reference as an `Item` (timed inside every chunk);
    `resolution`: draw every network at this input size (default: drawn per network).
    """
    if not supports_kernels(backend):
        raise HwnasError(f"backend {backend.name!r} cannot profile a model per kernel (only "
                         "onnxruntime backends expose the runtime's per-node profile)")
    kernels, nets = read_kernel_tables(root)
    done = set(nets["seed"].astype(int)) if len(nets) else set()
    todo = [s for s in range(seed, seed + count) if s not in done]
    rng = np.random.default_rng(seed)
    measured = 0
    if progress:
        progress(len(done), count)
    with tempfile.TemporaryDirectory() as tmp:
        ref_run = load_item(backend, reference, Path(tmp)) if reference is not None else None
        for start in range(0, len(todo), chunk):
            if deadline is not None and time.monotonic() > deadline:
                break
            seeds = todo[start:start + chunk]
            drawn, paths, runners = {}, {}, {}
            for s in seeds:
                net = random_cnn(s, resolution)
                drawn[s] = net
                paths[s] = backend.convert(net.module, net.input_shape,
                                           Path(tmp) / f"k{s}.{backend.artifact}")
                runners[f"k{s}"] = backend.load(paths[s], net.input_shape)
            res, drift = time_with_reference(runners, ref_run, protocol, rng)
            for r in runners.values():
                r.close()
            new_k, new_n = [], []
            for s in seeds:
                net = drawn[s]
                kt = runtime_kernels(backend, paths[s], net.input_shape, runs=node_runs)
                kt.insert(0, "net", f"k{s}")
                # the machine's speed moves within minutes: the reference timed right after the
                # per-node profile puts its times on the speed of the chunk's interleaved rounds
                if ref_run is not None and drift.reference_ms:
                    kt["ms"] = kt["ms"] * drift.reference_ms / _reference_now(ref_run)
                kt["reference_ms"] = drift.reference_ms
                new_k.append(kt)
                m = res[f"k{s}"]
                new_n.append({"net": f"k{s}", "seed": s, "resolution": net.input_shape[-1],
                              "macs": net.macs,
                              "median_ms": m.median, "p10_ms": m.p10, "p90_ms": m.p90,
                              "runs": m.n, "flagged": bool(m.flagged),
                              "kernel_sum_ms": float(kt["ms"].sum()), "n_kernels": len(kt),
                              "reference_ms": drift.reference_ms,
                              "spec": json.dumps(net.spec)})
                paths[s].unlink(missing_ok=True)
            kernels = pd.concat([kernels, *new_k], ignore_index=True)
            nets = pd.concat([nets, pd.DataFrame(new_n)], ignore_index=True)
            write_parquet(root / KERNELS_FILE, kernels)
            write_parquet(root / NETS_FILE, nets)
            measured += len(seeds)
            if progress:
                progress(len(done) + measured, count)
    return len(todo) - measured
