"""Kernel-level latency of any ONNX model, with the kernels split the way the runtime runs them.

nn-Meter (Zhang et al., MobiSys 2021) predicts a model as the sum of its kernels' latencies. Its
Sec. 4 finds the kernels with hand-written fusion rules ("kernel detection"); here the runtime
does it: onnxruntime writes the graph it executes after its optimisations
(`SessionOptions.optimized_model_filepath`: Conv + BatchNorm + activation as one `Conv`/
`FusedConv`, NCHWc layout with explicit `ReorderInput` / `ReorderOutput`, ...) and its per-node
profiler times every node of it. A kernel is one node of that optimised graph.

- `hwnas.devices.kernels.kernel_table`: the kernels of one model as rows (the node, its kernel
  type, its configuration and, when the profiler timed it, its median time).
- `KernelPredictor`: nn-Meter Sec. 5's per-kernel-type regressors, fitted on the kernels of
  randomly generated networks (`hwnas.profile.random_nets`; never on the networks it is
  evaluated on). Per kernel type with at least `min_rows` rows, else one global model: an
  additive roofline baseline (c0 + c1 MACs + c2 bytes, non-negative, `op_predictor.
  fit_baseline`) times exp(gradient-boosted trees on the log residual), as the op predictor
  does (trees alone are flat outside the range they saw; nn-Meter uses random forests).
- The whole network: latency = a * sum(kernels) + b * kernels + c, fitted by least squares on
  relative error over the random networks' end-to-end times (measured without the profiler)
  against their measured kernel sums. c is what a run costs around the kernels (the session
  call); b is the per-kernel difference between a profiled and a plain run (dispatch between
  nodes, less the profiler's own timestamps, so it may be negative); a is the rest.

Saved inside a profile as arrays and JSON (`kernel_predictor.npz` with `allow_pickle=False`,
`kernel_predictor.json`): nothing that runs code on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.errors import HwnasError, NotFittedError
from hwnas.latency.op_predictor import TreeEnsemble, baseline, fit_baseline

ACTIVATIONS = ("", "Relu", "Clip", "HardSwish", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh")
FEATURES = ("macs", "in_elems", "out_elems", "weight_elems", "bytes", "k", "stride", "groups",
            "depthwise", "cin", "cout", "out_hw", "n_inputs", *(f"act_{a or 'none'}"
                                                               for a in ACTIVATIONS))



def features(k: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(X, B): the trees' features and the baseline's [1, MACs (M), bytes (MB)] columns."""
    nbytes = 4.0 * (k["in_elems"] + k["out_elems"] + k["weight_elems"]).to_numpy(float)
    macs = k["macs"].to_numpy(float)
    cols = {"macs": np.log1p(macs), "in_elems": np.log1p(k["in_elems"].to_numpy(float)),
            "out_elems": np.log1p(k["out_elems"].to_numpy(float)),
            "weight_elems": np.log1p(k["weight_elems"].to_numpy(float)),
            "bytes": np.log1p(nbytes), "k": k["k"].to_numpy(float),
            "stride": k["stride"].to_numpy(float),
            "groups": np.log2(np.maximum(1, k["groups"].to_numpy(float))),
            "depthwise": ((k["groups"] > 1) & (k["groups"] == k["cin"])).to_numpy(float),
            "cin": np.log1p(k["cin"].to_numpy(float)), "cout": np.log1p(k["cout"].to_numpy(float)),
            "out_hw": np.log1p(k["out_hw"].to_numpy(float)),
            "n_inputs": k["n_inputs"].to_numpy(float)}
    for a in ACTIVATIONS:
        cols[f"act_{a or 'none'}"] = (k["act"].fillna("") == a).to_numpy(float)
    x = np.stack([cols[f] for f in FEATURES], 1)
    b = np.stack([np.ones(len(k)), macs / 1e6, nbytes / 1e6], 1)
    return x, b


@dataclass
class KernelPrediction:
    """A model's predicted latency: the total and one row per kernel (`ms`, `model`: the kernel
    type's own regressor or "global")."""

    total_ms: float
    kernels: pd.DataFrame
    kernel_sum_ms: float
    combine: dict = field(default_factory=dict)


