"""Few-shot latency prediction for a new device: HELP (meta-learned) beside two simple baselines.

HELP (Lee, Lee, Chong, Hwang, "HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via
Meta-Learning", NeurIPS 2021, arXiv 2106.08630) predicts a new device's latencies from ~10
measurements: a predictor conditioned on a *hardware embedding* is meta-learned (Meta-SGD) over
many source devices so that two gradient steps on the target's few samples adapt it. This
module follows the official code (github HayeonLee/HELP at 45f70eb: `help.py`, `net.py`,
`loader.py`, `utils.py`, `parser.py`); each part below names the step of that code it is.

Public API
----------
- `FewShotPredictor`: the abstract base, scikit-learn style: `fit(sources, valid=None)` on a pool
  of source devices, `adapt(support_x, support_y, hw_embed=None)` to a target from k measured
  architectures, `predict(x)` (ms), `interval(x)` (conformal, see below). Fitted attributes end
  in an underscore. `sources` maps a device name to `(X, y)` or a `Task` (X (n, d) encodings,
  y (n,) latency in ms, optionally the device's hardware embedding and a query set).
- `LinearMapAdapter`, `RidgeFewShot`, `HELP`: the methods, all `FewShotPredictor`s.
- The data protocol of HELP (`loader.py`): `help_split`, `hardware_embedding`, `REFERENCE_ARCHS`,
  `HELP_DEVICES`, `N_POOL`, `N_QUERY`, `normalize_latency`; `LatencyTable` (a latency CSV that
  records which device columns were read) and `help_sources` (a lazy `{device: Task}` mapping).
- Encodings (`utils.py` / `architecture.pt`): `encode_nb201`, `encode_fbnet`, `encode_ofa`;
  `op_counts` (the features of the op-count ridge) and `nb201_conv_weight_count` (the "FLOPs" row).
- `PUBLISHED`: the Spearman rho figures of HELP's README (paper Tables 2-3).

Intervals (all methods)
-----------------------
`adapt` also computes leave-one-out predictions on the k support samples (the method re-adapted
on k - 1 of them predicts the one left out) and, as `hwnas.latency.learned` does with its
out-of-fold predictions, `q_ = conformal_q(loo, y, alpha)`: the interval is
[pred * exp(-q_), pred * exp(q_)]. With k = 10 and alpha = 0.1 the conformal level
ceil((k + 1)(1 - alpha)) / k is 1, so q_ is the largest LOO log residual. The coverage is
approximate: leave-one-out (jackknife) intervals carry a 1 - 2 alpha guarantee at best, the
predictor of the interval is adapted on k samples while the LOO ones saw k - 1, and 10 residuals
give a noisy quantile. Predictions are floored at 1e-9 ms for the log.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from hwnas._io import (
    read_checked_tensors,
    read_model_config,
    write_model_folder,
)
from hwnas.errors import HwnasError, NotFittedError
from hwnas.latency.learned import conformal_q

# --------------------------------------------------------------------------- HELP's protocol

#: The 10 fixed reference architectures whose latencies form the hardware embedding
#: (`data/<space>/hardware_embedding_index.pt`; indices into the shared CSVs, which keep HELP's
#: order: NB201 = the official NAS-Bench-201 index).
REFERENCE_ARCHS: dict[str, list[int]] = {
    "nb201": [11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462],
    "fbnet": [3328, 3790, 3313, 890, 3052, 2538, 1640, 2514, 457, 2100],
    "ofa": [1316, 1587, 1621, 1636, 1980, 2329, 2487, 3355, 3740, 4948],
}

#: Device splits of the official scripts (`script/run_meta_training_*.sh`).
HELP_DEVICES: dict[str, dict[str, list[str]]] = {
    "nb201": {
        "meta_train": ["1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r",
                       "samsung_a50", "pixel3", "essential_ph_1", "samsung_s7"],
        "meta_valid": ["titanx_1", "titanx_32", "titanx_256", "gold_6240"],
        "meta_test": ["titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"],
    },
    "fbnet": {
        "meta_train": ["1080ti_1", "1080ti_32", "1080ti_64", "silver_4114", "silver_4210r",
                       "samsung_a50", "pixel3", "essential_ph_1", "samsung_s7"],
        "meta_valid": ["titanx_1", "titanx_32", "titanx_64", "gold_6240"],
        "meta_test": ["fpga", "raspi4", "eyeriss"],
    },
    "ofa": {
        "meta_train": ["2080ti_1", "2080ti_32", "2080ti_64", "titan_xp_1", "titan_xp_32",
                       "titan_xp_64", "v100_1", "v100_32", "v100_64"],
        "meta_valid": ["titan_rtx_1", "titan_rtx_32"],
        "meta_test": ["titan_rtx_64"],
    },
}

#: `--num_meta_train_sample`: archs [0, N_POOL) are a device's pool, [N_POOL, N_POOL + N_QUERY)
#: its query set (`--num_query` 1000), before the 10 % trimming at both ends.
N_POOL: dict[str, int] = {"nb201": 900, "fbnet": 4000, "ofa": 4000}
N_QUERY = 1000
TRIM = 0.1

#: Spearman rho published in HELP's README (paper Table 3 for NB201, Table 2 for FBNet), 10
#: target samples; "flops" is Table 3's FLOPs row.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "nb201": {
        "help": {"titan_rtx_256": 0.987, "gold_6226": 0.989, "pixel2": 0.802, "raspi4": 0.890,
                 "eyeriss": 0.940, "fpga": 0.985},
        "flops": {"titan_rtx_256": 0.950, "gold_6226": 0.826, "pixel2": 0.765, "raspi4": 0.846,
                  "eyeriss": 0.437, "fpga": 0.900},
    },
    "fbnet": {
        "help": {"raspi4": 0.887, "eyeriss": 0.943, "fpga": 0.892},
        "meta_sgd": {"raspi4": 0.821, "eyeriss": 0.822, "fpga": 0.776},
        "maml": {"raspi4": 0.718, "eyeriss": 0.763, "fpga": 0.727},
    },
}

#: the means the README prints (FBNet's 0.910 is the paper's own mean; its three rounded
#: figures average 0.907)
PUBLISHED_MEAN: dict[str, dict[str, float]] = {
    "nb201": {"help": 0.932, "flops": 0.787},
    "fbnet": {"help": 0.910, "meta_sgd": 0.806, "maml": 0.736},
}

SPACES = tuple(N_POOL)


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise HwnasError(f"unknown space {space!r}: expected one of {', '.join(SPACES)}")
    return space


class LatencyTable:
    """One of HELP's latency CSVs (`nb201_latency_help.csv`, ...) behind an accessor that records
    which device columns were read (`read_devices`), so that a test can assert that meta-training
    never looked at a meta-test device. Every function of this module that reads latencies goes
    through `latency(device)` when given a `LatencyTable`."""

    def __init__(self, data: pd.DataFrame | str | Path, space: str) -> None:
        self.space = _check_space(space)
        self._df = data if isinstance(data, pd.DataFrame) else pd.read_csv(data)
        self.read_devices: list[str] = []
        self._enc: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._df)

    @property
    def devices(self) -> list[str]:
        """The device names (the `<device>_ms` columns), read from the header only."""
        return [c[:-3] for c in self._df.columns if c.endswith("_ms")]

    def latency(self, device: str) -> np.ndarray:
        """The device's latency column (ms, float64); records the read."""
        col = f"{device}_ms"
        if col not in self._df.columns:
            raise HwnasError(f"no latency column {col!r} in the {self.space} table")
        if device not in self.read_devices:
            self.read_devices.append(device)
        return self._df[col].to_numpy(dtype=np.float64)

    def encodings(self, kind: str | None = None) -> np.ndarray:
        """HELP's encodings of every row (cached): NB201 `kind` "graph" (default) or "onehot",
        FBNet 132 inputs, OFA 145."""
        kind = kind or ("graph" if self.space == "nb201" else "default")
        if kind not in self._enc:
            df = self._df
            if self.space == "nb201":
                self._enc[kind] = encode_nb201(df[list(NB201_EDGES)].to_numpy(), kind=kind)
            elif self.space == "fbnet":
                self._enc[kind] = encode_fbnet(df[[f"L{i:02d}" for i in range(22)]].to_numpy())
            else:
                self._enc[kind] = encode_ofa(df)
        return self._enc[kind]

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        """Non-latency columns (encodings, arch strings); latency columns go through `latency`."""
        bad = [c for c in columns if c.endswith("_ms")]
        if bad:
            raise HwnasError(f"read latency columns with latency(device), not frame(): {bad}")
        return self._df[list(columns)]


