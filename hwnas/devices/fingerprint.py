"""The device fingerprint: what must match before two measurements may be mixed."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# Fields whose difference makes a profile's measurements incomparable with this machine's.
IDENTITY_FIELDS = ("cpu_model", "cores", "machine", "gpu_name", "backend", "runtime_version", "threads",
                   "batch", "dtype")


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> dict:
    """CPU model, cores, OS, governor (where readable), Python, torch and hwnas versions."""
    import torch

    from hwnas import __version__

    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu_model": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hwnas": __version__,
    }


def differences(stored: dict, current: dict, fields: tuple[str, ...] = IDENTITY_FIELDS) -> dict:
    """{field: (stored, current)} for the identity fields that differ."""
    return {f: (stored.get(f), current.get(f)) for f in fields if stored.get(f) != current.get(f)}
