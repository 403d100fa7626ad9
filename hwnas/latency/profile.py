"""`Profile`: load and validate a profile directory (see DESIGN: profile format).

Loading reads JSON and parquet only; a fitted predictor inside the profile is read with skops'
safe loader (an allow-list of types), so loading a profile never executes code from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.devices.store import SCHEMA_VERSION, read_parquet
from hwnas.errors import HwnasError
from hwnas.space import Arch, SearchSpace, get_space

OP_COLUMNS = ["key", "kind", "cin", "cout", "h", "w", "kernel", "stride", "expand", "groups",
              "median_ms"]
NET_COLUMNS = ["net_id", "arch", "median_ms"]
STAT_COLUMNS = ["median_ms", "min_ms", "p10_ms", "p90_ms", "reference_ms"]


@dataclass
class Profile:
    """A measured (or imported) device profile: metadata, lookup table rows, whole-net rows."""

    root: Path
    device: dict
    ops: pd.DataFrame
    nets: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def load(cls, root: str | Path) -> Profile:
        root = Path(root)
        if not root.is_dir():
            raise HwnasError(f"profile folder not found: {root}")
        device = load_device(root)
        ops = _load_table(root / "ops.parquet", OP_COLUMNS, required=not device.get("nets_only"))
        nets = _load_table(root / "nets.parquet", NET_COLUMNS, required=False)
        ops, nets = correct_drift(ops, nets)
        prof = cls(root, device, ops, nets)
        prof.space  # noqa: B018  (validates the space settings now, with a clear error)
        return prof

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def space(self) -> SearchSpace:
        s = self.device.get("space_settings", {})
        channels = s.get("channels")
        return get_space(self.device["space"], s.get("resolution"), s.get("width", 1.0),
                         s.get("num_classes"), tuple(channels) if channels else None)

    @property
    def lut(self) -> dict[str, float]:
        """Lookup table: op key -> median ms."""
        return dict(zip(self.ops["key"], self.ops["median_ms"].astype(float), strict=True)) \
            if len(self.ops) else {}

    def archs(self) -> list[Arch]:
        """The measured whole networks, in row order."""
        return [Arch.from_json(a) for a in self.nets["arch"]] if len(self.nets) else []

    def reference_arch(self) -> Arch | None:
        """The drift reference net the profiler timed inside every chunk, or None."""
        arch = self.device.get("reference", {}).get("arch")
        return Arch.from_dict(arch) if arch else None

    def reference_median(self) -> float | None:
        """The reference time every row was scaled to by `correct_drift` (None: no reference)."""
        times = [t["reference_ms"].to_numpy(float) for t in (self.ops, self.nets)
                 if len(t) and "reference_ms" in t.columns]
        return float(np.median(np.concatenate(times))) if times else None

    def net_latency(self) -> np.ndarray:
        return self.nets["median_ms"].to_numpy(dtype=float) if len(self.nets) else np.zeros(0)


def load_device(root: Path) -> dict:
    path = root / "device.json"
    if not path.exists():
        raise HwnasError(f"{root} is not a profile: device.json is missing")
    try:
        device = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HwnasError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(device, dict):
        raise HwnasError(f"{path}: expected a JSON object")
    version = device.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HwnasError(f"{path}: schema_version {version!r} is not supported "
                         f"(this hwnas reads version {SCHEMA_VERSION})")
    for key in ("space", "space_settings", "fingerprint"):
        if key not in device:
            raise HwnasError(f"{path}: required field {key!r} is missing")
    return device


def _load_table(path: Path, columns: list[str], required: bool) -> pd.DataFrame:
    if not path.exists():
        if required:
            raise HwnasError(f"{path.parent}: {path.name} is missing")
        return pd.DataFrame(columns=columns)
    df = read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HwnasError(f"{path}: required column(s) missing: {', '.join(missing)}")
    stats = [c for c in STAT_COLUMNS if c in df.columns]
    for col in [*columns, *stats]:
        if df[col].isna().any():
            rows = df.index[df[col].isna()].tolist()[:5]
            raise HwnasError(f"{path}: column {col!r} has missing values (rows {rows})")
    for col in stats:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise HwnasError(f"{path}: column {col!r} must be numeric milliseconds")
        if (df[col] <= 0).any():
            raise HwnasError(f"{path}: column {col!r} must be positive milliseconds")
    key = "key" if "key" in columns else "net_id"
    if not df[key].is_unique:
        raise HwnasError(f"{path}: duplicate {key} values")
    return df


def correct_drift(ops: pd.DataFrame, nets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Divide out slow machine drift using the reference net timed inside every chunk.

    Each row keeps its raw statistics and the median of the reference measured in the same
    interleaved rounds (`reference_ms`). Scaling every row by median(reference) / reference_ms
    puts all rows on the machine's typical speed (on the development VM this took two passes of
    the same nets from 40% to 90% within +-2% on onnxruntime 1 thread). Raw values stay in
    `raw_<stat>` columns. Profiles without the column are returned unchanged.
    """
    tables = [t for t in (ops, nets) if len(t) and "reference_ms" in t.columns]
    if not tables:
        return ops, nets
    base = float(np.median(np.concatenate([t["reference_ms"].to_numpy(float) for t in tables])))
    out = []
    for t in (ops, nets):
        if len(t) and "reference_ms" in t.columns:
            t = t.copy()
            factor = base / t["reference_ms"].to_numpy(float)
            for col in ("median_ms", "min_ms", "p10_ms", "p90_ms"):
                if col in t.columns:
                    t["raw_" + col] = t[col]
                    t[col] = t[col].to_numpy(float) * factor
        out.append(t)
    return out[0], out[1]