def _latency(data: pd.DataFrame | LatencyTable, device: str) -> np.ndarray:
    if isinstance(data, LatencyTable):
        return data.latency(device)
    col = f"{device}_ms"
    if col not in data.columns:
        raise HwnasError(f"no latency column {col!r}")
    return data[col].to_numpy(dtype=np.float64)


def _trimmed(idx: np.ndarray, lat: np.ndarray) -> np.ndarray:
    n = len(idx)
    order = np.argsort(lat[idx], kind="stable")
    return idx[order[int(n * TRIM):int(n * (1 - TRIM))]]


def help_split(df: pd.DataFrame | LatencyTable, device: str, space: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, query indices) of a device (`loader.py` `Data.__init__`, remove_outlier):
    archs [0, N_POOL) and [N_POOL, N_POOL + 1000), each with its 10 % fastest and 10 % slowest
    (by this device's latency) dropped: 720 / 800 for NB201, 3,200 / 800 for FBNet and OFA.
    Indices are row positions of the table (= HELP's arch indices). Ties are broken by a stable
    sort (the official `np.argsort` default quicksort breaks ties among equal latencies, e.g. on
    the integer-ms phones, in an implementation-defined order); returned sorted by latency."""
    n_pool = N_POOL[_check_space(space)]
    lat = _latency(df, device)
    if len(lat) < n_pool + N_QUERY:
        raise HwnasError(f"{space} table has {len(lat)} rows, HELP's split needs "
                         f"{n_pool + N_QUERY}")
    return (_trimmed(np.arange(n_pool), lat),
            _trimmed(np.arange(n_pool, n_pool + N_QUERY), lat))


def _minmax(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    span = v.max() - v.min()
    if not span > 0:
        raise HwnasError("the hardware embedding's latencies are all equal: cannot normalise")
    return (v - v.min()) / span


def hardware_embedding(df: pd.DataFrame | LatencyTable, device: str, space: str) -> np.ndarray:
    """The device's latencies on the space's 10 `REFERENCE_ARCHS`, min-max normalised to [0, 1]
    within those 10 (`loader.py`: `normalization(latency[hw_emb_idx], portion=1.0)`)."""
    lat = _latency(df, device)
    return _minmax(lat[REFERENCE_ARCHS[_check_space(space)]])


def normalize_latency(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """HELP's target normalisation (`utils.normalization`, portion 0.9):
    (y - lo) / (hi - lo) * 0.9 + 0.05, lo / hi = the min / max over the device's trimmed pool."""
    return (np.asarray(y, dtype=np.float64) - lo) / (hi - lo) * 0.9 + 0.05


def denormalize_latency(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.asarray(p, dtype=np.float64) - 0.05) / 0.9 * (hi - lo) + lo


class Task(NamedTuple):
    """One device's data: pool encodings x (n, d), pool latencies y (n,) in ms, the hardware
    embedding (10,), and optionally a query set (for meta-validation and evaluation)."""

    x: np.ndarray
    y: np.ndarray
    hw_embed: np.ndarray | None = None
    x_query: np.ndarray | None = None
    y_query: np.ndarray | None = None


class _LazyTasks(Mapping):
    """{device: Task} that reads a device's column only when that device is looked up."""

    def __init__(self, table: LatencyTable, devices: Sequence[str], with_query: bool,
                 encoding: str | None) -> None:
        self.table, self._devices = table, list(devices)
        self.with_query, self.encoding = with_query, encoding
        self._cache: dict[str, Task] = {}

    def __getitem__(self, device: str) -> Task:
        if device not in self._devices:
            raise KeyError(device)
        if device not in self._cache:
            t, sp = self.table, self.table.space
            pool, query = help_split(t, device, sp)
            lat, x = t.latency(device), t.encodings(self.encoding)
            hw = hardware_embedding(t, device, sp)
            self._cache[device] = Task(x[pool], lat[pool], hw,
                                       x[query] if self.with_query else None,
                                       lat[query] if self.with_query else None)
        return self._cache[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)


def help_sources(table: LatencyTable, devices: Sequence[str], with_query: bool = False,
                 encoding: str | None = None) -> Mapping[str, Task]:
    """A lazy {device: Task} over `devices` (HELP's split, hardware embedding and encodings):
    pass it to `fit` as `sources` (meta-train devices) or `valid` (meta-valid, with_query=True).
    Nothing is read until a device is looked up."""
    unknown = [d for d in devices if d not in table.devices]
    if unknown:
        raise HwnasError(f"devices not in the {table.space} table: {', '.join(unknown)}")
    return _LazyTasks(table, devices, with_query, encoding)


# --------------------------------------------------------------------------- encodings

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ("e1_from0", "e2_from0", "e2_from1", "e3_from0", "e3_from1", "e3_from2")
FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: feature column of each NB201 node type in the GCN input (then column 7 = the global flag).
#: [Reconstruction, see `encode_nb201`: input 0, output 6 and the ops' columns are the assignment
#: under which HELP's released NB201 checkpoint predicts best.]
_NB201_COLUMN = {"input": 0, "nor_conv_1x1": 1, "avg_pool_3x3": 2, "nor_conv_3x3": 3, "none": 4,
                 "skip_connect": 5, "output": 6}
_NB201_OP_COLUMN = np.array([_NB201_COLUMN[o] for o in NB201_OPS])
# op-as-node DAG: node 0 input, nodes 1..6 the edges in arch-string order (0->1, 0->2, 1->2,
# 0->3, 1->3, 2->3), node 7 output; an edge-node feeds the edge-nodes leaving its end node
_NB201_DAG = ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7))
NB201_GRAPH_DIM = 9 * 8 + 9 * 9


