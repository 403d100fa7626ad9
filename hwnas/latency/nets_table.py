"""A table of measured whole networks as a predictor: the latency of a net is its measured value.

What an imported nets-only profile offers (`hwnas import latency-csv`: HW-NAS-Bench latencies as
HELP redistributes them): no lookup table, only some networks with their published latency. The
predictor looks an arch up by its choices; an arch that the table does not hold is an error, not
an estimate.
"""

from __future__ import annotations

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
        self.table_ = {tuple(space.indices(a)): float(ms) for a, ms in zip(archs, y, strict=True)}
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

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        out = np.empty(len(idx))
        for r, row in enumerate(idx):
            ms = self.table_.get(tuple(int(i) for i in row))
            if ms is None:
                choices = " ".join(self.space_.from_indices(row).choices)
                raise HwnasError(f"{self.name}: the arch [{choices}] is not in the table of "
                                 f"{len(self.table_)} measured networks (a nets-only profile "
                                 "predicts only the networks it holds)")
            out[r] = ms
        return out
