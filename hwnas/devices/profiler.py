"""`hwnas profile`: measure every distinct op of a space and whole sampled networks on a device.

Items are measured in chunks: a chunk is converted and loaded, then timed in shuffled interleaved
rounds (`measure_interleaved`), then its rows are appended to the profile (atomic rewrite). A
fixed reference block is timed before every chunk to record drift. Killed at any point, the profile
keeps every finished chunk, and `--resume` measures only what is missing (the nets to measure are
fixed in plan.json at the start of the nets phase).
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.devices.base import Backend
from hwnas.devices.measurement import Measurement, Protocol, measure_interleaved
from hwnas.devices.registry import get_backend
from hwnas.devices.sampling import net_id, plan_nets
from hwnas.devices.store import SCHEMA_VERSION, STAT_COLUMNS, ProfileWriter, now, write_json
from hwnas.errors import HwnasError
from hwnas.space import Arch, OpSpec, SearchSpace, get_space, space_of

REFERENCE = "__reference__"


def default_profile_id(device: str, threads: int, space: SearchSpace) -> str:
    """e.g. `ort-cpu-1t-proxyless-224` (width appended when not 1.0)."""
    w = "" if space.width == 1.0 else f"-w{space.width:g}"
    return f"{device}-{threads}t-{space.name}-{space.resolution}{w}"


def build_op(op: OpSpec) -> tuple[nn.Module, tuple[int, ...]]:
    return op.module(), op.input_shape


def build_net(arch_json: str) -> tuple[nn.Module, tuple[int, ...]]:
    arch = Arch.from_json(arch_json)
    space = space_of(arch)
    return space.build(arch), space.input_shape()


@dataclass
class Item:
    """One thing to measure: an op (lookup-table row) or a whole net."""

    key: str
    build: Callable[[], tuple[nn.Module, tuple[int, ...]]]
    shape: tuple[int, ...]
    row: dict = field(default_factory=dict)


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
    protocol: Protocol = field(default_factory=Protocol)


class Profiler:
    """Runs a profile; `progress(phase, done, total)` is called as items finish."""

    def __init__(self, config: ProfileConfig,
                 progress: Callable[[str, int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda phase, done, total: None)
        self.log = log or (lambda msg: None)
        self.space = get_space(config.space, config.resolution, config.width)
        self.backend: Backend = get_backend(config.device, threads=config.threads)
        ok, reason = self.backend.available()
        if not ok:
            raise HwnasError(f"device {config.device!r} cannot run here: {reason}")
        out = config.out or Path("profiles") / default_profile_id(config.device, config.threads,
                                                                  self.space)
        self.writer = ProfileWriter(Path(out))
        self.rng = np.random.default_rng(config.seed)
        self.timed_s = 0.0
        self.convert_s = 0.0  # conversion + loading (export, session creation)
        self.deadline: float | None = None
        self._converted: dict[str, Path] = {}
        self._reference = None

    @property
    def root(self) -> Path:
        return self.writer.root

    # --- setup --------------------------------------------------------------------------------
    def _new_device(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": now(),
            "updated": now(),
            "status": "measuring",
            "fingerprint": self.backend.fingerprint(),
            "backend": self.config.device,
            "backend_options": self.backend.options(),
            "protocol": self.config.protocol.to_dict(),
            "space": self.space.name,
            "space_settings": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in self.space.settings().items()},
            "nets_requested": self.config.nets,
            "generic_requested": self.config.generic,
            "seed": self.config.seed,
            "wall_s": 0.0,
            "timed_s": 0.0,
            "reference": {"arch": self.reference_arch().to_dict(), "timings": [],
                          "note": "timed inside every chunk; rows keep raw statistics and "
                                  "reference_ms, Profile.load divides the drift out"},
        }

    def _open(self, resume: bool) -> dict:
        self.writer.acquire()
        if self.writer.exists():
            if not resume:
                raise HwnasError(f"{self.root} already holds a profile; pass --resume to continue "
                                 "it or choose another --out")
            self.writer.check_fingerprint(self.backend.fingerprint())
            device = self.writer.read_device()
            theirs = (device.get("space"), device.get("space_settings", {}).get("resolution"),
                      device.get("space_settings", {}).get("width"))
            mine = (self.space.name, self.space.resolution, self.space.width)
            if theirs != mine:
                raise HwnasError(f"{self.root} profiles {theirs}, not {mine}; refusing to mix")
            if device.get("protocol") != self.config.protocol.to_dict():
                self.log("note: the stored protocol differs from this run's; keeping the stored one")
                self.config.protocol = Protocol(**device["protocol"])
            device["nets_requested"] = max(device.get("nets_requested", 0), self.config.nets)
            # generic ops only grow: a resume without --generic still finishes the ones an
            # interrupted run asked for, and a larger --generic adds only the new ones (the
            # sample is prefix-stable, so the measured ones are skipped by key)
            if device.get("seed", self.config.seed) != self.config.seed:
                self.log("note: the stored seed differs from this run's; keeping the stored one")
                self.config.seed = int(device["seed"])
            self.config.generic = max(device.get("generic_requested", 0), self.config.generic)
            device["generic_requested"] = self.config.generic
            return device
        device = self._new_device()
        self.writer.write_device(device)
        return device

    def reference_arch(self) -> Arch:
        """The drift reference: a fixed mid-cost net of the space (the middle choice per layer)."""
        return self.space.from_indices([len(layer.choices) // 2 for layer in self.space.layers])

    def _reference_item(self) -> Item:
        arch = self.reference_arch()
        return Item("reference-" + net_id(arch), functools.partial(build_net, arch.to_json(indent=None)),
                    self.space.input_shape())

    # --- measuring ----------------------------------------------------------------------------
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
        return self.backend.convert(module, shape, workdir / f"{abs(hash(item.key))}."
                                                          f"{self.backend.artifact}")

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

    def _measure_items(self, items: list[Item], table: str, device: dict, phase: str,
                       done_before: int, total: int) -> bool:
        """Measure items chunk by chunk; False when the time cap stopped it."""
        self._preconvert(items, phase)
        done = done_before
        for start in range(0, len(items), self.config.chunk):
            if self.deadline is not None and time.monotonic() > self.deadline:
                return False
            chunk = items[start:start + self.config.chunk]
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.monotonic()
                runners = {REFERENCE: self._reference_runner()}
                for it in chunk:
                    path = self._convert_one(it, Path(tmp))
                    runners[it.key] = self.backend.load(path, it.shape)
                self.convert_s += time.monotonic() - t0
                results = measure_interleaved(runners, self.config.protocol, self.rng)
                del runners
            ref = results[REFERENCE].median
            device["reference"]["timings"].append([now(), round(ref, 6)])
            rows = [{**self._row(it, results[it.key]), "reference_ms": ref} for it in chunk]
            self.timed_s += sum(results[it.key].extra["timed_ms_all"] for it in chunk) / 1e3
            self.writer.append(table, rows)
            device["updated"] = now()
            self.writer.write_device(device)
            done += len(chunk)
            self.progress(phase, done, total)
        return True

    @staticmethod
    def _row(item: Item, m: Measurement) -> dict:
        stats = m.stats()
        return {**item.row, **{k: stats[k] for k in STAT_COLUMNS}, "measured_at": now()}

    def all_ops(self) -> list[tuple[OpSpec, str]]:
        """The space's distinct ops, then `generic` sampled generic ops: (op, source)."""
        ops = [(op, "space") for op in self.space.distinct_ops()]
        if self.config.generic:
            from hwnas.devices.generic import sample_generic_ops

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

    def _plan(self, ops_df) -> list[Arch]:
        plan_path = self.root / "plan.json"
        if plan_path.exists():
            import json

            return [Arch.from_dict(d) for d in json.loads(plan_path.read_text())["archs"]]
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
        device = self._open(resume)
        try:
            ops_df = self.writer.rows("ops")
            measured = set(ops_df["key"]) if len(ops_df) else set()
            op_items = self._op_items(measured)
            n_ops = len(self.all_ops())
            self.progress("ops", n_ops - len(op_items), n_ops)
            complete = self._measure_items(op_items, "ops", device, "ops",
                                           n_ops - len(op_items), n_ops)
            if complete and self.config.nets > 0:
                archs = self._plan(self.writer.rows("ops"))
                nets_df = self.writer.rows("nets")
                measured = set(nets_df["net_id"]) if len(nets_df) else set()
                net_items = self._net_items(archs, measured)
                self.progress("nets", len(archs) - len(net_items), len(archs))
                complete = self._measure_items(net_items, "nets", device, "nets",
                                               len(archs) - len(net_items), len(archs))
            device["status"] = "complete" if complete else "incomplete"
            if not complete:
                self.log(f"time cap reached; continue with --resume (profile {self.root})")
        finally:
            device["wall_s"] = device.get("wall_s", 0.0) + (time.monotonic() - start)
            device["timed_s"] = device.get("timed_s", 0.0) + self.timed_s
            device["convert_s"] = device.get("convert_s", 0.0) + self.convert_s
            device["updated"] = now()
            self.writer.write_device(device)
            self.writer.release()
        return self.root


