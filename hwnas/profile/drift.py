"""The drift reference: one fixed net timed beside everything measured, to divide out machine drift.

A machine's speed wanders over minutes (frequency scaling, thermal state, neighbours on a shared
host). The profiler therefore times a fixed reference net of the space inside every chunk, in the
same shuffled interleaved rounds as the chunk's items; each row keeps the reference's median of
its chunk (`reference_ms`) and `correct_drift` scales every row to the profile's typical
reference speed when the profile is loaded. Timing something later against a profile (`hwnas
export --verify`, the benchmarks) uses the same reference: its time now against the profile's
gives the factor that puts the new measurement on the profile's speed.

This module owns all of that: the reference arch of a space (`reference_arch`), its measurable
item (`reference_item`), the profile's reference speed (`base_reference_ms`), timing runners
interleaved with the reference (`time_with_reference`, giving a `Drift`: the scale factor, with
the busy-machine rule), and `correct_drift`. The reference always goes by the key `REFERENCE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hwnas.devices.measurement import Measurement, Protocol, measure_interleaved
from hwnas.profile.items import Item, net_item
from hwnas.profile.store import SCALED_COLUMNS
from hwnas.space import Arch, SearchSpace

REFERENCE = "__reference__"  # the reference's key among timed runners and items
MAX_DRIFT = 1.25  # a reference off its profiled time by more than this: a busy machine, not drift


def reference_arch(space: SearchSpace) -> Arch:
    """The drift reference of a space: a fixed mid-cost net (the middle choice per layer)."""
    return space.from_indices([len(layer.choices) // 2 for layer in space.layers])


def reference_item(reference: SearchSpace | Arch) -> Item:
    """The reference net as an item to measure (key `REFERENCE`); of a space or a stored arch."""
    arch = reference if isinstance(reference, Arch) else reference_arch(reference)
    return net_item(arch, REFERENCE)


def base_reference_ms(ops: pd.DataFrame, nets: pd.DataFrame) -> float | None:
    """The profile's reference speed: the median of `reference_ms` over all its rows, the time
    `correct_drift` scales every row to (None: the profile has no reference)."""
    times = [t["reference_ms"].to_numpy(float) for t in (ops, nets)
             if len(t) and "reference_ms" in t.columns]
    return float(np.median(np.concatenate(times))) if times else None


@dataclass(frozen=True)
class Drift:
    """The reference timed now (`reference_ms`) against the profile's (`base_ms`).

    `scale` = base_ms / reference_ms multiplies a time measured now onto the profile's speed.
    Outside [1/MAX_DRIFT, MAX_DRIFT] the machine is busy rather than drifting (time slicing slows
    a long reference run more than a short one, so the ratio is no longer a speed factor): `busy`
    is set, `note` says so, and `correct` does not apply it.
    """

    reference_ms: float | None
    base_ms: float | None = None

    @property
    def scale(self) -> float | None:
        if not self.reference_ms or not self.base_ms:
            return None
        return self.base_ms / self.reference_ms

    @property
    def busy(self) -> bool:
        s = self.scale
        return s is not None and not 1 / MAX_DRIFT <= s <= MAX_DRIFT

    @property
    def note(self) -> str:
        if not self.busy:
            return ""
        return (f"the reference net ran at {1 / self.scale:.2f}x its profiled time: the machine "
                "is busy, the drift correction is not applied; verify again on a quiet machine")

    def correct(self, ms: float) -> float | None:
        """`ms` on the profile's speed, or None when there is no (applicable) correction."""
        s = self.scale
        return ms * s if s is not None and not self.busy else None


def time_with_reference(runners: dict, reference, protocol: Protocol, rng: np.random.Generator,
                        base_ms: float | None = None) -> tuple[dict[str, Measurement], Drift]:
    """Time `runners` in shuffled interleaved rounds with the loaded `reference` among them.

    Returns the runners' measurements (without the reference) and the `Drift` of this run: the
    reference's median now against `base_ms` (the profile's, `base_reference_ms`). Without a
    reference (None) the runners are timed alone and the drift is empty.
    """
    if reference is None:
        return measure_interleaved(runners, protocol, rng), Drift(None, base_ms)
    if REFERENCE in runners:
        raise ValueError(f"{REFERENCE!r} is reserved for the drift reference")
    results = measure_interleaved({**runners, REFERENCE: reference}, protocol, rng)
    ref = results.pop(REFERENCE)
    return results, Drift(ref.median, base_ms)


def correct_drift(ops: pd.DataFrame, nets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Divide out slow machine drift using the reference net timed inside every chunk.

    Each row keeps its raw statistics and the median of the reference measured in the same
    interleaved rounds (`reference_ms`). Scaling every row by median(reference) / reference_ms
    puts all rows on the machine's typical speed (on the development VM this took two passes of
    the same nets from 40% to 90% within +-2% on onnxruntime 1 thread). Raw values stay in
    `raw_<stat>` columns. Profiles without the column are returned unchanged.
    """
    base = base_reference_ms(ops, nets)
    if base is None:
        return ops, nets
    out = []
    for t in (ops, nets):
        if len(t) and "reference_ms" in t.columns:
            t = t.copy()
            factor = base / t["reference_ms"].to_numpy(float)
            for col in SCALED_COLUMNS:
                if col in t.columns:
                    t["raw_" + col] = t[col]
                    t[col] = t[col].to_numpy(float) * factor
        out.append(t)
    return out[0], out[1]
