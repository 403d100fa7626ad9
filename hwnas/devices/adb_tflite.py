"""`adb-tflite`: a real Android phone. Push the .tflite and TFLite's `benchmark_model` over adb,
run it with op profiling, and parse its output (`hwnas.devices.parsers.parse_tflite_benchmark`).

Setup: Android platform-tools (`adb`) on PATH, a phone with USB debugging authorised, and the
Android build of `benchmark_model` on this host (prebuilt nightly binaries are linked from the
TFLite "performance measurement" page); give its path as `benchmark_binary=` or in the
environment variable `HWNAS_BENCHMARK_MODEL`. With several phones attached, choose one with
`serial=` or `ANDROID_SERIAL`. Everything goes to /data/local/tmp on the phone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from torch import nn

from hwnas.devices.base import Backend, BackendUnavailable, Runner
from hwnas.devices.measurement import Protocol
from hwnas.devices.parsers import TFLiteBenchmark, parse_tflite_benchmark
from hwnas.errors import DeviceError

ENV_BINARY = "HWNAS_BENCHMARK_MODEL"
ENV_SERIAL = "ANDROID_SERIAL"
REMOTE_DIR = "/data/local/tmp"
REMOTE_BINARY = f"{REMOTE_DIR}/benchmark_model"
PROBE_TIMEOUT_S = 10.0
PUSH_TIMEOUT_S = 300.0

_STATE_HINTS = {
    "unauthorized": "accept the 'Allow USB debugging' prompt on the phone",
    "offline": "reconnect the cable or run `adb kill-server`",
    "no permissions": "fix the udev rules for the phone (see adb's documentation)",
}


class AdbCommandError(DeviceError):
    """An adb command failed (non-zero exit or timeout); the message holds its output's tail."""


