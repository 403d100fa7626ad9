"""A lookup table learned from whole networks: per-choice costs fitted to measured nets.

A nets-only profile (`hwnas import latency-csv`: HELP's OFA latencies of 12 GPU settings, its
FBNet and NB201 latencies) holds some networks with their published latency and no table of
blocks. `NetsTablePredictor` answers only for the networks it holds; a method that prices
choices one by one (the ShiftNAS resource loss, Eq. 10; a closed-form expected latency) needs a
table. This predictor learns one, in the form of the lookup tables of ProxylessNAS, FBNet and
HW-NAS-Bench (latency = fixed + sum over layers of the chosen block's cost), by least squares on
the measured networks:

    latency(a, r) = f0 + f1 s(r) + sum_l [ A[l, a_l] + B[l, a_l] s(r) ],    s(r) = (r / r0)^2

with r the arch's input resolution and r0 the space's: a block's cost is a part that does not
grow with the image (launch and per-call overheads, which dominate batch-1 GPU latency) plus a
part proportional to its pixels (its MACs scale with r^2 at fixed channels). For a space without
elastic resolution s = 1 and only A is fitted. `skip` costs 0 (the fixed part absorbs the
rest); the rows are the nets the space runs (`SearchSpace.canonical_indices`: a block past an
OFA unit's depth is `skip`). The fit is scikit-learn's `RidgeCV` (alphas 1e-4..10, chosen by
leave-one-out); the table at a resolution r is `table_at(r)`, and `table_` / `fixed_ms_` are the
table at r0, the same attributes as `LookupTablePredictor`, so that a consumer of a measured
table takes this one as it is.

Intervals are conformal as the learned correction's (`hwnas.latency.learned.conformal_q`): the
(1 - alpha) quantile of the absolute out-of-fold log residuals (5 folds) gives
[pred * exp(-q), pred * exp(q)]. An additive model cannot see what happens between blocks
(fusion, a batch-1 GPU's scheduling); its cross-validated error (`cv_mape_`) says how much that
matters on a device, and `hwnas.latency.validate` style checks belong to the user's report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.latency.learned import conformal_q
from hwnas.space import Arch, SearchSpace

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
SKIP = "skip"


class AdditivePredictor(LatencyPredictor):
    """`fit(space, archs, latency_ms)` or `from_profile(profile)`; then `predict(archs)` (each
    arch at its own resolution), `predict_indices(idx)` (at the space's resolution),
    `interval(archs)`, `table_at(resolution)`.

    Fitted: `space_`, `a_` and `b_` ((layers, choices) costs, NaN where a layer has fewer
    choices), `f0_`, `f1_`, `elastic_` (whether the training nets spanned resolutions),
    `table_` / `fixed_ms_` (the table at the space's resolution), `ridge_alpha_`, `cv_mape_`,
    `q_` (conformal log half-width at `alpha_`), `n_train_`.
    """

    def __init__(self, alpha: float = 0.1, folds: int = 5, seed: int = 0,
                 device: str = "") -> None:
        if not 0.0 < alpha < 1.0:
            raise HwnasError(f"alpha (interval miscoverage) must be within (0, 1), got {alpha}")
        self.alpha, self.folds, self.seed, self.device = alpha, folds, seed, device

    @property
    def name(self) -> str:
        return f"additive:{self.device}" if self.device else "additive"

    @property
    def coverage(self) -> float:
        return 1 - self.alpha_

    # --- features -----------------------------------------------------------------------------
    def _columns(self, space: SearchSpace) -> list[tuple[int, int]]:
        """(layer, choice) of each one-hot column: every choice but `skip`."""
        return [(i, j) for i, layer in enumerate(space.layers)
                for j, c in enumerate(layer.choices) if c != SKIP]

    def _features(self, idx: np.ndarray, resolutions: np.ndarray) -> np.ndarray:
        idx = self.space_.canonical_indices(np.atleast_2d(np.asarray(idx, dtype=np.int64)))
        onehot = np.stack([(idx[:, i] == j).astype(float) for i, j in self._cols], axis=1)
        if not self.elastic_:
            return onehot
        s = (np.asarray(resolutions, dtype=float) / self.space_.resolution) ** 2
        return np.hstack([onehot, onehot * s[:, None], s[:, None]])

    # --- estimator API ------------------------------------------------------------------------
    def fit(self, space: SearchSpace, archs: Sequence[Arch], latency_ms: np.ndarray
            ) -> AdditivePredictor:
        archs = list(archs)
        y = np.asarray(latency_ms, dtype=float)
        if len(archs) != y.size:
            raise HwnasError(f"{len(archs)} archs but {y.size} latencies")
        if y.size < 2 * self.folds:
            raise HwnasError(f"need at least {2 * self.folds} measured networks to learn an "
                             f"additive table, got {y.size}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise HwnasError("latencies must be finite and positive to learn an additive table")
        self.space_ = space
        self._cols = self._columns(space)
        idx = np.array([space.indices(a) for a in archs], dtype=np.int64)
        res = np.array([a.resolution for a in archs], dtype=float)
        self.elastic_ = bool(np.unique(res).size > 1)
        x = self._features(idx, res)
        oof = np.zeros_like(y)
        for tr, te in KFold(self.folds, shuffle=True, random_state=self.seed).split(x):
            oof[te] = RidgeCV(alphas=ALPHAS).fit(x[tr], y[tr]).predict(x[te])
        oof = np.maximum(oof, 1e-6)
        self.cv_mape_ = float(np.mean(np.abs(oof - y) / y))
        self.q_ = conformal_q(oof, y, self.alpha)
        self.alpha_ = self.alpha
        model = RidgeCV(alphas=ALPHAS).fit(x, y)
        self.ridge_alpha_ = float(model.alpha_)
        n, w = len(self._cols), max(len(layer.choices) for layer in space.layers)
        self.a_ = np.full((len(space.layers), w), np.nan)
        self.b_ = np.full((len(space.layers), w), np.nan)
        for i, layer in enumerate(space.layers):
            for j, c in enumerate(layer.choices):
                if c == SKIP:
                    self.a_[i, j] = self.b_[i, j] = 0.0
        coef = model.coef_
        for k, (i, j) in enumerate(self._cols):
            self.a_[i, j] = coef[k]
            self.b_[i, j] = coef[n + k] if self.elastic_ else 0.0
        self.f0_ = float(model.intercept_)
        self.f1_ = float(coef[2 * n]) if self.elastic_ else 0.0
        self.table_, self.fixed_ms_ = self.table_at(space.resolution)
        self.n_train_ = int(y.size)
        return self

    @classmethod
    def from_profile(cls, profile, **kwargs) -> AdditivePredictor:  # profile: hwnas.profile.Profile
        """Fitted on the profile's measured networks (`nets.parquet`)."""
        if not len(profile.nets):
            raise HwnasError(f"{profile.root}: the profile has no measured networks "
                             "(nets.parquet) to learn an additive table from")
        device = profile.record.fingerprint.get("device") or profile.name
        return cls(device=str(device), **kwargs).fit(profile.space, profile.archs(),
                                                     profile.net_latency())

    def table_at(self, resolution: int) -> tuple[np.ndarray, float]:
        """((layers, choices) ms of each block at `resolution`, `skip` = 0; the fixed ms)."""
        s = (float(resolution) / self.space_.resolution) ** 2 if self.elastic_ else 1.0
        table = self.a_ + self.b_ * s
        fixed = self.f0_ + self.f1_ * s
        # a constant per layer is not identified (each row picks one choice of every layer that
        # has no `skip`): move each such layer's cheapest entry into the fixed part so that the
        # table reads as costs >= 0 where it can; predictions are unchanged
        for i, layer in enumerate(self.space_.layers):
            if SKIP not in layer.choices:
                m = float(np.nanmin(table[i]))
                table[i] -= m
                fixed += m
        return table, float(fixed)

    def indices(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.space_.indices(a) for a in archs], dtype=np.int64)\
            .reshape(len(archs), len(self.space_.layers))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        archs = list(archs)
        x = self._features(self.indices(archs), np.array([a.resolution for a in archs]))
        return self._predict_x(x)

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        x = self._features(idx, np.full(len(idx), self.space_.resolution))
        return self._predict_x(x)

    def _predict_x(self, x: np.ndarray) -> np.ndarray:
        n = len(self._cols)
        a = np.array([self.a_[i, j] for i, j in self._cols])
        out = self.f0_ + x[:, :n] @ a
        if self.elastic_:
            b = np.array([self.b_[i, j] for i, j in self._cols])
            out = out + x[:, n:2 * n] @ b + self.f1_ * x[:, 2 * n]
        return np.maximum(out, 1e-6)

    def interval(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        p = self.predict(archs)
        return p * np.exp(-self.q_), p * np.exp(self.q_)
