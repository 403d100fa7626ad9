"""Profiling on a Ray cluster (`hwnas.profile.farm`, `hwnas profile --ray`).

The cluster tests start a real local Ray cluster: a head node declaring `device:ort-cpu` and a
second node on this machine declaring `device:torch-cpu` (2 logical CPUs each, small object
stores), and profile a tiny space (nb201 at 8x8, width 0.25, the quick protocol) on the real
ort-cpu and torch-cpu backends. They are skipped when Ray is not installed; the two tests that
check the CLI without Ray run everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from hwnas.devices.measurement import Protocol
from hwnas.profile.profiler import ProfileConfig
from hwnas.space import get_space

ROOT = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install "
                                                   "'hwnas[distributed]'): no cluster to test on")
SPACE = ["--space", "nb201", "--resolution", "8", "--width", "0.25"]
N_OPS = len(get_space("nb201", 8, 0.25).distinct_ops())
MB = 2 ** 20


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _hwnas(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hwnas", *args], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _config(device: str, out: Path | None, nets: int = 4, chunk: int = 4) -> ProfileConfig:
    return ProfileConfig(device=device, space="nb201", resolution=8, width=0.25, nets=nets,
                         out=out, chunk=chunk, protocol=Protocol.quick())


def _check_once(root: Path, nets: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The profile is complete and every item is in it exactly once."""
    from hwnas.profile.reader import Profile
    from hwnas.profile.record import read_record

    assert read_record(root).status == "complete"
    ops, net_rows = pd.read_parquet(root / "ops.parquet"), pd.read_parquet(root / "nets.parquet")
    assert len(ops) == N_OPS and ops["key"].is_unique
    assert len(net_rows) == nets and net_rows["net_id"].is_unique
    Profile.load(root)  # and it reads as any profile
    return ops, net_rows


# --- without Ray ------------------------------------------------------------------------------
def test_profile_without_ray_never_imports_ray(tmp_path: Path) -> None:
    code = ("import sys\nfrom hwnas.cli import main\n"
            "try:\n"
            f"    main(['profile', '--device', 'ort-cpu', *{SPACE!r}, '--nets', '0', '--quick',\n"
            f"          '--out', {str(tmp_path / 'p')!r}])\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n"
            "print('NO-RAY-OK')\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "NO-RAY-OK" in r.stdout
    assert (tmp_path / "p" / "ops.parquet").exists()


def test_ray_not_installed_is_one_error_line(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n"
            "from hwnas.cli import main\n"
            f"main(['profile', '--ray', '--device', 'ort-cpu', *{SPACE!r}, '--out', "
            f"{str(tmp_path / 'p')!r}])\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=200)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'hwnas[distributed]'" in lines[0], r.stderr


def test_ray_options_need_ray(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hwnas.cli import app

    result = CliRunner().invoke(app, ["profile", "--devices", "ort-cpu,torch-cpu", *SPACE])
    assert result.exit_code != 0 and "only with --ray" in str(result.exception)


# --- on a local Ray cluster -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """A head node serving device:ort-cpu and a second node serving device:torch-cpu."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed")
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"device:ort-cpu": 1}, "include_dashboard": False,
        "object_store_memory": 100 * MB})
    try:
        second = c.add_node(num_cpus=2, resources={"device:torch-cpu": 1},
                            object_store_memory=100 * MB)
        c.wait_for_nodes()
        c.ort_node, c.torch_node = c.head_node.node_id, second.node_id
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120,
                       env=_env())


@pytest.fixture
def driver(cluster):
    """This test process connected to the cluster as the driver."""
    import ray

    ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")
    yield cluster
    ray.shutdown()


@needs_ray
def test_farm_items_land_on_their_device_nodes(cluster, tmp_path: Path) -> None:
    from hwnas.profile.farm import profile_farm

    rows = profile_farm(["ort-cpu", "torch-cpu"], _config("ort-cpu", None, nets=2, chunk=8),
                        tmp_path, address=cluster.address)
    by_device = {r["device"]: r for r in rows}
    assert set(by_device) == {"ort-cpu", "torch-cpu"}
    for device, node in (("ort-cpu", cluster.ort_node), ("torch-cpu", cluster.torch_node)):
        r = by_device[device]
        assert r["error"] == "" and r["status"] == "complete", r
        assert (r["ops"], r["nets"], r["nodes"]) == (N_OPS, 2, 1)
        ops, nets = _check_once(Path(r["path"]), 2)
        # every row was timed on the node that declares the device
        assert set(ops["ray_node"]) == {node} and set(nets["ray_node"]) == {node}
        record = __import__("json").loads((Path(r["path"]) / "device.json").read_text())
        assert record["backend"] == device and record["farm"]["device_resource"] == \
            f"device:{device}"
        assert record["farm"]["timing_cpus"] == 2  # the whole node: no conversion beside it


def _kill_workers(title: str, stop: threading.Event, killed: list[int], most: int) -> None:
    """SIGKILL Ray worker processes while they run the task `title` (their process title)."""
    while not stop.is_set() and len(killed) < most:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in killed:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if cmd.startswith(f"ray::{title}"):
                time.sleep(0.05)  # well inside the chunk, not at its first instruction
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                except ProcessLookupError:
                    pass
                break
        time.sleep(0.01)


