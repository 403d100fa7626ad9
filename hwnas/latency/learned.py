"""Learned network-level predictor: the lookup-table sum plus a learned correction, with intervals.

The table sum misses what happens between blocks (fusion, layout changes, cache and memory
effects, per-call overhead). Here a correction is learned on the profile's whole networks, in
the spirit of nn-Meter (Zhang et al., MobiSys 2021: kernel sums fixed by what the runtime does)
and of HELP / BRP-NAS (learned predictors on the arch encoding):

    latency(a) = S(a) * exp(f(x(a)))       (`linear`: latency(a) = w * S(a) + b)

S is the table sum, x the features (S, MACs, per-layer table latencies, one-hot choices), f one
of several scikit-learn families; the family with the lowest cross-validated MAPE on the training
networks wins (`lut`, f = 0, is a candidate too, so the correction never makes things worse on CV).

Intervals are conformal (CV+ style, Barber et al. 2021, simplified): the (1 - alpha) quantile of
the absolute out-of-fold log residuals q gives [pred * exp(-q), pred * exp(q)].
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hwnas._io import read_json
from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.latency.lut import LookupTablePredictor
from hwnas.space import Arch

FAMILIES = {
    "lut": None,
    "linear": LinearRegression(),
    "ridge": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
    "gbr": GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05,
                                     subsample=0.8, random_state=0),
    "rf": RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=0, n_jobs=1),
    "mlp": make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3,
                                                        max_iter=3000, random_state=0)),
}
SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.")


def conformal_q(oof: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """The conformal half-width in log space: the ceil((n + 1)(1 - alpha)) / n quantile of the
    absolute out-of-fold log residuals |log(oof / y)| (split-conformal's finite-sample level)."""
    res = np.sort(np.abs(np.log(np.asarray(oof, dtype=float) / np.asarray(y, dtype=float))))
    level = min(1.0, math.ceil((res.size + 1) * (1 - alpha)) / res.size)
    return float(np.quantile(res, level, method="higher"))


class NetworkPredictor(LatencyPredictor):
    """`fit(lut, archs, latency_ms)`, `predict(archs)`, `interval(archs)` (coverage 1 - alpha).

    Fitted: `family_`, `model_`, `cv_mape_` (per family), `q_` (conformal half-width in log
    space at `alpha_`), `lut_`.
    """

    @property
    def name(self) -> str:
        return f"learned ({self.family_})"

    @property
    def coverage(self) -> float:
        """Nominal coverage of `interval`: 1 - alpha."""
        return 1 - self.alpha_

    def __init__(self, families: tuple[str, ...] = tuple(FAMILIES), alpha: float = 0.1,
                 folds: int = 5, seed: int = 0) -> None:
        unknown = set(families) - set(FAMILIES)
        if unknown:
            raise HwnasError(f"unknown predictor families: {', '.join(sorted(unknown))}")
        if not 0.0 < alpha < 1.0:
            raise HwnasError(f"alpha (interval miscoverage) must be within (0, 1), got {alpha}")
        self.families, self.alpha, self.folds, self.seed = families, alpha, folds, seed

    # --- features -----------------------------------------------------------------------------
    def features(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(X, S) for an (N, layers) index matrix."""
        lut = self.lut_
        per_layer = lut.per_layer(idx)
        s = lut.fixed_ms_ + per_layer.sum(1)
        macs = self._macs_fixed + self._macs_table[np.arange(idx.shape[1])[None, :], idx].sum(1)
        onehot = np.concatenate([np.eye(n)[idx[:, i]] for i, n in enumerate(self._n_choices)], 1)
        x = np.column_stack([s, np.log(s), macs / 1e6, per_layer, onehot])
        return x, s

    def _prepare(self, lut: LookupTablePredictor) -> None:
        space = lut.space_
        self.lut_ = lut
        self._n_choices = [len(layer.choices) for layer in space.layers]
        width = max(self._n_choices)
        self._macs_table = np.zeros((len(space.layers), width))
        for i in range(len(space.layers)):
            for j in range(self._n_choices[i]):
                self._macs_table[i, j] = sum(op.macs for op in space.choice_ops(i, j))
        self._macs_fixed = float(sum(op.macs for op in space.fixed_ops()))

    # --- one family ---------------------------------------------------------------------------
    @staticmethod
    def _fit_one(family: str, x: np.ndarray, s: np.ndarray, y: np.ndarray):
        if family == "lut":
            return None
        model = clone(FAMILIES[family])
        if family == "linear":
            return model.fit(s[:, None], y)
        return model.fit(x, np.log(y / s))

    @staticmethod
    def _predict_one(family: str, model, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        if family == "lut":
            return s.copy()
        if family == "linear":
            return np.maximum(model.predict(s[:, None]), 1e-6)
        return s * np.exp(model.predict(x))

    # --- estimator API ------------------------------------------------------------------------
    def fit(self, lut: LookupTablePredictor, archs: list[Arch],
            latency_ms: np.ndarray) -> NetworkPredictor:
        y = np.asarray(latency_ms, dtype=float)
        if len(archs) != y.size or y.size < self.folds * 2:
            raise HwnasError(f"need at least {self.folds * 2} measured networks to learn a "
                             f"correction, got {y.size}")
        self._prepare(lut)
        idx = lut.indices(archs)
        x, s = self.features(idx)
        folds = KFold(self.folds, shuffle=True, random_state=self.seed)
        oof = {f: np.zeros_like(y) for f in self.families}
        for tr, te in folds.split(x):
            for f in self.families:
                model = self._fit_one(f, x[tr], s[tr], y[tr])
                oof[f][te] = self._predict_one(f, model, x[te], s[te])
        self.cv_mape_ = {f: float(np.mean(np.abs(oof[f] - y) / y)) for f in self.families}
        self.family_ = min(self.cv_mape_, key=self.cv_mape_.get)
        self.q_ = conformal_q(oof[self.family_], y, self.alpha)
        self.alpha_ = self.alpha
        self.model_ = self._fit_one(self.family_, x, s, y)
        self.n_train_ = int(y.size)
        return self

    def indices(self, archs: list[Arch]) -> np.ndarray:
        return self.lut_.indices(archs)

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        x, s = self.features(np.asarray(idx))
        return self._predict_one(self.family_, self.model_, x, s)

    def interval(self, archs: list[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) with nominal coverage 1 - alpha_ (conformal, see the module docstring)."""
        p = self.predict(archs)
        return p * math.exp(-self.q_), p * math.exp(self.q_)

    def transfer(self, lut: LookupTablePredictor) -> NetworkPredictor:
        """This correction on another table (of a space the profile's space also prices,
        `SearchSpace.priced_spaces`): only a correction that reads the table sum alone (`lut`,
        `linear`) carries over, as latency = w * S + b of the other table's sum S with the same
        interval half-width; the other families read per-layer features of the profile's own
        space, and the plain table is returned for them."""
        if self.family_ not in ("lut", "linear"):
            return self  # pragma: no cover - the caller fits lut/linear only
        other = copy.copy(self)
        other._prepare(lut)
        return other

    def linear_correction(self) -> tuple[float, float]:
        """(scale, offset) when the chosen correction is linear in the table sum, else (1, 0)."""
        if self.family_ == "linear":
            return float(self.model_.coef_[0]), float(self.model_.intercept_)
        return 1.0, 0.0

    # --- safe persistence (skops + JSON, never pickle) ----------------------------------------
    def save(self, root: str | Path) -> None:
        import skops.io as sio

        from hwnas._io import write_atomic, write_json

        root = Path(root)
        meta = {"family": self.family_, "alpha": self.alpha_, "q": self.q_,
                "cv_mape": self.cv_mape_, "n_train": self.n_train_, "folds": self.folds,
                "seed": self.seed, "format": "skops"}
        if self.model_ is not None:
            write_atomic(root / "predictor.skops", sio.dumps(self.model_))
        elif (root / "predictor.skops").exists():
            (root / "predictor.skops").unlink()
        write_json(root / "predictor.json", meta)

    @classmethod
    def load(cls, root: str | Path, lut: LookupTablePredictor) -> NetworkPredictor:
        """Load with skops' safe loader: only scikit-learn/numpy/scipy types are accepted."""
        import skops.io as sio

        root = Path(root)
        meta = read_json(root / "predictor.json")
        problem = _meta_problem(meta)
        if problem:
            raise HwnasError(f"{root / 'predictor.json'}: {problem}")
        self = cls(alpha=meta["alpha"], folds=meta.get("folds", 5), seed=meta.get("seed", 0))
        self._prepare(lut)
        self.family_, self.alpha_, self.q_ = meta["family"], meta["alpha"], meta["q"]
        self.cv_mape_, self.n_train_ = meta.get("cv_mape", {}), meta.get("n_train", 0)
        self.model_ = None
        if self.family_ != "lut":
            path = root / "predictor.skops"
            try:
                data = path.read_bytes()
                untrusted = sio.get_untrusted_types(data=data)
            except Exception as e:
                raise HwnasError(f"{path}: unreadable predictor file ({e})") from None
            bad = [t for t in untrusted if not t.startswith(SAFE_PREFIXES)]
            if bad:
                raise HwnasError(f"{path}: refusing to load types outside scikit-learn/numpy: "
                                 f"{', '.join(bad)}")
            try:
                self.model_ = sio.loads(data, trusted=untrusted)
            except Exception as e:  # a damaged file of allowed types: nothing of it ran
                raise HwnasError(f"{path}: unreadable predictor file ({type(e).__name__}: "
                                 f"{e})") from None
        return self


def _meta_problem(meta: object) -> str:
    """What is wrong with a predictor.json document ("" when nothing)."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    missing = [k for k in ("family", "alpha", "q") if k not in meta]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not isinstance(meta["family"], str):
        return f"field 'family' must be a string, got {meta['family']!r:.40}"
    for key in ("alpha", "q"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return f"field {key!r} must be a finite number, got {v!r:.40}"
    if not 0 < meta["alpha"] < 1:
        return f"field 'alpha' must be within (0, 1), got {meta['alpha']}"
    for key, default in (("folds", 5), ("seed", 0), ("n_train", 0)):
        v = meta.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) and not (key == "seed" and v is None):
            return f"field {key!r} must be an integer, got {v!r:.40}"
    return ""
