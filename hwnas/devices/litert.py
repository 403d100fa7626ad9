"""`litert`: the LiteRT (TFLite) interpreter with XNNPACK, the mobile runtime, run on this host."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hwnas.convert.tflite import export_tflite, litert_runtime_available, litert_torch_available, to_input
from hwnas.devices.base import Backend, Runner, example_input


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
        return Runner(interp.invoke)

    def convert_many(self, items: list, progress=None) -> dict[str, Path]:
        """Bulk conversion for a profile: worker processes on every core, cached by key."""
        from hwnas.convert.tflite import convert_many

        return convert_many(items, progress=progress)