def _nb201_op_indices(archs: Any) -> np.ndarray:
    if isinstance(archs, str):
        archs = [archs]
    a = np.asarray(archs)
    if a.dtype.kind in "iu":
        idx = a.reshape(-1, 6).astype(np.int64)
    else:
        rows = []
        for item in a.reshape(len(a), -1) if a.ndim > 1 else a:
            if isinstance(item, str):  # an arch string
                ops = [tok.split("~")[0] for part in item.split("+")
                       for tok in part.strip("|").split("|")]
            else:  # a row of op names
                ops = [str(o) for o in item]
            if len(ops) != 6 or any(o not in NB201_OPS for o in ops):
                raise HwnasError(f"not an NB201 cell: {item!r}")
            rows.append([NB201_OPS.index(o) for o in ops])
        idx = np.asarray(rows, dtype=np.int64).reshape(-1, 6)
    if idx.size and (idx.min() < 0 or idx.max() > 4):
        raise HwnasError("NB201 op indices must lie in 0..4 (none, skip, 1x1, 3x3, pool)")
    return idx


def encode_nb201(archs: Any, kind: str = "graph") -> np.ndarray:
    """NB201 cells -> HELP's encoding. `archs`: an arch string, a list of them, an (n, 6) array of
    op indices (0..4 = none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3, edges in
    arch-string order, as the CSV's e1_from0..e3_from2) or of op names.

    kind "graph" (HELP's GCN input, (n, 153) float32: 9 x 8 node features then the 9 x 9
    adjacency, flattened): the cell as an op-as-node DAG (input, the 6 edges, output; 'none' and
    'skip' nodes kept), every node a 7-way type one-hot, then `utils.add_global_node`: a global
    node (its own flag as the 8th feature) that every node feeds, self-loops, and the adjacency
    transposed so that row i sums node i's predecessors and itself (`nfeat = 8` in `net.py`).
    [Reconstruction: HELP's `architecture.pt` is not in its public repository. The type columns
    (input 0, conv 1x1 1, avg pool 2, conv 3x3 3, none 4, skip 5, output 6) were chosen as the
    one of the 120 assignments of the five ops to columns 1..5 under which HELP's released
    NB201 checkpoint (`data/nasbench201/checkpoint/help_max_corr.pt`, loaded into `HELP`) ranks
    the meta-test devices best: mean Spearman 0.923 over the 6 devices (4 support draws;
    titan_rtx_256 0.982, gold_6226 0.962, fpga 0.979, pixel2 0.779, raspi4 0.897, eyeriss
    0.940) against the published 0.932; the BRP-NAS order (none, skip, 1x1, 3x3, pool) gives
    0.796. The GCN is invariant to the order of the 6 edge nodes.]

    kind "onehot" ((n, 30)): the 6 edges x 5 ops one-hot, for an MLP instead of the GCN."""
    idx = _nb201_op_indices(archs)
    n = len(idx)
    if kind == "onehot":
        out = np.zeros((n, 30), dtype=np.float32)
        out[np.arange(n)[:, None], np.arange(6) * 5 + idx] = 1.0
        return out
    if kind != "graph":
        raise HwnasError(f"unknown NB201 encoding {kind!r}: 'graph' or 'onehot'")
    feat = np.zeros((n, 9, 8), dtype=np.float32)
    feat[:, 0, _NB201_COLUMN["input"]] = 1
    feat[:, 7, _NB201_COLUMN["output"]] = 1
    feat[np.arange(n)[:, None], np.arange(1, 7), _NB201_OP_COLUMN[idx]] = 1
    feat[:, 8, 7] = 1  # the global node
    adj = np.zeros((9, 9), dtype=np.float32)
    for s, d in _NB201_DAG:
        adj[s, d] = 1
    adj[:, 8] = 1  # every node feeds the global node
    np.fill_diagonal(adj, 1)
    adj = adj.T
    return np.concatenate([feat.reshape(n, -1), np.broadcast_to(adj.reshape(1, -1), (n, 81))], 1)


