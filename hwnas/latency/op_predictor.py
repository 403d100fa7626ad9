"""Op-level latency predictor: the latency of an op the lookup table has not measured.

nn-Meter style (Zhang et al., MobiSys 2021, Sec. 5): one regressor per kernel family (conv,
depthwise conv, fully connected, pooling, elementwise, ...) where the profile has enough rows of
that family, else one global regressor, on the op's configuration and its FLOPs / memory, with
the target log(median_ms).

Two departures, both for the few hundred rows a profile has (nn-Meter measures thousands per
kernel): trees are flat outside the range they saw, so each family first gets an additive
roofline baseline fitted by non-negative least squares on relative error,

    base(op) = c0 + c1 * MACs + c2 * bytes         (c >= 0; bytes = 4 * (in + out + weights))

and the trees learn only the log residual: pred = base * exp(f(features)); and f is gradient
boosting rather than nn-Meter's random forest (5-fold CV on a 300-op ort-cpu profile: MAPE 9.4%
against 10.4%; 22% with the forest alone and no baseline). `c0` of the activation family
estimates the fixed cost of one standalone run (session call, input and output copies); its
per-byte cost also prices the layout reorders of `hwnas.latency.onnx_graph` (a ReLU pass).

The profile's fully connected ops (0.1-64 MB of weights, batch 1: they stream their weights once)
also measure the memory hierarchy (`fit_memory`): time = a + W * hot + max(0, W - C) * miss, so C
is the weight size beyond which the cache stops holding them and hot + miss the cost per MB of
weights that come from memory. `hwnas.latency.onnx_graph` uses it for the weights of a whole
network, which (unlike one op timed alone) do not stay in the cache from one run to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.ensemble import GradientBoostingRegressor

from hwnas.errors import HwnasError
from hwnas.space import OpSpec
from hwnas.space.blocks import ACTIVATIONS
from hwnas.space.ops import KINDS

FAMILIES = ("conv", "dwconv", "linear", "pool", "act", "binary", "mbconv", "fbconv",
            "classifier", "identity")
ACTS = tuple(ACTIVATIONS)


def family(op: OpSpec) -> str:
    """The kernel family of an op (nn-Meter's kernel types, coarsened)."""
    if op.kind == "conv":
        return "dwconv" if op.groups > 1 and op.groups == op.cin == op.cout else "conv"
    if op.kind in ("maxpool", "avgpool", "gap"):
        return "pool"
    if op.kind in ("add", "mul"):
        return "binary"
    return op.kind  # act, linear and the space kinds


def bytes_moved(op: OpSpec) -> int:
    """4 * (input + output + weight elements); elementwise add/mul read two inputs."""
    n_in = op.batch * op.cin * op.h * op.w * (2 if op.kind in ("add", "mul") else 1)
    n_out = op.batch * op.cout * op.out_h * op.out_w
    return 4 * (n_in + n_out + op.params)


def op_from_row(row: dict) -> OpSpec:
    """An OpSpec from a profile row (fields an imported profile lacks take their defaults)."""
    fields = {k: row[k] for k in OpSpec.fields() if k in row and not _missing(row[k])}
    for k in ("cin", "cout", "h", "w", "kernel", "stride", "expand", "groups", "batch"):
        if k in fields:
            fields[k] = int(fields[k])
    if "se" in fields:
        fields["se"] = bool(fields["se"])
    return OpSpec(**fields)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def features(ops: list[OpSpec]) -> tuple[np.ndarray, np.ndarray]:
    """(X, B): the trees' features and the baseline's [1, MACs, bytes] columns."""
    rows, base = [], []
    for op in ops:
        macs, params, nbytes = op.macs, op.params, bytes_moved(op)
        rows.append([
            *(float(op.kind == k) for k in KINDS),
            *(float(op.act == a) for a in ACTS),
            float(family(op) == "dwconv"),
            np.log2(op.cin), np.log2(op.cout), np.log2(op.h), np.log2(op.w),
            np.log2(op.out_h), np.log2(op.out_w), op.kernel, op.stride, op.expand,
            np.log2(op.groups), float(op.se), np.log2(op.batch),
            float(op.cin % 16 == 0), float(op.cout % 16 == 0), np.log2(op.cout / op.cin),
            np.log1p(macs), np.log1p(params), np.log(nbytes), np.log1p(macs) - np.log(nbytes),
        ])
        base.append([1.0, macs / 1e6, nbytes / 1e6])
    return np.asarray(rows, float).reshape(len(ops), -1), np.asarray(base, float).reshape(-1, 3)


def baseline(b: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """The roofline baseline in ms (floored at 1 us so that its log is finite)."""
    return np.maximum(b @ coef, 1e-3)


def fit_baseline(b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative c minimising sum(((b @ c) - y) / y)^2 (relative error)."""
    coef, _ = nnls(b / y[:, None], np.ones_like(y))
    if not np.any(coef):
        coef = np.array([float(np.median(y)), 0.0, 0.0])
    return coef


@dataclass(frozen=True)
class MemoryModel:
    """Weights beyond `cache_mb` cost `cold_ms_per_mb` each time a network runs (see module doc)."""

    cache_mb: float
    hot_ms_per_mb: float
    cold_ms_per_mb: float

    def miss_fraction(self, footprint_mb: float) -> float:
        """Share of a network's weights that come from memory, given the MB one run touches
        (weights + activations written): none below 3/4 of the cache size that one op alone
        shows (a network shares the cache with its activations and the runtime), all beyond
        twice it, linear between."""
        lo, hi = 0.75 * self.cache_mb, 2.0 * self.cache_mb
        return float(np.clip((footprint_mb - lo) / (hi - lo), 0.0, 1.0))


def fit_memory(ops_df: pd.DataFrame, target: str = "median_ms") -> MemoryModel | None:
    """The memory model from the fully connected rows (batch 1), or None when they cannot show
    it (fewer than 6 rows, or fewer than 3 with weights beyond the fitted cache size)."""
    rows = ops_df[(ops_df["kind"] == "linear")]
    if "batch" in rows:
        rows = rows[rows["batch"] == 1]
    if len(rows) < 6:
        return None
    w = (rows["cin"] * rows["cout"] + rows["cout"]).to_numpy(float) * 4 / 1e6
    t = rows[target].to_numpy(float)
    best = None
    for cache in np.exp(np.linspace(np.log(1.0), np.log(max(2.0, w.max())), 80)):
        x = np.column_stack([np.ones_like(w), w, np.maximum(0.0, w - cache)])
        coef, _ = nnls(x / t[:, None], np.ones_like(t))
        err = float(np.sum((x @ coef / t - 1) ** 2))
        if (w > cache).sum() >= 3 and (best is None or err < best[0]):
            best = (err, float(cache), coef)
    if best is None or best[2][2] <= 0:
        return None
    _, cache, coef = best
    return MemoryModel(cache, float(coef[1]), float(coef[1] + coef[2]))


class OpPredictor:
    """`fit(ops_df)` on a profile's ops rows, `predict(ops) -> ms`.

    Fitted: `models_` (family -> (baseline coef, trees)) for families with at least
    `min_rows` rows, `global_` (the same on all rows, for the other families), `n_rows_`
    (rows per family), `overhead_ms_` (the fixed cost of one standalone run), `memory_`
    (a `MemoryModel`, or None when the profile's linear ops cannot show one).
    """

    def __init__(self, min_rows: int = 20, n_estimators: int = 400, learning_rate: float = 0.05,
                 max_depth: int = 3, seed: int = 0) -> None:
        self.min_rows = min_rows
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.seed = seed

    def _trees(self) -> GradientBoostingRegressor:
        return GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         learning_rate=self.learning_rate, subsample=0.8,
                                         random_state=self.seed)

    def _fit_one(self, x: np.ndarray, b: np.ndarray, y: np.ndarray):
        coef = fit_baseline(b, y)
        trees = self._trees().fit(x, np.log(y) - np.log(baseline(b, coef)))
        return coef, trees

    def fit(self, ops_df: pd.DataFrame, target: str = "median_ms") -> OpPredictor:
        """Fit on profile rows (one per op: the OpSpec fields and `target` in ms)."""
        if target not in ops_df.columns or len(ops_df) < 2:
            raise HwnasError(f"an op predictor needs at least 2 rows with {target!r}")
        ops = [op_from_row(r) for r in ops_df.to_dict("records")]
        y = ops_df[target].to_numpy(float)
        if (y <= 0).any() or not np.isfinite(y).all():
            raise HwnasError(f"column {target!r} must hold positive milliseconds")
        x, b = features(ops)
        fam = np.array([family(op) for op in ops])
        self.n_rows_ = {f: int((fam == f).sum()) for f in FAMILIES if (fam == f).any()}
        self.global_ = self._fit_one(x, b, y)
        self.models_ = {f: self._fit_one(x[fam == f], b[fam == f], y[fam == f])
                        for f, n in self.n_rows_.items() if n >= self.min_rows}
        elt = self.models_.get("act", self.global_)[0]
        self.overhead_ms_ = float(elt[0]) if elt[0] > 0 else float(y.min()) / 2
        self.memory_ = fit_memory(ops_df, target)
        return self

    def predict(self, ops: list[OpSpec]) -> np.ndarray:
        """Predicted latency (ms) of each op."""
        if not hasattr(self, "global_"):
            raise HwnasError("OpPredictor is not fitted: call fit(ops_df) first")
        if not ops:
            return np.zeros(0)
        x, b = features(ops)
        fam = np.array([family(op) for op in ops])
        out = np.empty(len(ops))
        done = np.zeros(len(ops), bool)
        for f, (coef, rf) in self.models_.items():
            m = fam == f
            if m.any():
                out[m] = baseline(b[m], coef) * np.exp(rf.predict(x[m]))
                done |= m
        if not done.all():
            coef, rf = self.global_
            out[~done] = baseline(b[~done], coef) * np.exp(rf.predict(x[~done]))
        return out
