"""Search strategies on the ask/tell API (`hwnas.search.strategy`).

- `RandomSearch`: uniform draws, one choice per layer (Li & Talwalkar 2019 as a baseline).
- `RegularizedEvolution`: aging evolution, Real et al., "Regularized Evolution for Image Classifier
  Architecture Search", AAAI 2019, Algorithm 1: a population (a queue) of `population_size`
  evaluated archs seeded with random ones; each cycle samples `sample_size` members uniformly
  with replacement (tournament), mutates the best of them (one layer, chosen uniformly, switched to
  a different choice, chosen uniformly), evaluates the child, appends it and removes the OLDEST
  member (not the worst: aging). As in NAS-Bench-201's `R_EA.py`, only the mutation operator.
  Defaults population 50, tournament 10 (Real et al. used 100 / 25 for 20,000 models, NAS-Bench-201
  10 / 3): on the tabular benchmark (benchmarks/tabular_search.py, NAS-Bench-201 under latency
  budgets) 50 / 10 had the lowest mean regret at 300 and 1000 evaluations among 20/5, 20/10,
  30/10, 30/15, 40/10, 50/10, 50/25, 64/16, 100/25 and 100/50, though within about 0.05 accuracy
  points of most of them (seed noise is of that order). `mutation="rate"` (each layer switched
  with probability 1/layers, at least one) is offered too; it did not do better there.
  Here, because constraints are cheap: a child that is infeasible (or already evaluated) is not
  evaluated and not added; a new child is drawn (a new tournament and mutation) instead, free of
  charge; after `max_redraws` rejected children in a row, a uniformly random candidate is asked
  instead (an escape; the loop's `max_asks` caps the run in any case). The population therefore
  holds only feasible evaluated archs, and the result (the best feasible evaluated trial) is
  never infeasible.
- `Reinforce`: REINFORCE (Williams 1992) with an independent categorical policy per layer
  (logits initialised at 1e-3 N(0, 1), Adam lr 0.01, an exponential moving average baseline of
  momentum 0.9, one sample per step: NATS-Bench's `reinforce.py` settings), and the latency-aware
  reward of MnasNet (Tan et al., CVPR 2019, Eq. 2) that ProxylessNAS uses for its REINFORCE
  variant: R = ACC x (LAT / T)^w, w = alpha where LAT <= T and beta otherwise, default
  alpha = beta = -0.07 (MnasNet's soft constraint, "w = -0.07 on both sides"). An infeasible
  sample is not evaluated: its ACC is taken as the moving average of the evaluated accuracies,
  so it still gets a reward (lower than average, by (LAT/T)^beta) and its choices are pushed down.
  A duplicate is told its cached accuracy and updates the policy like a fresh one.
- `OptunaStrategy`: Optuna's `TPESampler` (Bergstra et al. 2011; Optuna's defaults) and
  `NSGAIISampler` (Deb et al. 2002) through the real `optuna` library, one
  `CategoricalDistribution` per layer, the constraints passed as Optuna's `constraints_func`
  (c-TPE style feasibility for TPE, constrained domination for NSGA-II). TPE maximises the score;
  NSGA-II optimises (score max, latency min) when the run measures latency, else the score alone.
  A candidate that was not evaluated (infeasible) is told with score 0: both samplers rank an
  infeasible trial by its constraint violation, not by its value.

`make_strategy(name, sizes, seed, **options)` builds one by name: random, evolution, reinforce,
tpe, nsga2.
"""

from __future__ import annotations

import collections
import math
import warnings
from collections.abc import Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.search.strategy import DUPLICATE, EVALUATED, INFEASIBLE, LATENCY, Strategy, Trial


class RandomSearch(Strategy):
    """Uniform random candidates (duplicates and infeasible ones are re-drawn by the loop)."""

    name = "random"

    def ask(self) -> np.ndarray:
        return self.random_indices()

    def tell(self, trial: Trial) -> None:
        pass


