"""Published per-architecture tables as search inputs: accuracy and device latency columns.

A table is a CSV or parquet file with one row per architecture of the space, keyed by the
architecture's index or its arch string, and value columns:

- accuracy tables (`load_accuracy_table`): e.g. NATS-Bench's `nats_bench.csv`
  (`CIFAR10TestAccuracy200Epochs`, ..., `ArchitectureString`); choose the column with `column`
  (needed when there are several);
- latency tables (`load_latency_table`): the HW-NAS-Bench / HELP layout, `arch_idx`, `arch_str` and
  one `<device>_ms` column per device; `device` is given as `raspi4` or `raspi4_ms`.

Keys: an index column (`arch_idx`, `arch_index`, `index`, `idx`: the NAS-Bench-201 index) and/or
an arch-string column (`arch_str`, `arch`, `arch_string`, `ArchitectureString`); with both, they
must agree on every row. A table must cover every architecture of the space exactly once with a
finite value (latencies > 0). Anything else is one `HwnasError` naming the file and the problem.
Tables are supported for the `nb201` space (the space of the published tables), whose index is
the official NAS-Bench-201 order (`hwnas.space.nb201`).

`TableLatencyPredictor` makes a latency column a `LatencyPredictor` (name `table:<device>`): a
vectorised lookup by index, so constraints and benchmarks can price all 15,625 cells at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas._io import check_csv_width
from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.space import Arch, SearchSpace
from hwnas.space.nb201 import N_ARCHS, NB201Space, all_indices, arch_string, official_index, parse_arch_string

INDEX_COLUMNS = ("arch_idx", "arch_index", "index", "idx")
STRING_COLUMNS = ("arch_str", "arch", "arch_string", "architecturestring")


@dataclass
class ArchTable:
    """One value per architecture of the space, stored by NAS-Bench-201 index."""

    path: Path
    column: str
    values: np.ndarray  # (N_ARCHS,), values[k] = value of the arch with index k
    space: SearchSpace
    sha256: str = ""

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """The value of each row of an (N, 6) choice-index matrix (vectorised)."""
        return self.values[official_index(np.atleast_2d(np.asarray(idx, dtype=np.int64)))]

    def describe(self) -> dict:
        return {"path": str(self.path), "column": self.column, "rows": int(self.values.size),
                "sha256": self.sha256, "min": float(self.values.min()),
                "max": float(self.values.max())}


def _check_space(space: SearchSpace, path: Path) -> None:
    if not isinstance(space, NB201Space):
        raise HwnasError(f"{path}: per-architecture tables are supported for the nb201 space "
                         f"(NAS-Bench-201 index or arch string), not {space.name!r}")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (`.csv`, `.csv.gz`) or parquet (`.parquet`, `.pq`) file as a DataFrame."""
    p = Path(path)
    if not p.is_file():
        raise HwnasError(f"table not found: {p}")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        elif name.endswith((".csv", ".csv.gz", ".txt")):
            check_csv_width(p)
            df = pd.read_csv(p)
        else:
            raise HwnasError(f"{p}: unknown table format (use .csv or .parquet)")
    except HwnasError:
        raise
    except Exception as e:  # a corrupt or foreign file
        raise HwnasError(f"{p}: unreadable table ({type(e).__name__}: {e})") from None
    if df.empty:
        raise HwnasError(f"{p}: the table has no rows")
    return df


def _find(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): str(c) for c in df.columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _row_keys(df: pd.DataFrame, path: Path) -> tuple[np.ndarray, list[str]]:
    """The NAS-Bench-201 index of each row (from its index and/or arch-string column), and the
    key columns used."""
    icol, scol = _find(df, INDEX_COLUMNS), _find(df, STRING_COLUMNS)
    if icol is None and scol is None:
        raise HwnasError(f"{path}: no architecture column: give an index column (one of "
                         f"{', '.join(INDEX_COLUMNS)}) or an arch-string column (one of "
                         f"{', '.join(STRING_COLUMNS)}); the columns are "
                         f"{', '.join(map(str, df.columns))}")
    from_index = from_string = None
    if icol is not None:
        raw = pd.to_numeric(df[icol], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0)
                             | (raw >= N_ARCHS))
        if bad.size:
            r = int(bad[0])
            raise HwnasError(f"{path}: column {icol!r} row {r + 2}: {df[icol].iloc[r]!r} is not a "
                             f"NAS-Bench-201 index (0..{N_ARCHS - 1}); {bad.size} such row(s): "
                             f"the table does not match the nb201 space")
        from_index = raw.astype(np.int64)
    if scol is not None:
        known = {arch_string(c): k for k, c in enumerate(_all_choice_names())}
        out = np.empty(len(df), dtype=np.int64)
        for r, s in enumerate(df[scol].astype(str)):
            k = known.get(s.strip())
            if k is None:
                try:
                    parse_arch_string(s)
                except HwnasError as e:
                    raise HwnasError(f"{path}: column {scol!r} row {r + 2}: {e}; the table does "
                                     f"not match the nb201 space") from None
                raise HwnasError(f"{path}: column {scol!r} row {r + 2}: {s!r} is not an nb201 "
                                 f"arch")  # pragma: no cover - parse and the list agree
            out[r] = k
        from_string = out
    if from_index is not None and from_string is not None:
        diff = np.flatnonzero(from_index != from_string)
        if diff.size:
            r = int(diff[0])
            raise HwnasError(f"{path}: row {r + 2}: {icol} {from_index[r]} is "
                             f"{arch_string(_all_choice_names()[from_index[r]])} in the "
                             f"NAS-Bench-201 order, but {scol} says {df[scol].iloc[r]}; {diff.size} "
                             f"row(s) disagree: the index column is not NAS-Bench-201's order")
    keys = from_index if from_index is not None else from_string
    return keys, [c for c in (icol, scol) if c is not None]


