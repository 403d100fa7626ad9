"""The device fingerprint: what must match before two measurements may be mixed."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# Fields whose difference makes a profile's measurements incomparable with this machine's.
# `cpu_id` and `cpu_isa` tell apart CPUs that a virtual machine names alike ("AMD EPYC"): two such
# hosts ran onnxruntime 2x apart while LiteRT ran 1.5x the other way (different SIMD kernels).
IDENTITY_FIELDS = ("cpu_model", "cpu_id", "cpu_isa", "cores", "machine", "gpu_name", "backend",
                   "runtime_version", "threads", "batch", "dtype")
# SIMD extensions that change which kernels a runtime picks
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd",
             "asimddp", "sve", "sve2")


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

    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in info:
            info[key] = value.strip()
        if not line.strip() and info:
            break  # the first processor's block is enough
    flags = set((info.get("flags") or info.get("features") or "").split())
    ident = "/".join(info.get(k, "") for k in ("vendor_id", "cpu family", "model", "stepping"))
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": ident if ident.strip("/") else "unknown",
        "cpu_isa": " ".join(f for f in ISA_FLAGS if f in flags) or "unknown",
        "cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hwnas": __version__,
    }


def differences(stored: dict, current: dict, fields: tuple[str, ...] = IDENTITY_FIELDS) -> dict:
    """{field: (stored, current)} for the identity fields that differ. A field the stored
    fingerprint does not have (written before the field existed) is not compared."""
    return {f: (stored.get(f), current.get(f)) for f in fields
            if f in stored and stored.get(f) != current.get(f)}
