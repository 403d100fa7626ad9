"""Export targets: one small class per deployable format (Optuna-style abstract base class).

A `Target` writes the artifact of a torch module (`write`) and runs that artifact in its own
runtime on a batch of inputs (`run`), which is what the parity check compares with torch. The
conversion code is the one the measuring backends use (`hwnas.convert.onnx`, `.tflite`,
`.torch_program`, `.tensorrt`), so what `--verify` times is what a profile measured.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError

PRECISIONS = ("fp32", "fp16", "int8")


def _versions(*packages: str) -> dict[str, str]:
    out = {"torch": torch.__version__}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


class Target(ABC):
    """A deployable format. Subclasses set the class attributes and implement `write_fp32` and
    `run` (and `quantize` where they offer int8)."""

    name: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    device: ClassVar[str] = ""  # the backend that `--verify` uses by default
    devices: ClassVar[tuple[str, ...]] = ()  # every backend that measures this artifact
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    packages: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when it can be written and run here, else (False, what is missing)."""
        return True, ""

    @classmethod
    def runtime_versions(cls) -> dict[str, str]:
        return _versions(*cls.packages)

    def write(self, module: nn.Module, input_shape: tuple[int, ...], path: Path,
              precision: str = "fp32", calibration: np.ndarray | None = None) -> Path:
        """Write the artifact of `module` (eval mode) for a fixed input shape to `path`: the
        fp32 file, or the fp32 file (in a temporary folder) quantised by `quantize`."""
        path = Path(path)
        if precision == "fp32":
            return self.write_fp32(module, input_shape, path)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = self.write_fp32(module, input_shape, Path(tmp) / f"fp32.{self.suffix}")
            return self.quantize(fp32, path, calibration)

    @abstractmethod
    def write_fp32(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        """Write the float32 artifact."""

    def quantize(self, fp32_path: Path, path: Path, calibration: np.ndarray | None) -> Path:
        """int8 from the float32 artifact (targets that list int8 in `precisions`)."""
        raise HwnasError(f"target {self.name} does not support int8")

    @abstractmethod
    def run(self, path: Path, inputs: np.ndarray) -> np.ndarray:
        """Run the artifact on each input of a batch (N, C, H, W) one at a time; (N, classes)."""

    def require(self, precision: str) -> None:
        ok, reason = self.available()
        if not ok:
            raise HwnasError(f"cannot export to {self.name}: {reason}")
        if precision not in self.precisions:
            raise HwnasError(f"target {self.name} does not support {precision}; it supports "
                             f"{', '.join(self.precisions)}")


class OnnxTarget(Target):
    """`torch.onnx.export` (opset 17, one self-contained file) checked with `onnx.checker`; int8 by
    onnxruntime's static QDQ quantisation (`hwnas.export.quantize`). No fp16 ONNX: onnxruntime's
    float16 converter writes graphs that fail `onnx.checker` here and the CPU provider lacks fp16
    kernels to check parity with; fp16 is TensorRT's builder flag on the fp32 file."""

    name, suffix, device = "onnx", "onnx", "ort-cpu"
    devices = ("ort-cpu", "ort-cuda")
    precisions = ("fp32", "int8")
    packages = ("onnx", "onnxruntime")

    def write_fp32(self, module, input_shape, path):
        from hwnas.convert.onnx import export_onnx

        return export_onnx(module, input_shape, path)

    def quantize(self, fp32_path, path, calibration):
        from hwnas.convert.onnx import INPUT_NAME
        from hwnas.export.quantize import quantize_onnx

        return quantize_onnx(fp32_path, path, calibration, INPUT_NAME)

    def run(self, path, inputs):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[None].astype(np.float32)})[0]
                               for x in inputs])


class TfliteTarget(Target):
    """litert-torch conversion run in the LiteRT interpreter (XNNPACK); int8 by ai-edge-quantizer's
    static int8 recipe (weights and activations) calibrated on `calibration`."""

    name, suffix, device = "tflite", "tflite", "litert"
    devices = ("litert", "adb-tflite")
    precisions = ("fp32", "int8")
    packages = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer")

    @classmethod
    def available(cls):
        from hwnas.devices.litert import LiteRTBackend

        return LiteRTBackend.available()

    def write_fp32(self, module, input_shape, path):
        from hwnas.convert.tflite import export_tflite

        return export_tflite(module, input_shape, path)

    def quantize(self, fp32_path, path, calibration):
        from hwnas.export.quantize import quantize_tflite

        return quantize_tflite(fp32_path, path, calibration)

    def run(self, path, inputs):
        from ai_edge_litert.interpreter import Interpreter

        from hwnas.convert.tflite import from_output, to_input

        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        src, dst = interp.get_input_details()[0], interp.get_output_details()[0]
        outs = []
        for x in inputs:
            interp.set_tensor(src["index"], to_input(src, x[None]))
            interp.invoke()
            outs.append(from_output(dst, interp.get_tensor(dst["index"])))
        return np.concatenate(outs)


class TorchTarget(Target):
    """A `torch.export` program (`.pt2`), loaded back with `torch.export.load` (no pickle)."""

    name, suffix, device = "torch", "pt2", "torch-cpu"
    devices = ("torch-cpu", "torch-cuda")

    def write_fp32(self, module, input_shape, path):
        from hwnas.convert.torch_program import export_program

        return export_program(module, input_shape, path)

    def run(self, path, inputs):
        program = torch.export.load(str(path)).module()
        with torch.inference_mode():
            return np.concatenate([program(torch.from_numpy(x[None]).float()).numpy()
                                   for x in inputs])


class TensorrtTarget(Target):
    """A serialized TensorRT engine built from the ONNX export (fp32, fp16; int8 from a QDQ ONNX
    file quantised on `calibration`). Needs TensorRT and an NVIDIA GPU; an engine only runs on the
    GPU model and TensorRT version that built it."""

    name, suffix, device = "tensorrt", "engine", "tensorrt"
    devices = ("tensorrt",)
    precisions = PRECISIONS
    packages = ("tensorrt",)

    @classmethod
    def available(cls):
        from hwnas.convert.tensorrt import tensorrt_available

        return tensorrt_available()

    def write(self, module, input_shape, path, precision="fp32", calibration=None):
        from hwnas.convert.tensorrt import build_engine

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = OnnxTarget().write(module, input_shape, Path(tmp) / "model.onnx",
                                           "int8" if precision == "int8" else "fp32", calibration)
            return build_engine(onnx_path, path, fp16=precision == "fp16",
                                int8=precision == "int8")

    def write_fp32(self, module, input_shape, path):
        return self.write(module, input_shape, path)

    def run(self, path, inputs):
        from hwnas.devices.tensorrt import run_engine

        return run_engine(path, inputs)


TARGETS: dict[str, type[Target]] = {t.name: t for t in (OnnxTarget, TfliteTarget, TensorrtTarget,
                                                         TorchTarget)}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise HwnasError(f"unknown export target {name!r}; use one of {', '.join(TARGETS)}")
    return TARGETS[name]()
