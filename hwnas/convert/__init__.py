"""Torch module -> the artifact a runtime runs: ONNX, TFLite (LiteRT), torch program, TensorRT engine.

The backends in `hwnas.devices` measure exactly these files, and `hwnas.export` ships them: what is
measured is what is shipped. Each converter writes atomically and imports its runtime lazily.
"""

from __future__ import annotations

from hwnas.convert.onnx import export_onnx, to_onnx_bytes
from hwnas.convert.tflite import export_tflite
from hwnas.convert.torch_program import export_program

__all__ = ["export_onnx", "export_program", "export_tflite", "model_input_shape", "to_onnx_bytes"]


def model_input_shape(path) -> tuple[int, ...]:
    """The input shape of a model file (.onnx or .tflite): its first input, a symbolic or
    unknown dimension read as 1 (batch 1). `HwnasError` for a missing or unreadable file."""
    from pathlib import Path

    from hwnas.errors import HwnasError

    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{path}: file not found")
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            init = {t.name for t in model.graph.initializer}
            inputs = [i for i in model.graph.input if i.name not in init]
            if not inputs:
                raise HwnasError(f"{path}: the ONNX model has no input")
            dims = inputs[0].type.tensor_type.shape.dim
            return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else 1
                         for d in dims)
        if path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            return tuple(int(v) for v in Interpreter(model_path=str(path))
                         .get_input_details()[0]["shape"])
    except HwnasError:
        raise
    except Exception as e:  # protobuf / flatbuffer decode errors
        kind = {".onnx": "ONNX", ".tflite": "TFLite"}[path.suffix]
        raise HwnasError(f"{path}: not a readable {kind} model ({type(e).__name__}: {e})") \
            from None
    raise HwnasError(f"{path}: expected an .onnx or .tflite file")
