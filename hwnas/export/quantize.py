"""Post-training static int8 quantisation with calibration data (`hwnas export --int8`).

- ONNX: onnxruntime's `quantize_static` (QDQ format, per-channel int8 weights, int8 activations,
  MinMax calibration over the calibration images); the result runs in onnxruntime and is what
  TensorRT builds an int8 engine from.
- TFLite: ai-edge-quantizer's `static_wi8_ai8` recipe (int8 weights and activations, min/max
  calibration through the LiteRT interpreter) applied to the float .tflite from litert-torch.

Calibration images come from a data spec (`hwnas.data`: `digits`, `folder:PATH`,
`cifar10:PATH`) at the export resolution, normalised as in training.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from hwnas._io import write_atomic
from hwnas.convert.tflite import quiet_fds
from hwnas.errors import HwnasError


def calibration_images(spec: str, resolution: int, count: int = 64, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(calib_x, test_x, test_y, num_classes) from a data spec at `resolution`.

    Calibration images come from the training split, the held-out ones from the test split, so
    the accuracy change of int8 is measured on images the calibration never saw.
    """
    from hwnas.data import load_data

    data = load_data(spec, resolution, seed)
    rng = np.random.default_rng(seed)

    def take(split, n):
        idx = torch.from_numpy(rng.permutation(len(split))[:n])
        x = data.normalize(split.x[idx])
        return x.numpy().astype(np.float32), split.y[idx].numpy()

    cx, _ = take(data.train, count)
    tx, ty = take(data.test, 256)
    return cx, tx, ty, data.num_classes


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: np.ndarray | None,
                  input_name: str) -> Path:
    """Static QDQ int8 quantisation of an ONNX file (onnxruntime.quantization)."""
    if calibration is None or not len(calibration):
        raise HwnasError("int8 needs calibration data: pass --calib SPEC (e.g. digits)")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x[None].astype(np.float32)}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its per-tensor warnings are noise for a user
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pre = Path(tmp) / "pre.onnx"  # shape inference + graph optimisation, as recommended
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)
    return Path(out_path)


def quantize_tflite(fp32_path: Path, out_path: Path, calibration: np.ndarray | None) -> Path:
    """Static int8 quantisation of a .tflite file (ai-edge-quantizer, `static_wi8_ai8`)."""
    if calibration is None or not len(calibration):
        raise HwnasError("int8 needs calibration data: pass --calib SPEC (e.g. digits)")
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as e:
        raise HwnasError(f"tflite int8 needs ai-edge-quantizer ({e}): pip install "
                         "'hwnas[mobile]'") from None
    interp = Interpreter(model_path=str(fp32_path))
    signatures = interp.get_signature_list()
    key = next(iter(signatures))
    arg = signatures[key]["inputs"][0]
    samples = [{arg: x[None].astype(np.float32)} for x in calibration]
    with quiet_fds():
        qt = quantizer.Quantizer(str(fp32_path))
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        result = qt.calibrate({key: samples}, num_threads=1)
        quantized = qt.quantize(result, enable_progress_report=False).quantized_model
    write_atomic(out_path, bytes(quantized))
    return Path(out_path)
