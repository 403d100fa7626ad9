"""`Measurement` (every sample kept) and `Protocol` (how long and how carefully to time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Protocol:
    """The timing protocol; part of a profile's identity (stored in device.json).

    warmup_runs / warmup_s: untimed runs first (whichever ends later).
    Then timed runs in rounds of `round_runs` until, after at least `min_runs` runs and `min_s`
    seconds, the median of all samples moved less than `rel_tol` since the previous round, or
    `max_runs` / `max_s` is reached. A result whose p90/p10 exceeds `max_spread` is measured again
    (up to `retries` times) and flagged if it stays wide.
    """

    warmup_runs: int = 5
    warmup_s: float = 0.05
    min_runs: int = 20
    min_s: float = 0.8
    max_runs: int = 400
    max_s: float = 3.0
    round_runs: int = 10
    rel_tol: float = 0.005
    max_spread: float = 1.25
    retries: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def quick(cls) -> Protocol:
        """A cheaper protocol for tests and demos."""
        return cls(warmup_runs=2, warmup_s=0.0, min_runs=5, min_s=0.02, max_runs=50, max_s=0.5)


@dataclass
class Measurement:
    """All timed samples of one item (milliseconds) with their summary statistics."""

    samples_ms: list[float]
    warmup: int = 0
    flagged: bool = False
    attempts: int = 1
    extra: dict = field(default_factory=dict)

    def _a(self) -> np.ndarray:
        return np.asarray(self.samples_ms, dtype=np.float64)

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median(self) -> float:
        return float(np.median(self._a()))

    @property
    def min(self) -> float:
        return float(self._a().min())

    @property
    def p10(self) -> float:
        return float(np.percentile(self._a(), 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self._a(), 90))

    @property
    def mean(self) -> float:
        return float(self._a().mean())

    @property
    def cv(self) -> float:
        """Coefficient of variation (std / mean)."""
        a = self._a()
        return float(a.std(ddof=1) / a.mean()) if a.size > 1 and a.mean() > 0 else 0.0

    @property
    def spread(self) -> float:
        """p90 / p10: the width of the bulk of the distribution."""
        return self.p90 / self.p10 if self.p10 > 0 else float("inf")

    def stats(self) -> dict:
        """The summary stored in a profile row."""
        return {"median_ms": self.median, "min_ms": self.min, "p10_ms": self.p10,
                "p90_ms": self.p90, "cv": self.cv, "n": self.n, "warmup": self.warmup,
                "flagged": self.flagged}



class Runner:
    """A loaded artifact, ready to run: the one timing path of every backend.

    `runner()` runs one inference. `time(count)` runs `count` timed inferences and returns
    their times in ms. The default times each call with the host's wall clock
    (`time.perf_counter`); a backend whose runtime has a better clock overrides `time`: GPU
    backends use CUDA events (`hwnas.devices.torch_cuda.CudaEventRunner`), the phone backend
    uses `benchmark_model`'s own figures. The profiler, `hwnas export --verify` and
    `Backend.measure` all time through `measure_interleaved`, which calls `time` and nothing
    else, so a profile records what the runtime's clock says.

    `time` may return fewer samples than `count` when one sample summarises several runs (a
    `benchmark_model` invocation reports its mean); the protocol counts runs, not samples.
    `extra()` adds backend-specific detail (a per-op table) to the `Measurement`; `warm_up`
    and `close` are hooks for runtimes that warm up inside each timed call or hold a resource.
    """

    def __init__(self, run: Callable[[], object] | None = None) -> None:
        self._run = run

    def __call__(self) -> object:
        if self._run is None:
            raise NotImplementedError(f"{type(self).__name__} defines no inference call")
        return self._run()

    def warm_up(self, protocol: Protocol) -> int:
        """Untimed runs before timing; returns how many ran."""
        return warm_up(self, protocol)

    def time(self, count: int) -> list[float]:
        return timed_runs(self, count)

    def extra(self) -> dict:
        return {}

    def close(self) -> None:
        """Release what loading took (a file on a phone); the default holds nothing."""


def as_runner(run: Runner | Callable[[], object]) -> Runner:
    """A `Runner` as it is; a plain callable wrapped in a wall-clock `Runner`."""
    return run if isinstance(run, Runner) else Runner(run)


def warm_up(run: Callable[[], object], protocol: Protocol) -> int:
    """Untimed runs: at least `warmup_runs`, and at least `warmup_s` seconds."""
    n, start = 0, time.perf_counter()
    while n < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_s:
        run()
        n += 1
    return n


def timed_runs(run: Callable[[], object], count: int,
               timer: Callable[[], float] = time.perf_counter) -> list[float]:
    """`count` wall-clock timed calls; each sample in milliseconds."""
    out = []
    for _ in range(count):
        t0 = timer()
        run()
        out.append((timer() - t0) * 1e3)
    return out


def measure_callable(run: Runner | Callable[[], object], protocol: Protocol) -> Measurement:
    """Warm up, then time rounds until the median is stable or a cap is hit; re-measure a wide
    one. The one-item case of `measure_interleaved` (the same code, the same stop rule)."""
    return measure_interleaved({"item": run}, protocol)["item"]


def _done(samples: list[float], runs: int, elapsed: float, prev: float | None,
          p: Protocol) -> bool:
    if runs >= p.max_runs or elapsed >= p.max_s:
        return True
    if runs < p.min_runs or elapsed < p.min_s or prev is None:
        return False
    return abs(float(np.median(samples)) - prev) <= p.rel_tol * prev


def measure_interleaved(runners: dict[str, Runner | Callable[[], object]], protocol: Protocol,
                        rng: np.random.Generator | None = None,
                        on_done: Callable[[str, Measurement], None] | None = None,
                        ) -> dict[str, Measurement]:
    """Time several items in shuffled, interleaved rounds (the measurement protocol).

    Every item is warmed up, then each round visits the unfinished items in a new random order
    and takes `round_runs` runs of each through `Runner.time` (the runtime's own clock), so slow
    drift (heat, another process) spreads over all items instead of biasing the ones measured
    last. An item stops after at least `min_runs` runs and `min_s` of its own timed time once its
    median moved less than `rel_tol` since the previous round, or at `max_runs` / `max_s`. Items
    whose p90/p10 stays above `max_spread` are measured again from scratch (`retries` times) and
    flagged if still wide; the narrower attempt is kept.
    """
    rng = rng or np.random.default_rng(0)
    runners = {k: as_runner(r) for k, r in runners.items()}
    results: dict[str, Measurement] = {}
    pending = dict(runners)
    timed_ms = dict.fromkeys(runners, 0.0)  # all timed run time, discarded attempts included
    tries = dict.fromkeys(runners, 0)
    for _attempt in range(protocol.retries + 1):
        for k in pending:
            tries[k] += 1
        warm = {k: run.warm_up(protocol) for k, run in pending.items()}
        samples: dict[str, list[float]] = {k: [] for k in pending}
        runs = dict.fromkeys(pending, 0)
        spent = dict.fromkeys(pending, 0.0)
        prev: dict[str, float | None] = dict.fromkeys(pending)
        active = list(pending)
        while active:
            still = []
            for k in rng.permutation(active):
                s = pending[k].time(protocol.round_runs)
                if not s:
                    raise RuntimeError(f"{type(pending[k]).__name__}.time() returned no sample")
                per_sample = protocol.round_runs / len(s)  # runs one sample stands for
                samples[k] += s
                runs[k] += protocol.round_runs
                spent[k] += sum(s) * per_sample / 1e3
                timed_ms[k] += sum(s) * per_sample
                if _done(samples[k], runs[k], spent[k], prev[k], protocol):
                    continue
                prev[k] = float(np.median(samples[k]))
                still.append(k)
            active = still
        wide = {}
        for k in pending:
            m = Measurement(samples[k], warm[k])
            best = results.get(k)
            if best is None or m.spread < best.spread:
                results[k] = m
            if m.spread > protocol.max_spread:
                wide[k] = pending[k]
        pending = wide
        if not pending:
            break
    for k in pending:
        results[k].flagged = True
    for k, m in results.items():
        m.attempts = tries[k]  # every attempt made, the discarded ones included
        m.extra.update(runners[k].extra())
        m.extra["timed_ms_all"] = timed_ms[k]
    if on_done:
        for k, m in results.items():
            on_done(k, m)
    return results
