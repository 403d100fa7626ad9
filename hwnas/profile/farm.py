"""Profiling on a Ray cluster: a device farm (`hwnas profile --ray`, the `distributed` extra).

Devices are Ray custom resources. A node declares the devices it serves when it joins the
cluster, e.g. `ray start --address HEAD:6379 --resources '{"device:ort-cpu": 1}'` (by default a
device `NAME` is the resource `device:NAME`; a phone could be `device:adb:<serial>`). One
profile is planned, written and resumed by the driver exactly as `Profiler` does (this module's
`RayProfiler` is a `Profiler`: same plan, same items, same rows, same atomic resumable store);
only each chunk's work runs on the cluster:

* conversion: one ordinary Ray task per item (`num_cpus=1`, any node of the cluster), returning
  the runtime's artifact (bytes, through the object store); the drift reference is converted
  once per profile. Backends whose artifact only runs where it was built (TensorRT engines) or a
  run with `convert_on_device=True` convert inside the timing task instead.
* timing: one Ray task per chunk that holds one unit of the device's resource (so two timings
  never share a device) and loads and times the chunk beside the drift reference
  (`measure_chunk`, the profiler's own chunk), returning the rows to the driver.

Placement rule (timing is never next to a conversion on the same cores): a timing task holds,
besides the device resource, the CPUs of the node it times on: by default every CPU of the
device's node (`timing_cpus="node"`: the smallest CPU count among the nodes that offer the
resource), so that no conversion (`num_cpus=1`), and no second timing, can be scheduled on that
node while it times; conversions run on the other nodes, or on the device's node between two
chunks. `timing_cpus=N` reserves N CPUs instead (e.g. a host driving several phones over adb,
where the timing does not run on the host's cores); N must be at least the profile's threads + 1
(the runtime's threads and the Python thread that drives the clock), and a request no node with
the device can grant is refused up front. Ray does not pin cores: the rule holds because Ray
places tasks by these logical CPUs, so a node must not declare more CPUs than it has.

Several identical devices (nodes offering the same resource, whose fingerprints must match) split
one profile's items; each chunk's rows keep the drift reference timed in the same rounds on the
same device (`reference_ms`), so `correct_drift` also divides out small differences between
them, and the Ray node that measured each row (`ray_node`). Rows stream back as chunks finish
(`ray.wait`); the driver writes them with `ProfileWriter` (atomic) after each chunk. A worker
killed mid-chunk loses that chunk only: Ray retries the task (`max_retries`); a driver killed
loses the chunks in flight, and `--resume` measures what is missing. The driver writes a row only
for an item key not yet in the table, so nothing is measured twice in the final profile.

Ray is imported only inside these functions: without `--ray` nothing imports it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwnas.devices.measurement import Protocol
from hwnas.devices.registry import get_backend
from hwnas.errors import HwnasError
from hwnas.profile.items import Item, load_item
from hwnas.profile.profiler import (
    ChunkResult,
    ProfileConfig,
    Profiler,
    artifact_name,
    default_profile_id,
    measure_chunk,
)
from hwnas.profile.record import ProfileRecord

__all__ = ["RayProfiler", "connect", "device_nodes", "profile_farm", "profile_on_ray",
           "resource_name"]

INSTALL_HINT = "pip install 'hwnas[distributed]'"
MAX_RETRIES = 3  # a task whose worker dies (killed, node lost) is run again this many times
LOCAL_OBJECT_STORE = 256 * 2 ** 20  # a local Ray instance's object store (artifacts pass through)
CONVERT_ON_DEVICE = ("engine",)  # artifacts that only run where they were built (TensorRT)


def _ray():
    """The `ray` module, or the one-line error that says how to get it."""
    try:
        import ray
    except ImportError:
        raise HwnasError(f"--ray needs Ray: {INSTALL_HINT}") from None
    return ray


def resource_name(device: str) -> str:
    """The Ray custom resource a device is declared as by default: `device:<name>`."""
    return f"device:{device}"


def connect(address: str | None = None, local_resources: dict[str, float] | None = None,
            num_cpus: int | None = None, object_store_memory: int | None = None) -> bool:
    """Connect this process to Ray; True when it started (and so should stop) the instance.

    `address` None or "local": a new Ray instance on this machine serving `local_resources`
    (the devices profiled here); "auto" or "host:port": an existing cluster. Already connected:
    nothing is done (False).
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": "warning"}
    if address in (None, "", "local"):
        # address="local": a new instance, even where `ray start` left one running here
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                 resources=local_resources or {},
                 include_dashboard=False,
                 object_store_memory=object_store_memory or LOCAL_OBJECT_STORE, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise HwnasError(f"--ray {address}: cannot connect to a Ray cluster ({e})") from None
    return True