_NAMES: list[tuple[str, ...]] | None = None


def _all_choice_names() -> list[tuple[str, ...]]:
    """The choices of every arch, in index order (cached)."""
    global _NAMES
    if _NAMES is None:
        from hwnas.space.nb201 import NB201_OPS

        _NAMES = [tuple(NB201_OPS[j] for j in row) for row in all_indices()]
    return _NAMES


def _values(df: pd.DataFrame, column: str, keys: np.ndarray, path: Path, what: str,
            positive: bool) -> np.ndarray:
    vals = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    nonnum = df[column].notna().to_numpy() & np.isnan(vals)
    if nonnum.any():
        r = int(np.flatnonzero(nonnum)[0])
        raise HwnasError(f"{path}: column {column!r} row {r + 2} is not a number: "
                         f"{df[column].iloc[r]!r}")
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        r = int(bad[0])
        raise HwnasError(f"{path}: column {column!r} has {bad.size} missing or non-finite "
                         f"value(s) (NaN), e.g. row {r + 2} (arch index {keys[r]})")
    if positive and (vals <= 0).any():
        r = int(np.flatnonzero(vals <= 0)[0])
        raise HwnasError(f"{path}: column {column!r} row {r + 2}: {what} {vals[r]} is not a "
                         f"positive latency")
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    dup = np.flatnonzero(sk[1:] == sk[:-1])
    if dup.size:
        k = int(sk[dup[0]])
        rows = sorted(int(r) + 2 for r in np.flatnonzero(keys == k))
        raise HwnasError(f"{path}: arch index {k} ({arch_string(_all_choice_names()[k])}) "
                         f"appears more than once (rows {', '.join(map(str, rows))}); "
                         f"{dup.size} duplicate row(s)")
    if keys.size != N_ARCHS:
        missing = np.setdiff1d(np.arange(N_ARCHS), keys)
        raise HwnasError(f"{path}: the table covers {keys.size} of the {N_ARCHS} nb201 archs "
                         f"({missing.size} missing, e.g. index {int(missing[0])}): a search "
                         f"needs a value for every arch of the space")
    out = np.empty(N_ARCHS)
    out[keys] = vals
    out.setflags(write=False)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_accuracy_table(path: str | Path, space: SearchSpace,
                        column: str | None = None) -> ArchTable:
    """Accuracy (or any score, higher better) per arch from `path`; `column` names the value
    column (case-insensitive; needed when the table has several numeric columns)."""
    p = Path(path)
    _check_space(space, p)
    df = read_table(p)
    keys, key_cols = _row_keys(df, p)
    numeric = [str(c) for c in df.columns if str(c) not in key_cols
               and pd.api.types.is_numeric_dtype(df[c])]
    if column is None:
        if len(numeric) != 1:
            raise HwnasError(f"{p}: choose the accuracy column with --accuracy-column; "
                             f"numeric columns: {', '.join(numeric) or 'none'}")
        col = numeric[0]
    else:
        col = _match_column(df, column, p, "accuracy", numeric)
    return ArchTable(p, col, _values(df, col, keys, p, "accuracy", positive=False), space,
                     _sha256(p))


def _match_column(df: pd.DataFrame, column: str, path: Path, what: str,
                  offered: list[str]) -> str:
    if column in df.columns:
        return column
    lower = {str(c).lower(): str(c) for c in df.columns}
    if column.lower() in lower:
        return lower[column.lower()]
    raise HwnasError(f"{path}: no {what} column {column!r}; available: "
                     f"{', '.join(offered) or 'none'}")


def load_latency_table(path: str | Path, space: SearchSpace, device: str) -> ArchTable:
    """Latency (ms) per arch on `device` (`raspi4` or `raspi4_ms`) from a HW-NAS-Bench / HELP
    layout table."""
    p = Path(path)
    _check_space(space, p)
    df = read_table(p)
    keys, key_cols = _row_keys(df, p)
    devices = [str(c) for c in df.columns if str(c).endswith("_ms")]
    name = device if device.endswith("_ms") else f"{device}_ms"
    col = None
    for cand in (name, device):
        if cand in df.columns or cand.lower() in {str(c).lower() for c in df.columns}:
            col = _match_column(df, cand, p, "device", devices)
            break
    if col is None or col in key_cols:
        raise HwnasError(f"{p}: no latency column for device {device!r}; devices: "
                         f"{', '.join(d[:-3] for d in devices) or 'none (no <device>_ms columns)'}")
    return ArchTable(p, col, _values(df, col, keys, p, "latency", positive=True), space,
                     _sha256(p))


class TableLatencyPredictor(LatencyPredictor):
    """A device column of a latency table as a latency predictor (exact lookup, no interval)."""

    def __init__(self, table: ArchTable, device: str | None = None) -> None:
        self.table = table
        self.space = table.space
        dev = device or table.column
        self.name = f"table:{dev[:-3] if dev.endswith('_ms') else dev}"

    def indices(self, archs) -> np.ndarray:
        archs = list(archs)
        return np.asarray([self.space.indices(a) for a in archs], dtype=np.int64)\
            .reshape(len(archs), len(self.space.layers))

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        return self.table.lookup(idx)

    def predict(self, archs: list[Arch]) -> np.ndarray:
        archs = list(archs)
        return self.predict_indices(self.indices(archs))
