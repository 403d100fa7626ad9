"""Lookup-table predictor: an arch's latency as the sum of its ops' measured medians.

The method of ProxylessNAS (Cai et al. 2019, Sec. 3.3: E[latency] = sum of per-layer entries),
FBNet (Wu et al. 2019, Eq. 4) and HW-NAS-Bench. Vectorised: the table is a (layers x choices)
matrix plus the fixed stem/head cost, so ranking 100,000 archs is one gather and one sum.
"""

from __future__ import annotations

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.space import Arch, OpSpec, SearchSpace


class LookupTablePredictor(LatencyPredictor):
    """`fit(space, lut)` then `predict(archs)`; fitted: `space_`, `fixed_ms_`, `table_`.

    No intervals (`interval` is None): the table sum is a point estimate.
    """

    name = "lut"

    def fit(self, space: SearchSpace, lut: dict[str, float]) -> LookupTablePredictor:
        missing = [op.key for op in space.distinct_ops() if op.key not in lut]
        if missing:
            raise HwnasError(f"the lookup table lacks {len(missing)} op(s) of space "
                             f"{space.name!r}, e.g. {missing[0]}")
        self.space_ = space
        self.lut_ = dict(lut)
        self.fixed_ms_ = float(sum(lut[op.key] for op in space.fixed_ops()))
        width = max(len(layer.choices) for layer in space.layers)
        table = np.full((len(space.layers), width), np.nan)
        for i, layer in enumerate(space.layers):
            for j in range(len(layer.choices)):  # a choice's ops: one (chain) or one per cell
                table[i, j] = float(sum(lut[op.key] for op in space.choice_ops(i, j)))
        self.table_ = table
        return self

    @classmethod
    def from_profile(cls, profile) -> LookupTablePredictor:  # profile: hwnas.profile.Profile
        try:
            return cls().fit(profile.space, profile.lut)
        except HwnasError as e:  # a table of another space or settings: name its file
            raise HwnasError(f"{profile.root / 'ops.parquet'}: {e}") from None

    def indices(self, archs: list[Arch]) -> np.ndarray:
        """(N, layers) choice indices of archs (validated against the space; an arch at another
        resolution than the table's, which a space with elastic resolution (`ofa`) validates, is
        refused: the table prices its ops at the table's resolution only)."""
        idx = np.array([self.space_.indices(a) for a in archs], dtype=np.int64)\
            .reshape(len(archs), len(self.space_.layers))
        _check_resolution(self.space_, archs)
        return idx

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        """Latency (ms) of each row of an (N, layers) index matrix (priced as the network it
        runs: `SearchSpace.canonical_indices`, the identity for chain spaces)."""
        idx = self.space_.canonical_indices(np.asarray(idx))
        rows = np.arange(self.table_.shape[0])
        return self.fixed_ms_ + self.table_[rows[None, :], idx].sum(axis=1)

    def per_layer(self, idx: np.ndarray) -> np.ndarray:
        """(N, layers) per-layer latency (the features of learned corrections)."""
        rows = np.arange(self.table_.shape[0])
        return self.table_[rows[None, :], self.space_.canonical_indices(np.asarray(idx))]

    def breakdown(self, arch: Arch) -> list[tuple[OpSpec, float]]:
        """Each op the arch runs with its table latency."""
        ops = self.space_.ops(arch)
        _check_resolution(self.space_, [arch])
        return [(op, self.lut_[op.key]) for op in ops]

    def extremes(self) -> tuple[Arch, Arch]:
        """The fastest and the slowest arch of the space by this table (exact: it is additive)."""
        t = np.where(np.isnan(self.table_), np.inf, self.table_)
        fastest = t.argmin(axis=1)
        slowest = np.where(np.isnan(self.table_), -np.inf, self.table_).argmax(axis=1)
        return self.space_.from_indices(fastest), self.space_.from_indices(slowest)

    def expected(self, probs: np.ndarray) -> float:
        """E[latency] under per-layer choice probabilities ((layers, choices), rows sum to 1)."""
        t = np.nan_to_num(self.table_)
        return float(self.fixed_ms_ + (np.asarray(probs) * t).sum())


def _check_resolution(space: SearchSpace, archs: list[Arch]) -> None:
    for a in archs:
        if a.resolution != space.resolution:
            raise HwnasError(f"the lookup table was measured at {space.resolution}x"
                             f"{space.resolution}, the arch runs at {a.resolution}x"
                             f"{a.resolution}: profile the space at that resolution")
