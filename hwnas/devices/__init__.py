"""Devices: a `Backend` per runtime, its `Runner` (the one timing path), the measurement protocol,
the host/device fingerprint, and parsers of native tools' output.

Backends are registered by name through the `hwnas.devices` entry-point group (`get_backend`).
"""

from __future__ import annotations

from hwnas.devices.base import Backend, BackendUnavailable, Runner, example_input
from hwnas.devices.measurement import Measurement, Protocol, measure_callable, measure_interleaved
from hwnas.devices.registry import backend_class, describe_all, get_backend, names, register_backend

__all__ = ["Backend", "BackendUnavailable", "Measurement", "Protocol", "Runner",
           "backend_class", "describe_all", "example_input", "get_backend", "names", "measure_callable",
           "measure_interleaved", "register_backend"]
