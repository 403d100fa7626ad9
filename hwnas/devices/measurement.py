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

    def merged(self, other: Measurement) -> Measurement:
        return Measurement(self.samples_ms + other.samples_ms, self.warmup + other.warmup,
                           self.flagged or other.flagged, self.attempts + other.attempts)


def warm_up(run: Callable[[], object], protocol: Protocol) -> int:
    """Untimed runs: at least `warmup_runs`, and at least `warmup_s` seconds."""
    n, start = 0, time.perf_counter()
    while n < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_s:
        run()
        n += 1
    return n


def timed_runs(run: Callable[[], object], count: int,
               timer: Callable[[], float] = time.perf_counter) -> list[float]:
    """`count` timed calls; each sample in milliseconds."""
    out = []
    for _ in range(count):
        t0 = timer()
        run()
        out.append((timer() - t0) * 1e3)
    return out


def measure_callable(run: Callable[[], object], protocol: Protocol,
                     sampler: Callable[[int], list[float]] | None = None) -> Measurement:
    """Warm up, then time rounds until the median is stable or a cap is hit; re-measure a wide one.

    `sampler(count)` returns `count` samples in ms; default: wall time of `run` with perf_counter
    (a GPU backend passes one that times with CUDA events).
    """
    sampler = sampler or (lambda count: timed_runs(run, count))
    result: Measurement | None = None
    for attempt in range(protocol.retries + 1):
        warm = warm_up(run, protocol)
        samples: list[float] = []
        prev_median: float | None = None
        start = time.perf_counter()
        while True:
            samples += sampler(protocol.round_runs)
            if _done(samples, time.perf_counter() - start, prev_median, protocol):
                break
            prev_median = float(np.median(samples))
        m = Measurement(samples, warm, attempts=attempt + 1)
        if m.spread <= protocol.max_spread:
            return m
        result = m if result is None or m.spread < result.spread else result
    assert result is not None
    result.flagged = True
    result.attempts = protocol.retries + 1
    return result


def _done(samples: list[float], elapsed: float, prev: float | None, p: Protocol) -> bool:
    if len(samples) >= p.max_runs or elapsed >= p.max_s:
        return True
    if len(samples) < p.min_runs or elapsed < p.min_s or prev is None:
        return False
    return abs(float(np.median(samples)) - prev) <= p.rel_tol * prev


def measure_interleaved(runners: dict[str, Callable[[], object]], protocol: Protocol,
                        rng: np.random.Generator | None = None,
                        on_done: Callable[[str, Measurement], None] | None = None,
                        ) -> dict[str, Measurement]:
    """Time several items in shuffled, interleaved rounds (DESIGN: measurement protocol).

    Every item is warmed up, then each round visits the unfinished items in a new random order
    and takes `round_runs` samples of each, so slow drift (heat, another process) spreads over
    all items instead of biasing the ones measured last. An item stops by the same rule as
    `measure_callable` (its own time counts only its own runs). Items whose p90/p10 stays above
    `max_spread` are measured again from scratch (`retries` times) and flagged if still wide.
    """
    rng = rng or np.random.default_rng(0)
    results: dict[str, Measurement] = {}
    pending = dict(runners)
    timed_ms = dict.fromkeys(runners, 0.0)  # all timed samples, discarded attempts included
    for attempt in range(protocol.retries + 1):
        warm = {k: warm_up(run, protocol) for k, run in pending.items()}
        samples: dict[str, list[float]] = {k: [] for k in pending}
        spent = dict.fromkeys(pending, 0.0)
        prev: dict[str, float | None] = dict.fromkeys(pending)
        active = list(pending)
        while active:
            still = []
            for k in rng.permutation(active):
                s = timed_runs(pending[k], protocol.round_runs)
                samples[k] += s
                spent[k] += sum(s) / 1e3
                timed_ms[k] += sum(s)
                if _done(samples[k], spent[k], prev[k], protocol):
                    continue
                prev[k] = float(np.median(samples[k]))
                still.append(k)
            active = still
        wide = {}
        for k in pending:
            m = Measurement(samples[k], warm[k], attempts=attempt + 1)
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
        m.extra["timed_ms_all"] = timed_ms[k]
    if on_done:
        for k, m in results.items():
            on_done(k, m)
    return results