class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al. 2019, Algorithm 1); see the module docstring."""

    name = "evolution"

    def __init__(self, sizes: Sequence[int], seed: int = 0, population_size: int = 50,
                 sample_size: int = 10, max_redraws: int = 200, mutation: str = "edge") -> None:
        super().__init__(sizes, seed)
        if mutation not in ("edge", "rate"):
            raise HwnasError(f"unknown mutation {mutation!r}; use edge or rate")
        self.mutation = mutation
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise HwnasError(f"evolution needs population_size >= 2 and 1 <= sample_size <= "
                             f"population_size, got {population_size} and {sample_size}")
        if (self.sizes < 2).all():
            raise HwnasError("evolution needs at least one layer with two choices to mutate")
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.max_redraws = int(max_redraws)
        self.population: collections.deque[tuple[tuple[int, ...], float]] = collections.deque()
        self.rejected = 0  # children rejected in a row (infeasible or seen)
        self.escapes = 0

    def settings(self) -> dict:
        return {**super().settings(), "population_size": self.population_size,
                "sample_size": self.sample_size, "max_redraws": self.max_redraws,
                "mutation": self.mutation}

    def mutate(self, parent: tuple[int, ...]) -> np.ndarray:
        """`edge`: one layer (uniform among those with a choice to change) switched to a
        different choice (uniform among the others). `rate`: each such layer switched with
        probability 1 / layers, drawn again until at least one is."""
        child = np.asarray(parent, dtype=np.int64).copy()
        mutable = np.flatnonzero(self.sizes > 1)
        if self.mutation == "edge":
            layers = [int(mutable[self.rng.integers(len(mutable))])]
        else:
            while True:
                layers = [int(i) for i in mutable if self.rng.random() < 1.0 / len(mutable)]
                if layers:
                    break
        for layer in layers:
            step = int(self.rng.integers(1, self.sizes[layer]))  # 1..n-1: never the same choice
            child[layer] = (child[layer] + step) % self.sizes[layer]
        return child

    def ask(self) -> np.ndarray:
        if len(self.population) < self.population_size:
            return self.random_indices()  # seeding the population
        if self.rejected >= self.max_redraws:
            self.escapes += 1
            self.rejected = 0
            return self.random_indices()
        picks = self.rng.integers(0, len(self.population), self.sample_size)  # with replacement
        parent = max((self.population[int(k)] for k in picks), key=lambda m: m[1])
        return self.mutate(parent[0])

    def tell(self, trial: Trial) -> None:
        if trial.status != EVALUATED:  # infeasible or already seen: not a new member
            if len(self.population) >= self.population_size:
                self.rejected += 1
            return
        self.rejected = 0
        self.population.append((trial.indices, float(trial.score)))
        if len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest goes, whatever its score


class Reinforce(Strategy):
    """REINFORCE with a per-layer categorical policy and the MnasNet reward; see the module
    docstring. `target_ms` is the latency target T (None: reward = accuracy)."""

    name = "reinforce"

    def __init__(self, sizes: Sequence[int], seed: int = 0, target_ms: float | None = None,
                 alpha: float = -0.07, beta: float = -0.07, lr: float = 0.01,
                 momentum: float = 0.9) -> None:
        super().__init__(sizes, seed)
        if target_ms is not None and not (math.isfinite(target_ms) and target_ms > 0):
            raise HwnasError(f"the REINFORCE latency target must be a positive number of ms, "
                             f"got {target_ms!r}")
        self.target_ms, self.alpha, self.beta = target_ms, float(alpha), float(beta)
        self.lr, self.momentum = float(lr), float(momentum)
        width = int(self.sizes.max())
        self.mask = np.arange(width)[None, :] < self.sizes[:, None]
        self.logits = np.where(self.mask, 1e-3 * self.rng.standard_normal((len(self.sizes), width)),
                               -np.inf)
        self._m = np.zeros_like(self.logits, dtype=float)
        self._v = np.zeros_like(self.logits, dtype=float)
        self._t = 0
        self._baseline = [0.0, 0.0]  # EMA numerator, denominator (bias-corrected, as NATS-Bench)
        self._acc = [0.0, 0.0]  # EMA of the evaluated accuracies (infeasible samples' ACC)

    def settings(self) -> dict:
        return {**super().settings(), "target_ms": self.target_ms, "alpha": self.alpha,
                "beta": self.beta, "lr": self.lr, "momentum": self.momentum}

    def probs(self) -> np.ndarray:
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        p = np.where(self.mask, np.exp(z), 0.0)
        return p / p.sum(axis=1, keepdims=True)

    def ask(self) -> np.ndarray:
        p = self.probs()
        u = self.rng.random(len(self.sizes))
        idx = (p.cumsum(axis=1) < u[:, None]).sum(axis=1)
        return np.minimum(idx, self.sizes - 1)

    def argmax(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def _ema(self, state: list[float], value: float) -> float:
        state[0] = self.momentum * state[0] + (1 - self.momentum) * value
        state[1] = self.momentum * state[1] + (1 - self.momentum)
        return state[0] / state[1]

    def reward(self, accuracy: float, latency_ms: float | None) -> float:
        """MnasNet Eq. 2: ACC x (LAT / T)^w."""
        if self.target_ms is None or latency_ms is None:
            return accuracy
        ratio = latency_ms / self.target_ms
        return accuracy * ratio ** (self.alpha if ratio <= 1 else self.beta)

    def tell(self, trial: Trial) -> None:
        if trial.status in (EVALUATED, DUPLICATE):
            acc = float(trial.score)
            self._ema(self._acc, acc)
        elif trial.status == INFEASIBLE:
            if not self._acc[1]:
                return  # no accuracy seen yet: nothing to compare with
            acc = self._acc[0] / self._acc[1]
        else:
            return
        r = self.reward(acc, trial.metrics.get(LATENCY))
        b = self._ema(self._baseline, r)
        advantage = r - b
        onehot = np.zeros_like(self.logits, dtype=float)
        onehot[np.arange(len(self.sizes)), np.asarray(trial.indices)] = 1.0
        grad = -(onehot - self.probs()) * advantage  # d(-log p(a) * A) / d logits
        grad[~self.mask] = 0.0
        self._t += 1  # Adam (Kingma & Ba 2015), as torch.optim.Adam with its defaults
        self._m = 0.9 * self._m + 0.1 * grad
        self._v = 0.999 * self._v + 0.001 * grad ** 2
        m_hat = self._m / (1 - 0.9 ** self._t)
        v_hat = self._v / (1 - 0.999 ** self._t)
        step = self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        self.logits = np.where(self.mask, self.logits - step, -np.inf)


class OptunaStrategy(Strategy):
    """Optuna's TPE or NSGA-II sampler behind ask/tell; see the module docstring."""

    def __init__(self, sizes: Sequence[int], seed: int = 0, sampler: str = "tpe",
                 multi_objective: bool = True, population_size: int = 50,
                 n_startup_trials: int = 10) -> None:
        super().__init__(sizes, seed)
        try:
            import optuna
        except ImportError:  # pragma: no cover - a declared dependency
            raise HwnasError("the tpe and nsga2 strategies need optuna (pip install optuna)") \
                from None
        from optuna.distributions import CategoricalDistribution

        if sampler not in ("tpe", "nsga2"):
            raise HwnasError(f"unknown optuna sampler {sampler!r}; use tpe or nsga2")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = sampler
        self.sampler_name = sampler
        self.multi_objective = bool(multi_objective) and sampler == "nsga2"
        self.population_size, self.n_startup_trials = int(population_size), int(n_startup_trials)
        self._optuna = optuna
        with warnings.catch_warnings():  # constraints_func is marked experimental
            warnings.simplefilter("ignore")
            if sampler == "tpe":
                s = optuna.samplers.TPESampler(seed=self.seed, constraints_func=_constraints,
                                               n_startup_trials=self.n_startup_trials)
            else:
                s = optuna.samplers.NSGAIISampler(seed=self.seed, constraints_func=_constraints,
                                                  population_size=self.population_size)
        self.directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        self.study = optuna.create_study(directions=self.directions, sampler=s)
        self.dists = {f"layer{i:02d}": CategoricalDistribution(list(range(int(n))))
                      for i, n in enumerate(self.sizes)}
        self._open: collections.deque = collections.deque()  # asked, not yet told (FIFO)

    def settings(self) -> dict:
        return {**super().settings(), "optuna": self._optuna.__version__,
                "multi_objective": self.multi_objective,
                **({"population_size": self.population_size} if self.name == "nsga2"
                   else {"n_startup_trials": self.n_startup_trials})}

    def ask(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = self.study.ask(self.dists)
        self._open.append(t)
        return np.asarray([t.params[k] for k in self.dists], dtype=np.int64)

    def tell(self, trial: Trial) -> None:
        if not self._open:
            raise HwnasError("tell() without a pending ask()")
        t = self._open.popleft()
        t.set_user_attr("constraints", list(trial.constraints))
        score = float(trial.score) if trial.score is not None else 0.0
        if self.multi_objective:
            lat = trial.latency_ms
            values: float | list[float] = [score, lat if lat is not None else 0.0]
        else:
            values = score
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.tell(t, values)


def _constraints(frozen_trial) -> list[float]:
    """Optuna's constraints_func: the values the run loop computed (<= 0 feasible)."""
    return list(frozen_trial.user_attrs.get("constraints", []))


STRATEGIES = ("random", "evolution", "reinforce", "tpe", "nsga2")


def make_strategy(name: str, sizes: Sequence[int], seed: int = 0, **options: object) -> Strategy:
    """A strategy by name (random, evolution, reinforce, tpe, nsga2) with its options."""
    try:
        if name == "random":
            return RandomSearch(sizes, seed, **options)
        if name == "evolution":
            return RegularizedEvolution(sizes, seed, **options)
        if name == "reinforce":
            return Reinforce(sizes, seed, **options)
        if name in ("tpe", "nsga2"):
            return OptunaStrategy(sizes, seed, sampler=name, **options)
    except TypeError as e:
        raise HwnasError(f"strategy {name!r}: {e}") from None
    raise HwnasError(f"unknown search strategy {name!r}; available: {', '.join(STRATEGIES)}")
