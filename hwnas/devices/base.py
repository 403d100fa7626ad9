"""`Backend`: the small abstract base class every device implements (Optuna-sampler style).

A backend converts a torch module into the artifact its runtime runs (via `hwnas.export`, so
what is measured is what is shipped), loads it, and times it with the shared protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from hwnas.devices.fingerprint import host_fingerprint
from hwnas.devices.measurement import Measurement, Protocol, measure_callable

Runner = Callable[[], object]


class BackendUnavailable(RuntimeError):
    """Raised when a backend is used where it cannot run; the message says why."""


class Backend(ABC):
    """A device + runtime. Subclasses implement `available`, `convert` and `load`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    artifact: ClassVar[str] = "onnx"  # the suffix of what `convert` writes

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32") -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self.batch = batch
        self.dtype = dtype

    # --- what a backend defines ---------------------------------------------------------------
    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when it can run here, else (False, the reason)."""

    @classmethod
    def runtime_version(cls) -> str:
        return ""

    @abstractmethod
    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        """Write the runtime's artifact for `module` to `path` (suffix `artifact`)."""

    @abstractmethod
    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        """Load an artifact and return a callable that runs one inference."""

    # --- shared -------------------------------------------------------------------------------
    def require(self) -> None:
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} cannot run here: {reason}")

    def options(self) -> dict:
        return {"threads": self.threads, "batch": self.batch, "dtype": self.dtype}

    def fingerprint(self) -> dict:
        """What identifies this device + runtime + settings (compared before mixing data)."""
        return {**host_fingerprint(), "backend": self.name,
                "runtime_version": self.runtime_version(), **self.options()}

    def sampler(self, run: Runner) -> Callable[[int], list[float]] | None:
        """How to time `count` runs; None: wall clock. GPU backends override (events)."""
        return None

    def measure_artifact(self, path: Path, input_shape: tuple[int, ...],
                         protocol: Protocol | None = None) -> Measurement:
        """Time an existing artifact file (what `hwnas export --verify` ships)."""
        self.require()
        run = self.load(Path(path), input_shape)
        return measure_callable(run, protocol or Protocol(), self.sampler(run))

    def measure(self, module: nn.Module, input_shape: tuple[int, ...],
                protocol: Protocol | None = None, workdir: Path | None = None) -> Measurement:
        """Convert, load and time a module."""
        import tempfile

        self.require()
        with tempfile.TemporaryDirectory() as tmp:
            path = self.convert(module.eval(), input_shape,
                                Path(workdir or tmp) / f"model.{self.artifact}")
            return self.measure_artifact(path, input_shape, protocol)


def example_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A fixed random input of the given shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape, generator=g)
