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

A fitted predictor is kept as plain arrays (`TreeEnsemble`: each boosted tree's split features,
thresholds, children and leaf values), so that `save` / `load` write and read it inside a
profile as numeric arrays and JSON (op_predictor.npz, read with `allow_pickle=False`, and
op_predictor.json: no pickle, nothing that runs code on load). Loading needs neither
scikit-learn nor skops (importing those alone takes about a second, more than the rest of
`hwnas predict MODEL.onnx`); `hwnas validate` saves it and `load_or_fit` uses it while the
profile's op rows are the ones it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hwnas.errors import HwnasError, NotFittedError
from hwnas.space import OpSpec
from hwnas.space.blocks import ACTIVATIONS
from hwnas.space.ops import KINDS

if TYPE_CHECKING:  # scipy and scikit-learn are imported when fitting, not to load a saved one
    from sklearn.ensemble import GradientBoostingRegressor

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
    from scipy.optimize import nnls

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
        (weights + activations written): none while that fits in the cache size that one op
        alone shows, all beyond twice it, linear between. (The activations share the cache
        with the weights; they are in the footprint already, so the cache is not discounted
        for them a second time.)"""
        lo, hi = self.cache_mb, 2.0 * self.cache_mb
        return float(np.clip((footprint_mb - lo) / (hi - lo), 0.0, 1.0))


def fit_memory(ops_df: pd.DataFrame, target: str = "median_ms") -> MemoryModel | None:
    """The memory model from the fully connected rows (batch 1), or None when they cannot show
    it (fewer than 6 rows, or fewer than 3 with weights beyond the fitted cache size)."""
    from scipy.optimize import nnls

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


FORMAT_VERSION = 1  # of the saved predictor; bump when `features` or the model changes
SAVED_FILES = ("op_predictor.npz", "op_predictor.json")


@dataclass
class TreeEnsemble:
    """A fitted `GradientBoostingRegressor` as arrays, one row per tree (nodes padded to the
    largest tree): `predict` gives what the regressor's `predict` gives (features are compared
    in float32, as scikit-learn's trees do; leaf values are kept in float32)."""

    init: float
    feature: np.ndarray  # (trees, nodes) int16; -1 at leaves
    threshold: np.ndarray  # (trees, nodes) float32: go left when x <= threshold
    left: np.ndarray  # (trees, nodes) int16 child indices (a leaf points at itself)
    right: np.ndarray
    value: np.ndarray  # (trees, nodes) float32: leaf value times the learning rate
    depth: int

    ARRAYS = ("feature", "threshold", "left", "right", "value")

    @classmethod
    def from_gbr(cls, gbr: GradientBoostingRegressor) -> TreeEnsemble:
        trees = [est.tree_ for est in gbr.estimators_[:, 0]]
        n = max(t.node_count for t in trees)
        shape = (len(trees), n)
        feature, left, right = (np.full(shape, -1, np.int16) for _ in range(3))
        threshold, value = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for i, t in enumerate(trees):
            k = t.node_count
            leaf = t.children_left[:k] < 0
            idx = np.arange(k)
            feature[i, :k] = np.where(leaf, -1, t.feature[:k])
            left[i, :k] = np.where(leaf, idx, t.children_left[:k])
            right[i, :k] = np.where(leaf, idx, t.children_right[:k])
            # x32 <= t64 holds exactly when x32 <= the largest float32 not above t64
            thr = t.threshold[:k].astype(np.float32)
            up = thr.astype(np.float64) > t.threshold[:k]
            thr[up] = np.nextafter(thr[up], np.float32(-np.inf))
            threshold[i, :k] = np.where(leaf, 0, thr)
            value[i, :k] = t.value[:k, 0, 0] * gbr.learning_rate
        init = float(np.ravel(gbr.init_.predict(np.zeros((1, gbr.n_features_in_))))[0])
        return cls(init, feature, threshold, left, right, value,
                   max(t.max_depth for t in trees))

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        rows = np.arange(len(x))[None, :]
        trees = np.arange(len(self.feature))[:, None]
        node = np.zeros((len(self.feature), len(x)), np.int64)
        for _ in range(self.depth):
            f = self.feature[trees, node]
            go_left = x[rows, np.maximum(f, 0)] <= self.threshold[trees, node]
            node = np.where(go_left, self.left[trees, node], self.right[trees, node])
        return self.init + self.value[trees, node].sum(0, dtype=np.float64)


def data_fingerprint(ops_df: pd.DataFrame, target: str = "median_ms") -> str:
    """What a saved predictor was fitted on: a hash of the rows' keys and targets."""
    rows = sorted(zip(ops_df["key"].astype(str), np.round(ops_df[target].to_numpy(float), 9),
                      strict=True))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


