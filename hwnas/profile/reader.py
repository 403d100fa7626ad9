"""`Profile`: load and validate a profile directory.

A profile folder holds device.json (the `ProfileRecord`: what was measured and how), ops.parquet
(the lookup table: one row per distinct op with its statistics), nets.parquet (whole networks)
and, once fitted, the learned predictor. Loading validates all of it and divides out machine
drift (`hwnas.profile.drift.correct_drift`).

Loading reads JSON and parquet only; a fitted predictor inside the profile is read with skops'
safe loader (an allow-list of types), so loading a profile never executes code from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.errors import HwnasError
from hwnas.profile.drift import base_reference_ms, correct_drift
from hwnas.profile.record import ProfileRecord, read_record
from hwnas.profile.store import SCALED_COLUMNS, read_parquet
from hwnas.space import Arch, SearchSpace, get_space

OP_COLUMNS = ["key", "kind", "cin", "cout", "h", "w", "kernel", "stride", "expand", "groups",
              "median_ms"]
NET_COLUMNS = ["net_id", "arch", "median_ms"]
INT_COLUMNS = ["cin", "cout", "h", "w", "kernel", "stride", "expand", "groups"]
# columns that, when present, must hold positive milliseconds without gaps
MS_COLUMNS = [*SCALED_COLUMNS, "reference_ms"]


@dataclass
class Profile:
    """A measured (or imported) device profile: its record, lookup table rows, whole-net rows."""

    root: Path
    record: ProfileRecord
    ops: pd.DataFrame
    nets: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def load(cls, root: str | Path) -> Profile:
        root = Path(root)
        if not root.is_dir():
            raise HwnasError(f"profile folder not found: {root}")
        record = read_record(root)
        ops = _load_table(root / "ops.parquet", OP_COLUMNS, required=not record.nets_only)
        nets = _load_table(root / "nets.parquet", NET_COLUMNS, required=False)
        ops, nets = correct_drift(ops, nets)
        prof = cls(root, record, ops, nets)
        try:
            prof.space  # noqa: B018  (validates the space settings now, with a clear error)
        except HwnasError as e:
            raise HwnasError(f"{root / 'device.json'}: {e}") from None
        return prof

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def space(self) -> SearchSpace:
        s = self.record.settings()
        return get_space(self.record.space, s["resolution"], s["width"], s["num_classes"],
                         s["channels"])

    @property
    def lut(self) -> dict[str, float]:
        """Lookup table: op key -> median ms."""
        return dict(zip(self.ops["key"], self.ops["median_ms"].astype(float), strict=True)) \
            if len(self.ops) else {}

    def archs(self) -> list[Arch]:
        """The measured whole networks, in row order."""
        archs = []
        for i, text in enumerate(self.nets["arch"] if len(self.nets) else []):
            try:
                arch = Arch.from_json(text)
            except HwnasError as e:
                raise HwnasError(f"{self.root / 'nets.parquet'}: row {i}: {e}") from None
            if arch.space != self.record.space and arch.space not in self.space.priced_spaces():
                raise HwnasError(f"{self.root / 'nets.parquet'}: row {i}: a network of space "
                                 f"{arch.space!r} in a profile of space {self.record.space!r}")
            archs.append(arch)
        return archs

    def reference_arch(self) -> Arch | None:
        """The drift reference net the profiler timed inside every chunk, or None."""
        return self.record.reference.arch if self.record.reference is not None else None

    def reference_ms(self) -> float | None:
        """The reference time every row was scaled to by `correct_drift` (None: no reference);
        see `hwnas.profile.drift.base_reference_ms`."""
        return base_reference_ms(self.ops, self.nets)

    def net_latency(self) -> np.ndarray:
        return self.nets["median_ms"].to_numpy(dtype=float) if len(self.nets) else np.zeros(0)


def _load_table(path: Path, columns: list[str], required: bool) -> pd.DataFrame:
    if not path.exists():
        if required:
            raise HwnasError(f"{path.parent}: {path.name} is missing")
        return pd.DataFrame(columns=columns)
    df = read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HwnasError(f"{path}: required column(s) missing: {', '.join(missing)}")
    if required and df.empty:
        raise HwnasError(f"{path}: the table has no rows")
    stats = [c for c in MS_COLUMNS if c in df.columns]
    for col in [*columns, *stats]:
        if df[col].isna().any():
            rows = df.index[df[col].isna()].tolist()[:5]
            raise HwnasError(f"{path}: column {col!r} has missing values (rows {rows})")
    for col in [c for c in INT_COLUMNS if c in columns]:
        if not pd.api.types.is_integer_dtype(df[col]):
            raise HwnasError(f"{path}: column {col!r} must hold integers, not {df[col].dtype}")
    for col in stats:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise HwnasError(f"{path}: column {col!r} must be numeric milliseconds")
        if (df[col] <= 0).any():
            raise HwnasError(f"{path}: column {col!r} must be positive milliseconds")
        if not np.isfinite(df[col].to_numpy(float)).all():
            raise HwnasError(f"{path}: column {col!r} must be finite milliseconds (not inf)")
    key = "key" if "key" in columns else "net_id"
    if not df[key].is_unique:
        raise HwnasError(f"{path}: duplicate {key} values")
    return df
