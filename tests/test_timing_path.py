"""One timing path: the profiler, `export --verify` and `Backend.measure` record what
`Runner.time` returns, not the host's wall clock around the call.

The fake backend's runner does no work (a call takes microseconds of wall time) but its clock
says every run took exactly 42 ms, as a GPU backend's CUDA events or a phone's benchmark_model
would report a time the host does not see. Before the runner API, the profiler timed every
backend with `perf_counter` around the call and would have stored ~0.001 ms here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from torch import nn

from hwnas.devices import Backend, Protocol, Runner, register_backend
from hwnas.devices.registry import unregister_backend

CLOCK_MS = 42.0


class FakeClockRunner(Runner):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1

    def time(self, count: int) -> list[float]:
        for _ in range(count):
            self()
        return [CLOCK_MS] * count


class FakeClockBackend(Backend):
    name = "fake-clock"
    description = "test backend whose runner reports 42 ms per run"
    artifact = "bin"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        Path(path).write_bytes(repr((type(module).__name__, input_shape)).encode())
        return Path(path)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        assert Path(path).exists()
        return FakeClockRunner()


@pytest.fixture
def fake_clock():
    register_backend(FakeClockBackend.name, FakeClockBackend)
    yield FakeClockBackend.name
    unregister_backend(FakeClockBackend.name)


FAST = Protocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_s=0.0, max_runs=20, max_s=1.0,
                round_runs=5)


def test_backend_measure_records_the_runner_clock(fake_clock: str) -> None:
    m = FakeClockBackend().measure(nn.Identity(), (1, 3, 8, 8), FAST)
    assert m.median == CLOCK_MS and m.n >= FAST.min_runs


def test_profiler_records_the_runner_clock(fake_clock: str, tmp_path: Path) -> None:
    from hwnas.profile import ProfileConfig, Profiler

    out = tmp_path / "p"
    Profiler(ProfileConfig(device=fake_clock, space="proxyless", resolution=32, nets=2,
                           out=out, protocol=FAST)).run()
    ops, nets = pd.read_parquet(out / "ops.parquet"), pd.read_parquet(out / "nets.parquet")
    assert len(ops) > 10 and len(nets) == 2
    for table in (ops, nets):
        assert (table["median_ms"] == CLOCK_MS).all()
        assert (table["reference_ms"] == CLOCK_MS).all()  # the drift reference too


def test_export_verify_records_the_runner_clock(fake_clock: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.export import ExportConfig, export
    from hwnas.export.targets import OnnxTarget
    from hwnas.space import get_space

    monkeypatch.setattr(OnnxTarget, "devices", (*OnnxTarget.devices, fake_clock))
    arch = get_space("proxyless", resolution=32).sample(0)
    (manifest,) = export(ExportConfig(arch, targets=("onnx",), out=tmp_path / "x", verify=True,
                                      device=fake_clock, quick=True))
    verified = manifest["verified"]
    assert verified["device"] == fake_clock
    assert verified["measured_ms"] == CLOCK_MS


def test_measure_beside_reference_records_the_runner_clock(fake_clock: str) -> None:
    """The benchmarks' "measure found nets beside the drift reference": one row per distinct
    net, the reference timed in the same rounds, drift = reference / the profile's speed."""
    from hwnas.profile import Profile
    from hwnas.profile.profiler import measure_beside_reference
    from hwnas.profile.sampling import net_id

    prof = Profile.load(Path(__file__).resolve().parents[1] / "profiles"
                        / "ort-cpu-1t-proxyless-128")
    a, b = prof.space.sample(0), prof.space.sample(1)
    rows = measure_beside_reference(FakeClockBackend(), prof, [a, b, a], FAST)
    assert set(rows) == {net_id(a), net_id(b)}
    for row in rows.values():
        assert row["measured_ms"] == CLOCK_MS and row["reference_ms"] == CLOCK_MS
        assert row["drift"] == pytest.approx(CLOCK_MS / prof.reference_ms())
