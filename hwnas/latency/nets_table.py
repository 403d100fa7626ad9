"""A table of measured whole networks as a predictor: the latency of a net is its measured value.

What an imported nets-only profile offers (`hwnas import latency-csv`: HW-NAS-Bench latencies as
HELP redistributes them): no lookup table, only some networks with their published latency. The
predictor looks an arch up by its resolution and choices (`predict_indices` at the space's
resolution); an arch that the table does not hold is an error, not an estimate. The resolution is
part of the key because a space with elastic resolution (`ofa`, whose HELP latencies are measured
at 128..224) holds nets of one choice list at several resolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.space import Arch, SearchSpace


class NetsTablePredictor(LatencyPredictor):
    """`fit(space, archs, latency_ms)` or `from_profile(profile)`; `name` is "table:<device>"."""

    def __init__(self, name: str = "table") -> None:
        self.name = name

    def fit(self, space: SearchSpace, archs: list[Arch], latency_ms: np.ndarray
            ) -> NetsTablePredictor:
        y = np.asarray(latency_ms, dtype=float)
        if len(archs) != y.size:
            raise HwnasError(f"{len(archs)} archs but {y.size} latencies")
        self.space_ = space
        self.table_ = {_key(a.resolution, space.indices(a)): float(ms)
                       for a, ms in zip(archs, y, strict=True)}
        return self

    @classmethod
    def from_profile(cls, profile) -> NetsTablePredictor:  # profile: hwnas.profile.Profile
        if not len(profile.nets):
            raise HwnasError(f"{profile.root}: the profile has no measured networks "
                             "(nets.parquet)")
        device = profile.record.fingerprint.get("device") or profile.name
        return cls(f"table:{device}").fit(profile.space, profile.archs(), profile.net_latency())

    def indices(self, archs: list[Arch]) -> np.ndarray:
        return np.array([self.space_.indices(a) for a in archs], dtype=np.int64)\
            .reshape(len(archs), len(self.space_.layers))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        archs = list(archs)
        return self._lookup(self.indices(archs), [a.resolution for a in archs])

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        return self._lookup(idx, [self.space_.resolution] * len(idx))

    def _lookup(self, idx: np.ndarray, resolutions: list[int]) -> np.ndarray:
        out = np.empty(len(idx))
        for r, (row, resolution) in enumerate(zip(idx, resolutions, strict=True)):
            ms = self.table_.get(_key(resolution, row))
            if ms is None:
                choices = " ".join(self.space_.from_indices(row).choices)
                at = f" at {resolution}x{resolution}" if resolution != self.space_.resolution \
                    else ""
                raise HwnasError(f"{self.name}: the arch [{choices}]{at} is not in the table of "
                                 f"{len(self.table_)} measured networks (a nets-only profile "
                                 "predicts only the networks it holds)")
            out[r] = ms
        return out


def _key(resolution: int, idx) -> tuple[int, ...]:
    return (int(resolution), *(int(i) for i in idx))
