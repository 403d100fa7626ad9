"""Constraints: functions of the architecture that must be <= 0 for it to be feasible.

A `Constraint` measures a metric of each candidate (`measure(idx) -> values`, vectorised over an
(N, layers) choice-index matrix) and has a `limit`; its value is measure - limit. All of these are
cheap (a table lookup, a predictor, a sum of per-op counts), so the run loop checks them before
evaluating anything (`hwnas.search.strategy.run_strategy`).

- `LatencyConstraint(predictor, budget_ms)`: predicted latency <= budget, with any latency predictor:
  a `hwnas.latency.base.LatencyPredictor` (lookup table, learned, a benchmark's device column:
  `predict_indices`), or any object with `predict(archs) -> ms` (then a `space` decodes the rows).
- `MacsConstraint(space, max_macs)`, `ParamsConstraint(space, max_params)`: multiply-accumulates and
  parameters of the network the space builds (sums of its ops' counts, exact for the spaces' additive
  structure: `SearchSpace.fixed_ops` + `choice_ops` on `canonical_indices`).
"""

from __future__ import annotations

import abc
import math

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.search.strategy import LATENCY
from hwnas.space import SearchSpace


class Constraint(abc.ABC):
    """metric `name`, a `limit`; `measure(idx)` the metric of each row; value = measure - limit."""

    name: str = "metric"
    limit: float = math.inf

    @abc.abstractmethod
    def measure(self, idx: np.ndarray) -> np.ndarray:
        """The metric of each row of an (N, layers) choice-index matrix."""

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.measure(np.atleast_2d(idx)), dtype=float) - self.limit

    def describe(self) -> str:
        return f"{self.name} <= {self.limit:g}"


def _positive_limit(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or value <= 0:
        raise HwnasError(f"the {what} must be a positive number, got {value!r}")
    return float(value)


class LatencyConstraint(Constraint):
    """Predicted latency (ms) <= `budget_ms`."""

    name = LATENCY

    def __init__(self, predictor: object, budget_ms: float, space: SearchSpace | None = None
                 ) -> None:
        self.predictor = predictor
        self.limit = _positive_limit(budget_ms, "latency budget (ms)")
        self.space = space
        if not isinstance(predictor, LatencyPredictor):
            if space is None:
                raise HwnasError("a latency predictor that is not a LatencyPredictor needs the "
                                 "space to decode candidates (LatencyConstraint(..., space=))")
            if not callable(getattr(predictor, "predict", None)):
                raise HwnasError(f"{type(predictor).__name__} has no predict(archs) method")

    @property
    def predictor_name(self) -> str:
        return str(getattr(self.predictor, "name", type(self.predictor).__name__))

    def measure(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        if isinstance(self.predictor, LatencyPredictor):
            return np.asarray(self.predictor.predict_indices(idx), dtype=float)
        archs = [self.space.from_indices(row) for row in idx]
        return np.asarray(self.predictor.predict(archs), dtype=float)

    def describe(self) -> str:
        return f"latency by {self.predictor_name} <= {self.limit:g} ms"


class _CountConstraint(Constraint):
    """A per-op count (MACs, parameters) summed over the ops the network runs."""

    attr = "macs"

    def __init__(self, space: SearchSpace, limit: float) -> None:
        self.space = space
        self.limit = _positive_limit(limit, f"{self.name} cap")
        width = max(len(layer.choices) for layer in space.layers)
        table = np.zeros((len(space.layers), width))
        for i, layer in enumerate(space.layers):
            for j in range(len(layer.choices)):
                table[i, j] = sum(getattr(op, self.attr) for op in space.choice_ops(i, j))
        self.table = table
        self.fixed = float(sum(getattr(op, self.attr) for op in space.fixed_ops()))

    def measure(self, idx: np.ndarray) -> np.ndarray:
        idx = self.space.canonical_indices(np.atleast_2d(np.asarray(idx, dtype=np.int64)))
        rows = np.arange(self.table.shape[0])
        return self.fixed + self.table[rows[None, :], idx].sum(axis=1)


class MacsConstraint(_CountConstraint):
    """Multiply-accumulates <= `max_macs`."""

    name, attr = "macs", "macs"


class ParamsConstraint(_CountConstraint):
    """Parameters <= `max_params`."""

    name, attr = "params", "params"
