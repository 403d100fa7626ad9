"""`adb-tflite`: availability reasons, and the adb plumbing against a fake `adb` script.

No phone is attached here: nothing in this file measures anything. The fake adb replays a real
benchmark_model log from ../shared/data, so the tests check command lines and parsing only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from hwnas.devices.adb_tflite import (
    REMOTE_BINARY,
    AdbTFLiteBackend,
    parse_adb_devices,
    select_device,
)
from hwnas.devices.base import BackendUnavailable
from hwnas.devices.measurement import Protocol
from hwnas.devices.registry import backend_class

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tool_outputs"
SAMPLE = (DATA / "tflite_benchmark_model"
          / "meta-tensorflow-lite_qemuriscv64_mobilenet_v1_4threads.txt")

FAKE_ADB = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_ADB_LOG"
case "$1" in
  devices) printf 'List of devices attached\\n%b' "$FAKE_ADB_DEVICES"; exit 0 ;;
  version) echo "Android Debug Bridge version 1.0.41"; exit 0 ;;
  -s) shift 2 ;;
esac
case "$1" in
  push) exit 0 ;;
  shell)
    case "$2" in
      *--enable_op_profiling=true*) cat "$FAKE_ADB_OUTPUT" ;;
      *benchmark_model*) echo "count=1 curr=2950000" ;;
      getprop*) echo fake ;;
      nproc) echo 8 ;;
    esac
    exit 0 ;;
esac
exit 1
"""


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    monkeypatch.delenv("HWNAS_BENCHMARK_MODEL", raising=False)


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None) -> Path:
    """A fake `adb` first on PATH, one phone 'FAKE1' attached; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "adb.log"
    log.touch()
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "FAKE1\\tdevice\\n")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(SAMPLE))
    monkeypatch.setenv("HWNAS_BENCHMARK_MODEL", str(binary))
    return log


def test_registered() -> None:
    assert backend_class("adb-tflite") is AdbTFLiteBackend
    assert AdbTFLiteBackend.name == "adb-tflite" and AdbTFLiteBackend.artifact == "tflite"


def test_unavailable_here_says_why() -> None:
    ok, reason = AdbTFLiteBackend.available()
    if ok:
        pytest.skip("a phone and benchmark_model are configured on this machine")
    assert reason
    with pytest.raises(BackendUnavailable, match="adb-tflite") as e:
        AdbTFLiteBackend().measure(torch.nn.Identity(), (1, 3, 8, 8), Protocol.quick())
    assert reason in str(e.value)


def test_no_adb_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, reason = AdbTFLiteBackend.available()
    assert not ok and "not on PATH" in reason
    with pytest.raises(BackendUnavailable, match="not on PATH"):
        AdbTFLiteBackend().measure(torch.nn.Identity(), (1, 3, 8, 8), Protocol.quick())


def test_no_binary_configured(fake_adb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWNAS_BENCHMARK_MODEL")
    ok, reason = AdbTFLiteBackend.available()
    assert not ok and "HWNAS_BENCHMARK_MODEL" in reason
    ok, reason = AdbTFLiteBackend(benchmark_binary="/nonexistent/benchmark_model").available()
    assert not ok  # the classmethod looks at the environment; the instance at its options:
    with pytest.raises(BackendUnavailable, match="not found at '/nonexistent"):
        AdbTFLiteBackend(benchmark_binary="/nonexistent/benchmark_model").require()


def test_device_states(fake_adb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    ok, reason = AdbTFLiteBackend.available()
    assert not ok and "no device in state 'device'" in reason
    monkeypatch.setenv("FAKE_ADB_DEVICES", "FAKE1\\tunauthorized\\n")
    ok, reason = AdbTFLiteBackend.available()
    assert not ok and "unauthorized" in reason and "USB debugging" in reason
    monkeypatch.setenv("FAKE_ADB_DEVICES", "FAKE1\\tdevice\\nFAKE2\\tdevice\\n")
    ok, reason = AdbTFLiteBackend.available()
    assert not ok and "2 devices" in reason and "ANDROID_SERIAL" in reason
    assert AdbTFLiteBackend(serial="FAKE2").require() == "FAKE2"
    monkeypatch.setenv("ANDROID_SERIAL", "FAKE1")
    assert AdbTFLiteBackend.available() == (True, "")
    assert AdbTFLiteBackend().require() == "FAKE1"
    with pytest.raises(BackendUnavailable, match="'NOPE' is not attached"):
        AdbTFLiteBackend(serial="NOPE").require()


def test_parse_adb_devices_and_select() -> None:
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\nAB12\tdevice\nCD34\toffline\nemulator-5554\tdevice\n\n")
    devices = parse_adb_devices(text)
    assert devices == {"AB12": "device", "CD34": "offline", "emulator-5554": "device"}
    assert select_device(devices, "AB12") == ("AB12", "")
    assert select_device(devices, "CD34")[0] is None
    assert select_device({"AB12": "device"}, None) == ("AB12", "")
    serial, reason = select_device({"CD34": "offline"}, None)
    assert serial is None and "CD34 is 'offline'" in reason


def test_measure_artifact_with_fake_adb(fake_adb: Path, tmp_path: Path) -> None:
    """Plumbing, not a measurement: the fake adb replays a real log for every invocation, so the
    samples are that log's timed-loop average (2950.34 ms) once per invocation. The runs go
    through the shared protocol (`measure_interleaved` -> `AdbRunner.time`): one invocation of
    `round_runs` timed runs per round until `min_runs` runs."""
    if not SAMPLE.exists():
        pytest.skip(f"reference data {SAMPLE} is absent (../shared/data is not in a checkout)")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 fake model")
    backend = AdbTFLiteBackend(threads=4, extra_args=["--use_xnnpack=true"])
    backend.invocation_warmup = 3
    protocol = Protocol(warmup_runs=3, min_runs=40, round_runs=10, min_s=0.0, max_s=1e6)
    m = backend.measure_artifact(model, (1, 3, 224, 224), protocol)
    # 40 runs = 4 rounds of 10; the median is stable, so the protocol stops there
    assert m.samples_ms == pytest.approx([2950.34] * 4)
    assert m.warmup == 0 and m.extra["warmup_per_invocation"] == 3 and not m.flagged
    assert m.extra["runs_per_sample"] == [50] * 4
    ops = m.extra["ops"]
    assert len(ops) == 31 and ops[0]["node_type"] == "CONV_2D"
    assert ops[0]["avg_ms"] == pytest.approx(60.957) and ops[0]["invocations"] == 4
    assert sum(o["total_ms"] for o in ops) == pytest.approx(2949.903)

    calls = fake_adb.read_text().splitlines()
    assert calls[0] == "devices"
    assert f"-s FAKE1 push {backend.benchmark_binary} {REMOTE_BINARY}" in calls
    pushes = [c for c in calls if c.startswith(f"-s FAKE1 push {model}")]
    assert len(pushes) == 1
    remote = pushes[0].split()[-1]
    assert remote.startswith("/data/local/tmp/hwnas_") and remote.endswith(".tflite")
    runs = [c for c in calls if "--enable_op_profiling" in c]
    assert runs == [f"-s FAKE1 shell {REMOTE_BINARY} --graph={remote} --num_threads=4 "
                    "--warmup_runs=3 --num_runs=10 --enable_op_profiling=true "
                    "--use_xnnpack=true"] * 4
    assert calls[-1] == f"-s FAKE1 shell rm -f {remote}"
    # the binary is pushed once per backend instance
    backend.measure_artifact(model, (1, 3, 224, 224), protocol)
    binary_pushes = [c for c in fake_adb.read_text().splitlines() if REMOTE_BINARY in c
                     and " push " in c]
    assert len(binary_pushes) == 1


def test_measure_artifact_with_fake_adb_inline_log(fake_adb: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above on a clean checkout: the fake adb replays an inline excerpt of the same
    log (`inline_reference_data.TFLITE_NEW_LOG`: its timing lines and 6 of its 31 op rows)."""
    from inline_reference_data import TFLITE_NEW_LOG

    log_file = tmp_path / "benchmark_model.txt"
    log_file.write_text(TFLITE_NEW_LOG)
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(log_file))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 fake model")
    backend = AdbTFLiteBackend(threads=4)
    backend.invocation_warmup = 3
    protocol = Protocol(warmup_runs=3, min_runs=40, round_runs=10, min_s=0.0, max_s=1e6)
    m = backend.measure_artifact(model, (1, 3, 224, 224), protocol)
    # one sample per invocation: the log's timed-loop average; 4 rounds of 10 runs
    assert m.samples_ms == pytest.approx([2950.34] * 4)
    assert m.warmup == 0 and m.extra["warmup_per_invocation"] == 3 and not m.flagged
    assert m.extra["runs_per_sample"] == [50] * 4
    ops = m.extra["ops"]
    assert [o["node_type"] for o in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D",
                                             "CONV_2D", "SQUEEZE", "SOFTMAX"]
    assert ops[0]["avg_ms"] == pytest.approx(60.957) and ops[0]["invocations"] == 4
    assert sum(o["total_ms"] for o in ops) == pytest.approx(
        60.957 + 49.870 + 0.869 + 12.185 + 0.017 + 0.233)
    calls = fake_adb.read_text().splitlines()
    runs = [c for c in calls if "--enable_op_profiling" in c]
    assert len(runs) == 4 and all("--num_threads=4 --warmup_runs=3 --num_runs=10" in c
                                  for c in runs)
    assert calls[-1].startswith("-s FAKE1 shell rm -f /data/local/tmp/hwnas_")


