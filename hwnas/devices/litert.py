"""`litert`: the LiteRT (TFLite) interpreter with XNNPACK, the mobile runtime, run on this host."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from hwnas.devices.base import Backend, Runner, example_input
from hwnas.export.tflite import export_tflite, litert_torch_available


def litert_runtime_available() -> tuple[bool, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except Exception as e:
        return False, f"ai-edge-litert is not usable ({type(e).__name__}: {e}); " \
                      "install the extra: pip install 'hwnas[mobile]'"
    return True, ""


def to_input(detail: dict, x: np.ndarray) -> np.ndarray:
    """A float array as the interpreter's input tensor (quantised for an int8/uint8 input)."""
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def from_output(detail: dict, y: np.ndarray) -> np.ndarray:
    """The interpreter's output tensor as floats (dequantised for an integer output)."""
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


class LiteRTBackend(Backend):
    """`ai_edge_litert.interpreter.Interpreter(num_threads=T)`; XNNPACK is on by default and takes
    the whole graph as one delegate node. The .tflite comes from litert-torch (`export_tflite`)."""

    name = "litert"
    description = "LiteRT (TFLite) interpreter + XNNPACK on this host (the mobile runtime)"
    artifact = "tflite"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, reason = litert_runtime_available()
        if not ok:
            return ok, reason
        return litert_torch_available()

    @classmethod
    def runtime_version(cls) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"ai-edge-litert {version('ai-edge-litert')}, " \
                   f"litert-torch {version('litert-torch')}"
        except PackageNotFoundError:
            return ""

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        return export_tflite(module, input_shape, path)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=self.threads)
        interp.allocate_tensors()
        detail = interp.get_input_details()[0]
        x = example_input(tuple(int(d) for d in detail["shape"])).numpy()
        interp.set_tensor(detail["index"], to_input(detail, x))
        return interp.invoke

    def convert_many(self, items: list, progress=None) -> dict[str, Path]:
        """Bulk conversion for a profile: worker processes on every core, cached by key."""
        from hwnas.export.tflite import convert_many

        return convert_many(items, progress=progress)