class KernelPredictor:
    """`fit(kernels, nets)` on a profile's random-network kernels, `predict(kernels) -> ms`,
    `predict_model(kernels) -> KernelPrediction`.

    `kernels`: rows of `kernel_table` with `ms` and `net` (which random network); `nets`: one row
    per network with `net`, `median_ms` (end to end, measured without the profiler),
    `kernel_sum_ms` and `n_kernels`. Fitted: `models_` (kernel type -> (baseline coef,
    `TreeEnsemble`)), `global_`, `rows_` (rows per type), `combine_` ({a, b, c}).
    """

    def __init__(self, min_rows: int = 30, n_estimators: int = 300, learning_rate: float = 0.05,
                 max_depth: int = 3, seed: int = 0) -> None:
        self.min_rows, self.n_estimators = min_rows, n_estimators
        self.learning_rate, self.max_depth, self.seed = learning_rate, max_depth, seed

    def _fit_one(self, x: np.ndarray, b: np.ndarray, y: np.ndarray):
        from sklearn.ensemble import GradientBoostingRegressor

        coef = fit_baseline(b, y)
        gbr = GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        learning_rate=self.learning_rate, subsample=0.8,
                                        random_state=self.seed)
        gbr.fit(x, np.log(y) - np.log(baseline(b, coef)))
        return coef, TreeEnsemble.from_gbr(gbr)

    def fit(self, kernels: pd.DataFrame, nets: pd.DataFrame) -> KernelPredictor:
        k = kernels[kernels["ms"] > 0].reset_index(drop=True)
        if len(k) < self.min_rows or len(nets) < 5:
            raise HwnasError(f"too few kernel measurements to fit on ({len(k)} kernels of "
                             f"{len(nets)} networks; profile with --kernel-nets 50 or more)")
        x, b = features(k)
        y = k["ms"].to_numpy(float)
        self.rows_ = k["op"].value_counts().to_dict()
        self.models_ = {}
        for op, n in self.rows_.items():
            if n >= self.min_rows:
                m = (k["op"] == op).to_numpy()
                self.models_[op] = self._fit_one(x[m], b[m], y[m])
        self.global_ = self._fit_one(x, b, y)
        # end to end = a * sum(kernels) + b * n_kernels + c, least squares on relative error
        t = nets["median_ms"].to_numpy(float)
        design = np.stack([nets["kernel_sum_ms"].to_numpy(float),
                           nets["n_kernels"].to_numpy(float), np.ones(len(nets))], 1)
        from scipy.optimize import lsq_linear

        # a physically plausible fit: a near 1, |b| under 10 us a kernel, c (a session call) 0-30 us
        coef = lsq_linear(design / t[:, None], np.ones_like(t),
                          bounds=([0.5, -0.01, 0.0], [2.0, 0.01, 0.03])).x
        self.combine_ = {"a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2])}
        return self

    def _check(self) -> None:
        if not hasattr(self, "combine_"):
            raise NotFittedError("KernelPredictor is not fitted: call fit(kernels, nets) first")

    def predict(self, kernels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(ms per kernel, which model priced it) for rows of `kernel_table`."""
        self._check()
        if not len(kernels):
            return np.zeros(0), np.zeros(0, dtype=object)
        x, b = features(kernels)
        out = np.zeros(len(kernels))
        used = np.array(["global"] * len(kernels), dtype=object)
        ops = kernels["op"].to_numpy()
        for op in set(ops):
            m = ops == op
            coef, trees = self.models_.get(op, self.global_)
            out[m] = baseline(b[m], coef) * np.exp(trees.predict(x[m]))
            if op in self.models_:
                used[m] = op
        return out, used

    def predict_model(self, kernels: pd.DataFrame) -> KernelPrediction:
        """The end-to-end latency of one model from its kernel table."""
        ms, used = self.predict(kernels)
        rows = kernels.assign(predicted_ms=ms, model=used)
        c = self.combine_
        total = c["a"] * float(ms.sum()) + c["b"] * len(kernels) + c["c"]
        return KernelPrediction(total, rows, float(ms.sum()), dict(c))

    # --- saving inside a profile ---------------------------------------------------------------
    def save(self, root: str | Path, fitted_on: str = "") -> None:
        from hwnas._io import atomic_path, write_json

        self._check()
        arrays: dict[str, np.ndarray] = {}
        meta = {"params": {"min_rows": self.min_rows, "n_estimators": self.n_estimators,
                           "learning_rate": self.learning_rate, "max_depth": self.max_depth,
                           "seed": self.seed},
                "combine": self.combine_, "rows": {str(k): int(v) for k, v in self.rows_.items()},
                "features": list(FEATURES), "fitted_on": fitted_on, "models": {}}
        for i, (name, (coef, trees)) in enumerate([("__global__", self.global_),
                                                    *self.models_.items()]):
            meta["models"][name] = {"index": i, "coef": [float(v) for v in coef],
                                    "init": trees.init, "depth": trees.depth}
            for a in TreeEnsemble.ARRAYS:
                arrays[f"{i}_{a}"] = getattr(trees, a)
        with atomic_path(Path(root) / "kernel_predictor.npz", ".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        write_json(Path(root) / "kernel_predictor.json", meta)

    @classmethod
    def load(cls, root: str | Path) -> tuple[KernelPredictor, str]:
        """A saved predictor and the `fitted_on` digest it was saved with."""
        root = Path(root)
        try:
            meta = json.loads((root / "kernel_predictor.json").read_text())
            with np.load(root / "kernel_predictor.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if meta.get("features") != list(FEATURES):
                raise ValueError("saved with other features")
            self = cls(**meta["params"])
            self.combine_ = {k: float(v) for k, v in meta["combine"].items()}
            self.rows_ = {k: int(v) for k, v in meta["rows"].items()}
            self.models_ = {}
            for name, m in meta["models"].items():
                i = int(m["index"])
                trees = TreeEnsemble(float(m["init"]),
                                     *(arrays[f"{i}_{a}"] for a in TreeEnsemble.ARRAYS),
                                     int(m["depth"]))
                entry = (np.asarray(m["coef"], float), trees)
                if name == "__global__":
                    self.global_ = entry
                else:
                    self.models_[name] = entry
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise HwnasError(f"{root}: cannot read the saved kernel predictor ({e}); refit it "
                             "with `hwnas validate --profile DIR`") from None
        return self, str(meta.get("fitted_on", ""))


def data_digest(kernels: pd.DataFrame, nets: pd.DataFrame) -> str:
    """What a predictor was fitted on (a saved one is reused only while this is unchanged)."""
    import hashlib

    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(kernels[["net", "node", "ms"]], index=False).values)
    h.update(pd.util.hash_pandas_object(nets[["net", "median_ms"]], index=False).values)
    return h.hexdigest()[:16]


def as_dict(p: KernelPrediction) -> dict:
    """A JSON-ready summary of a prediction."""
    return {"total_ms": p.total_ms, "kernel_sum_ms": p.kernel_sum_ms, "combine": p.combine,
            "kernels": p.kernels.to_dict(orient="records")}


# --- a profile's kernel predictor and `hwnas predict MODEL.onnx` -------------------------------
def profile_kernel_data(profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The profile's random-network kernel tables on the profile's speed (drift divided out);
    empty frames when it has none (`hwnas profile --kernel-nets N`)."""
    from hwnas.profile.kernel_nets import correct_kernels, read_kernel_tables

    kernels, nets = read_kernel_tables(profile.root)
    if not len(nets):
        return kernels, nets
    return correct_kernels(kernels, nets, profile.reference_ms())


def load_or_fit(profile, save: bool = False) -> tuple[KernelPredictor | None, str]:
    """The profile's kernel predictor: the saved one while it matches the kernel tables, else
    fitted now (and saved when `save`); (None, why) when the profile has no kernel tables."""
    kernels, nets = profile_kernel_data(profile)
    if not len(nets):
        return None, "the profile has no kernel measurements (hwnas profile --kernel-nets N)"
    digest = data_digest(kernels, nets)
    if (Path(profile.root) / "kernel_predictor.json").exists():
        try:
            saved, fitted_on = KernelPredictor.load(profile.root)
            if fitted_on == digest:
                return saved, "saved"
        except HwnasError:
            pass
    predictor = KernelPredictor().fit(kernels, nets)
    if save:
        predictor.save(profile.root, fitted_on=digest)
        return predictor, "fitted and saved"
    return predictor, "fitted now"


def model_kernels(path: str | Path, threads: int = 1) -> pd.DataFrame:
    """The kernels of a model file as onnxruntime's CPU provider runs it (one profiled run;
    the split, not its times, is what prediction needs)."""
    from hwnas.convert import model_input_shape
    from hwnas.devices.kernels import runtime_kernels
    from hwnas.devices.registry import get_backend

    backend = get_backend("ort-cpu", threads=threads)
    backend.require()
    return runtime_kernels(backend, path, model_input_shape(path), runs=1, warmup=0)


def predict_file(profile, path: str | Path, verify: bool = False, quick: bool = False) -> dict:
    """`hwnas predict MODEL.onnx --profile P [--verify]` with a profile that has kernel
    measurements: the predicted latency and one row per runtime kernel. With `verify`, the file
    is also measured on the profile's device with the profiling protocol (beside its drift
    reference) and profiled per node, so that every kernel shows predicted and measured ms."""
    predictor, how = load_or_fit(profile, save=True)
    if predictor is None:
        raise HwnasError(f"{profile.name}: {how}")
    threads = int(profile.record.backend_options.get("threads", 1))
    if verify:
        from hwnas.convert import model_input_shape
        from hwnas.devices.kernels import runtime_kernels
        from hwnas.devices.measurement import Protocol
        from hwnas.devices.registry import get_backend
        from hwnas.profile.profiler import measure_file

        backend = get_backend(profile.record.backend or "ort-cpu", threads=threads)
        shape = model_input_shape(path)
        kernels = runtime_kernels(backend, path, shape, runs=20, warmup=5)
        measured = measure_file(backend, Path(path), shape,
                                Protocol.quick() if quick else Protocol(), profile=profile)
    else:
        kernels, measured = model_kernels(path, threads), None
    pred = predictor.predict_model(kernels)
    rows = pred.kernels
    out = {"profile": profile.name, "file": str(path), "latency_ms": pred.total_ms,
           "kernel_sum_ms": pred.kernel_sum_ms, "kernels": len(rows), "combine": pred.combine,
           "kernel_predictor": how, "predictor": "kernels (runtime split)"}
    if measured is not None:
        scale = (measured["scaled_ms"] / measured["median_ms"]) if measured["scaled_ms"] else 1.0
        rows = rows.assign(measured_ms=rows["ms"] * scale)
        compared = measured["scaled_ms"] or measured["median_ms"]
        out["measured"] = measured
        out["compared_ms"] = compared
        out["error"] = pred.total_ms / compared - 1
    keep = [c for c in ("node", "op", "macs", "predicted_ms", "measured_ms", "model")
            if c in rows.columns]
    out["kernel_rows"] = rows[keep].to_dict(orient="records")
    return out
