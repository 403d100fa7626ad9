"""GPU backends (torch-cuda, ort-cuda, tensorrt): clear refusals without a GPU, timings with one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwnas.convert.tensorrt import build_engine, tensorrt_available
from hwnas.devices.base import BackendUnavailable
from hwnas.devices.measurement import Protocol
from hwnas.devices.ort_cuda import TRT_EP, OrtCudaBackend
from hwnas.devices.registry import backend_class, describe_all, get_backend
from hwnas.devices.tensorrt import TensorRTBackend, _needs_shape
from hwnas.devices.torch_cuda import (
    CudaEventRunner,
    TorchCudaBackend,
    _nvml_info,
    cuda_status,
    gpu_fingerprint,
)
from hwnas.errors import HwnasError

GPU_BACKENDS = {"torch-cuda": TorchCudaBackend, "ort-cuda": OrtCudaBackend,
                "tensorrt": TensorRTBackend}
SHAPE = (1, 3, 16, 16)


def tiny_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()


def _skip_if_available(cls) -> str:
    ok, reason = cls.available()
    if ok:
        pytest.skip(f"{cls.name} can run here (a GPU is present)")
    return reason


# --- without a GPU: say why, never measure -----------------------------------------------------
@pytest.mark.parametrize("name", list(GPU_BACKENDS))
def test_registry_finds_the_gpu_backends(name):
    assert backend_class(name) is GPU_BACKENDS[name]
    assert get_backend(name).name == name


@pytest.mark.parametrize("name", list(GPU_BACKENDS))
def test_unavailable_with_a_reason(name):
    ok, reason = GPU_BACKENDS[name].available()
    assert isinstance(ok, bool) and isinstance(reason, str)
    if not ok:
        assert reason.strip()
    row = next(r for r in describe_all() if r["name"] == name)
    assert row["available"] is ok and row["reason"] == reason


@pytest.mark.parametrize("name", list(GPU_BACKENDS))
def test_measure_raises_backend_unavailable_with_the_reason(name):
    reason = _skip_if_available(GPU_BACKENDS[name])
    backend = get_backend(name)
    with pytest.raises(BackendUnavailable) as e:
        backend.measure(tiny_conv(), SHAPE, Protocol.quick())
    assert reason in str(e.value) and name in str(e.value)


@pytest.mark.parametrize("name", list(GPU_BACKENDS))
def test_fingerprint_works_without_a_gpu(name):
    fp = get_backend(name).fingerprint()
    assert fp["backend"] == name
    if not torch.cuda.is_available():
        assert "gpu_name" not in fp  # nothing made up


def test_torch_cuda_reason_names_the_cpu_build():
    if torch.version.cuda is not None:
        pytest.skip("torch here is a CUDA build")
    ok, reason = TorchCudaBackend.available()
    assert not ok and "CPU-only build" in reason and "torch.version.cuda is None" in reason


def test_torch_cuda_reason_for_a_cuda_build_without_a_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    ok, reason = cuda_status()
    assert not ok and "CUDA 12.8" in reason and "is_available() is False" in reason


def test_ort_cuda_reason_names_onnxruntime_gpu():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP")
    ok, reason = OrtCudaBackend.available()
    assert not ok and "onnxruntime-gpu" in reason and "CUDAExecutionProvider" in reason


def test_tensorrt_reason_names_what_is_missing():
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip("TensorRT and a GPU are present")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "TensorRT is not installed" in reason and "hwnas[gpu]" in reason
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in reason
    assert TensorRTBackend.available() == (ok, reason)


def test_build_engine_raises_hwnas_error_naming_what_is_missing(tmp_path):
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(HwnasError) as e:
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine")
    assert str(e.value) == reason
    assert not (tmp_path / "model.engine").exists()


# --- pieces that do not need a GPU ---------------------------------------------------------------
def test_options_and_dtype_checks():
    assert TorchCudaBackend(dtype="float16").options()["dtype"] == "float16"
    with pytest.raises(ValueError, match="dtype"):
        TorchCudaBackend(dtype="int8")
    with pytest.raises(ValueError, match="float32"):
        OrtCudaBackend(dtype="float16")
    trt = TensorRTBackend(fp16=True)
    assert trt.options()["fp16"] is True and trt.dtype == "float16"
    assert TensorRTBackend(dtype="float16").fp16 is True


def test_ort_cuda_provider_order():
    plain = OrtCudaBackend().providers()
    assert [p if isinstance(p, str) else p[0] for p in plain] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with_trt = OrtCudaBackend(use_tensorrt_ep=True)
    assert [p if isinstance(p, str) else p[0] for p in with_trt.providers()] == [
        TRT_EP, "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert with_trt.options()["use_tensorrt_ep"] is True


def test_engine_input_shape_check():
    assert _needs_shape("input", (-1, 3, 16, 16), SHAPE) is True
    assert _needs_shape("input", SHAPE, SHAPE) is False
    with pytest.raises(HwnasError, match="shape"):
        _needs_shape("input", (1, 3, 8, 8), SHAPE)


def test_gpu_fingerprint_and_nvml_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_fingerprint() == {}
    info = _nvml_info(None, 0)  # no NVML library here: a note, not an exception
    assert set(info) == {"nvml"}


class _FakeEvent:
    clock = 0.0
    records = 0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = None

    def record(self, stream=None) -> None:
        type(self).records += 1
        self.t = type(self).clock

    def elapsed_time(self, end: _FakeEvent) -> float:
        return end.t - self.t


def test_cuda_event_runner_brackets_each_run_and_syncs_per_round(monkeypatch):
    syncs = []
    monkeypatch.setattr(_FakeEvent, "clock", 0.0)
    monkeypatch.setattr(_FakeEvent, "records", 0)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    durations = iter([1.0, 2.0, 3.0, 4.0, 5.0])

    def run() -> None:
        _FakeEvent.clock += next(durations)

    runner = CudaEventRunner(run)
    assert runner.time(3) == [1.0, 2.0, 3.0]
    assert _FakeEvent.records == 6 and len(syncs) == 2


# --- with a GPU: real measurements ---------------------------------------------------------------
def _gpu_cases():
    cases = [("torch-cuda", {}), ("torch-cuda", {"dtype": "float16"}), ("ort-cuda", {}),
             ("ort-cuda", {"use_tensorrt_ep": True}), ("tensorrt", {}),
             ("tensorrt", {"fp16": True})]
    out = []
    for name, opts in cases:
        ok, reason = GPU_BACKENDS[name].available()
        mark = pytest.mark.skipif(not ok, reason=f"{name}: {reason}")
        out.append(pytest.param(name, opts, marks=[mark, pytest.mark.slow],
                                id=name + "".join(f"-{k}={v}" for k, v in opts.items())))
    return out


@pytest.mark.parametrize(("name", "opts"), _gpu_cases())
def test_measure_a_tiny_conv_on_the_gpu(name, opts, tmp_path):
    if opts.get("use_tensorrt_ep"):
        import onnxruntime as ort

        if TRT_EP not in ort.get_available_providers():
            pytest.skip(f"onnxruntime has no {TRT_EP} here")
    protocol = Protocol.quick()
    backend = get_backend(name, **opts)
    try:
        m = backend.measure(tiny_conv(), SHAPE, protocol, workdir=tmp_path)
    except BackendUnavailable as e:
        if not opts.get("use_tensorrt_ep"):
            raise
        pytest.skip(str(e))  # onnxruntime-gpu lists the TensorRT EP even without its libraries
    assert m.median > 0 and m.n >= protocol.min_runs
    assert all(s > 0 for s in m.samples_ms)
    fp = backend.fingerprint()
    assert fp["gpu_name"] == torch.cuda.get_device_name()