def encode_fbnet(indices: Any) -> np.ndarray:
    """FBNet archs ((n, 22) or (22,) op indices 0..8 = k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1,
    k5_e1_g2, k5_e3, k5_e6, skip; the CSV's L00..L21) -> (n, 132) float32 (`utils.arch_enc`):
    per layer [k3, k5, e1, e1_g2, e3, e6], kernel one-hot then type one-hot; skip = all zeros."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim == 1:
        idx = idx[None]
    if idx.ndim != 2 or idx.shape[1] != 22 or (idx.size and (idx.min() < 0 or idx.max() > 8)):
        raise HwnasError(f"FBNet archs must be (n, 22) op indices in 0..8, got shape {idx.shape}")
    n = len(idx)
    out = np.zeros((n, 22, 6), dtype=np.float32)
    rows, layers = np.nonzero(idx < 8)
    ops = idx[rows, layers]
    out[rows, layers, ops // 4] = 1
    out[rows, layers, 2 + ops % 4] = 1
    return out.reshape(n, 132)


def encode_ofa(df: pd.DataFrame) -> np.ndarray:
    """OFA MobileNetV3 subnets (the shared CSV's resolution, d0..d4, ks00..ks19, e00..e19) ->
    (n, 145) (`utils.arch_encoding_ofa`): kernel {3,5,7} and expand {3,4,6} one-hots of the 20
    slots (zeros past a unit's depth), then the resolution one-hot (128..224 step 4)."""
    n = len(df)
    ks = df[[f"ks{i:02d}" for i in range(20)]].to_numpy()
    ex = df[[f"e{i:02d}" for i in range(20)]].to_numpy()
    d = df[[f"d{i}" for i in range(5)]].to_numpy()
    live = (np.arange(4)[None, None, :] < d[:, :, None]).reshape(n, 20)
    out = np.zeros((n, 145), dtype=np.float32)
    for j, v in enumerate((3, 5, 7)):
        out[:, np.arange(20) * 3 + j] = (ks == v) & live
    for j, v in enumerate((3, 4, 6)):
        out[:, 60 + np.arange(20) * 3 + j] = (ex == v) & live
    r = (df["resolution"].to_numpy() - 128) // 4
    out[np.arange(n), 120 + r] = 1
    return out


def _nb201_onehot_from(x: np.ndarray) -> np.ndarray:
    """(n, 6, 5) op one-hot from either NB201 encoding."""
    if x.shape[1] == 30:
        return x.reshape(-1, 6, 5)
    if x.shape[1] == NB201_GRAPH_DIM:
        return x[:, :72].reshape(-1, 9, 8)[:, 1:7, _NB201_OP_COLUMN]
    raise HwnasError(f"not an NB201 encoding: {x.shape[1]} columns (30 or {NB201_GRAPH_DIM})")


def op_counts(x: np.ndarray, space: str) -> np.ndarray:
    """Op-type counts from an encoding: NB201 (n, 4) = skip / conv 1x1 / conv 3x3 / avg pool
    edges; FBNet (n, 8) = layers of each of the 8 non-skip ops."""
    x = np.asarray(x, dtype=np.float64)
    if space == "nb201":
        return _nb201_onehot_from(x).sum(1)[:, 1:]
    if space == "fbnet":
        if x.shape[1] != 132:
            raise HwnasError(f"not an FBNet encoding: {x.shape[1]} columns (132)")
        e = x.reshape(-1, 22, 6)
        return np.einsum("nlk,nlt->nkt", e[:, :, :2], e[:, :, 2:]).reshape(-1, 8)
    raise HwnasError(f"op counts are defined for nb201 and fbnet, not {space!r}")


def nb201_conv_weight_count(x: Any) -> np.ndarray:
    """9 * n_conv3x3 + n_conv1x1 of NB201 cells (archs as `encode_nb201` takes them, or an
    encoding): the "FLOPs" baseline. Its Spearman rho on HELP's query split reproduces the
    published FLOPs row on titan_rtx_256 / gold_6226 / pixel2 / fpga (0.951 / 0.830 / 0.766 /
    0.895 vs 0.950 / 0.826 / 0.765 / 0.900), not on raspi4 / eyeriss (0.871 / 0.385 vs 0.846 /
    0.437); plain conv counts do not (0.59 on titan_rtx_256)."""
    arr = np.asarray(x) if not isinstance(x, str) else None
    if arr is not None and arr.dtype.kind == "f" and arr.ndim == 2:
        oh = _nb201_onehot_from(arr).sum(1)
    else:
        oh = np.eye(5)[_nb201_op_indices(x)].sum(1)
    return 9 * oh[:, 3] + oh[:, 2]


# --------------------------------------------------------------------------- the base class


def _as_task(value: Any, name: str) -> Task:
    if isinstance(value, Task):
        t = value
    elif isinstance(value, tuple) and len(value) in (2, 3, 5):
        t = Task(*value)
    else:
        raise HwnasError(f"source {name!r}: expected (X, y), (X, y, hw_embed) or a Task")
    x = np.asarray(t.x, dtype=np.float64)
    y = np.asarray(t.y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
        raise HwnasError(f"source {name!r}: X must be (n, d) and y (n,), n >= 2; got "
                         f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (y > 0).all()):
        raise HwnasError(f"source {name!r}: X and y must be finite, y > 0 (ms)")
    hw = None if t.hw_embed is None else _minmax(np.asarray(t.hw_embed, dtype=np.float64))
    xq = None if t.x_query is None else np.asarray(t.x_query, dtype=np.float64)
    yq = None if t.y_query is None else np.asarray(t.y_query, dtype=np.float64).reshape(-1)
    return Task(x, y, hw, xq, yq)


class FewShotPredictor(abc.ABC):
    """Few-shot latency predictor of a target device (scikit-learn style).

    `fit(sources, valid=None)` learns from source devices ({name: (X, y) or Task}; methods that
    need no sources ignore them), `adapt(support_x, support_y, hw_embed=None)` specialises to
    the target from k measured archs, `predict(x)` gives ms, `interval(x)` a conformal interval
    (module docstring). Fitted: `n_features_in_`, `sources_`; after `adapt`: `support_size_`,
    `loo_pred_` (leave-one-out predictions of the support), `q_` (log half-width at `alpha`).
    """

    alpha: float = 0.1

    def fit(self, sources: Mapping[str, Any], valid: Mapping[str, Any] | None = None
            ) -> FewShotPredictor:
        tasks = {name: _as_task(sources[name], name) for name in sources}
        dims = {t.x.shape[1] for t in tasks.values()}
        if len(dims) > 1:
            raise HwnasError(f"sources have different encoding widths: {sorted(dims)}")
        self.sources_ = list(tasks)
        self.n_features_in_ = dims.pop() if dims else None
        self._fit(tasks, None if valid is None else
                  {n: _as_task(valid[n], n) for n in valid})
        return self

    def _fit(self, tasks: dict[str, Task], valid: dict[str, Task] | None) -> None:  # noqa: B027
        """Learn from the checked source tasks (default: nothing)."""

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray,
              hw_embed: np.ndarray | None = None, **kw: Any) -> FewShotPredictor:
        xs = np.asarray(support_x, dtype=np.float64)
        ys = np.asarray(support_y, dtype=np.float64).reshape(-1)
        if xs.ndim != 2 or len(xs) != len(ys) or len(ys) < 2:
            raise HwnasError(f"support: X must be (k, d) and y (k,), k >= 2; got {xs.shape} "
                             f"and {ys.shape}")
        if getattr(self, "n_features_in_", None) not in (None, xs.shape[1]):
            raise HwnasError(f"support X has {xs.shape[1]} columns, fitted on "
                             f"{self.n_features_in_}")
        if not (np.isfinite(xs).all() and np.isfinite(ys).all() and (ys > 0).all()):
            raise HwnasError("support X and y must be finite, y > 0 (ms)")
        if not 0.0 < self.alpha < 1.0:
            raise HwnasError(f"alpha must be within (0, 1), got {self.alpha}")
        hw = None if hw_embed is None else _minmax(np.asarray(hw_embed, dtype=np.float64))
        self.target_ = self._adapt(xs, ys, hw, **kw)
        self.support_size_ = len(ys)
        loo = self._loo(xs, ys, hw, **kw)
        self.loo_pred_ = loo
        self.q_ = conformal_q(np.maximum(loo, 1e-9), ys, self.alpha) if len(ys) > 2 else math.inf
        return self

    def _loo(self, xs: np.ndarray, ys: np.ndarray, hw: np.ndarray | None, **kw: Any
             ) -> np.ndarray:
        out = np.empty(len(ys))
        for i in range(len(ys)):
            keep = np.arange(len(ys)) != i
            out[i] = self._predict(self._adapt(xs[keep], ys[keep], hw, **kw), xs[i:i + 1])[0]
        return out

    @abc.abstractmethod
    def _adapt(self, xs: np.ndarray, ys: np.ndarray, hw: np.ndarray | None, **kw: Any) -> Any:
        """The adapted state for support (xs, ys)."""

    @abc.abstractmethod
    def _predict(self, state: Any, x: np.ndarray) -> np.ndarray:
        """Latency (ms) of x under an adapted state."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Latency (ms) of each row of the encodings x on the adapted target."""
        if not hasattr(self, "target_"):
            raise NotFittedError(f"{type(self).__name__}: call adapt() before predict()")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or getattr(self, "n_features_in_", None) not in (None, x.shape[1]):
            raise HwnasError(f"x must be (n, {getattr(self, 'n_features_in_', 'd')}), got shape "
                             f"{x.shape}")
        return self._predict(self.target_, x)

    def interval(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) = pred * exp(-+q_), nominal coverage 1 - alpha (approximate, see the
        module docstring)."""
        p = np.maximum(self.predict(x), 1e-9)
        return p * math.exp(-self.q_), p * math.exp(self.q_)


# --------------------------------------------------------------------------- baselines


class RidgeFewShot(FewShotPredictor):
    """Ridge regression fitted on the k target samples only (no source devices).

    features "counts": op-type counts (`op_counts`: NB201 skip / 1x1 / 3x3 / pool edges, FBNet
    the 8 non-skip ops), "onehot": the encoding itself (NB201 graph encodings are reduced to
    their 30-dim edge one-hot). lambda (`ridge_alpha`) 1e-2 on the coefficients, the intercept
    unpenalised. On NB201 the counts ridge is a strong 10-shot baseline (meta-test mean Spearman
    ~0.93 ~ HELP's published 0.932: NB201 latency is nearly linear in op counts).
    """

    def __init__(self, space: str = "nb201", features: str = "counts", ridge_alpha: float = 1e-2,
                 alpha: float = 0.1) -> None:
        self.space, self.features, self.ridge_alpha, self.alpha = space, features, ridge_alpha, alpha

    @property
    def name(self) -> str:
        return f"ridge ({self.features})"

    def _feat(self, x: np.ndarray) -> np.ndarray:
        if self.features == "counts":
            return op_counts(x, self.space)
        if self.features == "onehot":
            return _nb201_onehot_from(x).reshape(len(x), -1) if self.space == "nb201" else x
        raise HwnasError(f"unknown features {self.features!r}: 'counts' or 'onehot'")

    def _adapt(self, xs, ys, hw, **kw):
        return Ridge(alpha=self.ridge_alpha).fit(self._feat(xs), ys)

    def _predict(self, state, x):
        return state.predict(self._feat(x))


class LinearMapAdapter(FewShotPredictor):
    """A source predictor f (a ridge on the encoding, per source device, fitted on the device's
    latencies normalised as HELP does) mapped to the target by y = a f(x) + b, with (a, b) least
    squares on the k target samples. The strong simple baseline.

    source: "mean" (f = the mean of the sources' ridges, i.e. of their normalised latencies),
    "best" (the source whose ridge, mapped linearly, best fits the k samples: least squared
    error; chosen again in every leave-one-out refit) or a source device name.
    Fitted: `models_` {device: Ridge}; after adapt: `source_used_`, `coef_` (a, b).
    """

    def __init__(self, source: str = "mean", ridge_alpha: float = 1.0, alpha: float = 0.1) -> None:
        self.source, self.ridge_alpha, self.alpha = source, ridge_alpha, alpha

    @property
    def name(self) -> str:
        return f"linear map ({self.source})"

    def _fit(self, tasks, valid):
        if not tasks:
            raise HwnasError("LinearMapAdapter needs at least one source device")
        if self.source not in ("mean", "best") and self.source not in tasks:
            raise HwnasError(f"source {self.source!r} is not among the fitted sources")
        self.models_ = {}
        for name, t in tasks.items():
            yn = normalize_latency(t.y, t.y.min(), t.y.max())
            self.models_[name] = Ridge(alpha=self.ridge_alpha).fit(t.x, yn)

    def _base(self, x: np.ndarray) -> dict[str, np.ndarray]:
        preds = {n: m.predict(x) for n, m in self.models_.items()}
        return {"mean": np.mean(list(preds.values()), axis=0), **preds}

    @staticmethod
    def _lsq(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        a = np.stack([f, np.ones_like(f)], 1)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        return coef, float(np.sum((a @ coef - y) ** 2))

    def _adapt(self, xs, ys, hw, **kw):
        if not hasattr(self, "models_"):
            raise NotFittedError("LinearMapAdapter: call fit(sources) before adapt()")
        base = self._base(xs)
        if self.source == "best":
            name = min(self.models_, key=lambda n: self._lsq(base[n], ys)[1])
        else:
            name = self.source
        coef, _ = self._lsq(base[name], ys)
        return name, coef

    def adapt(self, support_x, support_y, hw_embed=None, **kw) -> LinearMapAdapter:
        super().adapt(support_x, support_y, hw_embed, **kw)
        self.source_used_, self.coef_ = self.target_
        return self

    def _predict(self, state, x):
        name, coef = state
        return coef[0] * self._base(x)[name] + coef[1]


# --------------------------------------------------------------------------- HELP


class _HelpNet(nn.Module):
    """Parameter holder with the official names and initialisation (`net.py` `Net` / `GCN`):
    fc1, fc2 (MLP on the encoding) or gc1..gc4 (GCN, weight (in, out), U(-0.05, 0.05)), the
    hardware branch fc_hw1, fc_hw2, then fc3, fc4 (2 * hidden) and fc5 -> 1. The forward is
    `HELP._forward` (functional, batched over tasks)."""

    def __init__(self, net: str, n_in: int, hidden: int, hw_dim: int, hw_on: bool) -> None:
        super().__init__()
        if net == "mlp":
            self.fc1 = nn.Linear(n_in, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
        else:
            for i in range(1, 5):
                w = nn.Parameter(torch.empty(8 if i == 1 else hidden, hidden))
                b = nn.Parameter(torch.empty(hidden))
                stdv = 1.0 / math.sqrt(hidden)
                nn.init.uniform_(b, -stdv, stdv)
                nn.init.uniform_(w, -0.05, 0.05)
                self.register_parameter(f"gc{i}_weight", w)
                self.register_parameter(f"gc{i}_bias", b)
        if hw_on:
            self.fc_hw1 = nn.Linear(hw_dim, hidden)
            self.fc_hw2 = nn.Linear(hidden, hidden)
        h = 2 * hidden if hw_on else hidden
        self.fc3 = nn.Linear(h, h)
        self.fc4 = nn.Linear(h, h)
        self.fc5 = nn.Linear(h, 1)


def _pname(name: str) -> str:
    """gc1_weight -> gc1.weight (the official parameter names)."""
    return name.replace("_weight", ".weight").replace("_bias", ".bias") if name.startswith("gc") \
        else name


def _lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-task linear layer: x (T, n, in), w (T, out, in), b (T, out) -> (T, n, out)."""
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


FORMAT = "hwnas-help-1"
WEIGHTS_FILE = "help.safetensors"
CONFIG_FILE = "help.json"
_HELP_PARAMS = {  # name: (type, check)
    "net": (str, lambda v: v in ("mlp", "gcn")),
    "hidden": (int, lambda v: v >= 1),
    "hw_embed_on": (bool, None),
    "episodes": (int, lambda v: v >= 0),
    "tasks_per_episode": (int, lambda v: v >= 1),
    "n_support": (int, lambda v: v >= 2),
    "n_query": (int, lambda v: v >= 1),
    "inner_steps": (int, lambda v: v >= 0),
    "inner_lr": (float, lambda v: v > 0),
    "learn_inner_lr": (bool, None),
    "second_order": (bool, None),
    "meta_lr": (float, lambda v: v > 0),
    "z_on": (bool, None),
    "determ": (bool, None),
    "z_scaling": (float, lambda v: v >= 0),
    "kl_weight": (float, lambda v: v >= 0),
    "mc_samples": (int, lambda v: v >= 1),
    "eval_every": (int, lambda v: v >= 1),
    "target_norm": (str, lambda v: v in ("support", "pool")),
    "alpha": (float, lambda v: 0 < v < 1),
    "random_state": (int, None),
}


class HELP(FewShotPredictor):
    """HELP: a hardware-conditioned latency predictor meta-learned with Meta-SGD over source
    devices, adapted to a target by `inner_steps` gradient steps on k samples.

    Steps (official `help.py` / `net.py` / `loader.py`):

    1. Hardware embedding (`loader.py`): the target's latencies on the 10 `REFERENCE_ARCHS`,
       min-max normalised within those 10 (`hardware_embedding`; `adapt` min-max normalises
       whatever 10 latencies it is given, an idempotent step).
    2. Targets (`utils.normalization`): (y - min) / (max - min) * 0.9 + 0.05, min / max over each
       source device's trimmed pool (the `y` given to `fit` for that device).
    3. Predictor (`net.py`): `net="mlp"`: fc1 (n_in -> hidden), fc2 on the encoding (FBNet 132,
       OFA 145, or NB201's 30-dim one-hot: an MLP instead of the official GCN, a simplification);
       `net="gcn"` (NB201 `encode_nb201(kind="graph")`): 4 graph convolutions
       relu(A (H W) + b), hidden 100, no adjacency normalisation, readout = the global node.
       Hardware branch fc_hw1 (10 -> 100), fc_hw2 (100 -> 100), concatenated after the arch
       features; fc3 (200), fc4 (200), fc5 -> 1; ReLU between.
    4. Meta-SGD (`HELP.train_single_task`, `meta_train`): per episode `tasks_per_episode` (8)
       distinct source devices; per device `n_support` (10) + `n_query` (200) disjoint archs
       from its pool; `inner_steps` (2) steps theta' = theta - lr * grad of the support MSE with
       per-parameter learned lrs (`learn_inner_lr`, init `inner_lr` 1e-3; off = MAML with the
       fixed 1e-3); second order through the inner steps (`second_order`, create_graph=True);
       meta loss = mean query MSE of the adapted parameters; Adam, lr `meta_lr` 1e-4, over the
       parameters, the inner lrs and the inference network.
    5. z-modulator (`net.InferenceNetwork`, `get_params_z`): hw_embed -> Linear(10, 10), ReLU,
       Linear(10, 2 * 3 * (2 * hidden + 1)) -> (mu, softplus -> sigma) of 603 dims; z ~ N(mu,
       sigma) (reparameterised; `determ`: z = mu); fc3 / fc4 / fc5 weights scaled by
       (1 + 0.01 z_w) (z_w per input column), biases shifted by 0.01 z_b (one scalar per layer),
       before the inner steps. KL(q || N(0, I)) summed over dims, weight `kl_weight` 0.1. At
       test time `mc_samples` (10) samples, each adapted, predictions averaged.
    6. Model selection (`meta_train`, every `eval_every` = 50 episodes): mean Spearman over the
       `valid` devices (one random support of `n_support` from the pool, MC mean, on the query
       set); the best state is kept. No valid devices: the last state.

    Deviations from the official code (all deliberate):
    - Spearman of the MEAN of the MC predictions (the official meta-test reports the Spearman
      of the last MC sample; it uses the mean only for the MSE).
    - Selection on the meta-valid devices only (the official `max_valid_corr < v` test also runs
      in the loop over the meta-train split, so a meta-train Spearman can trigger a save).
    - KL: 0.1 * sum over the episode's tasks of each task's KL (the official code adds
      0.1 * KL of the *last* task once per task: the same weight in expectation).
    - Inner steps at test time run without create_graph (same values, no second-order graph).
    - `target_norm` "support" (default): `adapt` normalises the support latencies with their
      own min / max (k samples are all it has); the official meta-test normalises the target
      with the min / max of its trimmed pool (720 measured latencies on NB201), which
      `adapt(..., y_range=(lo, hi))` reproduces ("pool" makes that range required).
    - NB201: the GCN input is a reconstruction (`encode_nb201`), not HELP's `architecture.pt`.
    - The target's support is passed by the caller; the official meta-test draws it at random
      from the pool (separately from the 10 reference archs).
    - `help_split` breaks latency ties with a stable sort (module docstring of `help_split`).

    Checked against the released checkpoints (`data/<space>/checkpoint/help_max_corr.pt`, read
    once with `torch.load(weights_only=True)` outside the project; the names map one to one
    without the `meta_learner.` prefix, `z_encoder.` -> `z.`): FBNet meta-test Spearman (5
    support draws, pool norm) fpga 0.893, raspi4 0.899, eyeriss 0.941, mean 0.911, against the
    published 0.892 / 0.887 / 0.943 / 0.910; NB201 (GCN on the reconstructed encoding, 4 draws)
    mean 0.923 against 0.932 (per device in `encode_nb201`).

    Fitted: `params_` {name: tensor}, `task_lr_`, `znet_`, `history_` [(episode, valid
    Spearman)], `best_episode_`, `best_valid_spearman_`, `n_features_in_`, `sources_`.
    `save(folder)` / `HELP.load(folder)`: safetensors + JSON, no pickle.
    """

    def __init__(self, net: str = "mlp", hidden: int = 100, hw_embed_on: bool = True,
                 episodes: int = 2000, tasks_per_episode: int = 8, n_support: int = 10,
                 n_query: int = 200, inner_steps: int = 2, inner_lr: float = 1e-3,
                 learn_inner_lr: bool = True, second_order: bool = True, meta_lr: float = 1e-4,
                 z_on: bool = True, determ: bool = False, z_scaling: float = 0.01,
                 kl_weight: float = 0.1, mc_samples: int = 10, eval_every: int = 50,
                 target_norm: str = "support", alpha: float = 0.1, random_state: int = 0,
                 verbose: bool = False) -> None:
        self.net, self.hidden, self.hw_embed_on = net, hidden, hw_embed_on
        self.episodes, self.tasks_per_episode = episodes, tasks_per_episode
        self.n_support, self.n_query = n_support, n_query
        self.inner_steps, self.inner_lr, self.learn_inner_lr = inner_steps, inner_lr, learn_inner_lr
        self.second_order, self.meta_lr = second_order, meta_lr
        self.z_on, self.determ, self.z_scaling, self.kl_weight = z_on, determ, z_scaling, kl_weight
        self.mc_samples, self.eval_every, self.target_norm = mc_samples, eval_every, target_norm
        self.alpha, self.random_state, self.verbose = alpha, random_state, verbose

    @property
    def name(self) -> str:
        return "HELP"

    # ------------------------------------------------------------------ parameters

    def _checked_params(self) -> dict[str, Any]:
        out = {}
        for key, (typ, ok) in _HELP_PARAMS.items():
            v = getattr(self, key)
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if typ is int and isinstance(v, bool) or not isinstance(v, typ):
                raise HwnasError(f"{key} must be {typ.__name__}, not {v!r}")
            if typ is float and not math.isfinite(v):
                raise HwnasError(f"{key} must be finite, not {v!r}")
            if ok is not None and not ok(v):
                raise HwnasError(f"{key}: invalid value {v!r}")
            out[key] = v
        if self.z_on and not self.hw_embed_on:
            raise HwnasError("z_on needs hw_embed_on (the modulator reads the hardware embedding)")
        return out

    def _build(self, n_in: int) -> None:
        if self.net == "gcn" and n_in != NB201_GRAPH_DIM:
            raise HwnasError(f"net='gcn' needs NB201 graph encodings ({NB201_GRAPH_DIM} "
                             f"columns, encode_nb201(kind='graph')), got {n_in}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            holder = _HelpNet(self.net, n_in, self.hidden, 10, self.hw_embed_on)
            self.params_ = {_pname(k): nn.Parameter(v.detach().clone())
                            for k, v in holder.named_parameters()}
            self.task_lr_ = ({k: nn.Parameter(torch.full_like(v, self.inner_lr))
                              for k, v in self.params_.items()} if self.learn_inner_lr else {})
            h = 2 * self.hidden if self.hw_embed_on else self.hidden
            self._zdim = 3 * (h + 1)
            self.znet_ = (nn.Sequential(nn.Linear(10, 10), nn.ReLU(),
                                        nn.Linear(10, 2 * self._zdim)) if self.z_on else None)
        self.n_features_in_ = n_in

    def _meta_parameters(self) -> list[torch.Tensor]:
        out = list(self.params_.values()) + list(self.task_lr_.values())
        if self.znet_ is not None:
            out += list(self.znet_.parameters())
        return out

    # ------------------------------------------------------------------ the model

    def _forward(self, p: dict[str, torch.Tensor], x: torch.Tensor, hw: torch.Tensor
                 ) -> torch.Tensor:
        """Batched over T tasks: p[name] (T, *shape), x (T, n, d), hw (T, 10) -> (T, n)."""
        t, n = x.shape[:2]
        if self.net == "mlp":
            h = F.relu(_lin(x, p["fc1.weight"], p["fc1.bias"]))
            h = F.relu(_lin(h, p["fc2.weight"], p["fc2.bias"]))
        else:
            feat = x[..., :72].reshape(t, n, 9, 8)
            adj = x[..., 72:].reshape(t, n, 9, 9)
            h = feat
            for i in range(1, 5):
                w, b = p[f"gc{i}.weight"], p[f"gc{i}.bias"]
                hw_ = torch.bmm(h.reshape(t, n * 9, h.shape[-1]), w).reshape(t, n, 9, -1)
                h = F.relu(adj @ hw_ + b[:, None, None, :])
            h = h[:, :, -1, :]  # the global node
        if self.hw_embed_on:
            g = F.relu(_lin(hw[:, None, :], p["fc_hw1.weight"], p["fc_hw1.bias"]))
            g = F.relu(_lin(g, p["fc_hw2.weight"], p["fc_hw2.bias"]))
            h = torch.cat([h, g.expand(t, n, g.shape[-1])], -1)
        h = F.relu(_lin(h, p["fc3.weight"], p["fc3.bias"]))
        h = F.relu(_lin(h, p["fc4.weight"], p["fc4.bias"]))
        return _lin(h, p["fc5.weight"], p["fc5.bias"]).squeeze(-1)

    def _z(self, hw: torch.Tensor, gen: torch.Generator | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (T, zdim), KL per task (T,)) from the inference network (`InferenceNetwork`)."""
        stats = self.znet_(hw)
        mu, sigma = stats[:, :self._zdim], F.softplus(stats[:, self._zdim:])
        kl = (torch.log(1.0 / sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5).sum(1)
        if self.determ:
            return mu, kl
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype)
        return mu + sigma * eps, kl

    def _initial(self, t: int, hw: torch.Tensor, gen: torch.Generator | None, detach: bool
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """theta expanded to T tasks, z-modulated (`get_params_z`); and the KL per task."""
        p = {k: (v.detach() if detach else v).unsqueeze(0).expand(t, *v.shape)
             for k, v in self.params_.items()}
        kl = torch.zeros(t)
        if self.z_on:
            z, kl = self._z(hw, gen)
            if detach:
                z, kl = z.detach(), kl.detach()
            zs, h = self.z_scaling, self.params_["fc3.weight"].shape[1]
            zw, zb = z[:, :3 * h], z[:, 3 * h:]
            for i, layer in enumerate(("fc3", "fc4", "fc5")):
                p[f"{layer}.weight"] = p[f"{layer}.weight"] * (
                    1 + zs * zw[:, i * h:(i + 1) * h]).unsqueeze(1)
                p[f"{layer}.bias"] = p[f"{layer}.bias"] + zs * zb[:, i:i + 1]
        if detach:
            p = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        return p, kl

    def _inner(self, p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor,
               hw: torch.Tensor, steps: int, create_graph: bool) -> dict[str, torch.Tensor]:
        """`train_single_task`: `steps` gradient steps on the support MSE of every task (the
        tasks' losses are summed, so each task's gradient is its own)."""
        for _ in range(steps):
            loss = ((self._forward(p, xs, hw) - ys) ** 2).mean(1).sum()
            keys = list(p)
            grads = torch.autograd.grad(loss, [p[k] for k in keys], create_graph=create_graph,
                                        allow_unused=True)
            new = {}
            for k, g in zip(keys, grads, strict=True):
                if g is None:
                    new[k] = p[k]
                    continue
                lr = self.task_lr_[k] if self.learn_inner_lr else self.inner_lr
                new[k] = p[k] - lr * g
            p = new
        return p

    # ------------------------------------------------------------------ meta-training

    def _fit(self, tasks, valid):
        self._checked_params()
        if not tasks:
            raise HwnasError("HELP needs source devices")
        if self.hw_embed_on and any(t.hw_embed is None for t in tasks.values()):
            raise HwnasError("HELP needs each source's hardware embedding: pass (X, y, hw_embed) "
                             "or Tasks (help_sources builds them)")
        need = self.n_support + self.n_query
        small = [n for n, t in tasks.items() if len(t.y) < need]
        if small:
            raise HwnasError(f"sources with fewer than n_support + n_query = {need} archs: "
                             f"{', '.join(small)}")
        self._build(self.n_features_in_)
        names = list(tasks)
        xs_all = {n: torch.as_tensor(t.x, dtype=torch.float32) for n, t in tasks.items()}
        ys_all = {n: torch.as_tensor(normalize_latency(t.y, t.y.min(), t.y.max()),
                                     dtype=torch.float32) for n, t in tasks.items()}
        hw_all = {n: torch.as_tensor(t.hw_embed if t.hw_embed is not None else np.zeros(10),
                                     dtype=torch.float32) for n, t in tasks.items()}
        opt = torch.optim.Adam(self._meta_parameters(), lr=self.meta_lr)
        gen = torch.Generator().manual_seed(self.random_state)
        vrng = np.random.default_rng(self.random_state + 1)
        self.history_, best, self.best_episode_, self.best_valid_spearman_ = [], None, None, None
        n_tasks = min(self.tasks_per_episode, len(names))
        for episode in range(self.episodes):
            pick = torch.randperm(len(names), generator=gen)[:n_tasks].tolist()
            xs, ys, xq, yq, hw = [], [], [], [], []
            for i in pick:
                n = names[i]
                perm = torch.randperm(len(ys_all[n]), generator=gen)
                s, q = perm[:self.n_support], perm[self.n_support:need]
                xs.append(xs_all[n][s]), ys.append(ys_all[n][s])
                xq.append(xs_all[n][q]), yq.append(ys_all[n][q])
                hw.append(hw_all[n])
            xs, ys, xq, yq, hw = map(torch.stack, (xs, ys, xq, yq, hw))
            p, kl = self._initial(n_tasks, hw, gen, detach=False)
            p = self._inner(p, xs, ys, hw, self.inner_steps, create_graph=self.second_order)
            mse = ((self._forward(p, xq, hw) - yq) ** 2).mean(1)
            loss = mse.mean() + self.kl_weight * kl.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if valid and (episode + 1) % self.eval_every == 0:
                rho = self._validate(valid, vrng)
                self.history_.append((episode + 1, rho))
                if self.verbose:
                    print(f"  episode {episode + 1}: meta-valid Spearman {rho:.4f}", flush=True)
                if best is None or rho > self.best_valid_spearman_:
                    best = self._state()
                    self.best_episode_, self.best_valid_spearman_ = episode + 1, rho
        if best is not None:
            self._set_state(best)
        else:
            self.best_episode_ = self.episodes

    def _validate(self, valid: dict[str, Task], rng: np.random.Generator) -> float:
        """Mean Spearman over the valid devices: a random support of n_support from each pool
        (normalised by the pool's min / max, as the official validation), MC-mean prediction
        of the query set."""
        rhos = []
        for t in valid.values():
            if t.x_query is None or t.y_query is None:
                raise HwnasError("valid devices need a query set (help_sources(with_query=True))")
            s = rng.permutation(len(t.y))[:self.n_support]
            st = self._adapt(t.x[s], t.y[s], t.hw_embed, y_range=(t.y.min(), t.y.max()),
                             seed=int(rng.integers(2 ** 31)))
            r = spearmanr(self._predict(st, t.x_query), t.y_query)[0]
            rhos.append(0.0 if not np.isfinite(r) else float(r))
        return float(np.mean(rhos))

    def _state(self) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v.detach().clone() for k, v in self.params_.items()}
        out.update({f"lr.{k}": v.detach().clone() for k, v in self.task_lr_.items()})
        if self.znet_ is not None:
            out.update({f"z.{k}": v.detach().clone() for k, v in self.znet_.state_dict().items()})
        return out

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self.params_.items():
                v.copy_(state[f"net.{k}"])
            for k, v in self.task_lr_.items():
                v.copy_(state[f"lr.{k}"])
            if self.znet_ is not None:
                self.znet_.load_state_dict({k[2:]: v for k, v in state.items()
                                            if k.startswith("z.")})

    # ------------------------------------------------------------------ adaptation

    def _adapt(self, xs, ys, hw, y_range: tuple[float, float] | None = None,
               seed: int | None = None, **kw):
        if not hasattr(self, "params_"):
            raise NotFittedError("HELP: call fit(sources) (or HELP.load) before adapt()")
        if kw:
            raise HwnasError(f"unknown adapt options: {', '.join(kw)}")
        if self.hw_embed_on and hw is None:
            raise HwnasError("HELP needs the target's hardware embedding (hw_embed: its "
                             "latencies on the 10 REFERENCE_ARCHS)")
        if y_range is None:
            if self.target_norm == "pool":
                raise HwnasError("target_norm='pool' needs y_range=(pool min, pool max)")
            y_range = (float(ys.min()), float(ys.max()))
        lo, hi = float(y_range[0]), float(y_range[1])
        if not hi > lo:
            raise HwnasError(f"the target's latency range must have max > min, got ({lo}, {hi})")
        t = self.mc_samples
        gen = torch.Generator().manual_seed(self.random_state if seed is None else seed)
        hw_t = torch.as_tensor(hw if hw is not None else np.zeros(10), dtype=torch.float32)
        hw_t = hw_t.unsqueeze(0).expand(t, -1)
        x_t = torch.as_tensor(xs, dtype=torch.float32).unsqueeze(0).expand(t, -1, -1)
        y_t = torch.as_tensor(normalize_latency(ys, lo, hi), dtype=torch.float32)
        y_t = y_t.unsqueeze(0).expand(t, -1)
        with torch.enable_grad():
            p, _ = self._initial(t, hw_t, gen, detach=True)
            p = self._inner(p, x_t, y_t, hw_t, self.inner_steps, create_graph=False)
        return {k: v.detach() for k, v in p.items()}, hw_t, (lo, hi)

    def predict_samples(self, x: np.ndarray, normalized: bool = False) -> np.ndarray:
        """(mc_samples, n): each MC sample's adapted prediction (ms, or HELP's normalised
        scale)."""
        if not hasattr(self, "target_"):
            raise NotFittedError("HELP: call adapt() before predict_samples()")
        return self._samples(self.target_, np.asarray(x, dtype=np.float64), normalized)

    def _samples(self, state, x: np.ndarray, normalized: bool) -> np.ndarray:
        p, hw, (lo, hi) = state
        t = hw.shape[0]
        out = []
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float32)
            for start in range(0, len(xt), 2048):
                chunk = xt[start:start + 2048].unsqueeze(0).expand(t, -1, -1)
                out.append(self._forward(p, chunk, hw).numpy().astype(np.float64))
        s = np.concatenate(out, 1) if out else np.zeros((t, 0))
        return s if normalized else denormalize_latency(s, lo, hi)

    def _predict(self, state, x):
        return self._samples(state, x, normalized=False).mean(0)

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path, meta: dict | None = None) -> None:
        """Write folder/help.safetensors (meta-trained parameters "net.*", inner lrs "lr.*",
        inference network "z.*") and folder/help.json (format, hyper-parameters,
        n_features_in, sources, model selection, `meta`), each atomically. The adapted target
        state is not saved: `adapt` again after `load`."""

        if not hasattr(self, "params_"):
            raise NotFittedError("HELP: nothing to save before fit()")
        meta = dict(meta or {})
        doc = {"format": FORMAT, "params": self._checked_params(),
               "n_features_in": int(self.n_features_in_), "sources": list(self.sources_),
               "best_episode": self.best_episode_, "history": [list(h) for h in self.history_],
               "meta": meta}
        write_model_folder(folder, CONFIG_FILE, WEIGHTS_FILE, FORMAT, doc, self._state())
        self.meta_ = meta

    @classmethod
    def load(cls, folder: str | Path) -> HELP:
        """Read a folder written by `save`, checking the JSON (format, fields, types) and that the
        tensors' names, shapes and dtypes are those of the model it describes, with finite
        values; any problem -> HwnasError("<file>: <what is wrong>"). The weights are read with
        safetensors only: no pickle, no code runs."""
        doc, cfg_path, w_path = read_model_config(
            folder, CONFIG_FILE, WEIGHTS_FILE, FORMAT,
            ("params", "n_features_in", "sources", "best_episode", "history", "meta"))

        def bad(what: str) -> HwnasError:
            return HwnasError(f"{cfg_path}: {what}")

        params = doc["params"]
        if not isinstance(params, dict) or set(params) != set(_HELP_PARAMS):
            raise bad(f"params must be an object with exactly {sorted(_HELP_PARAMS)}")
        est = cls(**params)
        try:
            est._checked_params()
        except HwnasError as e:
            raise bad(f"params: {e}") from None
        n_in = doc["n_features_in"]
        if isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1:
            raise bad(f"n_features_in must be a positive integer, not {n_in!r}")
        if not isinstance(doc["sources"], list) or not all(isinstance(s, str)
                                                           for s in doc["sources"]):
            raise bad("sources must be a list of device names")
        if not isinstance(doc["meta"], dict):
            raise bad("meta must be an object")
        best = doc["best_episode"]
        if best is not None and (isinstance(best, bool) or not isinstance(best, int)):
            raise bad(f"best_episode must be an integer or null, not {best!r}")
        history = doc["history"]
        if not isinstance(history, list) or not all(
                isinstance(h, list) and len(h) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in h)
                for h in history):
            raise bad("history must be a list of [episode, valid Spearman] pairs")
        try:
            est._build(n_in)
        except HwnasError as e:
            raise bad(str(e)) from None
        state = read_checked_tensors(w_path, est._state(), CONFIG_FILE)
        est._set_state(state)
        est.sources_ = list(doc["sources"])
        est.best_episode_ = best
        est.history_ = [(int(e), float(r)) for e, r in history]
        est.best_valid_spearman_ = max((r for _, r in est.history_), default=None)
        est.meta_ = dict(doc["meta"])
        return est

