"""Writing a profile directory: atomic file replacement, row flushing, a lock, the fingerprint check.

Layout (DESIGN: profile format): device.json, ops.parquet (the lookup table), nets.parquet (whole
networks), plan.json (the networks a profile will measure, so that a resumed run measures the same
ones). Reading and validating a profile for prediction lives in `hwnas.latency.profile`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from hwnas.devices.fingerprint import differences
from hwnas.errors import HwnasError

SCHEMA_VERSION = 1
STAT_COLUMNS = ["median_ms", "min_ms", "p10_ms", "p90_ms", "cv", "n", "warmup", "flagged"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: object) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a parquet file, turning a corrupt or truncated one into a clear error."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise HwnasError(f"{path}: file not found") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise HwnasError(f"{path}: not a readable parquet file (corrupt or truncated?): "
                         f"{type(e).__name__}: {e}") from None


class ProfileWriter:
    """Owns a profile directory while measuring: lock, device.json, appended rows."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = FileLock(str(self.root / ".profile.lock"))

    @property
    def device_path(self) -> Path:
        return self.root / "device.json"

    def exists(self) -> bool:
        return self.device_path.exists()

    def acquire(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise HwnasError(f"{self.root} is being written by another hwnas process "
                             f"(lock {self.lock.lock_file})") from None

    def release(self) -> None:
        self.lock.release()

    def read_device(self) -> dict:
        try:
            return json.loads(self.device_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HwnasError(f"{self.device_path}: unreadable ({e})") from None

    def write_device(self, device: dict) -> None:
        write_json(self.device_path, device)

    def check_fingerprint(self, current: dict) -> None:
        """Refuse to mix measurements of another machine or runtime, showing the difference."""
        stored = self.read_device().get("fingerprint", {})
        diff = differences(stored, current)
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
