"""`hwnas profile`: measure every distinct op of a space and whole sampled networks on a device.

Items are measured in chunks: a chunk is converted and loaded, then timed in shuffled interleaved
rounds (`measure_interleaved`), then its rows are appended to the profile (atomic rewrite). The
drift reference net (`hwnas.profile.drift`) is timed in the same rounds of every chunk and its
median stored in each row (`reference_ms`) and in the record's reference timings; the record
(`ProfileRecord`, frozen) is replaced with updated progress and rewritten after every chunk.
Killed at any point, the profile keeps every finished chunk, and `--resume` measures only what
is missing (the nets to measure are fixed in plan.json at the start of the nets phase).

One chunk's conversion, loading and timing is `measure_chunk`, and writing its rows and the
record is `Profiler._write_chunk`: `hwnas.profile.farm` (`hwnas profile --ray`) runs the first
as Ray tasks on the device's node and the second in the driver, with this class's planning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from hwnas._io import now, write_json
from hwnas.devices.base import Backend
from hwnas.devices.measurement import Measurement, Protocol
from hwnas.devices.registry import get_backend
from hwnas.errors import HwnasError
from hwnas.profile.drift import reference_arch, reference_item, time_with_reference
from hwnas.profile.items import Item, build_net, build_op, load_item, net_items
from hwnas.profile.record import SCHEMA_VERSION, DriftReference, ProfileRecord
from hwnas.profile.sampling import net_id, plan_nets
from hwnas.profile.store import STAT_COLUMNS, ProfileWriter
from hwnas.space import Arch, OpSpec, SearchSpace, get_space

# re-exported: the benchmarks and tests import these from here
__all__ = ["ChunkResult", "Item", "ProfileConfig", "Profiler", "build_net", "build_op",
           "default_profile_id", "measure_chunk", "measure_items", "net_items"]


def default_profile_id(device: str, threads: int, space: SearchSpace) -> str:
    """e.g. `ort-cpu-1t-proxyless-224` (width appended when not 1.0)."""
    w = "" if space.width == 1.0 else f"-w{space.width:g}"
    return f"{device}-{threads}t-{space.name}-{space.resolution}{w}"


@dataclass
class ProfileConfig:
    device: str = "ort-cpu"
    space: str = "proxyless"
    resolution: int | None = None
    width: float = 1.0
    threads: int = 1
    nets: int = 200
    out: Path | None = None
    max_minutes: float | None = None
    seed: int = 0
    chunk: int = 16
    generic: int = 0  # extra generic ops (conv, depthwise, linear, pooling, ...) for any-model prediction
    kernel_nets: int = 0  # random networks timed kernel by kernel (`hwnas predict MODEL.onnx`)
    measure_ops: bool = True  # False: whole nets only (`hwnas adapt`)
    protocol: Protocol = field(default_factory=Protocol)

    def __post_init__(self) -> None:
        """Refuse impossible settings before anything is measured or written."""
        for name in ("nets", "generic", "kernel_nets", "seed"):
            if getattr(self, name) < 0:
                raise HwnasError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.threads < 1:
            raise HwnasError(f"threads must be >= 1, got {self.threads}")
        if self.chunk < 1:
            raise HwnasError(f"chunk must be >= 1, got {self.chunk}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise HwnasError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.out is not None:
            self.out = Path(self.out)
            if self.out.exists() and not self.out.is_dir():
                raise HwnasError(f"--out {self.out} is a file, not a profile folder")


class Profiler:
    """Runs a profile; `progress(phase, done, total)` is called as items finish."""

    def __init__(self, config: ProfileConfig,
                 progress: Callable[[str, int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda phase, done, total: None)
        self.log = log or (lambda msg: None)
        self.space = get_space(config.space, config.resolution, config.width)
        self.space.check_memory()  # the largest network must fit: refused before anything runs
        self.backend: Backend = get_backend(config.device, threads=config.threads)
        self._check_backend()
        out = config.out or Path("profiles") / default_profile_id(config.device, config.threads,
                                                                  self.space)
        self.writer = ProfileWriter(Path(out))
        self.rng = np.random.default_rng(config.seed)
        self.timed_s = 0.0
        self.convert_s = 0.0  # conversion + loading (export, session creation)
        self.deadline: float | None = None
        self._converted: dict[str, Path] = {}
        self._reference = None
        self.record: ProfileRecord | None = None  # device.json, replaced as measuring goes

    @property
    def root(self) -> Path:
        return self.writer.root

    # --- setup --------------------------------------------------------------------------------
    def _check_backend(self) -> None:
        """The device must run here (a farm profiler checks it on the device's nodes instead)."""
        ok, reason = self.backend.available()
        if not ok:
            raise HwnasError(f"device {self.config.device!r} cannot run here: {reason}")

    def _fingerprint(self) -> dict:
        """The measuring device's fingerprint (a farm profiler's comes from the device's node)."""
        return self.backend.fingerprint()

    def _new_record(self) -> ProfileRecord:
        return ProfileRecord(
            schema_version=SCHEMA_VERSION,
            created=now(),
            updated=now(),
            status="measuring",
            fingerprint=self._fingerprint(),
            backend=self.config.device,
            backend_options=self.backend.options(),
            protocol=self.config.protocol.to_dict(),
            space=self.space.name,
            space_settings={k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in self.space.settings().items()},
            nets_requested=self.config.nets,
            generic_requested=self.config.generic,
            kernel_nets_requested=self.config.kernel_nets,
            seed=self.config.seed,
            reference=DriftReference(reference_arch(self.space)),
            nets_only=not self.config.measure_ops,
        )

    def _open(self, resume: bool) -> ProfileRecord:
        self.writer.acquire()
        if self.writer.exists():
            if not resume:
                raise HwnasError(f"{self.root} already holds a profile; pass --resume to continue "
                                 "it or choose another --out")
            self.writer.check_fingerprint(self._fingerprint())
            record = self.writer.read_record()
            if record.adapted is not None:
                raise HwnasError(f"{self.root} is an adapted profile (hwnas adapt): its table "
                                 "is predicted, not measured; profile into another --out")
            theirs = (record.space, record.space_settings.get("resolution"),
                      record.space_settings.get("width"))
            mine = (self.space.name, self.space.resolution, self.space.width)
            if theirs != mine:
                raise HwnasError(f"{self.root} profiles {theirs}, not {mine}; refusing to mix")
            if record.protocol is not None and record.protocol != self.config.protocol.to_dict():
                self.log("note: the stored protocol differs from this run's; keeping the stored one")
                try:
                    self.config.protocol = Protocol(**record.protocol)
                except (TypeError, ValueError) as e:
                    raise HwnasError(f"{self.writer.record_path}: field 'protocol' is not a "
                                     f"timing protocol ({e})") from None
            # generic ops only grow: a resume without --generic still finishes the ones an
            # interrupted run asked for, and a larger --generic adds only the new ones (the
            # sample is prefix-stable, so the measured ones are skipped by key)
            if record.seed is not None and record.seed != self.config.seed:
                self.log("note: the stored seed differs from this run's; keeping the stored one")
                self.config.seed = int(record.seed)
            self.config.generic = max(record.generic_requested, self.config.generic)
            self.config.kernel_nets = max(record.kernel_nets_requested, self.config.kernel_nets)
            self._read_plan()  # a damaged plan.json is refused before anything is measured
            return replace(record, nets_requested=max(record.nets_requested, self.config.nets),
                           generic_requested=self.config.generic,
                           kernel_nets_requested=self.config.kernel_nets,
                           protocol=self.config.protocol.to_dict())
        record = self._new_record()
        self.writer.write_record(record)
        return record

    # --- measuring ----------------------------------------------------------------------------
    def _reference_item(self) -> Item:
        """The drift reference: the one the record names (a resumed profile keeps its own)."""
        ref = self.record.reference if self.record is not None else None
        return reference_item(ref.arch if ref is not None else self.space)

    def _reference_runner(self):
        """The reference net, converted and loaded once; timed inside every chunk."""
        if self._reference is None:
            item = self._reference_item()
            self._reference_dir = tempfile.TemporaryDirectory()
            path = self._convert_one(item, Path(self._reference_dir.name))
            self._reference = self.backend.load(path, item.shape)
        return self._reference

    def _convert_one(self, item: Item, workdir: Path) -> Path:
        cached = self._converted.get(item.key)
        if cached is not None:
            return cached
        torch.manual_seed(0)
        module, shape = item.build()
        return self.backend.convert(module, shape, workdir / artifact_name(self.backend, item.key))

    def _preconvert(self, items: list[Item], phase: str) -> None:
        """Bulk conversion in worker processes where the backend offers it (litert)."""
        bulk = getattr(self.backend, "convert_many", None)
        if bulk is None or not items:
            return
        t0 = time.monotonic()
        done = [0]

        def tick(_key: str) -> None:
            done[0] += 1
            self.progress(f"converting {phase}", done[0], len(items))

        items = [*items, self._reference_item()]
        self._converted = bulk([(it.key, it.build) for it in items], progress=tick)
        self.convert_s += time.monotonic() - t0

    def _measure_items(self, items: list[Item], table: str, phase: str, done_before: int,
                       total: int) -> bool:
        """Measure items chunk by chunk; False when the time cap stopped it."""
        self._preconvert(items, phase)
        done = done_before
        for start in range(0, len(items), self.config.chunk):
            if self.deadline is not None and time.monotonic() > self.deadline:
                return False
            chunk = items[start:start + self.config.chunk]
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.monotonic()
                reference = self._reference_runner()
                self.convert_s += time.monotonic() - t0
                result = measure_chunk(self.backend, chunk, reference, self.config.protocol,
                                       self.rng, Path(tmp), self._converted)
            self._write_chunk(table, result)
            done += len(chunk)
            self.progress(phase, done, total)
        return True

    def _write_chunk(self, table: str, result: ChunkResult) -> None:
        """Append a measured chunk's rows to `table` and rewrite the record (its reference
        timing, the time counters): the one writer of measured rows, local or on a farm."""
        self.convert_s += result.convert_s
        self.timed_s += result.timed_s
        self.writer.append(table, result.rows)
        ref = result.reference_ms
        self.record = self.record.updated_now(reference=self.record.reference.with_timing(ref)
                                              if self.record.reference and ref else
                                              self.record.reference)
        self.writer.write_record(self.record)

    def all_ops(self) -> list[tuple[OpSpec, str]]:
        """The space's distinct ops, then `generic` sampled generic ops: (op, source)."""
        ops = [(op, "space") for op in self.space.distinct_ops()]
        if self.config.generic:
            from hwnas.profile.generic_ops import sample_generic_ops

            known = {op.key for op, _ in ops}
            ops += [(op, "generic") for op in sample_generic_ops(self.config.generic,
                                                                 seed=self.config.seed)
                    if op.key not in known]
        return ops

    def _op_items(self, measured: set[str]) -> list[Item]:
        items = []
        for op, source in self.all_ops():
            if op.key in measured:
                continue
            items.append(Item(op.key, functools.partial(build_op, op), op.input_shape,
                              {"key": op.key, **op.to_dict(), "macs": op.macs,
                               "params": op.params, "source": source}))
        return items

    def _read_plan(self) -> list[Arch] | None:
        """The networks of plan.json, checked against the space (None: no plan yet)."""
        plan_path = self.root / "plan.json"
        if not plan_path.exists():
            return None
        from hwnas._io import read_json

        plan = read_json(plan_path)
        if not isinstance(plan, dict) or not isinstance(plan.get("archs"), list):
            raise HwnasError(f"{plan_path}: expected an object with a list 'archs'")
        try:
            archs = [Arch.from_dict(d) for d in plan["archs"]]
            for arch in archs:
                self.space.validate(arch)
        except HwnasError as e:
            raise HwnasError(f"{plan_path}: {e}") from None
        return archs

    def _plan(self, ops_df) -> list[Arch]:
        archs = self._read_plan()
        if archs is not None:
            return archs
        plan_path = self.root / "plan.json"
        cost = dict(zip(ops_df["key"], ops_df["median_ms"], strict=True)) \
            if len(ops_df) else None
        archs = plan_nets(self.space, self.config.nets, cost, seed=self.config.seed)
        write_json(plan_path, {"created": now(), "archs": [a.to_dict() for a in archs]})
        return archs

    def _net_items(self, archs: list[Arch], measured: set[str]) -> list[Item]:
        items = []
        for arch in archs:
            nid = net_id(arch)
            if nid in measured:
                continue
            ops = self.space.ops(arch)
            items.append(Item(nid, functools.partial(build_net, arch.to_json(indent=None)),
                              self.space.input_shape(),
                              {"net_id": nid, "arch": arch.to_json(indent=None),
                               "macs": sum(o.macs for o in ops),
                               "params": sum(o.params for o in ops)}))
        return items

    def run(self, resume: bool = False) -> Path:
        """Measure the ops then the nets; returns the profile directory."""
        start = time.monotonic()
        if self.config.max_minutes:
            self.deadline = start + 60 * self.config.max_minutes
        try:
            self.record = self._open(resume)
        except BaseException:
            self.writer.release()  # a refused folder is not kept locked (a no-op if not held)
            raise
        failed = True
        try:
            ops_df = self.writer.rows("ops")
            measured = set(ops_df["key"]) if len(ops_df) else set()
            op_items = self._op_items(measured) if self.config.measure_ops else []
            n_ops = len(self.all_ops()) if self.config.measure_ops else 0
            if self.config.measure_ops:
                self.progress("ops", n_ops - len(op_items), n_ops)
            complete = self._measure_items(op_items, "ops", "ops", n_ops - len(op_items), n_ops)
            if complete and self.config.nets > 0:
                archs = self._plan(self.writer.rows("ops"))
                nets_df = self.writer.rows("nets")
                measured = set(nets_df["net_id"]) if len(nets_df) else set()
                net_items = self._net_items(archs, measured)
                self.progress("nets", len(archs) - len(net_items), len(archs))
                complete = self._measure_items(net_items, "nets", "nets",
                                               len(archs) - len(net_items), len(archs))
            if complete and self.config.kernel_nets > 0:
                complete = self._measure_kernel_nets()
            self.record = replace(self.record, status="complete" if complete else "incomplete")
            if not complete:
                self.log(f"time cap reached; continue with --resume (profile {self.root})")
            failed = False
        finally:
            r = self.record
            self.record = r.updated_now(wall_s=r.wall_s + (time.monotonic() - start),
                                        timed_s=r.timed_s + self.timed_s,
                                        convert_s=r.convert_s + self.convert_s)
            try:
                self.writer.write_record(self.record)
            except HwnasError:
                if not failed:
                    raise
                # the error on its way says what went wrong (a full disk fails this write too)
            finally:
                self.writer.release()
        return self.root

    def _measure_kernel_nets(self) -> bool:
        """Random networks timed end to end and kernel by kernel (`hwnas.profile.kernel_nets`);
        False when the time cap stopped it."""
        from hwnas.profile.kernel_nets import measure_kernel_nets, supports_kernels

        if not supports_kernels(self.backend):
            self.log(f"{self.backend.name}: this runtime gives no per-kernel profile; "
                     "--kernel-nets skipped")
            return True
        n = self.config.kernel_nets
        t0 = time.monotonic()
        left = measure_kernel_nets(
            self.backend, self.root, n, self.config.protocol, self._reference_item(),
            seed=self.config.seed, deadline=self.deadline,
            progress=lambda done, total: self.progress("kernel nets", done, total))
        self.convert_s += time.monotonic() - t0  # conversion, timing and per-node profiling
        return left == 0


@dataclass
class ChunkResult:
    """One measured chunk: its rows (the item's fields, `STAT_COLUMNS`, `measured_at`,
    `reference_ms`), the drift reference's median in the same rounds, and the seconds spent
    converting + loading and timing."""

    rows: list[dict]
    reference_ms: float | None
    convert_s: float
    timed_s: float


def artifact_name(backend: Backend, key: str) -> str:
    """The file name an item's artifact is converted to (keys may be long or hold any character)."""
    return f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.{backend.artifact}"


def measure_chunk(backend: Backend, chunk: list[Item], reference, protocol: Protocol,
                  rng: np.random.Generator, workdir: Path,
                  converted: dict[str, Path] | None = None) -> ChunkResult:
    """Convert (unless `converted` holds an item's artifact) and load a chunk's items on
    `backend`, then time them in shuffled interleaved rounds beside the loaded drift `reference`
    (or alone when it is None): one chunk of a profile, wherever it runs."""
    t0 = time.monotonic()
    runners = {}
    for it in chunk:
        path = (converted or {}).get(it.key)
        if path is None:
            torch.manual_seed(0)
            module, shape = it.build()
            path = backend.convert(module, shape, Path(workdir) / artifact_name(backend, it.key))
        runners[it.key] = backend.load(path, it.shape)
    convert_s = time.monotonic() - t0
    results, drift = time_with_reference(runners, reference, protocol, rng)
    del runners
    ref = drift.reference_ms
    rows = []
    for it in chunk:
        stats = results[it.key].stats()
        rows.append({**it.row, **{k: stats[k] for k in STAT_COLUMNS}, "measured_at": now(),
                     "reference_ms": ref})
    timed_s = sum(results[it.key].extra["timed_ms_all"] for it in chunk) / 1e3
    return ChunkResult(rows, ref, convert_s, timed_s)


def measure_items(backend: Backend, items: list[Item], protocol: Protocol, chunk: int = 16,
                  seed: int = 0, reference: Item | None = None) -> dict[str, Measurement]:
    """Convert, load and time items in interleaved chunks, outside a profile (benchmarks).

    With `reference` (usually `hwnas.profile.drift.reference_item`), that item is timed inside
    every chunk too (same rounds, same conditions) and its median is stored in each item's
    `extra["reference_ms"]`, so slow drift of the machine between chunks or passes can be
    measured and divided out.
    """
    rng = np.random.default_rng(seed)
    everything = items + ([reference] if reference else [])
    bulk = getattr(backend, "convert_many", None)
    converted = bulk([(it.key, it.build) for it in everything]) if bulk else {}
    out: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref_run = load_item(backend, reference, Path(tmp), converted) if reference else None
        for start in range(0, len(items), chunk):
            runners = {it.key: load_item(backend, it, Path(tmp), converted)
                       for it in items[start:start + chunk]}
            res, drift = time_with_reference(runners, ref_run, protocol, rng)
            for m in res.values():
                m.extra["reference_ms"] = drift.reference_ms
            out.update(res)
    return out


def measure_beside_reference(backend: Backend, profile, archs: list[Arch], protocol: Protocol,
                             seed: int = 0) -> dict[str, dict]:
    """Whole networks of `profile`'s space measured in one interleaved run with the profile's
    drift reference (when it has one); per `net_id` (a net listed twice is measured once): raw
    median, p10/p90, runs, flagged, the reference's time in the same rounds and the drift factor
    reference / the profile's reference speed (1.0 without a reference)."""
    items, keys = [], set()
    for it in net_items(profile.space, archs):
        if it.key not in keys:
            keys.add(it.key)
            items.append(it)
    ref, base = profile.reference_arch(), profile.reference_ms()
    ref_item = reference_item(ref) if ref is not None and base is not None else None
    res = measure_items(backend, items, protocol, chunk=len(items) + 1, seed=seed,
                        reference=ref_item)
    out = {}
    for it in items:
        m = res[it.key]
        ref_ms = m.extra.get("reference_ms")
        out[it.key] = {"measured_ms": m.median, "p10_ms": m.p10, "p90_ms": m.p90, "runs": m.n,
                       "flagged": m.flagged, "reference_ms": ref_ms,
                       "drift": ref_ms / base if ref_ms and base else 1.0}
    return out


def measure_file(backend: Backend, path: Path, input_shape: tuple[int, ...], protocol: Protocol,
                 profile=None, seed: int = 0) -> dict:
    """`hwnas measure MODEL`: a model file timed with the profiling protocol (warm-up,
    shuffled interleaved rounds with the drift reference, the busy-machine rule), exactly as a
    profile's rows are timed. With `profile`, the reference is that profile's and the result
    also gives the time scaled to the profile's speed (None when the machine was busy);
    without one, the reference is the proxyless space's at the model's resolution.
    """
    from hwnas.space import get_space

    path = Path(path)
    if profile is not None and profile.reference_arch() is not None:
        ref_item, base = reference_item(profile.reference_arch()), profile.reference_ms()
    else:
        ref_item, base = reference_item(get_space("proxyless", 224)), None
    runner = _load_file(backend, path, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        reference = load_item(backend, ref_item, Path(tmp))
        res, drift = time_with_reference({"model": runner}, reference, protocol,
                                         np.random.default_rng(seed), base)
        runner.close()
        reference.close()
    m = res["model"]
    return {"file": str(path), "device": backend.name, "input_shape": list(input_shape),
            **m.stats(), "reference_ms": drift.reference_ms, "profile_reference_ms": base,
            "drift_scale": drift.scale, "scaled_ms": drift.correct(m.median) if base else None,
            "drift_note": drift.note, "fingerprint": backend.fingerprint(),
            "protocol": protocol.to_dict()}


def _load_file(backend: Backend, path: Path, input_shape: tuple[int, ...]):
    """The runner of a model file, run once: a file its runtime refuses to load or run (an
    invalid graph, shapes that do not fit) is an `HwnasError` naming it, before any timing."""
    from hwnas.devices.measurement import as_runner

    try:
        if Path(path).suffix == ".onnx":
            _run_onnx_once(path, input_shape)
            runner = as_runner(backend.load(path, input_shape))
        else:
            runner = as_runner(backend.load(path, input_shape))
            with contextlib.suppress(NotImplementedError):  # a runner that only times (adb)
                runner()
    except HwnasError:
        raise
    except Exception as e:  # the runtime's own error types (onnxruntime, LiteRT)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise HwnasError(f"{path}: {backend.name} cannot run this model ({first})") from None
    return runner


def _run_onnx_once(path: Path, input_shape: tuple[int, ...]) -> None:
    """One run of an ONNX file on onnxruntime's CPU provider with its logging off: a model it
    cannot run raises here, once, instead of also printing the runtime's own error lines."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    run = ort.RunOptions()
    run.log_severity_level = 4
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {sess.get_inputs()[0].name: np.zeros(input_shape, np.float32)}, run)