@needs_ray
def test_worker_killed_mid_chunk_every_item_once(driver, tmp_path: Path) -> None:
    from hwnas.profile.farm import profile_on_ray

    killed: list[int] = []  # timing workers (mid-chunk), then conversion workers
    converters: list[int] = []
    stop = threading.Event()
    killers = [threading.Thread(target=_kill_workers, args=("_time_chunk", stop, killed, 2),
                                daemon=True),
               threading.Thread(target=_kill_workers, args=("_convert", stop, converters, 1),
                                daemon=True)]
    for k in killers:
        k.start()
    try:
        root = profile_on_ray(_config("ort-cpu", tmp_path / "p", nets=2, chunk=3))
    finally:
        stop.set()
        for k in killers:
            k.join(5)
    assert len(killed) >= 1, "no timing worker was killed: the test proves nothing"
    ops, nets = _check_once(root, 2)
    assert set(ops["ray_node"]) == {driver.ort_node}


@needs_ray
def test_driver_killed_then_resume_completes(cluster, tmp_path: Path) -> None:
    out = tmp_path / "p"
    args = ["profile", "--ray", cluster.address, "--device", "ort-cpu", *SPACE, "--nets", "2",
            "--quick", "--out", str(out)]
    first = _hwnas(args)
    deadline = time.monotonic() + 150
    while not (out / "ops.parquet").exists() and first.poll() is None:
        assert time.monotonic() < deadline, "the driver never wrote a chunk"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # the driver dies in the nets phase
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    nets_path = out / "nets.parquet"
    assert not nets_path.exists() or len(pd.read_parquet(nets_path)) < 2
    assert __import__("json").loads((out / "device.json").read_text())["status"] == "measuring"

    again = _hwnas([*args, "--resume"])
    stdout, stderr = again.communicate(timeout=200)
    assert again.returncode == 0, stderr[-2000:]
    assert "complete" in stdout
    ops, nets = _check_once(out, 2)
    assert set(nets["ray_node"]) == {cluster.ort_node}


@needs_ray
def test_absent_device_resource_is_one_error_line(cluster, tmp_path: Path) -> None:
    r = _hwnas(["profile", "--ray", cluster.address, "--device", "ort-cpu", "--device-resource",
                "device:ort-cpu:phone7", *SPACE, "--out", str(tmp_path / "p")])
    _, stderr = r.communicate(timeout=200)
    assert r.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "device:ort-cpu:phone7" in lines[0], stderr
    assert "device:ort-cpu" in lines[0] and "device:torch-cpu" in lines[0]  # what is offered


# --- search candidates scored on the cluster --------------------------------------------------
SEARCH = ["search", "--method", "evolution", "--space", "nb201", "--evaluator", "synflow",
          "--seed", "3", "--batch", "4"]


def _trajectory(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "trajectory.csv")


@needs_ray
def test_search_batches_scored_on_ray_match_a_local_run_and_resume_after_a_kill(
        cluster, tmp_path: Path) -> None:
    """`hwnas search --batch 4 --ray ADDRESS`: the same trials as the same batched search
    scored in this process; the driver SIGKILLed mid-search resumes to the same trajectory."""
    local = tmp_path / "local"
    r = _hwnas([*SEARCH, "--evaluations", "16", "--out", str(local)])
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]

    remote = tmp_path / "remote"
    args = [*SEARCH, "--evaluations", "16", "--out", str(remote), "--ray", cluster.address]
    first = _hwnas(args)
    deadline = time.monotonic() + 200
    traj = remote / "trajectory.csv"
    while first.poll() is None:  # kill the driver once a few groups are written
        if traj.exists() and len(traj.read_text().splitlines()) > 6:
            first.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the driver never wrote a trial"
        time.sleep(0.02)
    first.communicate(timeout=60)
    killed = first.returncode == -signal.SIGKILL
    again = _hwnas(args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    a, b = _trajectory(local), _trajectory(remote)
    assert list(a["arch"]) == list(b["arch"]) and list(a["status"]) == list(b["status"])
    assert list(a["evaluation"]) == list(b["evaluation"])
    assert (abs(a["score"] - b["score"]) <= 1e-6 * abs(a["score"]).clip(lower=1)).all()
    assert killed or len(b) <= 6, "the search ended before it could be killed"


def test_ray_search_options_need_a_strategy_and_a_batch(tmp_path: Path) -> None:
    from hwnas.cli import main

    for args, msg in ((["search", "--method", "proxyless", "--ray"], "strategy searches"),
                      ([*SEARCH[:-2], "--ray", "--out", str(tmp_path / "r")], "--batch N")):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2, msg


@needs_ray
def test_trained_candidates_on_ray(cluster, tmp_path: Path) -> None:
    """Train-from-scratch evaluations (`--evaluator train:1`) run as Ray tasks."""
    out = tmp_path / "t"
    r = _hwnas(["search", "--method", "random", "--space", "nb201", "--evaluator", "train:1",
                "--evaluations", "2", "--batch", "2", "--ray", cluster.address, "--out", str(out)])
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    t = _trajectory(out)
    assert list(t["status"]) == ["evaluated", "evaluated"]
    assert ((t["score"] >= 0) & (t["score"] <= 1)).all()
