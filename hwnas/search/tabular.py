"""`run_strategy_search`: a strategy (random, evolution, reinforce, tpe, nsga2) on tables or a profile.

What `hwnas search --method evolution|random|reinforce|tpe|nsga2 ...` runs:

1. the space (`nb201` by default; with `--profile`, the profile's space and settings);
2. the evaluator (`evaluator`): `table`, accuracy from `accuracy_table` (`hwnas.search.tables`,
   column `accuracy_column`); a zero-cost proxy by name (`synflow`, `snip`, `naswot`, ...:
   `hwnas.search.evaluators.ProxyEvaluator`, on one minibatch of `proxy_data` where the proxy
   needs data, or read from `proxies_table`, a `hwnas proxies` file); `parzc-free[:PROXY[:W]]`,
   the training-free ParZC (a fixed depth weighting); or `parzc:MODEL`, a fitted ParZC model
   (`ParZCEvaluator`). With a proxy or ParZC, nothing is trained: the accuracy table
   is optional and, when given, only reports the chosen arch's accuracy and the regret;
3. the latency predictor: one device column of `latency_table` (HW-NAS-Bench / HELP layout), or
   the profile's best predictor (`hwnas.latency.prediction.best_predictor`: the learned correction
   saved by `hwnas validate`, else the lookup-table sum);
4. with `budget_ms`, the constraint predicted latency <= budget (`LatencyConstraint`); a budget
   below the fastest network of the space (all 15,625 cells priced at once) is refused, naming
   the smallest latency. Without a budget the latency is still recorded (Pareto front);
5. the strategy (`make_strategy`) run by `run_strategy` for `evaluations` evaluations, every trial
   appended to `out/trajectory.csv`; a later call with the same `out` and settings resumes from
   it (`config.json` must match; a different one is refused);
6. `out/summary.json`: the chosen arch (the best feasible evaluated one), its accuracy, predicted
   latency (and interval when the predictor gives one), feasibility, evaluations used, the Pareto
   front; and, because a table covers every arch, the exact constrained optimum by enumeration
   and the regret to it (`reference`). `out/arch.json`: the chosen arch (for `hwnas export`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas._io import folder_lock, write_json
from hwnas.errors import HwnasError
from hwnas.search.constraints import LatencyConstraint
from hwnas.search.evaluators import Evaluator, TableEvaluator
from hwnas.search.strategies import STRATEGIES, make_strategy
from hwnas.search.strategy import SearchResult, Trial, check_same_settings, run_strategy
from hwnas.search.tables import (
    ArchTable,
    TableLatencyPredictor,
    load_accuracy_table,
    load_latency_table,
)
from hwnas.space import Arch, SearchSpace, get_space
from hwnas.space.nb201 import NB201Space, all_indices

RESUME_KEYS = ("method", "space", "accuracy_table", "accuracy_column", "latency_table", "device",
               "profile", "budget_ms", "seed", "options", "strategy", "dedupe", "evaluator",
               "proxy_data", "proxies_table", "batch")


@dataclass
class StrategySearchConfig:
    """Settings of one strategy search (see the module docstring)."""

    method: str
    accuracy_table: Path | None = None
    out: Path = Path("runs/search")
    space: str = "nb201"
    accuracy_column: str | None = None
    latency_table: Path | None = None
    device: str | None = None
    profile: Path | None = None
    budget_ms: float | None = None
    evaluations: int = 300
    seed: int = 0
    resume: bool = True
    options: dict = field(default_factory=dict)  # strategy options (population_size, ...)
    max_asks: int | None = None
    dedupe: bool = True
    evaluator: str = "table"  # table | <proxy> | parzc:MODEL
    proxy_data: str = "digits"
    proxies_table: Path | None = None
    batch: int = 1  # candidates asked together (run_strategy's batched ask/tell)
    ray: str | None = None  # score each batch on Ray: "local", "auto" or HOST:PORT

    def __post_init__(self) -> None:
        from hwnas.search.zero_cost import PROXIES

        self.out = Path(self.out)
        if self.accuracy_table is not None:
            self.accuracy_table = Path(self.accuracy_table)
        if self.proxies_table is not None:
            self.proxies_table = Path(self.proxies_table)
        ev = str(self.evaluator)
        if ev == "table":
            if self.accuracy_table is None:
                raise HwnasError(f"--method {self.method} needs --accuracy-table FILE (the "
                                 "table evaluator), or a zero-cost evaluator: --evaluator "
                                 "synflow|snip|...|parzc:MODEL")
        elif ev == "parzc-free" or ev.startswith("parzc-free:"):
            pass  # checked when the evaluator is built (proxy, weighting)
        elif ev == "train" or ev.startswith("train:"):
            epochs = ev.partition(":")[2] or "2"
            if not epochs.isdigit() or int(epochs) < 1:
                raise HwnasError(f"evaluator {ev!r}: write train or train:EPOCHS (EPOCHS >= 1)")
        elif ev.startswith("parzc:"):
            if not ev[len("parzc:"):]:
                raise HwnasError("--evaluator parzc:MODEL names the folder of a fitted ParZC "
                                 "model (`hwnas parzc fit`)")
        elif ev not in PROXIES:
            raise HwnasError(f"unknown evaluator {ev!r}; use table, train[:EPOCHS], parzc:MODEL "
                             f"or a proxy: "
                             f"{', '.join(PROXIES)}")
        if self.latency_table is not None:
            self.latency_table = Path(self.latency_table)
        if self.profile is not None:
            self.profile = Path(self.profile)
        if self.method not in STRATEGIES:
            raise HwnasError(f"unknown search method {self.method!r}; available: "
                             f"{', '.join(STRATEGIES)} (and proxyless with --profile)")
        if self.profile is not None and (self.latency_table is not None or self.device):
            raise HwnasError("give the latency as --profile DIR or as --latency-table FILE "
                             "--device COLUMN, not both")
        if self.latency_table is not None and not self.device:
            raise HwnasError(f"--latency-table {self.latency_table} needs --device COLUMN "
                             "(e.g. raspi4 or raspi4_ms)")
        if self.device and self.latency_table is None:
            raise HwnasError(f"--device {self.device} names a column of --latency-table FILE; "
                             "give the table too")
        if self.budget_ms is not None:
            if isinstance(self.budget_ms, bool) or not isinstance(self.budget_ms, (int, float)) \
                    or not math.isfinite(self.budget_ms) or self.budget_ms <= 0:
                raise HwnasError(f"the budget must be a positive number of ms, got "
                                 f"{self.budget_ms!r}")
            if self.profile is None and self.latency_table is None:
                raise HwnasError("a latency budget needs a latency: --profile DIR, or "
                                 "--latency-table FILE --device COLUMN")
        if isinstance(self.evaluations, bool) or not isinstance(self.evaluations, int) \
                or self.evaluations < 1:
            raise HwnasError(f"evaluations must be a positive integer, got {self.evaluations!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise HwnasError(f"--batch must be a positive integer, got {self.batch!r}")
        if self.ray is not None and self.batch < 2:
            raise HwnasError("--ray scores the candidates of a batch in parallel: give --batch N "
                             "(N >= 2, e.g. the cluster's CPUs)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("out", "accuracy_table", "latency_table", "profile", "proxies_table"):
            if d[k] is not None:
                d[k] = str(Path(d[k]).resolve()) if k != "out" else str(d[k])
        return d


@dataclass
class _Setup:
    space: SearchSpace
    evaluator: Evaluator
    predictor: object | None
    constraint: LatencyConstraint | None
    tables: dict
    accuracy: ArchTable | None = None  # the reference accuracy (the table), when given


def _setup(config: StrategySearchConfig) -> _Setup:
    profile = None
    if config.profile is not None:
        from hwnas.profile.reader import Profile

        profile = Profile.load(config.profile)
        space = profile.space
        if space.name != config.space:
            raise HwnasError(f"{config.profile} profiles space {space.name!r}, the search is over "
                             f"{config.space!r} (--space)")
    else:
        space = get_space(config.space)
    if not isinstance(space, NB201Space):
        raise HwnasError(f"strategy search reads accuracy from a table, which hwnas supports for "
                         f"the nb201 space; space {space.name!r} has none (use --method "
                         f"proxyless with --profile for the supernet search)")
    acc = None
    tables: dict = {}
    if config.accuracy_table is not None:
        acc = load_accuracy_table(config.accuracy_table, space, config.accuracy_column)
        tables["accuracy"] = acc.describe()
    evaluator = _evaluator(config, space, acc)
    predictor = None
    if config.latency_table is not None:
        lat = load_latency_table(config.latency_table, space, config.device)
        predictor = TableLatencyPredictor(lat, config.device)
        tables["latency"] = lat.describe()
    elif profile is not None:
        from hwnas.latency.prediction import best_predictor

        predictor = best_predictor(profile)
    constraint = None
    if predictor is not None:
        constraint = LatencyConstraint(predictor, config.budget_ms, space=space) \
            if config.budget_ms is not None else _LatencyMetric(predictor, space)
    return _Setup(space, evaluator, predictor, constraint, tables, acc)


def _evaluator(config: StrategySearchConfig, space: SearchSpace, acc: ArchTable | None
               ) -> Evaluator:
    """The evaluator `config.evaluator` names (module docstring, step 2)."""
    from hwnas.search.evaluators import ParZCEvaluator, ProxyEvaluator

    if config.evaluator == "table":
        return TableEvaluator(acc)
    if config.evaluator == "train" or config.evaluator.startswith("train:"):
        from hwnas.search.evaluators import TrainedEvaluator

        return TrainedEvaluator(space, config.proxy_data,
                                int(config.evaluator.partition(":")[2] or 2), config.seed)
    table = settings = None
    if config.proxies_table is not None:
        from hwnas.search.proxy_table import read_proxies

        table, settings = read_proxies(config.proxies_table)
    if config.evaluator == "parzc-free" or config.evaluator.startswith("parzc-free:"):
        from hwnas.search.evaluators import ParZCFreeEvaluator

        parts = config.evaluator.split(":")[1:]
        if len(parts) > 2:
            raise HwnasError(f"evaluator {config.evaluator!r}: write parzc-free[:PROXY[:WEIGHTING]]"
                             ", e.g. parzc-free:synflow:sin")
        return ParZCFreeEvaluator(space, *parts, data=config.proxy_data, table=table,
                                  table_settings=settings)
    if config.evaluator.startswith("parzc:"):
        return ParZCEvaluator(space, Path(config.evaluator[len("parzc:"):]), table, settings)
    return ProxyEvaluator(space, config.evaluator, data=config.proxy_data, table=table,
                          table_settings=settings)


class _LatencyMetric(LatencyConstraint):
    """Latency recorded without a budget (the Pareto front needs it): limit +inf."""

    def __init__(self, predictor: object, space: SearchSpace) -> None:
        super().__init__(predictor, 1.0, space=space)
        self.limit = math.inf

    def describe(self) -> str:
        return f"latency by {self.predictor_name} (no budget)"


def _check_resume(config: StrategySearchConfig, settings: dict) -> bool:
    """True when out/ holds a run to resume (same settings); refuses a different one."""
    saved = config.out / "config.json"
    traj = config.out / "trajectory.csv"
    if not config.resume:
        return False  # the run starts over (its old files are removed when it starts)
    if not traj.exists():
        return False
    if not saved.exists():
        raise HwnasError(f"{config.out} holds a trajectory.csv without config.json; use "
                         "another --out or --no-resume to start over")
    check_same_settings(saved, settings, RESUME_KEYS, config.out,
                        "use another --out, or --no-resume to start over")
    return True


def _accuracy(acc: ArchTable | None, indices: tuple[int, ...]) -> float | None:
    return None if acc is None else float(acc.lookup(np.asarray(indices)[None, :])[0])


def _trial_dict(space: NB201Space, t: Trial, acc: ArchTable | None) -> dict:
    """A trial as the summary lists it: `score` (the evaluator's), `accuracy` (the table's, when
    one was given: the same number with the table evaluator)."""
    arch = space.from_indices(list(t.indices))
    d = {"index": space.index(arch), "arch_str": space.arch_str(arch),
         "choices": list(arch.choices), "score": t.score,
         "accuracy": _accuracy(acc, t.indices), "trial": t.number, "evaluation": t.evaluation}
    if t.latency_ms is not None:
        d["predicted_ms"] = t.latency_ms
    return d


@dataclass
class PreparedSearch:
    """A checked strategy search, ready to run (`prepare_strategy_search`)."""

    config: StrategySearchConfig
    setup: _Setup
    strategy: object
    all_idx: np.ndarray
    all_ms: np.ndarray | None
    settings: dict
    resuming: bool


def prepare_strategy_search(config: StrategySearchConfig) -> PreparedSearch:
    """Every check of a strategy search (tables, profile, budget, resume) before anything is
    written: a mistake is one `HwnasError`, and `out` is left as it was."""
    setup = _setup(config)
    space = setup.space
    sizes = [len(layer.choices) for layer in space.layers]
    options = dict(config.options)
    if config.method == "reinforce" and config.budget_ms is not None:
        options.setdefault("target_ms", float(config.budget_ms))
    strategy = make_strategy(config.method, sizes, config.seed, **options)
    all_idx = all_indices()
    all_ms = None
    if setup.predictor is not None:
        all_ms = np.asarray(setup.constraint.measure(all_idx), dtype=float)
        if config.budget_ms is not None and config.budget_ms < all_ms.min():
            k = int(np.argmin(all_ms))
            raise HwnasError(
                f"budget {config.budget_ms:g} ms is below the fastest network of space "
                f"{space.name!r} by {setup.constraint.predictor_name}: "
                f"{space.arch_str(space.from_indices(all_idx[k]))} takes {all_ms[k]:.4g} ms; "
                f"raise the budget to at least {all_ms[k]:.4g} ms")
    settings = {**config.to_dict(), "strategy": strategy.settings(), "options": options}
    resuming = _check_resume(config, settings)
    return PreparedSearch(config, setup, strategy, all_idx, all_ms, settings, resuming)


def run_strategy_search(config: StrategySearchConfig,
                        progress: Callable[[Trial], None] | None = None,
                        prepared: PreparedSearch | None = None) -> dict:
    """Run one strategy search (module docstring); returns the summary (also summary.json).
    `prepared`: the result of `prepare_strategy_search(config)` when the caller checked first."""
    t0 = time.monotonic()
    prep = prepared if prepared is not None else prepare_strategy_search(config)
    setup, strategy, space = prep.setup, prep.strategy, prep.setup.space
    with folder_lock(config.out):  # creates out; a second search on it is refused
        if not prep.resuming:
            for stale in ("trajectory.csv", "summary.json", "arch.json"):
                (config.out / stale).unlink(missing_ok=True)
        write_json(config.out / "config.json", prep.settings)
        many = None
        if config.ray is not None:
            from hwnas.search.distributed import RayEvaluateMany

            many = RayEvaluateMany(setup.evaluator, config.ray)
        try:
            result = run_strategy(strategy, setup.evaluator,
                                  [setup.constraint] if setup.constraint is not None else [],
                                  evaluations=config.evaluations,
                                  trajectory=config.out / "trajectory.csv", resume=prep.resuming,
                                  max_asks=config.max_asks, dedupe=config.dedupe,
                                  decode=lambda idx: space.arch_str(space.from_indices(list(idx))),
                                  progress=progress, batch=config.batch, evaluate_many=many)
        finally:
            if many is not None:
                many.close()
        summary = _summary(config, setup, strategy.settings(), result, prep.all_idx, prep.all_ms)
        summary["wall_s"] = time.monotonic() - t0
        write_json(config.out / "summary.json", summary)
    return summary


def _summary(config: StrategySearchConfig, setup: _Setup, strategy_settings: dict,
             result: SearchResult, all_idx: np.ndarray, all_ms: np.ndarray | None) -> dict:
    space = setup.space
    best = result.best
    chosen = None
    if best is not None:
        arch = space.from_indices(list(best.indices))
        chosen = _trial_dict(space, best, setup.accuracy)
        chosen["feasible"] = bool(best.feasible)
        interval = None
        if setup.predictor is not None:
            bounds = setup.predictor.interval([arch])
            if bounds is not None:
                interval = [float(bounds[0][0]), float(bounds[1][0])]
        chosen["interval_ms"] = interval
        meta = {"method": config.method, "seed": config.seed, "evaluator": setup.evaluator.name,
                "score": best.score, "accuracy": chosen["accuracy"],
                "nb201_index": chosen["index"], "arch_str": chosen["arch_str"]}
        if best.latency_ms is not None:
            meta["predicted_ms"] = best.latency_ms
        Arch(arch.space, arch.choices, arch.resolution, arch.width, arch.num_classes,
             arch.channels, meta).save(config.out / "arch.json")
    if best is None:
        message = (f"no feasible architecture was evaluated in {result.asks} proposals "
                   f"(stopped by {result.stopped})")
    else:
        what = "accuracy" if config.evaluator == "table" else f"{setup.evaluator.name} score"
        tail = "" if config.evaluator == "table" or chosen["accuracy"] is None \
            else f" (table accuracy {chosen['accuracy']:.4g})"
        within = f", {best.latency_ms:.4g} ms <= budget {config.budget_ms:g} ms" \
            if config.budget_ms is not None else ""
        message = (f"best{' feasible' if config.budget_ms is not None else ''}: {what} "
                   f"{best.score:.4g}{tail}{within}, after {result.evaluations} evaluations")
    reference = None
    if setup.accuracy is not None:
        # the exact (constrained) optimum: every arch of the tables, priced by the same predictor
        acc_all = setup.accuracy.lookup(all_idx)
        ok = np.ones(len(all_idx), bool) if all_ms is None or config.budget_ms is None \
            else all_ms <= config.budget_ms
        k = int(np.flatnonzero(ok)[np.argmax(acc_all[ok])])
        opt = space.from_indices(all_idx[k])
        reference = {"index": k, "arch_str": space.arch_str(opt), "accuracy": float(acc_all[k]),
                     "predicted_ms": float(all_ms[k]) if all_ms is not None else None,
                     "feasible_archs": int(ok.sum()),
                     "regret": float(acc_all[k] - chosen["accuracy"]) if best is not None
                     else None,
                     "note": "the exact optimum under the same constraint, by enumerating every "
                             "arch of the tables (possible only because a table covers them all)"}
    return {
        "method": config.method,
        "space": space.name,
        "seed": config.seed,
        "budget_ms": config.budget_ms,
        "met": bool(best is not None and best.feasible),
        "message": message,
        "chosen": chosen,
        "score": best.score if best is not None else None,
        "accuracy": chosen["accuracy"] if chosen is not None else None,
        "predicted_ms": best.latency_ms if best is not None else None,
        "feasible": bool(best is not None and best.feasible),
        "evaluations_requested": config.evaluations,
        "evaluations_used": result.evaluations,
        "proposals": result.asks,
        "infeasible_proposals": sum(t.status == "infeasible" for t in result.trials),
        "duplicate_proposals": sum(t.status == "duplicate" for t in result.trials),
        "stopped_by": result.stopped,
        "resumed_trials": result.resumed_trials,
        "pareto": [_trial_dict(space, t, setup.accuracy) for t in result.pareto],
        "evaluator": setup.evaluator.name,
        "latency_predictor": getattr(setup.predictor, "name", None),
        "constraint": setup.constraint.describe() if setup.constraint is not None else None,
        "strategy": strategy_settings,
        "tables": setup.tables,
        "profile": str(config.profile) if config.profile is not None else None,
        "reference": reference,
        "trajectory": str(config.out / "trajectory.csv"),
    }
