"""Torch module -> the artifact a runtime runs: ONNX, TFLite (LiteRT), torch program, TensorRT engine.

The backends in `hwnas.devices` measure exactly these files, and `hwnas.export` ships them: what is
measured is what is shipped. Each converter writes atomically and imports its runtime lazily.
"""

from __future__ import annotations

from hwnas.convert.onnx import export_onnx, to_onnx_bytes
from hwnas.convert.tflite import export_tflite
from hwnas.convert.torch_program import export_program

__all__ = ["export_onnx", "export_program", "export_tflite", "to_onnx_bytes"]