def net_items(space: SearchSpace, archs: list[Arch]) -> list[Item]:
    """Items for whole networks (the same builder the profiler uses)."""
    return [Item(net_id(a), functools.partial(build_net, a.to_json(indent=None)),
                 space.input_shape()) for a in archs]


def measure_items(backend: Backend, items: list[Item], protocol: Protocol, chunk: int = 16,
                  seed: int = 0, reference: Item | None = None) -> dict[str, Measurement]:
    """Convert, load and time items in interleaved chunks, outside a profile (benchmarks).

    With `reference`, that item is timed inside every chunk too (same rounds, same conditions)
    and its median is stored in each item's `extra["reference_ms"]`, so slow drift of the machine
    between chunks or passes can be measured and divided out.
    """
    rng = np.random.default_rng(seed)
    everything = items + ([reference] if reference else [])
    bulk = getattr(backend, "convert_many", None)
    converted = bulk([(it.key, it.build) for it in everything]) if bulk else {}
    out: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def load(it: Item):
            path = converted.get(it.key)
            if path is None:
                torch.manual_seed(0)
                module, shape = it.build()
                path = backend.convert(module, shape, Path(tmp) / f"{it.key}.{backend.artifact}")
            return backend.load(path, it.shape)

        ref_run = load(reference) if reference else None
        for start in range(0, len(items), chunk):
            runners = {it.key: load(it) for it in items[start:start + chunk]}
            if ref_run is not None:
                runners["__reference__"] = ref_run
            res = measure_interleaved(runners, protocol, rng)
            ref = res.pop("__reference__", None)
            for m in res.values():
                m.extra["reference_ms"] = ref.median if ref else None
            out.update(res)
    return out