def device_nodes(resource: str) -> list[dict]:
    """The alive nodes that offer `resource`: node id, address, CPUs and units of the device."""
    ray = _ray()
    out = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and res.get(resource, 0) > 0:
            out.append({"node_id": node["NodeID"], "address": node.get("NodeManagerAddress", ""),
                        "cpus": int(res.get("CPU", 0)), "units": res[resource]})
    return out


# --- the tasks (plain functions; wrapped with ray.remote on first use) -----------------------
def _probe(device: str, threads: int) -> dict:
    """On a device's node: can it run there, and its fingerprint."""
    import ray

    backend = get_backend(device, threads=threads)
    ok, reason = backend.available()
    return {"ok": ok, "reason": reason, "fingerprint": backend.fingerprint() if ok else {},
            "node_id": ray.get_runtime_context().get_node_id()}


def _convert(device: str, threads: int, item: Item) -> tuple[bytes, float]:
    """On any node: an item converted to its runtime's artifact (bytes), and the seconds it took."""
    import torch

    t0 = time.monotonic()
    backend = get_backend(device, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        module, shape = item.build()
        path = Path(backend.convert(module, shape, Path(tmp) / artifact_name(backend, item.key)))
        if not path.is_file():
            raise HwnasError(f"{device}: the artifact of {item.key} is not one file ({path}); "
                             "profile it with convert_on_device=True")
        return path.read_bytes(), time.monotonic() - t0


def _time_chunk(spec: dict, reference: Item | None, items: list[Item],
                ref_artifact: tuple[bytes, float] | None, *artifacts: tuple[bytes, float]) -> dict:
    """On the device's node (holding its resource): load a chunk's artifacts (or convert them
    here when none were sent) and time them beside the drift reference (`measure_chunk`).
    `convert_s` counts the chunk's conversion tasks, loading, and any conversion done here."""
    import ray

    backend = get_backend(spec["device"], threads=spec["threads"])
    backend.require()
    node = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        converted = {}
        for it, (data, _) in zip(items, artifacts, strict=False):
            converted[it.key] = tmp / artifact_name(backend, it.key)
            converted[it.key].write_bytes(data)
        t0 = time.monotonic()
        ref_runner = None
        if reference is not None:
            if ref_artifact is not None:
                converted[reference.key] = tmp / artifact_name(backend, reference.key)
                converted[reference.key].write_bytes(ref_artifact[0])
            ref_runner = load_item(backend, reference, tmp, converted)
        load_s = time.monotonic() - t0 + sum(seconds for _, seconds in artifacts)
        rng = np.random.default_rng([spec["seed"], spec["index"]])
        try:
            result = measure_chunk(backend, items, ref_runner, Protocol(**spec["protocol"]), rng,
                                   tmp, converted)
        finally:
            if ref_runner is not None:
                ref_runner.close()
    rows = [{**r, "ray_node": node} for r in result.rows]
    return {"rows": rows, "reference_ms": result.reference_ms,
            "convert_s": result.convert_s + load_s, "timed_s": result.timed_s,
            "fingerprint": backend.fingerprint(), "node_id": node, "pid": os.getpid()}


_REMOTE: dict[str, object] = {}
_REMOTE_LOCK = threading.Lock()


def _remote(fn: Callable):
    """`ray.remote(fn)`, made once per process (a driver may profile several devices at once)."""
    with _REMOTE_LOCK:
        if fn.__name__ not in _REMOTE:
            _REMOTE[fn.__name__] = _ray().remote(fn)
        return _REMOTE[fn.__name__]


# --- the driver ------------------------------------------------------------------------------
class RayProfiler(Profiler):
    """A `Profiler` whose chunks are converted and timed on a Ray cluster (see the module
    docstring); the driver plans, writes, resumes and locks the profile as `Profiler` does.
    Connect first (`connect`)."""

    def __init__(self, config: ProfileConfig, device_resource: str | None = None,
                 timing_cpus: int | str = "node", convert_on_device: bool | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if config.kernel_nets:
            raise HwnasError("--kernel-nets is not supported with --ray (profile the kernel nets "
                             "on the device's host)")
        self.resource = device_resource or resource_name(config.device)
        self.timing_cpus_request = timing_cpus
        self.convert_on_device = convert_on_device
        self.nodes: list[dict] = []
        self.timing_cpus = 0
        self._device_fingerprint: dict = {}
        self._ref_artifact = None  # the reference's artifact, an ObjectRef
        self._pending: dict = {}
        super().__init__(config, progress, log)
        if self.convert_on_device is None:
            self.convert_on_device = self.backend.artifact in CONVERT_ON_DEVICE

    # --- setup: the device is checked on its nodes, not here ----------------------------------
    def _check_backend(self) -> None:
        ray = _ray()
        self.nodes = device_nodes(self.resource)
        if not self.nodes:
            offered = sorted(k for k in ray.cluster_resources() if k.startswith("device:"))
            raise HwnasError(f"no node of the Ray cluster offers the resource {self.resource!r} "
                             f"(devices offered: {', '.join(offered) or 'none'}); start one with "
                             f"`ray start --address HEAD:PORT --resources "
                             f"'{{\"{self.resource}\": 1}}'`")
        need = self.config.threads + 1
        smallest = min(n["cpus"] for n in self.nodes)
        if self.timing_cpus_request == "node":
            cpus = smallest
        else:
            try:
                cpus = int(self.timing_cpus_request)
            except (TypeError, ValueError):
                raise HwnasError(f"timing CPUs must be 'node' or a whole number, got "
                                 f"{self.timing_cpus_request!r}") from None
        if cpus < need:
            raise HwnasError(f"a timing task on {self.resource} needs at least threads + 1 = "
                             f"{need} CPUs of its node; "
                             + (f"the smallest node offering it declares {smallest}"
                                if self.timing_cpus_request == "node" else f"got {cpus}"))
        if cpus > smallest:
            raise HwnasError(f"timing CPUs {cpus}: a node offering {self.resource} declares only "
                             f"{smallest} CPUs, so the timing could never be placed there")
        self.timing_cpus = cpus
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = _remote(_probe)
        refs = [probe.options(num_cpus=0, max_retries=MAX_RETRIES, scheduling_strategy=
                              NodeAffinitySchedulingStrategy(n["node_id"], soft=False))
                .remote(self.config.device, self.config.threads) for n in self.nodes]
        answers = ray.get(refs)
        for n, a in zip(self.nodes, answers, strict=True):
            if not a["ok"]:
                raise HwnasError(f"device {self.config.device!r} cannot run on node "
                                 f"{n['address']} ({n['node_id'][:8]}): {a['reason']}")
        from hwnas.devices.fingerprint import differences

        first = answers[0]["fingerprint"]
        for n, a in zip(self.nodes[1:], answers[1:], strict=True):
            diff = differences(first, a["fingerprint"])
            if diff:
                raise HwnasError(f"the nodes offering {self.resource} are not identical devices, "
                                 f"one profile cannot mix them (node {n['node_id'][:8]}: "
                                 + "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in diff.items())
                                 + "); give each its own resource name")
        self._device_fingerprint = first

    def _fingerprint(self) -> dict:
        return self._device_fingerprint

    def _new_record(self) -> ProfileRecord:
        record = super()._new_record()
        return replace(record, extra={**record.extra, "farm": {
            "device_resource": self.resource, "timing_cpus": self.timing_cpus,
            "nodes": len(self.nodes)}})

    def _preconvert(self, items: list[Item], phase: str) -> None:
        """Nothing: conversions are Ray tasks."""

    def _measure_kernel_nets(self) -> bool:  # refused in __init__
        raise HwnasError("--kernel-nets is not supported with --ray")

    # --- measuring ----------------------------------------------------------------------------
    def _submit(self, chunk: list[Item], index: int):
        """Submit a chunk: its conversions (unless on the device) and its timing task."""
        cfg = self.config
        reference = self._reference_item()
        artifacts = []
        if not self.convert_on_device:
            convert = _remote(_convert).options(num_cpus=1, max_retries=MAX_RETRIES)
            if self._ref_artifact is None:
                self._ref_artifact = convert.remote(cfg.device, cfg.threads, reference)
            artifacts = [convert.remote(cfg.device, cfg.threads, it) for it in chunk]
        spec = {"device": cfg.device, "threads": cfg.threads, "protocol": cfg.protocol.to_dict(),
                "seed": cfg.seed, "index": index}
        timing = _remote(_time_chunk).options(num_cpus=self.timing_cpus, max_retries=MAX_RETRIES,
                                              resources={self.resource: 1})
        return timing.remote(spec, reference, chunk, self._ref_artifact, *artifacts)

    def _measure_items(self, items: list[Item], table: str, phase: str, done_before: int,
                       total: int) -> bool:
        """Chunks converted and timed on the cluster, a few in flight per device unit; rows
        written by this driver as chunks finish. False when the time cap stopped it."""
        ray = _ray()
        key = "key" if table == "ops" else "net_id"
        have = self.writer.rows(table)
        written = set(have[key]) if len(have) else set()
        size = self.config.chunk
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        window = max(2, 2 * int(sum(n["units"] for n in self.nodes)))
        done, submitted, stopped = done_before, 0, False
        # the chunk index seeds its round order: offset it by what is already measured, so a
        # resumed profile does not replay the first chunks' orders
        base = len(self.record.reference.timings) if self.record.reference else 0
        try:
            while submitted < len(chunks) or self._pending:
                while (submitted < len(chunks) and len(self._pending) < window and not stopped):
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        stopped = True
                        break
                    ref = self._submit(chunks[submitted], base + submitted)
                    self._pending[ref] = submitted
                    submitted += 1
                if not self._pending:
                    break
                ready, _ = ray.wait(list(self._pending), num_returns=1)
                for ref in ready:
                    index = self._pending.pop(ref)
                    try:
                        answer = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise HwnasError(f"{self.config.device}: a chunk of {phase} failed on the "
                                         f"cluster after {MAX_RETRIES} retries: "
                                         f"{_first_line(e)}") from None
                    self._check_answer(answer)
                    rows = []
                    for row in answer["rows"]:
                        if row[key] not in written:
                            written.add(row[key])
                            rows.append(row)
                    if len(rows) < len(answer["rows"]):
                        self.log(f"chunk {index}: {len(answer['rows']) - len(rows)} row(s) "
                                 "already in the profile were dropped")
                    self._write_chunk(table, ChunkResult(rows, answer["reference_ms"],
                                                         answer["convert_s"], answer["timed_s"]))
                    done += len(rows)
                    self.progress(phase, done, total)
        finally:
            for ref in self._pending:
                ray.cancel(ref, force=True)
            self._pending.clear()
        return not stopped

    def _check_answer(self, answer: dict) -> None:
        """Rows measured on another device than the profile's are never written."""
        from hwnas.devices.fingerprint import differences

        diff = differences(self.record.fingerprint, answer["fingerprint"])
        if diff:
            raise HwnasError(f"node {answer['node_id'][:8]} measured on another device than "
                             f"the profile's ({'; '.join(diff)} differ); refusing its rows")

    def run(self, resume: bool = False) -> Path:
        try:
            return super().run(resume)
        finally:
            self._ref_artifact = None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"


def profile_on_ray(config: ProfileConfig, address: str | None = None,
                   device_resource: str | None = None, resume: bool = False,
                   timing_cpus: int | str = "node", convert_on_device: bool | None = None,
                   progress: Callable[[str, int, int], None] | None = None,
                   log: Callable[[str], None] | None = None) -> Path:
    """Profile `config.device` on a Ray cluster (see the module docstring); returns the profile
    directory. `address`: None/"local" (a Ray instance on this machine serving the device),
    "auto" or "host:port". Already connected to Ray: `address` is ignored."""
    resource = device_resource or resource_name(config.device)
    started = connect(address, {resource: 1})
    try:
        profiler = RayProfiler(config, resource, timing_cpus, convert_on_device, progress, log)
        if log is not None:
            log(f"profiling {config.device} on {len(profiler.nodes)} Ray node(s) offering "
                f"{resource} (timing holds {profiler.timing_cpus} CPUs) -> {profiler.root}")
        return profiler.run(resume=resume)
    finally:
        if started:
            _ray().shutdown()


def profile_farm(devices: list[str], config: ProfileConfig, out_dir: Path,
                 address: str | None = None, resume: bool = False,
                 timing_cpus: int | str = "node", resources: dict[str, str] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> list[dict]:
    """Profile several devices of a cluster at once, one profile each in `out_dir`
    (`<device>-<T>t-<space>-<resolution>`), with `config`'s settings for all. Returns one summary
    row per device (device, resource, status, ops, nets, nodes, wall_s, timed_s, path, error);
    a device that fails does not stop the others."""
    from concurrent.futures import ThreadPoolExecutor

    if not devices:
        raise HwnasError("no devices to profile")
    if len(set(devices)) != len(devices):
        raise HwnasError(f"a device is listed twice: {', '.join(devices)}")
    resources = {d: (resources or {}).get(d) or resource_name(d) for d in devices}
    started = connect(address, {r: 1 for r in resources.values()})
    out_dir = Path(out_dir)
    try:
        profilers = {}
        for device in devices:  # set-up errors (a missing resource) before anything runs
            from hwnas.space import get_space

            space = get_space(config.space, config.resolution, config.width)
            cfg = replace(config, device=device,
                          out=out_dir / default_profile_id(device, config.threads, space))
            dev_progress = (lambda phase, done, total, d=device:
                            progress(f"{d} {phase}", done, total)) if progress else None
            profilers[device] = RayProfiler(cfg, resources[device], timing_cpus, None,
                                            dev_progress, log)

        def one(device: str) -> dict:
            p = profilers[device]
            row = {"device": device, "resource": resources[device], "nodes": len(p.nodes),
                   "path": str(p.root), "error": ""}
            try:
                p.run(resume=resume)
            except HwnasError as e:
                row["error"] = str(e)
            return row

        with ThreadPoolExecutor(max_workers=len(devices)) as pool:
            rows = list(pool.map(one, devices))
    finally:
        if started:
            _ray().shutdown()
    return [_summary(row) for row in rows]


def _summary(row: dict) -> dict:
    """A farm row completed from the profile on disk (status, rows, times)."""
    from hwnas.profile.record import read_record
    from hwnas.profile.store import read_parquet

    root = Path(row["path"])
    out = {**row, "status": "failed", "ops": 0, "nets": 0, "wall_s": 0.0, "timed_s": 0.0}
    if (root / "device.json").exists():
        record = read_record(root)
        out.update(status=record.status if not row["error"] else "failed",
                   wall_s=record.wall_s, timed_s=record.timed_s)
        for table in ("ops", "nets"):
            path = root / f"{table}.parquet"
            out[table] = len(read_parquet(path)) if path.exists() else 0
    return out
