"""`torch-cuda`: PyTorch eager on an NVIDIA GPU, timed with CUDA events (artifact: a .pt2 program).

Also the CUDA helpers that `ort-cuda` and `tensorrt` share: `cuda_status` (why CUDA is not usable
here), `CudaEventRunner` (GPU-side timing) and `gpu_fingerprint` (GPU, driver, CUDA, clocks).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hwnas.devices.base import Backend, Runner, example_input

DTYPES = {"float32": torch.float32, "float16": torch.float16}


# --- shared CUDA helpers ----------------------------------------------------------------------
def cuda_status() -> tuple[bool, str]:
    """(True, "") when torch sees a CUDA GPU, else (False, why not)."""
    if torch.cuda.is_available():
        return True, ""
    if torch.version.cuda is None:
        return False, (f"no CUDA: torch {torch.__version__} is a CPU-only build "
                       "(torch.version.cuda is None); install a CUDA build of torch on a machine "
                       "with an NVIDIA GPU")
    return False, (f"no CUDA GPU: torch {torch.__version__} is built for CUDA {torch.version.cuda} "
                   "but torch.cuda.is_available() is False (no NVIDIA GPU or driver, or "
                   "CUDA_VISIBLE_DEVICES hides it)")


class CudaEventRunner(Runner):
    """A runner whose `time` reads CUDA events: the GPU's own clock, not the host's.

    Each run is bracketed by two events recorded on `stream` (None: the current stream), the
    stream the inference enqueues its work on. The host does not wait between runs; it
    synchronizes the device once before the round (so no warm-up work is still queued) and once
    at its end, then reads each pair's elapsed time (ms). Wall-clock timing of an asynchronous
    launch would record the launch, not the run.
    """

    stream: torch.cuda.Stream | None = None

    def time(self, count: int) -> list[float]:
        stream = self.stream
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        pairs = []
        torch.cuda.synchronize()
        with ctx:
            for _ in range(count):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record(stream)
                self()
                end.record(stream)
                pairs.append((start, end))
        torch.cuda.synchronize()
        return [float(start.elapsed_time(end)) for start, end in pairs]


class TorchCudaRunner(CudaEventRunner):
    """A module already on the GPU, on a fixed input; a call returns without synchronizing."""

    def __init__(self, module: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.module, self.x = module, x

    def __call__(self) -> object:
        with torch.inference_mode():
            return self.module(self.x)


def _driver_from_proc() -> str:
    """The kernel driver version from /proc (e.g. "550.54.15"), or ""."""
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", first)
    return found.group(1) if found else ""


def _nvml_value(get: Callable[[], object]) -> object | None:
    try:
        value = get()
    except Exception:  # NVMLError_NotSupported / NoPermission / ...: not readable here
        return None
    return value.decode() if isinstance(value, bytes) else value


def _nvml_handle(pynvml, props, index: int):
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        handle = _nvml_value(lambda: pynvml.nvmlDeviceGetHandleByUUID(uuid))
        if handle is not None:
            return handle
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _nvml_info(props, index: int) -> dict:
    """Driver, SM clocks (MHz) and power limit (W) through NVML, where readable."""
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py not installed (pip install 'hwnas[gpu]')"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound and friends
        return {"nvml": f"unavailable: {e}"}
    try:
        h = _nvml_handle(pynvml, props, index)
        power_mw = _nvml_value(lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h))
        info = {
            "driver_version": _nvml_value(pynvml.nvmlSystemGetDriverVersion),
            "sm_clock_mhz": _nvml_value(
                lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "sm_clock_max_mhz": _nvml_value(
                lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "power_limit_w": power_mw / 1000 if isinstance(power_mw, (int, float)) else None,
        }
    except Exception as e:
        return {"nvml": f"unavailable: {e}"}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return {k: v for k, v in info.items() if v is not None}


def gpu_fingerprint(index: int | None = None) -> dict:
    """GPU name, capability, memory, CUDA/cuDNN and driver versions, SM clock and power limit."""
    if not torch.cuda.is_available():
        return {}
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    fp = {
        "gpu_name": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gb": round(props.total_memory / 2**30, 1),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version(),
        "driver_version": _driver_from_proc() or None,
    }
    fp.update(_nvml_info(props, index))
    return {k: v for k, v in fp.items() if v is not None}


# --- the backend ------------------------------------------------------------------------------
def _program_on_cuda(path: Path) -> nn.Module:
    """Load a .pt2 program and move it (weights and device constants in the graph) to the GPU."""
    program = torch.export.load(str(path))
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:  # older torch: parameters and buffers only
        return program.module().to("cuda")
    return move_to_device_pass(program, "cuda").module()


class TorchCudaBackend(Backend):
    """PyTorch eager on the GPU, `torch.inference_mode()`, timed with CUDA events.

    dtype "float16" halves the module and the input. cuDNN settings are left as the user set
    them and recorded in the fingerprint.
    """

    name = "torch-cuda"
    description = "PyTorch eager on an NVIDIA GPU, CUDA-event timing"
    artifact = "pt2"

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"torch-cuda dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        super().__init__(threads, batch, dtype)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return cuda_status()

    @classmethod
    def runtime_version(cls) -> str:
        cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU-only build)"
        return f"torch {torch.__version__}{cuda}"

    def fingerprint(self) -> dict:
        conv = getattr(torch.backends.cudnn, "conv", None)
        return {**super().fingerprint(), **gpu_fingerprint(),
                "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                "cudnn_conv_fp32_precision": getattr(conv, "fp32_precision",
                                                     str(torch.backends.cudnn.allow_tf32))}

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        from hwnas.convert.torch_program import export_program

        return export_program(module, input_shape, path)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        self.require()
        return self.runner(_program_on_cuda(Path(path)), input_shape)

    def runner(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        """Run `module` (already on the GPU) on a fixed input; returns without synchronizing."""
        dtype = DTYPES[self.dtype]
        return TorchCudaRunner(module.to(dtype), example_input(input_shape).to("cuda", dtype))
