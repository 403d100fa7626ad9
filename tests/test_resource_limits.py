"""Resource limits: a network too large for memory is refused before it is built; a full disk in
the middle of a profile loses no finished row and is one error line.

The limits are real ones: an address-space limit (RLIMIT_AS, `ulimit -v`) set on a subprocess,
and for the disk both a file-size limit (RLIMIT_FSIZE, `ulimit -f`, with SIGXFSZ ignored so that
a write past it fails with EFBIG) and, where the test may mount one (root), a small tmpfs filled
to its last byte (ENOSPC, a real full filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_rules import one_error_line as _one_error_line

from hwnas._io import disk_full
from hwnas.errors import HwnasError
from hwnas.space import get_space
from hwnas.space.memory import memory_bytes

resource = pytest.importorskip("resource")  # POSIX

PROFILE = ["profile", "--device", "ort-cpu", "--space", "proxyless", "--resolution", "32",
           "--quick"]
N_OPS = len(get_space("proxyless", 32).distinct_ops())
GB = 1 << 30


def _run_limited(args: list[str], address_space: int | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    def limit() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)




# --- memory -------------------------------------------------------------------------------------
def test_the_memory_estimate_follows_the_network() -> None:
    small, big = get_space("proxyless", 224), get_space("proxyless", 448)
    arch = small.sample(0)
    est = small.check_memory(arch, available=GB)  # a 224x224 net fits in 1 GB
    assert 10e6 < est < 200e6
    big_arch = big.arch(list(arch.choices))
    assert est < big.check_memory(big_arch, available=4 * GB) < 4 * est
    (w, a), (w_big, a_big) = memory_bytes(small.ops(arch)), memory_bytes(big.ops(big_arch))
    assert w_big == w and 3.5 < a_big / a < 4.5  # activations grow with the pixels
    # the space's largest network bounds every one of its networks
    assert small.check_memory(available=GB) >= max(
        small.check_memory(small.sample(s), available=GB) for s in range(5))


def test_a_network_that_does_not_fit_is_one_error_naming_the_sizes() -> None:
    space = get_space("proxyless", 224)
    with pytest.raises(HwnasError) as e:
        space.check_memory(space.sample(0), available=10 * 10**6)
    msg = str(e.value)
    assert "proxyless 224x224 network needs about" in msg and "10 MB available" in msg
    assert "weights" in msg and "activations" in msg and "\n" not in msg


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_profile_too_large_for_memory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """4096x4096 profiling needs several GB; under a 3 GB address-space limit it is refused in
    one line, before a folder is created or a block is built."""
    out = tmp_path / "prof"
    res = _run_limited([*PROFILE[:5], "--resolution", "4096", "--out", str(out)],
                       address_space=3 * GB)
    line = _one_error_line(res)
    assert "largest proxyless 4096x4096 network needs about" in line and "available" in line
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_export_too_large_for_memory_is_refused_before_building(tmp_path: Path) -> None:
    space = get_space("proxyless", 4096)
    arch = space.sample(0)
    assert space.check_memory(arch, available=1 << 50) > 3 * GB
    arch.save(tmp_path / "arch.json")
    out = tmp_path / "export"
    res = _run_limited(["export", str(tmp_path / "arch.json"), "--out", str(out)],
                       address_space=3 * GB)
    line = _one_error_line(res)
    assert "proxyless 4096x4096 network needs about" in line
    assert not out.exists()


# --- a full disk ------------------------------------------------------------------------------
def test_no_room_is_told_apart_from_other_write_errors(tmp_path: Path) -> None:
    if Path("/dev/full").exists():  # a real ENOSPC
        with pytest.raises(OSError) as e, open("/dev/full", "wb") as f:
            f.write(b"x")
            f.flush()
        assert disk_full(e.value) == "no space left on the device"
    with pytest.raises(OSError) as e:
        (tmp_path / "missing" / "x").write_text("x")
    assert disk_full(e.value) is None


WRITER = """
import json, resource, signal, sys
from pathlib import Path
from hwnas.errors import HwnasError
from hwnas.profile.store import ProfileWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
root = Path(sys.argv[1])
writer = ProfileWriter(root)
writer.acquire()
rows = [{"key": f"op{i}", "median_ms": 1.0 + i, "note": "x" * 200} for i in range(64)]
writer.append("ops", rows[:16])
size = (root / "ops.parquet").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64, size + 64))
try:
    writer.append("ops", rows[16:])
    print(json.dumps({"error": None}))
except HwnasError as e:
    print(json.dumps({"error": str(e)}))
"""


def test_the_profile_writer_says_which_file_did_not_fit(tmp_path: Path) -> None:
    root = tmp_path / "prof"
    res = subprocess.run([sys.executable, "-c", WRITER, str(root)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    error = json.loads(res.stdout.strip().splitlines()[-1])["error"]
    assert error is not None and error.startswith("file too large")
    assert error.endswith(f"writing {root / 'ops.parquet'}")
    ops = pd.read_parquet(root / "ops.parquet")  # the rows written before are whole
    assert list(ops["key"]) == [f"op{i}" for i in range(16)]
    assert not [p for p in root.iterdir() if ".tmp" in p.name]  # the half-written file is gone


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str = "16m"):
    """A real size-limited filesystem (tmpfs) mounted at `path`; skips where this process may
    not mount (not root, or a container without the capability)."""
    path.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write a ballast file until the filesystem of `folder` has no room left."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert disk_full(e) == "no space left on the device", e
    return ballast


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file-size limit", "full tmpfs"])
def test_a_disk_full_mid_profile_keeps_every_finished_row(how: str, tmp_path: Path) -> None:
    """The disk "fills" once the first chunk is written: either a 4 kB file-size limit set on
    the running profiler (EFBIG, anywhere), or a real small tmpfs filled to the last byte by a
    ballast file (ENOSPC; needs root to mount). The profiler stops with one error line, the rows
    written are intact, and --resume (with room again) finishes the profile without measuring
    them again."""
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_small_filesystem(tmp_path / "fs")) if how == "full tmpfs" \
            else tmp_path
        out = root / "prof"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwnas", *PROFILE, "--nets", "0", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
        deadline = time.monotonic() + 240
        ballast = None
        try:
            while True:
                assert proc.poll() is None, "the profile ended before its first chunk was seen"
                assert time.monotonic() < deadline
                if (out / "ops.parquet").exists():
                    try:
                        if len(pd.read_parquet(out / "ops.parquet")) >= 16:
                            break
                    except Exception:  # noqa: BLE001 - replaced while being read: look again
                        pass
                time.sleep(0.01)
            if how == "full tmpfs":
                ballast = _fill(root)
            else:
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        line = _one_error_line(res)
        said = "no space left on the device" if how == "full tmpfs" else "file too large"
        assert said in line and " writing " in line, line
        before = pd.read_parquet(out / "ops.parquet")
        assert 16 <= len(before) < N_OPS and before["key"].is_unique
        assert not [p for p in out.iterdir() if ".tmp" in p.name]
        assert json.loads((out / "device.json").read_text())["status"] == "measuring"

        if ballast is not None:
            ballast.unlink()  # room again
        again = subprocess.run([sys.executable, "-m", "hwnas", *PROFILE, "--nets", "0", "--out",
                                str(out), "--resume"], capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stderr
        ops = pd.read_parquet(out / "ops.parquet")
        assert len(ops) == N_OPS and ops["key"].is_unique
        kept = ops.set_index("key").loc[before["key"], "measured_at"]
        assert list(kept) == list(before["measured_at"])  # not measured again
        assert os.path.getsize(out / "ops.parquet") > 4096
