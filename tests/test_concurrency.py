"""Two hwnas processes on one folder, a reader beside a writer, a lock left by a killed process.

Real processes and threads throughout: the CLI runs in subprocesses, a run is paused with
SIGSTOP while it holds its lock, and killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_rules import one_error_line as _one_error_line

from hwnas._io import folder_lock
from hwnas.errors import HwnasError
from hwnas.profile.reader import Profile
from hwnas.space import get_space
from hwnas.space.nb201 import NB201_OPS, all_indices, arch_string

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals (SIGSTOP, SIGKILL)")

PROFILE = ["profile", "--device", "ort-cpu", "--space", "proxyless", "--resolution", "32",
           "--quick"]
N_OPS = len(get_space("proxyless", 32).distinct_ops())


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True,
                          text=True, timeout=timeout)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hwnas", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `path` exists (the run holds its lock by then); fails if the run ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before writing {path.name}: " \
                                    f"{proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)




def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # also ends a stopped process
    proc.wait(timeout=30)


# --- the lock itself ------------------------------------------------------------------------------
HOLD = """
import sys, time
from hwnas._io import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_lock_held_by_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    """filelock's locks are the OS's (fcntl): they die with their process, SIGKILL included;
    the lock file stays, and does not block the next run."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HwnasError, match="being written by another hwnas process"), \
                folder_lock(tmp_path):
            pass
    finally:
        _kill(holder)
    assert holder.returncode == -signal.SIGKILL
    assert (tmp_path / ".hwnas.lock").exists()  # left behind, stale
    t0 = time.monotonic()
    with folder_lock(tmp_path):  # no wait, no cleanup needed
        pass
    assert time.monotonic() - t0 < 1.0
    # and it excludes again (a second lock object, even in the same thread)
    with folder_lock(tmp_path), pytest.raises(HwnasError), folder_lock(tmp_path):
        pass


WRITE_AND_HANG = """
import sys, time
from hwnas._io import atomic_path
with atomic_path(sys.argv[1] + "/table.parquet") as tmp:
    tmp.write_bytes(b"half a file")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_the_half_written_file_of_a_killed_writer_is_removed_by_the_next_owner(
        tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITE_AND_HANG, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        live = [p.name for p in tmp_path.iterdir()]
        assert live == [f".table.parquet.tmp{writer.pid}"]
        with folder_lock(tmp_path):  # a live writer's file is left alone
            assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == live
    finally:
        _kill(writer)
    assert not (tmp_path / "table.parquet").exists()  # never renamed into place
    with folder_lock(tmp_path):
        assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_the_lock_excludes_threads_of_one_process_too(tmp_path: Path) -> None:
    results: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with folder_lock(tmp_path):
            entered.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(30)
    try:
        # another thread of the same process is refused like another process
        def second() -> None:
            try:
                with folder_lock(tmp_path):
                    results.append("entered")
            except HwnasError as e:
                results.append(str(e))

        t2 = threading.Thread(target=second)
        t2.start()
        t2.join(30)
    finally:
        release.set()
        t.join(30)
    assert len(results) == 1 and "being written by another hwnas process" in results[0]


# --- profiles -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_second_profiler_is_refused_and_a_killed_ones_lock_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "prof"
    first = _start(*PROFILE, "--nets", "0", "--out", str(out))
    try:
        _wait_for(out / "device.json", first)  # written under the lock
        first.send_signal(signal.SIGSTOP)  # holds the lock while the second one starts
        second = _cli(*PROFILE, "--nets", "0", "--out", str(out), "--resume")
        line = _one_error_line(second)
        assert "being written by another hwnas process" in line and str(out) in line
    finally:
        _kill(first)  # killed while holding the lock
    assert (out / ".profile.lock").exists()
    before = pd.read_parquet(out / "ops.parquet") if (out / "ops.parquet").exists() else None
    third = _cli(*PROFILE, "--nets", "0", "--out", str(out), "--resume")
    assert third.returncode == 0, third.stderr
    ops = pd.read_parquet(out / "ops.parquet")
    assert len(ops) == N_OPS and ops["key"].is_unique
    if before is not None:  # the killed run's rows are kept as they were
        kept = ops.set_index("key").loc[before["key"], "measured_at"]
        assert list(kept) == list(before["measured_at"])
    assert json.loads((out / "device.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_profile_read_while_it_is_written_is_always_whole(tmp_path: Path) -> None:
    """Readers in two threads load the profile over and over while a profiler writes it: every
    load succeeds (or finds no table yet) and holds whole chunks, never a torn file."""
    out = tmp_path / "prof"
    writer = _start(*PROFILE, "--nets", "4", "--out", str(out))
    seen: list[tuple[int, int]] = []
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                prof = Profile.load(out)
            except HwnasError as e:  # before the first chunk: no device.json or ops.parquet
                if "not found" not in str(e) and "missing" not in str(e):
                    errors.append(str(e))
                continue
            seen.append((len(prof.ops), len(prof.nets)))
            if not prof.ops["key"].is_unique:
                errors.append("duplicate op keys")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    finally:
        done.set()
        for r in readers:
            r.join(60)
    assert not errors, errors[:3]
    chunks = {min(k, N_OPS) for k in range(16, N_OPS + 16, 16)}  # the profiler's chunk: 16
    assert seen and all(ops in chunks for ops, _ in seen), sorted(set(seen))
    assert all(nets in (0, 4) for _, nets in seen)
    assert all(nets == 0 for ops, nets in seen if ops < N_OPS)  # the nets come after the ops
    assert len({ops for ops, _ in seen}) > 1, "the readers saw only one state: no overlap"
    final = Profile.load(out)
    assert (len(final.ops), len(final.nets)) == (N_OPS, 4)


def test_a_parquet_replaced_while_it_is_read_is_read_whole(tmp_path: Path) -> None:
    """The profile writer replaces ops.parquet (write, then rename) while readers read it: each
    read gets one version, whole (pyarrow given a path opens it twice, and a read straddling a
    rename used to mix the footer of one version with the pages of another)."""
    from hwnas.profile.store import read_parquet, write_parquet

    path = tmp_path / "ops.parquet"
    sizes = [10 + 150 * k for k in range(8)]
    write_parquet(path, pd.DataFrame({"key": np.arange(sizes[0])}))
    stop = time.monotonic() + 4
    errors, lengths = [], set()

    def write() -> None:
        k = 0
        while time.monotonic() < stop:
            k += 1
            n = sizes[k % len(sizes)]
            write_parquet(path, pd.DataFrame({"key": np.arange(n), "pad": ["x" * 40] * n}))

    def read() -> None:
        while time.monotonic() < stop:
            try:
                df = read_parquet(path)
            except HwnasError as e:
                errors.append(str(e))
                continue
            lengths.add(len(df))
            if list(df["key"]) != list(range(len(df))):
                errors.append(f"mixed rows ({len(df)})")

    threads = [threading.Thread(target=write), threading.Thread(target=read),
               threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert lengths <= set(sizes) and len(lengths) > 1


# --- searches -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nb201_tables(tmp_path_factory) -> tuple[Path, Path]:
    """Synthetic accuracy and latency tables of all 15,625 NAS-Bench-201 cells."""
    d = tmp_path_factory.mktemp("tables")
    idx = all_indices()
    convs = (idx == 3).sum(1) * 1.0 + (idx == 2).sum(1) * 0.4
    strings = [arch_string([NB201_OPS[j] for j in row]) for row in idx]
    pd.DataFrame({"Acc": 80 + convs + 0.01 * (np.arange(len(idx)) % 97) / 97,
                  "ArchitectureString": strings}).to_csv(d / "acc.csv", index=False)
    pd.DataFrame({"arch_idx": np.arange(len(idx)), "arch_str": strings,
                  "raspi4_ms": 1 + convs * 2}).to_csv(d / "lat.csv", index=False)
    return d / "acc.csv", d / "lat.csv"


def test_second_search_on_one_out_is_refused_and_the_first_finishes(nb201_tables,
                                                                     tmp_path: Path) -> None:
    acc, lat = nb201_tables
    out = tmp_path / "run"
    args = ["search", "--method", "random", "--accuracy-table", str(acc), "--accuracy-column",
            "Acc", "--latency-table", str(lat), "--device", "raspi4", "--budget-ms", "6",
            "--evaluations", "300", "--out", str(out)]
    first = _start(*args)
    try:
        _wait_for(out / "config.json", first)  # written under the lock
        first.send_signal(signal.SIGSTOP)
        second = _cli(*args)
        line = _one_error_line(second)
        assert "being written by another hwnas process" in line and str(out) in line
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            _kill(first)
    # the refused search wrote nothing: the first one's trajectory is whole
    rows = pd.read_csv(out / "trajectory.csv")
    assert rows["trial"].tolist() == list(range(len(rows)))
    assert json.loads((out / "summary.json").read_text())["evaluations_used"] == 300
    # and a search killed while holding the lock (while it appends to the trajectory of a
    # longer run) does not block the next one
    more = [*args, "--evaluations", "400"]  # the last --evaluations counts
    size = (out / "trajectory.csv").stat().st_size
    third = _start(*more)
    deadline = time.monotonic() + 120
    while (out / "trajectory.csv").stat().st_size == size:
        assert third.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    _kill(third)
    res = _cli(*more)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text())["evaluations_used"] == 400


def test_proxyless_search_takes_the_lock_before_writing(tmp_path: Path) -> None:
    """`run_search` (and ShiftNAS, FBNetV5) hold the run folder's lock: a folder held by
    another process is refused with the same one-line error."""
    from hwnas.search.run import SearchConfig, run_search

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        profile = Path(__file__).resolve().parents[1] / "profiles" / "ort-cpu-1t-proxyless-128"
        if not (profile / "device.json").exists():
            pytest.skip(f"shipped profile {profile.name} not found")
        with pytest.raises(HwnasError, match="being written by another hwnas process"):
            run_search(SearchConfig(profile, 2.0, out=out, epochs=1, warmup_epochs=0,
                                    loss="add#linear", data_limit=64, max_batches=1))
    finally:
        _kill(holder)
    assert not (out / "history.csv").exists() and not (out / "config.json").exists()
