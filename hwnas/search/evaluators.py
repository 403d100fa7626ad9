"""Evaluators: the score of an architecture (higher is better) for the search strategies.

`Evaluator.evaluate(idx)` scores one candidate given as its choice indices (one per layer of the
space); `evaluate_many` scores an (N, layers) matrix. Each call of `evaluate` by the run loop is
one evaluation of the budget (`hwnas.search.strategy.run_strategy`).

- `TableEvaluator`: accuracy read from a published table (`hwnas.search.tables`, e.g. NATS-Bench's
  CIFAR-10 test accuracy of every NAS-Bench-201 cell): exact and free, for benchmarking strategies
  against the true optimum.

- `ProxyEvaluator`: a zero-cost proxy of the untrained network (`hwnas.search.zero_cost`: synflow,
  snip, NASWOT, ...), computed when asked, or read from a proxies file made with the same
  settings (`hwnas proxies`);
- `ParZCFreeEvaluator`: the training-free ParZC (a fixed depth weighting of per-layer scores);
- `ParZCEvaluator`: a fitted ParZC model (`hwnas.search.parzc`) scoring the node-wise proxy
  features it was trained on, computed the same way (the settings saved with the model).

- `TrainedEvaluator`: the validation accuracy after training the candidate from scratch on the
  proxy data (`hwnas.search.run.train_arch`, `--evaluator train[:EPOCHS]`): the expensive
  evaluation that `--batch N --ray` spreads over a cluster (`hwnas.search.distributed`).

Later evaluators plug in here: accuracy with shared weights (the supernet).
"""

from __future__ import annotations

import abc

import numpy as np

from hwnas.errors import HwnasError
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


class _ProxyFeatures:
    """Proxy scores of architectures of a space, computed once each (and looked up in a proxies
    file with the same settings when one is given)."""

    def __init__(self, space: object, proxies: tuple[str, ...], settings: dict,
                 table: object | None = None) -> None:
        from hwnas.search.zero_cost import DATA_DEPENDENT, check_proxies

        self.space = space
        self.proxies = check_proxies(proxies)
        self.settings = settings
        self.cache: dict[tuple[int, ...], dict] = {}
        self._batch = None
        self._needs_data = any(p in DATA_DEPENDENT for p in self.proxies)
        if table is not None:
            for row in table.to_dict("records"):
                arch = space.from_index(int(row["index"]))
                self.cache[tuple(space.indices(arch))] = row

    def batch(self) -> tuple[object, object]:
        if self._batch is None:
            from hwnas.search.zero_cost import proxy_batch

            s = self.settings
            x, y, _ = proxy_batch(s["data"], self.space.resolution, s["batch_size"],
                                  s["data_seed"])
            self._batch = (x, y)
        return self._batch

    def row(self, idx: np.ndarray) -> dict:
        key = tuple(int(v) for v in np.asarray(idx).ravel())
        if key not in self.cache:
            from hwnas.search.proxy_table import score_columns
            from hwnas.search.zero_cost import compute_proxies, proxy_network

            arch = self.space.from_indices(list(key))
            net = proxy_network(self.space, arch, self.settings.get("seed", 0))
            x, y = self.batch() if self._needs_data else (None, None)
            self.cache[key] = score_columns(
                compute_proxies(net, self.proxies, self.space.input_shape(), x, y))
        return self.cache[key]


def _proxy_settings(space: object, data: str, batch_size: int, data_seed: int, seed: int) -> dict:
    """How a proxy score is made (the keys of a `hwnas proxies` file's settings)."""
    return {"space": space.name, "resolution": space.resolution,
            "num_classes": space.num_classes, "data": data, "batch_size": batch_size,
            "data_seed": data_seed, "seed": seed}


def _check_table_settings(settings: dict, table_settings: dict, what: str) -> None:
    from hwnas.search.proxy_table import check_compatible

    check_compatible(settings, table_settings, f"{what} was computed with other settings")


class ProxyEvaluator(Evaluator):
    """A zero-cost proxy as the score (higher is better; NaN counts as -inf)."""

    def __init__(self, space: object, proxy: str, data: str = "digits", batch_size: int = 64,
                 data_seed: int = 42, seed: int = 0, table: object | None = None,
                 table_settings: dict | None = None) -> None:
        settings = _proxy_settings(space, data, batch_size, data_seed, seed)
        if table is not None:
            _check_table_settings(settings, table_settings or {}, "the proxies table")
            if proxy not in table.columns:
                raise HwnasError(f"the proxies table has no {proxy!r} column")
        self.proxy = proxy
        self.features = _ProxyFeatures(space, (proxy,), settings, table)
        self.name = f"proxy:{proxy}"

    def evaluate(self, idx: np.ndarray) -> float:
        v = float(self.features.row(idx)[self.proxy])
        return v if v == v else -np.inf


