"""Torch module -> the artifact a runtime runs: ONNX, TFLite (LiteRT), torch program, TensorRT engine.

The backends in `hwnas.devices` measure exactly these files, and `hwnas.export` ships them: what is
measured is what is shipped. Each converter writes atomically and imports its runtime lazily.
"""

from __future__ import annotations

from hwnas.convert.onnx import export_onnx, to_onnx_bytes
from hwnas.convert.tflite import export_tflite
from hwnas.convert.torch_program import export_program

__all__ = ["MAX_INPUT_VALUES", "check_input_shape", "check_onnx_model", "export_onnx",
           "export_program", "export_tflite", "model_input_shape", "to_onnx_bytes"]


# The largest model input hwnas allocates: 2^28 values (a 1 GiB float32 tensor), far above any
# image batch it times (a 4096x4096 RGB image is 5e7 values); more is refused before allocating.
MAX_INPUT_VALUES = 1 << 28


def check_input_shape(shape: tuple[int, ...], source: str) -> tuple[int, ...]:
    """`shape` if every dimension is a positive integer and the tensor is not absurdly large;
    else `HwnasError` naming `source` (a file, or the option that gave the shape)."""
    import math

    from hwnas.errors import HwnasError

    if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise HwnasError(f"{source}: input shape {list(shape)} must be positive integers")
    values = math.prod(shape)
    if values > MAX_INPUT_VALUES:
        raise HwnasError(f"{source}: input shape {'x'.join(map(str, shape))} is {values:.3g} "
                         f"values, more than hwnas allocates ({MAX_INPUT_VALUES:.3g}, a 1 GiB "
                         f"float32 tensor)")
    return tuple(shape)


def check_onnx_model(model, name: str, given: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Refuse an ONNX model (a ModelProto, or the path it was read from as `name`) that cannot
    be priced or run as it stands, with one `HwnasError` naming `name`: no nodes, invalid by
    onnx's checker (an undefined tensor, an op of an undeclared domain), an opset newer than
    this onnx, no input, an input dimension that is zero, negative or absurd. Returns the first
    input's shape: `given` when set (checked), else the model's own, where a symbolic batch
    (the first dimension) reads as 1 and any other symbolic dimension is an error."""
    import onnx

    from hwnas.errors import HwnasError

    if not model.graph.node:
        raise HwnasError(f"{name}: the ONNX graph has no nodes (an empty or truncated file?)")
    probe = model
    if any(not vi.type.tensor_type.HasField("shape") for vi in model.graph.output
           if vi.type.HasField("tensor_type")):
        probe = onnx.ModelProto()  # an output of unknown shape, written as exporters write it
        probe.CopyFrom(model)
        for vi in probe.graph.output:
            if vi.type.HasField("tensor_type"):
                vi.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(probe)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HwnasError(f"{name}: not a valid ONNX model ({first})") from None
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise HwnasError(f"{name}: opset {imp.version} is newer than this onnx knows "
                             f"({newest})")
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if not inputs:
        raise HwnasError(f"{name}: the ONNX model has no input")
    shapes = []
    for inp in inputs:
        if given is None and not inp.type.tensor_type.HasField("shape"):
            raise HwnasError(f"{name}: input {inp.name!r} has no shape; give the model fixed "
                             "input shapes (or `hwnas measure --input-shape`)")
        dims = []
        for k, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value < 1:
                    raise HwnasError(f"{name}: input {inp.name!r} has dimension {d.dim_value} "
                                     f"(at {k}); dimensions must be positive")
                dims.append(int(d.dim_value))
            elif k == 0 or given is not None:
                dims.append(1)  # a symbolic batch: one image, as hwnas times every model
            else:
                raise HwnasError(f"{name}: input {inp.name!r} has a dynamic dimension "
                                 f"{d.dim_param or '?'!r} (at {k}); give the model fixed input "
                                 "shapes (or `hwnas measure --input-shape`)")
        shapes.append(check_input_shape(tuple(dims), name) if dims else ())
    return check_input_shape(tuple(given), name) if given is not None else shapes[0]


def model_input_shape(path, given: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The input shape of a model file (.onnx or .tflite): its first input, a symbolic batch
    read as 1, or `given` (an explicit shape, checked). An .onnx file is checked first
    (`check_onnx_model`). `HwnasError` for a missing, unreadable or invalid file."""
    from pathlib import Path

    from hwnas.errors import HwnasError

    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{path}: file not found")
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            return check_onnx_model(model, str(path), given)
        if path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            shape = tuple(int(v) for v in Interpreter(model_path=str(path))
                          .get_input_details()[0]["shape"])
            return check_input_shape(tuple(given) if given is not None else shape, str(path))
    except HwnasError:
        raise
    except Exception as e:  # protobuf / flatbuffer decode errors
        kind = {".onnx": "ONNX", ".tflite": "TFLite"}[path.suffix]
        raise HwnasError(f"{path}: not a readable {kind} model ({type(e).__name__}: {e})") \
            from None
    raise HwnasError(f"{path}: expected an .onnx or .tflite file")
