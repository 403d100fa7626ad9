"""Writing a profile directory: atomic file replacement, row flushing, a lock, the fingerprint check.

Layout of a profile folder: device.json (the `ProfileRecord`, `hwnas.profile.record`), ops.parquet
(the lookup table), nets.parquet (whole networks), plan.json (the networks a profile will
measure, so that a resumed run measures the same ones). Reading and validating a profile for
prediction lives in `hwnas.profile.reader`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from filelock import FileLock

from hwnas._io import atomic_path, lock_folder
from hwnas.devices.fingerprint import differences
from hwnas.errors import HwnasError
from hwnas.profile.record import SCHEMA_VERSION, ProfileRecord, read_record, write_record

__all__ = ["SCALED_COLUMNS", "SCHEMA_VERSION", "STAT_COLUMNS", "ProfileWriter", "read_parquet",
           "write_parquet"]

# The statistics of a `Measurement` stored in each row (ops.parquet, nets.parquet), beside the
# row's own fields and `reference_ms` (the drift reference's median in the same chunk).
STAT_COLUMNS = ["median_ms", "min_ms", "p10_ms", "p90_ms", "cv", "n", "warmup", "flagged"]
# The millisecond statistics that `correct_drift` scales to the profile's reference speed (the
# raw values are kept in `raw_<column>`).
SCALED_COLUMNS = ["median_ms", "min_ms", "p10_ms", "p90_ms"]


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a parquet file, turning a corrupt or truncated one into a clear error.

    Read through one open file: a writer replaces the file (write, then rename) while readers
    run, and pyarrow given a path opens it more than once (footer, then pages), so a read that
    straddles a rename would mix two versions ("Page was smaller than expected"). An open file
    keeps the version it opened."""
    try:
        with open(path, "rb") as f:
            return pd.read_parquet(f)
    except FileNotFoundError:
        raise HwnasError(f"{path}: file not found") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise HwnasError(f"{path}: not a readable parquet file (corrupt or truncated?): "
                         f"{type(e).__name__}: {e}") from None


class ProfileWriter:
    """Owns a profile directory while measuring: lock, the record (device.json), appended rows."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = FileLock(str(self.root / ".profile.lock"))

    @property
    def record_path(self) -> Path:
        return self.root / "device.json"

    def exists(self) -> bool:
        return self.record_path.exists()

    def acquire(self) -> None:
        self.lock = lock_folder(self.root, ".profile.lock")

    def release(self) -> None:
        self.lock.release()

    def read_record(self) -> ProfileRecord:
        return read_record(self.root)

    def write_record(self, record: ProfileRecord) -> None:
        write_record(self.root, record)

    def check_fingerprint(self, current: dict) -> None:
        """Refuse to mix measurements of another machine or runtime, showing the difference."""
        diff = differences(self.read_record().fingerprint, current)
        if diff:
            lines = "; ".join(f"{k}: profile has {a!r}, this machine has {b!r}"
                              for k, (a, b) in diff.items())
            raise HwnasError(f"{self.root} was measured on another device/runtime, refusing to "
                             f"resume into it ({lines})")

    def rows(self, name: str) -> pd.DataFrame:
        path = self.root / f"{name}.parquet"
        return read_parquet(path) if path.exists() else pd.DataFrame()

    def append(self, name: str, rows: list[dict]) -> pd.DataFrame:
        """Append rows to `<name>.parquet` (rewritten atomically; profiles are small)."""
        if not rows:
            return self.rows(name)
        df = pd.concat([self.rows(name), pd.DataFrame(rows)], ignore_index=True)
        write_parquet(self.root / f"{name}.parquet", df)
        return df
