"""`hwnas profile`: resume after a real kill, lock, fingerprint check, damaged files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.store import ProfileWriter, read_parquet
from hwnas.space import get_space

ARGS = ["--device", "ort-cpu", "--space", "proxyless", "--resolution", "32", "--quick"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True,
                          text=True, timeout=timeout)


def _config(out: Path, nets: int = 4) -> ProfileConfig:
    return ProfileConfig(device="ort-cpu", space="proxyless", resolution=32, nets=nets, out=out,
                         protocol=Protocol.quick(), chunk=8)


@pytest.mark.slow
def test_killed_profile_resumes_without_losing_or_repeating(tmp_path):
    out = tmp_path / "prof"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", "profile", *ARGS, "--nets", "40",
                             "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    n_ops = len(get_space("proxyless", resolution=32).distinct_ops())
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ops = out / "ops.parquet"
        if ops.exists():
            try:
                killed_at = len(pd.read_parquet(ops))
            except Exception:  # caught mid-rename: look again
                continue
            if killed_at >= 16:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the profiler finished before it could be killed"
    assert killed_at is not None and killed_at < n_ops + 1
    before = len(pd.read_parquet(out / "ops.parquet"))
    assert before >= killed_at

    again = _cli("profile", *ARGS, "--nets", "40", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr

    res = _cli("profile", *ARGS, "--nets", "40", "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    ops = pd.read_parquet(out / "ops.parquet")
    nets = pd.read_parquet(out / "nets.parquet")
    assert len(ops) == n_ops and ops["key"].is_unique
    assert set(ops["key"]) == {op.key for op in get_space("proxyless", 32).distinct_ops()}
    assert len(nets) == 40 and nets["net_id"].is_unique
    device = json.loads((out / "device.json").read_text())
    assert device["status"] == "complete"
    plan = json.loads((out / "plan.json").read_text())["archs"]
    assert len(plan) == 40


def test_second_profiler_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "prof"
    holder = ProfileWriter(out)
    holder.acquire()
    try:
        with pytest.raises(HwnasError, match="being written by another hwnas process"):
            Profiler(_config(out)).run()
    finally:
        holder.release()


def test_fingerprint_mismatch_is_refused_with_the_difference(tmp_path):
    out = tmp_path / "prof"
    Profiler(_config(out, nets=0)).run()
    device = json.loads((out / "device.json").read_text())
    device["fingerprint"]["cpu_model"] = "Some Other CPU 9000"
    device["fingerprint"]["threads"] = 4
    (out / "device.json").write_text(json.dumps(device))
    with pytest.raises(HwnasError) as err:
        Profiler(_config(out, nets=0)).run(resume=True)
    msg = str(err.value)
    assert "Some Other CPU 9000" in msg and "threads" in msg and "refusing" in msg


def test_corrupt_or_truncated_parquet_is_a_clear_error(tmp_path):
    out = tmp_path / "prof"
    Profiler(_config(out, nets=2)).run()
    data = (out / "ops.parquet").read_bytes()
    (out / "ops.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(HwnasError, match="corrupt or truncated"):
        read_parquet(out / "ops.parquet")
    res = _cli("profile", *ARGS, "--nets", "2", "--out", str(out), "--resume")
    assert res.returncode == 2
    assert "corrupt or truncated" in res.stderr and "Traceback" not in res.stderr + res.stdout


def test_profile_rows_hold_the_statistics_and_the_plan_spreads_latency(tmp_path):
    out = tmp_path / "prof"
    Profiler(_config(out, nets=8)).run()
    ops = pd.read_parquet(out / "ops.parquet")
    nets = pd.read_parquet(out / "nets.parquet")
    for col in ("key", "kind", "cin", "cout", "h", "w", "kernel", "stride", "expand", "macs",
                "median_ms", "min_ms", "p10_ms", "p90_ms", "cv", "n"):
        assert col in ops.columns
    assert (ops["min_ms"] <= ops["median_ms"]).all() and (ops["n"] > 0).all()
    assert {"net_id", "arch", "macs", "median_ms"} <= set(nets.columns)
    # the plan includes the cheapest and the costliest net of the space by lookup table
    assert nets["macs"].min() < nets["macs"].median() < nets["macs"].max()
    device = json.loads((out / "device.json").read_text())
    assert device["reference"]["timings"] and device["timed_s"] > 0
    assert device["fingerprint"]["backend"] == "ort-cpu"


def test_unknown_or_unavailable_device_is_one_clear_line(tmp_path):
    res = _cli("profile", "--device", "no-such-device", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "unknown device" in res.stderr
    res = _cli("profile", "--device", "torch-cuda", "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and "cannot run here" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_keeps_rows(tmp_path):
    out = tmp_path / "prof"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", "profile", *ARGS, "--nets", "40",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "ops.parquet").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("profile finished before the interrupt arrived")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stdout + stderr
    assert len(pd.read_parquet(out / "ops.parquet")) > 0


def test_resume_adds_only_the_newly_requested_generic_ops(tmp_path):
    """A finished profile resumed with a larger --generic measures those ops and only those;
    a resume without --generic keeps (and would finish) the ones asked for before."""
    out = tmp_path / "prof"
    Profiler(_config(out, nets=2)).run()
    ops0 = pd.read_parquet(out / "ops.parquet")
    nets0 = pd.read_parquet(out / "nets.parquet")
    assert "generic" not in set(ops0["source"])

    config = _config(out, nets=2)
    config.generic = 3
    Profiler(config).run(resume=True)
    ops1 = pd.read_parquet(out / "ops.parquet")
    assert len(ops1) == len(ops0) + 3 and ops1["key"].is_unique
    pd.testing.assert_frame_equal(ops1.iloc[:len(ops0)].reset_index(drop=True), ops0)
    assert (ops1.iloc[len(ops0):]["source"] == "generic").all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "nets.parquet"), nets0)
    device = json.loads((out / "device.json").read_text())
    assert device["generic_requested"] == 3 and device["status"] == "complete"

    Profiler(_config(out, nets=2)).run(resume=True)  # no --generic: nothing new, nothing lost
    pd.testing.assert_frame_equal(pd.read_parquet(out / "ops.parquet"), ops1)
    assert json.loads((out / "device.json").read_text())["generic_requested"] == 3
