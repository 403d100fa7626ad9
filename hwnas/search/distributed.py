"""Search candidates scored on a Ray cluster: the `evaluate_many` of `run_strategy`.

`hwnas search --method evolution|random|reinforce|tpe|nsga2 ... --batch N --ray [ADDRESS]`
asks N candidates at a time (`run_strategy`'s batched ask/tell) and scores the new ones as
Ray tasks, one per candidate, on any CPU of the cluster; the driver keeps the strategy, writes
the trajectory and resumes it exactly as without Ray (`hwnas.search.strategy`). The evaluator
(an `hwnas.search.evaluators.Evaluator`: a table lookup, a zero-cost proxy on a minibatch, a
ParZC model) is put in Ray's object store once and shared by the tasks. A task whose worker
dies is run again (`max_retries`); an evaluator's own error ends the search with its message.

Ray is imported only here, and only when `--ray` is given (`hwnas.profile.farm.connect`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.profile.farm import MAX_RETRIES, _ray, connect


def _score(evaluate: Callable[[np.ndarray], float], idx: np.ndarray, threads: int) -> float:
    """One candidate's score inside a Ray task (torch limited to the task's CPUs)."""
    import torch

    torch.set_num_threads(max(1, threads))
    return float(evaluate(np.asarray(idx, dtype=np.int64)))


class RayEvaluateMany:
    """`evaluate_many` for `run_strategy`: the candidates of a group as Ray tasks holding
    `cpus` CPUs each; `close()` stops the Ray instance this object started (not a cluster it
    joined)."""

    def __init__(self, evaluate: Callable[[np.ndarray], float], address: str | None = None,
                 cpus: int = 1) -> None:
        if cpus < 1:
            raise HwnasError(f"--ray: each evaluation needs at least one CPU, got {cpus}")
        self.ray = _ray()
        self.started = connect(address)
        self.cpus = int(cpus)
        self._evaluate = self.ray.put(evaluate)
        self._task = self.ray.remote(num_cpus=self.cpus, max_retries=MAX_RETRIES)(_score)
        self.calls = 0

    def __call__(self, idxs: Sequence[np.ndarray]) -> list[float]:
        refs = [self._task.remote(self._evaluate, np.asarray(i), self.cpus) for i in idxs]
        self.calls += 1
        try:
            return [float(v) for v in self.ray.get(refs)]
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, HwnasError):
                raise HwnasError(str(cause)) from None
            raise HwnasError(f"a search evaluation failed on the Ray cluster: "
                             f"{type(cause).__name__}: {str(cause).splitlines()[0]:.200}") \
                from None

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


__all__ = ["RayEvaluateMany"]