def _tail(text: str, n: int = 600) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def parse_adb_devices(text: str) -> dict[str, str]:
    """`adb devices` output -> {serial: state} (state: device, unauthorized, offline, ...)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb ")):
            continue
        serial, _, state = line.partition("\t")
        if not state:  # some adb versions align with spaces
            serial, _, state = line.partition(" ")
        if serial and state.strip():
            out[serial.strip()] = state.strip()
    return out


def _list_devices(adb: str) -> tuple[dict[str, str] | None, str]:
    """({serial: state}, "") or (None, why `adb devices` failed)."""
    try:
        proc = subprocess.run([adb, "devices"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"`adb devices` did not answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as e:
        return None, f"`adb devices` could not run: {e}"
    if proc.returncode != 0:
        return None, f"`adb devices` failed (exit {proc.returncode}): {_tail(proc.stderr)}"
    return parse_adb_devices(proc.stdout), ""


def select_device(devices: dict[str, str], serial: str | None) -> tuple[str | None, str]:
    """(the serial to use, "") or (None, why none can be used).

    With `serial` given it must be listed in state `device`; without, exactly one device must be
    in state `device` (adb's own rule; we always pass `-s` so nothing else is picked later).
    """
    if serial:
        state = devices.get(serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in devices.items()) or "none"
            return None, f"device {serial!r} is not attached (adb devices lists: {listed})"
        if state != "device":
            hint = _STATE_HINTS.get(state, "")
            return None, f"device {serial!r} is {state!r}" + (f": {hint}" if hint else "")
        return serial, ""
    ready = [s for s, st in devices.items() if st == "device"]
    if len(ready) == 1:
        return ready[0], ""
    if len(ready) > 1:
        return None, (f"{len(ready)} devices attached ({', '.join(ready)}): choose one with "
                      f"serial=... or {ENV_SERIAL}")
    others = [f"{s} is {st!r} ({_STATE_HINTS.get(st, 'not usable')})"
              for s, st in devices.items()]
    return None, "no device in state 'device' in `adb devices`" + (
        f": {'; '.join(others)}" if others else " (is a phone connected with USB debugging on?)")


def probe(adb: str, serial: str | None, binary: str | None) -> tuple[str | None, str]:
    """(serial, "") when a phone and the benchmark binary are usable, else (None, reason)."""
    if shutil.which(adb) is None:
        return None, f"{adb!r} is not on PATH (install Android platform-tools)"
    if not binary:
        return None, (f"no benchmark_model binary configured: set {ENV_BINARY} to the path of "
                      "the Android benchmark_model build (or pass benchmark_binary=...)")
    if not Path(binary).is_file():
        return None, f"benchmark_model binary not found at {binary!r} ({ENV_BINARY})"
    devices, why = _list_devices(adb)
    if devices is None:
        return None, why
    return select_device(devices, serial)


class AdbTFLiteBackend(Backend):
    """TFLite `benchmark_model` on an Android phone over adb.

    `benchmark_model` prints summary statistics only, so a `Measurement` here holds one sample
    per invocation: the mean over that invocation's `num_runs` timed runs (the tool's own
    timed-loop average). `extra["ops"]` keeps the per-op table (mean over the invocations).
    Threads: `--num_threads`. `extra_args` go to benchmark_model as given (e.g.
    `("--use_gpu=true",)` or `("--use_xnnpack=false",)`).
    """

    name = "adb-tflite"
    description = "TFLite benchmark_model on an Android phone over adb (per-op profile kept)"
    artifact = "tflite"

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32",
                 serial: str | None = None, benchmark_binary: str | None = None,
                 extra_args: Sequence[str] = (), adb: str = "adb",
                 timeout_s: float = 600.0, invocation_warmup: int = 5) -> None:
        super().__init__(threads, batch, dtype)
        self.invocation_warmup = invocation_warmup
        self.serial = serial or os.environ.get(ENV_SERIAL) or None
        self.benchmark_binary = benchmark_binary or os.environ.get(ENV_BINARY) or None
        self.extra_args = tuple(extra_args)
        self.adb = adb
        self.timeout_s = timeout_s
        self._pushed_binary: str | None = None  # serial the binary was pushed to

    # --- availability ---------------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Checked with the defaults from the environment (ANDROID_SERIAL,
        HWNAS_BENCHMARK_MODEL); an instance checks its own options in `require`."""
        serial, reason = probe("adb", os.environ.get(ENV_SERIAL) or None,
                               os.environ.get(ENV_BINARY) or None)
        return serial is not None, reason

    @classmethod
    def runtime_version(cls) -> str:
        adb = shutil.which("adb")
        if adb is None:
            return ""
        try:
            proc = subprocess.run([adb, "version"], capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        first = proc.stdout.strip().splitlines()[:1]
        return f"benchmark_model over {first[0]}" if first else ""

    def require(self) -> str:
        """The serial of the phone to use, or BackendUnavailable with the reason."""
        serial, reason = probe(self.adb, self.serial, self.benchmark_binary)
        if serial is None:
            raise BackendUnavailable(f"backend {self.name!r} cannot run here: {reason}")
        return serial

    def options(self) -> dict:
        return {**super().options(), "serial": self.serial, "extra_args": list(self.extra_args)}

    # --- adb plumbing ---------------------------------------------------------------------
    def _adb(self, serial: str, *args: str, timeout: float | None = None) -> str:
        cmd = [self.adb, "-s", serial, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=timeout or self.timeout_s)
        except subprocess.TimeoutExpired as e:
            raise AdbCommandError(f"{shlex.join(cmd)} timed out after {e.timeout:.0f} s") from None
        except OSError as e:
            raise AdbCommandError(f"{shlex.join(cmd)} could not run: {e}") from None
        if proc.returncode != 0:
            raise AdbCommandError(f"{shlex.join(cmd)} failed (exit {proc.returncode}): "
                                  f"{_tail(proc.stdout + proc.stderr)}")
        return proc.stdout

    def _push_binary(self, serial: str) -> None:
        if self._pushed_binary == serial:
            return
        assert self.benchmark_binary is not None
        self._adb(serial, "push", self.benchmark_binary, REMOTE_BINARY, timeout=PUSH_TIMEOUT_S)
        self._adb(serial, "shell", f"chmod 755 {REMOTE_BINARY}", timeout=PROBE_TIMEOUT_S)
        self._pushed_binary = serial

    def _push_model(self, serial: str, path: Path) -> str:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        remote = f"{REMOTE_DIR}/hwnas_{digest}.tflite"
        self._adb(serial, "push", str(path), remote, timeout=PUSH_TIMEOUT_S)
        return remote

    def benchmark_command(self, remote_model: str, warmup_runs: int, num_runs: int,
                          op_profiling: bool = True) -> str:
        """The shell command line run on the phone."""
        args = [REMOTE_BINARY, f"--graph={remote_model}", f"--num_threads={self.threads}",
                f"--warmup_runs={warmup_runs}", f"--num_runs={num_runs}"]
        if op_profiling:
            args.append("--enable_op_profiling=true")
        return shlex.join([*args, *self.extra_args])

    def run_benchmark(self, serial: str, remote_model: str, warmup_runs: int,
                      num_runs: int) -> TFLiteBenchmark:
        """One benchmark_model invocation with op profiling, parsed."""
        out = self._adb(serial, "shell", self.benchmark_command(remote_model, warmup_runs,
                                                                num_runs))
        return parse_tflite_benchmark(out)

    # --- Backend --------------------------------------------------------------------------
    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        from hwnas.convert.tflite import export_tflite

        return export_tflite(module, input_shape, path)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        """Push the binary and the model; the `AdbRunner` times with benchmark_model's figures."""
        serial = self.require()
        self._push_binary(serial)
        return AdbRunner(self, serial, self._push_model(serial, Path(path)))

    def fingerprint(self) -> dict:
        """The host's fingerprint with the phone's identity in place of the host CPU's."""
        fp = super().fingerprint()
        serial, reason = probe(self.adb, self.serial, self.benchmark_binary)
        if serial is None:
            return {**fp, "device": f"unavailable: {reason}"}
        props = {k: self._getprop(serial, k) for k in
                 ("ro.product.manufacturer", "ro.product.model", "ro.soc.model",
                  "ro.board.platform", "ro.product.cpu.abi", "ro.build.version.release")}
        cores = self._adb(serial, "shell", "nproc", timeout=PROBE_TIMEOUT_S).strip()
        assert self.benchmark_binary is not None
        return {**fp, "host_cpu_model": fp.get("cpu_model"), "host_cores": fp.get("cores"),
                "cpu_model": " ".join(filter(None, (props["ro.product.manufacturer"],
                                                   props["ro.product.model"],
                                                   props["ro.soc.model"]
                                                   or props["ro.board.platform"]))),
                "cores": int(cores) if cores.isdigit() else 0,
                "machine": props["ro.product.cpu.abi"],
                "os": f"Android {props['ro.build.version.release']}",
                "serial": serial, "android_props": props,
                "benchmark_sha256": _sha256(Path(self.benchmark_binary))}

    def _getprop(self, serial: str, key: str) -> str:
        try:
            return self._adb(serial, "shell", f"getprop {key}", timeout=PROBE_TIMEOUT_S).strip()
        except AdbCommandError:
            return ""


class AdbRunner(Runner):
    """A model pushed to the phone. `time(count)` is one `benchmark_model` invocation with
    `invocation_warmup` warm-up and `count` timed runs, op profiling on: it returns ONE sample,
    the tool's own timed-loop average (the tool prints summary statistics only), which stands for
    `count` runs in the protocol's run count. Warm-up happens inside every invocation (each is a
    fresh process), so the host-side warm-up is skipped. `extra()` keeps each invocation's
    summary and the per-op table averaged over the invocations. `__call__` is one untimed run.
    """

    def __init__(self, backend: AdbTFLiteBackend, serial: str, remote: str) -> None:
        super().__init__()
        self.backend, self.serial, self.remote = backend, serial, remote
        self.results: list[TFLiteBenchmark] = []

    def __call__(self) -> object:
        cmd = self.backend.benchmark_command(self.remote, warmup_runs=0, num_runs=1,
                                             op_profiling=False)
        return self.backend._adb(self.serial, "shell", cmd)

    def warm_up(self, protocol: Protocol) -> int:
        return 0

    def time(self, count: int) -> list[float]:
        r = self.backend.run_benchmark(self.serial, self.remote, self.backend.invocation_warmup,
                                       count)
        self.results.append(r)
        return [r.avg_ms]

    def extra(self) -> dict:
        return {"sample_kind": "mean of each benchmark_model invocation's timed runs",
                "warmup_per_invocation": self.backend.invocation_warmup,
                "runs_per_sample": [r.inference.count if r.inference else None
                                    for r in self.results],
                "invocations": [_invocation_summary(r) for r in self.results],
                "ops": _mean_ops(self.results)}

    def close(self) -> None:
        with contextlib.suppress(AdbCommandError):  # a leftover file would be harmless
            self.backend._adb(self.serial, "shell", f"rm -f {self.remote}",
                              timeout=PROBE_TIMEOUT_S)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invocation_summary(r: TFLiteBenchmark) -> dict:
    loop, prof = r.inference, r.timings
    return {"avg_ms": r.avg_ms,
            "count": loop.count if loop else None,
            "min_ms": loop.min_ms if loop else None,
            "max_ms": loop.max_ms if loop else None,
            "std_ms": loop.std_ms if loop else None,
            "profiler_avg_ms": prof.avg_ms if prof else None,
            "init_ms": r.init_ms}


def _mean_ops(results: list[TFLiteBenchmark]) -> list[dict]:
    """The per-op table averaged over the invocations (rows matched by position and name)."""
    frames = [r.ops.assign(order=range(len(r.ops))) for r in results if len(r.ops)]
    if not frames:
        return []
    keys = ["order", "node_type", "name"]
    cols = [c for c in ("avg_ms", "first_ms", "total_ms", "pct") if c in frames[0]]
    df = pd.concat(frames).groupby(keys, sort=True).agg(
        **{c: (c, "mean") for c in cols}, times_called=("times_called", "max"),
        invocations=("avg_ms", "size"))
    return df.reset_index().drop(columns="order").to_dict("records")
