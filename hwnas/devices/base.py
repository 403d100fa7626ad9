"""`Backend`: the small abstract base class every device implements (Optuna-sampler style).

A backend converts a torch module into the artifact its runtime runs (via `hwnas.convert`, the
same code `hwnas export` ships: what is measured is what is shipped), loads it as a `Runner`, and
times it with the shared protocol. `Runner.time` is the one timing path: the profiler, export's
`--verify` and `Backend.measure` all reach the runtime's clock through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from hwnas.devices.fingerprint import host_fingerprint
from hwnas.devices.measurement import Measurement, Protocol, Runner, as_runner, measure_callable
from hwnas.errors import BackendUnavailable, HwnasError

__all__ = ["Backend", "BackendUnavailable", "Runner", "example_input"]


class Backend(ABC):
    """A device + runtime. Subclasses implement `available`, `convert` and `load`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    artifact: ClassVar[str] = "onnx"  # the suffix of what `convert` writes

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32") -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise HwnasError(f"threads must be a whole number >= 1, got {threads!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise HwnasError(f"batch must be a whole number >= 1, got {batch!r}")
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
        """Load an artifact; the `Runner` runs one inference per call and times with `time`."""

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

    def measure_artifact(self, path: Path, input_shape: tuple[int, ...],
                         protocol: Protocol | None = None) -> Measurement:
        """Time an existing artifact file (what `hwnas export --verify` ships)."""
        self.require()
        runner = as_runner(self.load(Path(path), input_shape))
        try:
            return measure_callable(runner, protocol or Protocol())
        finally:
            runner.close()

    def measure(self, module: nn.Module, input_shape: tuple[int, ...],
                protocol: Protocol | None = None, workdir: Path | None = None) -> Measurement:
        """Convert, load and time a module (the one-item case of the profiler's timing)."""
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