class ParZCFreeEvaluator(ProxyEvaluator):
    """The training-free ParZC (ParZC-dagger, `hwnas.search.parzc.training_free_score`): a
    proxy's per-layer sums weighted by a fixed function of depth (`sin`: (sin(0.1 i) + 1) / 2;
    `quadratic`: ((L - i) / L)^2), then summed. Named `parzc-free[:PROXY[:WEIGHTING]]`
    (default synflow, sin)."""

    def __init__(self, space: object, proxy: str = "synflow", weighting: str = "sin",
                 data: str = "digits", batch_size: int = 64, data_seed: int = 42, seed: int = 0,
                 table: object | None = None, table_settings: dict | None = None) -> None:
        from hwnas.search.parzc import WEIGHTINGS
        from hwnas.search.zero_cost import LAYERWISE

        if proxy not in LAYERWISE:
            raise HwnasError(f"parzc-free weights a per-layer proxy ({', '.join(LAYERWISE)}), "
                             f"not {proxy!r}")
        if weighting not in WEIGHTINGS:
            raise HwnasError(f"unknown depth weighting {weighting!r}; use "
                             f"{', '.join(WEIGHTINGS)}")
        super().__init__(space, proxy, data, batch_size, data_seed, seed, table, table_settings)
        self.weighting = weighting
        self.name = f"parzc-free:{proxy}:{weighting}"

    def evaluate(self, idx: np.ndarray) -> float:
        from hwnas.search.parzc import training_free_score

        sums = np.asarray(self.features.row(idx)[f"{self.proxy}_layer_sum"], dtype=float)
        return float(training_free_score([sums], self.weighting)[0])


class ParZCEvaluator(Evaluator):
    """A fitted ParZC model (its folder: `hwnas parzc fit`) scoring each candidate's node-wise
    proxy features, computed with the settings saved in the model (`meta_`)."""

    def __init__(self, space: object, model_dir: str | object, table: object | None = None,
                 table_settings: dict | None = None) -> None:
        from pathlib import Path

        from hwnas.search.parzc import ParZC

        self.model = ParZC.load(Path(model_dir))
        meta = self.model.meta_ or {}
        settings = meta.get("settings") or {}
        proxies, length = meta.get("proxies"), meta.get("length")
        if not isinstance(proxies, list) or not isinstance(length, int):
            raise HwnasError(f"{model_dir}: the model does not say which proxies and length it "
                             "was trained on (fit it with `hwnas parzc fit`)")
        mine = {"space": space.name, "resolution": space.resolution,
                "num_classes": space.num_classes}
        _check_table_settings(mine, settings, f"the ParZC model {model_dir}")
        if table is not None:
            _check_table_settings(settings, table_settings or {}, "the proxies table")
        self.proxies, self.length = tuple(proxies), length
        self.features = _ProxyFeatures(space, self.proxies, settings, table)
        self.name = f"parzc:{Path(model_dir).name}"

    def features_of(self, idx: np.ndarray) -> np.ndarray:
        from hwnas.search.parzc import nodewise_features

        rows = [self.features.row(r) for r in np.atleast_2d(idx)]
        return nodewise_features([[np.asarray(r[f"{p}_layer_mean"], dtype=float)
                                   for p in self.proxies] for r in rows], self.length)

    def evaluate(self, idx: np.ndarray) -> float:
        return float(self.model.predict(self.features_of(idx))[0])

    def evaluate_many(self, idx: np.ndarray) -> np.ndarray:
        return self.model.predict(self.features_of(idx))


class TrainedEvaluator(Evaluator):
    """Validation accuracy of the candidate trained from scratch (`train_arch`: the space's
    network at `resolution`, `epochs` on `data`, seeded by `seed`, at most `max_batches` per
    epoch), one torch thread per evaluation (parallelism comes from running several)."""

    def __init__(self, space, data: str = "digits", epochs: int = 2, seed: int = 0,
                 resolution: int = 32, max_batches: int | None = None,
                 batch_size: int = 64) -> None:
        from hwnas.data import check_spec

        if epochs < 1:
            raise HwnasError(f"--evaluator train:EPOCHS needs EPOCHS >= 1, got {epochs}")
        check_spec(data)
        self.space, self.data, self.epochs, self.seed = space, data, int(epochs), int(seed)
        self.resolution, self.max_batches, self.batch_size = resolution, max_batches, batch_size
        self.name = f"train:{self.epochs} ({data}, {resolution}x{resolution}, seed {seed})"

    def evaluate(self, idx: np.ndarray) -> float:
        from hwnas.search.run import train_arch

        arch = self.space.from_indices([int(v) for v in np.asarray(idx)])
        r = train_arch(arch, self.data, epochs=self.epochs, batch_size=self.batch_size,
                       seed=self.seed, train_resolution=self.resolution,
                       max_batches=self.max_batches, threads=1)
        return float(r["valid_acc"])