def test_load_runner_with_fake_adb(fake_adb: Path, tmp_path: Path) -> None:
    """Plumbing only: the runner makes one `benchmark_model --num_runs=1` call over adb."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 fake model")
    run = AdbTFLiteBackend().load(model, (1, 3, 8, 8))
    assert "count=1" in run()
    last = fake_adb.read_text().splitlines()[-1]
    assert "--num_runs=1" in last and "--warmup_runs=0" in last
    assert "--enable_op_profiling" not in last


def test_failed_benchmark_is_an_error(fake_adb: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.errors import HwnasError

    bad = tmp_path / "bad.txt"
    bad.write_text("STARTING!\nERROR: Didn't find op for builtin opcode 'FOO'\n")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(bad))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(HwnasError, match="Didn't find op"):
        AdbTFLiteBackend().measure_artifact(model, (1, 3, 8, 8), Protocol.quick())


def test_fingerprint_names_the_phone(fake_adb: Path) -> None:
    """The identity fields describe the phone (from getprop / nproc), not this host."""
    fp = AdbTFLiteBackend(threads=2).fingerprint()
    assert fp["backend"] == "adb-tflite" and fp["serial"] == "FAKE1" and fp["threads"] == 2
    assert fp["cpu_model"] == "fake fake fake" and fp["cores"] == 8 and fp["machine"] == "fake"
    assert fp["os"] == "Android fake" and len(fp["benchmark_sha256"]) == 64
    assert "host_cpu_model" in fp
