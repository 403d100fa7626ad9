"""Evaluators: the score of an architecture (higher is better) for the search strategies.

`Evaluator.evaluate(idx)` scores one candidate given as its choice indices (one per layer of the
space); `evaluate_many` scores an (N, layers) matrix. Each call of `evaluate` by the run loop is
one evaluation of the budget (`hwnas.search.strategy.run_strategy`).

- `TableEvaluator`: accuracy read from a published table (`hwnas.search.tables`, e.g. NATS-Bench's
  CIFAR-10 test accuracy of every NAS-Bench-201 cell): exact and free, for benchmarking strategies
  against the true optimum.

Later evaluators plug in here: accuracy with shared weights (the supernet), after training from
scratch (`hwnas.search.run.train_arch`), and zero-cost proxies.
"""

from __future__ import annotations

import abc

import numpy as np

from hwnas.search.tables import ArchTable


class Evaluator(abc.ABC):
    """Scores architectures; `name` says how (shown in summaries)."""

    name: str = "evaluator"

    @abc.abstractmethod
    def evaluate(self, idx: np.ndarray) -> float:
        """The score of one candidate (choice indices, one per layer)."""

    def evaluate_many(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        return np.asarray([self.evaluate(row) for row in idx], dtype=float)

    def __call__(self, idx: np.ndarray) -> float:
        return self.evaluate(idx)


class TableEvaluator(Evaluator):
    """A column of an accuracy table (vectorised lookup by NAS-Bench-201 index)."""

    def __init__(self, table: ArchTable) -> None:
        self.table = table
        self.name = f"table:{table.path.name}:{table.column}"

    def evaluate(self, idx: np.ndarray) -> float:
        return float(self.table.lookup(np.asarray(idx)[None, :])[0])

    def evaluate_many(self, idx: np.ndarray) -> np.ndarray:
        return self.table.lookup(idx)