class OpPredictor:
    """`fit(ops_df)` on a profile's ops rows, `predict(ops) -> ms`.

    Fitted: `models_` (family -> (baseline coef, `TreeEnsemble`)) for families with at least
    `min_rows` rows, `global_` (the same on all rows, for the other families), `n_rows_`
    (rows per family), `overhead_ms_` (the fixed cost of one standalone run), `memory_`
    (a `MemoryModel`, or None when the profile's linear ops cannot show one), `fitted_on_`
    (`data_fingerprint` of the rows).
    """

    def __init__(self, min_rows: int = 20, n_estimators: int = 400, learning_rate: float = 0.05,
                 max_depth: int = 3, seed: int = 0) -> None:
        self.min_rows = min_rows
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.seed = seed

    def _trees(self) -> GradientBoostingRegressor:
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         learning_rate=self.learning_rate, subsample=0.8,
                                         random_state=self.seed)

    def _fit_one(self, x: np.ndarray, b: np.ndarray, y: np.ndarray):
        coef = fit_baseline(b, y)
        trees = self._trees().fit(x, np.log(y) - np.log(baseline(b, coef)))
        return coef, TreeEnsemble.from_gbr(trees)

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
        self.fitted_on_ = data_fingerprint(ops_df, target)
        return self

    def predict(self, ops: list[OpSpec]) -> np.ndarray:
        """Predicted latency (ms) of each op."""
        if not hasattr(self, "global_"):
            raise NotFittedError("OpPredictor is not fitted: call fit(ops_df) first")
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

    # --- safe persistence (numpy arrays without pickle + JSON) -----------------------------
    def save(self, root: str | Path) -> None:
        """Write op_predictor.npz (the trees' arrays) and op_predictor.json into `root`."""
        import io

        from hwnas._io import write_atomic, write_json

        if not hasattr(self, "global_"):
            raise NotFittedError("OpPredictor is not fitted: nothing to save")
        root = Path(root)
        models = {"__global__": self.global_, **self.models_}
        arrays = {f"{name}.{a}": getattr(ens, a) for name, (_, ens) in models.items()
                  for a in TreeEnsemble.ARRAYS}
        meta = {"format": "npz", "format_version": FORMAT_VERSION,
                "params": {"min_rows": self.min_rows, "n_estimators": self.n_estimators,
                           "learning_rate": self.learning_rate, "max_depth": self.max_depth,
                           "seed": self.seed},
                "fitted_on": self.fitted_on_, "n_rows": self.n_rows_,
                "overhead_ms": self.overhead_ms_,
                "memory": asdict(self.memory_) if self.memory_ is not None else None,
                "models": {name: {"baseline": [float(c) for c in coef], "init": ens.init,
                                  "depth": ens.depth} for name, (coef, ens) in models.items()}}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_atomic(root / SAVED_FILES[0], buf.getvalue())
        write_json(root / SAVED_FILES[1], meta)

    @classmethod
    def load(cls, root: str | Path) -> OpPredictor:
        """Read a saved predictor: plain numeric arrays read with `allow_pickle=False`, so a
        file cannot make the loader run code; anything else is refused with a clear error."""
        root = Path(root)
        arrays_path, json_path = (root / f for f in SAVED_FILES)
        try:
            meta = json.loads(json_path.read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {meta.get('format_version')}, "
                                 f"this hwnas reads {FORMAT_VERSION}")
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            if any(a.dtype.kind not in "iuf" for a in arrays.values()):
                raise ValueError("only integer and float arrays are expected")
            self = cls(**meta["params"])
            models = {}
            for name, m in meta["models"].items():
                ens = TreeEnsemble(float(m["init"]),
                                   *(arrays[f"{name}.{a}"] for a in TreeEnsemble.ARRAYS),
                                   depth=int(m["depth"]))
                models[name] = (np.asarray(m["baseline"], float), ens)
        except Exception as e:  # a damaged or foreign file: say which, no traceback
            raise HwnasError(f"{root}: unreadable saved op predictor "
                             f"({type(e).__name__}: {e})") from None
        self.global_ = models.pop("__global__")
        self.models_ = models
        self.n_rows_ = {k: int(v) for k, v in meta["n_rows"].items()}
        self.overhead_ms_ = float(meta["overhead_ms"])
        self.memory_ = MemoryModel(**meta["memory"]) if meta.get("memory") else None
        self.fitted_on_ = meta["fitted_on"]
        return self


def load_or_fit(profile, target: str = "median_ms") -> tuple[OpPredictor | None, str]:
    """The profile's op predictor: the saved one when it was fitted on the profile's current op
    rows, else one fitted now (not saved: `hwnas validate` saves it). Returns (predictor or None
    when the profile has fewer than 2 ops, "saved" or "fitted ..." saying why)."""
    ops = profile.ops
    if len(ops) < 2:
        return None, "fitted"
    if all((profile.root / f).exists() for f in SAVED_FILES):
        try:
            saved = OpPredictor.load(profile.root)
        except HwnasError as e:
            return OpPredictor().fit(ops, target), f"fitted ({e})"
        if saved.fitted_on_ == data_fingerprint(ops, target):
            return saved, "saved"
        return OpPredictor().fit(ops, target), "fitted (the saved one predates the op rows)"
    return OpPredictor().fit(ops, target), "fitted"
