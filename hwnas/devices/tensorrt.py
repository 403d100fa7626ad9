"""`tensorrt`: a TensorRT engine built from the ONNX export, timed with CUDA events.

The engine's input and output buffers are torch CUDA tensors; inference is `execute_async_v3` on a
dedicated CUDA stream (TensorRT >= 8.5, name-based I/O), or synchronous `execute_v2` on older ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwnas.convert.onnx import export_onnx
from hwnas.convert.tensorrt import build_engine, tensorrt_available, tensorrt_version, trt_logger
from hwnas.devices.base import Backend, Runner, example_input
from hwnas.devices.torch_cuda import DTYPES, CudaEventRunner, gpu_fingerprint
from hwnas.errors import DeviceError, HwnasError


def _torch_dtype(trt, dtype) -> torch.dtype:
    names = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
             "INT8": torch.int8, "UINT8": torch.uint8, "INT32": torch.int32,
             "INT64": torch.int64, "BOOL": torch.bool}
    for name, torch_dtype in names.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_dtype
    raise HwnasError(f"TensorRT tensor type {dtype} has no torch equivalent here")


def _needs_shape(name: str, declared: tuple, input_shape: tuple[int, ...]) -> bool:
    """True for a dynamic input (set its shape); checks a static one against `input_shape`."""
    if -1 in declared:
        return True
    if declared != tuple(input_shape):
        raise HwnasError(f"the engine's input {name!r} has shape {declared}, "
                         f"not the requested {tuple(input_shape)}")
    return False


def _io_v3(trt, engine, context, input_shape) -> list[tuple[str, bool, tuple, torch.dtype]]:
    """(name, is_input, shape, dtype) per I/O tensor, name-based API (TensorRT >= 8.5)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        if is_input and _needs_shape(name, tuple(engine.get_tensor_shape(name)), input_shape):
            context.set_input_shape(name, tuple(input_shape))
        out.append((name, is_input, tuple(context.get_tensor_shape(name)),
                    _torch_dtype(trt, engine.get_tensor_dtype(name))))
    return out


def _io_v2(trt, engine, context, input_shape) -> list[tuple[str, bool, tuple, torch.dtype]]:
    """The same through the binding-index API (TensorRT 8.x before 8.5); in binding order."""
    out = []
    for i in range(engine.num_bindings):
        is_input = engine.binding_is_input(i)
        declared = tuple(engine.get_binding_shape(i))
        if is_input and _needs_shape(engine.get_binding_name(i), declared, input_shape):
            context.set_binding_shape(i, tuple(input_shape))
        out.append((engine.get_binding_name(i), is_input, tuple(context.get_binding_shape(i)),
                    _torch_dtype(trt, engine.get_binding_dtype(i))))
    return out


class EngineRunner(CudaEventRunner):
    """One inference of a deserialized engine on fixed GPU buffers; `stream` is where it runs.

    Keeps the runtime, engine and context alive as long as the runner. The call returns without
    synchronizing (v3): call `stream.synchronize()` before reading `outputs` (the returned
    output tensors) from another stream or the host.
    """

    def __init__(self, data: bytes, input_shape: tuple[int, ...]) -> None:
        import tensorrt as trt

        super().__init__()
        self.runtime = trt.Runtime(trt_logger())
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise HwnasError("TensorRT could not load the engine (built by another TensorRT "
                             "version or for another GPU? rebuild it here)")
        self.context = self.engine.create_execution_context()
        self.v3 = hasattr(self.engine, "num_io_tensors") and hasattr(self.context,
                                                                      "execute_async_v3")
        io = (_io_v3 if self.v3 else _io_v2)(trt, self.engine, self.context, input_shape)
        self.buffers = {name: self._buffer(is_input, shape, dtype)
                        for name, is_input, shape, dtype in io}
        self.inputs = [self.buffers[name] for name, is_input, _, _ in io if is_input]
        self.outputs = [self.buffers[name] for name, is_input, _, _ in io if not is_input]
        # execute_v2 runs synchronously on TensorRT's own stream: time it on the legacy default
        # stream, which orders itself after every other (blocking) stream.
        self.stream = torch.cuda.Stream() if self.v3 else torch.cuda.default_stream()
        if self.v3:
            for name, buf in self.buffers.items():
                self.context.set_tensor_address(name, buf.data_ptr())
        self.bindings = [buf.data_ptr() for buf in self.buffers.values()]
        torch.cuda.synchronize()

    @staticmethod
    def _buffer(is_input: bool, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        if is_input:
            return example_input(shape).to("cuda", dtype).contiguous()
        return torch.empty(shape, dtype=dtype, device="cuda")

    def __call__(self) -> list[torch.Tensor]:
        if self.v3:
            ok = self.context.execute_async_v3(self.stream.cuda_stream)
        else:
            ok = self.context.execute_v2(self.bindings)
        if not ok:
            raise DeviceError("TensorRT inference failed (see the TensorRT log)")
        return self.outputs


class TensorRTBackend(Backend):
    """TensorRT on an NVIDIA GPU: ONNX export -> engine (`fp16` allows half precision layers)."""

    name = "tensorrt"
    description = "TensorRT engine on an NVIDIA GPU, CUDA-event timing"
    artifact = "engine"

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32",
                 fp16: bool = False, workspace_gb: float = 2) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"tensorrt dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self.fp16 = fp16 or dtype == "float16"
        super().__init__(threads, batch, "float16" if self.fp16 else "float32")
        self.workspace_gb = workspace_gb

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return tensorrt_available()

    @classmethod
    def runtime_version(cls) -> str:
        version = tensorrt_version()
        return f"TensorRT {version}" if version else ""

    def options(self) -> dict:
        return {**super().options(), "fp16": self.fp16, "workspace_gb": self.workspace_gb}

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), **gpu_fingerprint()}

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        path = Path(path)
        onnx_path = export_onnx(module, input_shape, path.with_suffix(".onnx"), check=False)
        return build_engine(onnx_path, path, fp16=self.fp16, workspace_gb=self.workspace_gb)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        self.require()
        return EngineRunner(Path(path).read_bytes(), input_shape)


def run_engine(path: Path, inputs):
    """Outputs of an engine file for each input of a batch (N, C, H, W), one inference each."""
    import numpy as np

    ok, reason = tensorrt_available()
    if not ok:
        raise HwnasError(f"cannot run a TensorRT engine here: {reason}")
    runner = EngineRunner(Path(path).read_bytes(), (1, *inputs.shape[1:]))
    src = runner.inputs[0]
    outs = []
    for x in inputs:
        src.copy_(torch.from_numpy(np.ascontiguousarray(x[None])).to(src.dtype))
        runner()
        runner.stream.synchronize()
        outs.append(runner.outputs[0].float().cpu().numpy())
    return np.concatenate(outs)
