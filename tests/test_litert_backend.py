"""The `litert` backend on this host, for real: a small torch module converted with the project's
converter (litert-torch, `hwnas.convert.tflite.export_tflite`, what `hwnas export --target
tflite` ships), run by the LiteRT interpreter against torch, and timed through the backend's
`Runner` under the shared measurement protocol (`Backend.measure` -> `measure_interleaved`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.convert.tflite import from_output, litert_runtime_available, to_input
from hwnas.devices.litert import LiteRTBackend
from hwnas.devices.measurement import Protocol
from hwnas.devices.registry import get_backend

SHAPE = (1, 3, 32, 32)
QUICK = Protocol.quick()


@pytest.fixture(scope="module", autouse=True)
def _needs_litert() -> None:
    ok, reason = litert_runtime_available()
    if not ok:
        pytest.skip(f"LiteRT runtime missing: {reason}")
    ok, reason = LiteRTBackend.available()  # the converter (litert-torch) too
    if not ok:
        pytest.skip(f"litert backend cannot run here: {reason}")


class FewConvs(nn.Module):
    """A few convs: a strided stem, a depthwise conv, a pointwise conv with a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.out = nn.Conv2d(16, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.pw(torch.nn.functional.relu6(self.dw(x)))
        return self.out(x)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    module = FewConvs().eval()
    path = tmp_path_factory.mktemp("litert") / "model.tflite"
    assert LiteRTBackend().convert(module, SHAPE, path) == path
    return module, path


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def test_converted_file_matches_torch(converted) -> None:
    module, path = converted
    assert path.stat().st_size > 0 and path.read_bytes()[4:8] == b"TFL3"  # flatbuffer id
    interp = _interpreter(path)
    (src,), (dst,) = interp.get_input_details(), interp.get_output_details()
    assert tuple(src["shape"]) == SHAPE and src["dtype"] == np.float32  # NCHW input kept
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(4):
        x = torch.randn(SHAPE, generator=g)
        with torch.inference_mode():
            want = module(x).numpy()
        interp.set_tensor(src["index"], to_input(src, x.numpy()))
        interp.invoke()
        got = from_output(dst, interp.get_tensor(dst["index"]))
        assert got.shape == want.shape == (1, 8, 8, 8)  # NCHW output, same layout as torch
        worst = max(worst, float(np.abs(got - want).max()))
    assert np.abs(want).max() > 0.1  # not a trivially zero output
    assert worst <= 1e-4, worst  # the export rule for fp32


def test_backend_runner_runs_and_times(converted) -> None:
    _, path = converted
    backend = get_backend("litert", threads=1)
    assert isinstance(backend, LiteRTBackend)
    runner = backend.load(path, SHAPE)
    runner()  # one inference
    samples = runner.time(5)
    assert len(samples) == 5 and all(math.isfinite(s) and s > 0 for s in samples)


def test_measure_through_the_backend(converted, tmp_path: Path) -> None:
    module, _ = converted
    backend = LiteRTBackend(threads=1)
    m = backend.measure(module, SHAPE, QUICK, workdir=tmp_path)
    assert (tmp_path / "model.tflite").is_file()  # converted by the backend, then timed
    assert math.isfinite(m.median) and m.median > 0
    assert m.n >= QUICK.min_runs and m.n % QUICK.round_runs == 0  # whole rounds were timed
    assert m.n <= QUICK.max_runs + QUICK.round_runs
    assert all(math.isfinite(s) and s > 0 for s in m.samples_ms)
    assert m.warmup >= QUICK.warmup_runs and m.attempts >= 1
    assert m.extra["timed_ms_all"] >= sum(m.samples_ms) * 0.999
    stats = m.stats()
    assert stats["n"] == m.n and stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]

    # the protocol times what a direct loop over the interpreter sees (a loose factor: both
    # are medians of a few dozen runs of a sub-millisecond model on a shared CPU)
    interp = _interpreter(tmp_path / "model.tflite")
    src = interp.get_input_details()[0]
    interp.set_tensor(src["index"], np.zeros(SHAPE, np.float32))
    for _ in range(5):
        interp.invoke()
    direct = []
    for _ in range(30):
        t0 = time.perf_counter()
        interp.invoke()
        direct.append((time.perf_counter() - t0) * 1e3)
    ratio = m.median / float(np.median(direct))
    assert 0.2 < ratio < 5.0, (m.median, float(np.median(direct)))


def test_fingerprint_names_the_litert_backend(converted) -> None:
    _, path = converted
    fp = LiteRTBackend(threads=2).fingerprint()
    assert fp["backend"] == "litert" and fp["threads"] == 2
    assert "ai-edge-litert" in fp["runtime_version"]
    assert fp["runtime_version"] == LiteRTBackend.runtime_version()
    m = LiteRTBackend(threads=2).measure_artifact(path, SHAPE, QUICK)  # an existing file
    assert m.median > 0 and m.n >= QUICK.min_runs
