"""The search strategy API: ask/tell strategies, trials, the run loop, its trajectory, the result.

In the spirit of Optuna's samplers (`study.ask()` / `study.tell()`) and NNI's exploration
strategies: a `Strategy` proposes architectures (`ask`, a vector of choice indices, one per
searchable layer) and is told what became of each (`tell`, a `Trial`); it never evaluates
anything itself. `run_strategy` is the loop around it:

1. `ask` a candidate;
2. compute its constraints (each a function of the architecture that must be <= 0 to be feasible:
   predicted latency minus the budget, MACs or parameters minus a cap; `hwnas.search.constraints`).
   They are cheap (a table lookup or a predictor): an infeasible candidate is never evaluated and
   costs no evaluation, it is told back with status `infeasible` and no score;
3. a candidate evaluated before (same choice indices) is not evaluated again: it is told back
   with its cached score and status `duplicate`, at no cost (`dedupe=True`; a table lookup or a
   deterministic training run would give the same score);
4. otherwise the evaluator scores it (`hwnas.search.evaluators`: accuracy from a table, later
   shared-weight, trained or zero-cost scores; higher is better), which spends one evaluation;
5. every trial is appended to the trajectory CSV, then told to the strategy.

The loop stops after `evaluations` evaluations, or after `max_asks` proposals (a strategy that
keeps proposing infeasible or already seen candidates ends there; the result says why).

Resume: a strategy is deterministic given its seed and what it was told, so a run is resumed by
replaying its trajectory: each row is asked again (the strategy must propose exactly the recorded
candidate, else the file belongs to another strategy, seed or setting and resuming is refused) and
told the recorded outcome, without evaluating. The strategy's random state then equals that of an
uninterrupted run, and the resumed run continues with the same proposals and the same result.

The result: the best feasible evaluated trial (highest score; ties: lower latency, then earlier)
and the Pareto front of the evaluated feasible trials, score (max) against latency (min).
"""

from __future__ import annotations

import abc
import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError

EVALUATED, INFEASIBLE, DUPLICATE = "evaluated", "infeasible", "duplicate"
STATUSES = (EVALUATED, INFEASIBLE, DUPLICATE)
LATENCY = "latency_ms"  # the metric the Pareto front and the REINFORCE reward read


@dataclass(frozen=True)
class Trial:
    """One proposal and what became of it.

    number: 0-based ask number; indices: the choice index per layer; status: `evaluated`,
    `infeasible` (a constraint > 0: not evaluated) or `duplicate` (seen before: cached score);
    score: the evaluator's score (None when infeasible); constraints: one value per constraint,
    feasible when all are <= 0; metrics: what the constraints measured, by name (`latency_ms`,
    `macs`, `params`); evaluation: evaluations spent so far, this one included.
    """

    number: int
    indices: tuple[int, ...]
    status: str
    score: float | None
    constraints: tuple[float, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: int = 0

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints)

    @property
    def latency_ms(self) -> float | None:
        v = self.metrics.get(LATENCY)
        return None if v is None else float(v)


class Strategy(abc.ABC):
    """Proposes architectures of a space given as the number of choices of each layer.

    Subclasses implement `ask` and `tell` and must be deterministic given `seed` and the trials
    they were told (resume replays the trajectory through them). `settings()` names what makes
    two strategies the same (checked when a run is resumed).
    """

    name: str = "strategy"

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        self.sizes = np.asarray([int(s) for s in sizes], dtype=np.int64)
        if self.sizes.ndim != 1 or not len(self.sizes) or (self.sizes < 1).any():
            raise HwnasError(f"a strategy needs one positive choice count per layer, got "
                             f"{list(sizes)}")
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    @abc.abstractmethod
    def ask(self) -> np.ndarray:
        """The next candidate: one choice index per layer."""

    @abc.abstractmethod
    def tell(self, trial: Trial) -> None:
        """What became of the last candidate asked."""

    def settings(self) -> dict:
        return {"strategy": self.name, "seed": self.seed}

    def random_indices(self) -> np.ndarray:
        """A uniform draw, one choice per layer."""
        return self.rng.integers(0, self.sizes)


@dataclass
class SearchResult:
    """What a run found: every trial, the best feasible one, the Pareto front."""

    trials: list[Trial]
    best: Trial | None
    pareto: list[Trial]
    evaluations: int
    asks: int
    stopped: str  # "evaluations" | "max_asks"
    resumed_trials: int = 0

    def best_at(self, evaluations: int) -> Trial | None:
        """The best feasible trial among the first `evaluations` evaluations (anytime curve)."""
        return best_trial([t for t in self.trials if t.evaluation <= evaluations])


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """Highest score among evaluated feasible trials; ties: lower latency, then earlier."""
    best, key = None, None
    for t in trials:
        if t.status != EVALUATED or not t.feasible or t.score is None:
            continue
        lat = t.latency_ms
        k = (t.score, -(lat if lat is not None else 0.0), -t.number)
        if key is None or k > key:
            best, key = t, k
    return best


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """Evaluated feasible trials that no other beats in score (max) and latency (min), one per
    distinct (score, latency), sorted by latency. Without a latency metric: the best trial."""
    pts = [t for t in trials if t.status == EVALUATED and t.feasible and t.score is not None]
    if not pts:
        return []
    if any(t.latency_ms is None for t in pts):
        b = best_trial(pts)
        return [b] if b else []
    pts.sort(key=lambda t: (t.latency_ms, -t.score, t.number))
    front, best_score = [], -math.inf
    for t in pts:
        if t.score > best_score:
            front.append(t)
            best_score = t.score
    return front


# --- the trajectory file -------------------------------------------------------------------
BASE_COLUMNS = ["trial", "status", "evaluation", "indices", "arch", "score", "feasible"]


def _fmt(v: float | None) -> str:
    return "" if v is None else repr(float(v))


class Trajectory:
    """The trajectory CSV: one row per trial, appended and flushed as trials finish.

    Columns: trial, status, evaluation, indices (space-separated choice indices), arch (the
    space's readable name of the arch, when the run has a decoder), score, feasible, then per
    constraint `<metric>` (its measured value) and `<metric>_slack` (the constraint value,
    <= 0 when met). Floats are written with repr, so a row reads back bit for bit.
    """

    def __init__(self, path: Path, metric_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.metric_names = list(metric_names)
        self.columns = BASE_COLUMNS + [c for m in self.metric_names for c in (m, f"{m}_slack")]
        self._fh: io.TextIOWrapper | None = None

    def read(self) -> list[dict]:
        """The complete rows of an existing file (a torn last line is dropped and the file
        rewritten without it); [] when there is none."""
        if not self.path.exists():
            return []
        text = self.path.read_text()
        if not text:
            return []
        if not text.endswith("\n"):  # killed in the middle of a row
            text = text[: text.rfind("\n") + 1]
            self._rewrite(text)
        rows = list(csv.DictReader(io.StringIO(text)))
        header = text.splitlines()[0].split(",") if text else []
        if header != self.columns:
            raise HwnasError(f"{self.path}: the trajectory has columns {header}, this run writes "
                             f"{self.columns}: it was written by another kind of run")
        return rows

    def _rewrite(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def start(self, fresh: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.exists() or not self.path.stat().st_size:
            self._rewrite(",".join(self.columns) + "\n")
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close())

    def append(self, trial: Trial, arch: str) -> None:
        assert self._fh is not None
        row = [str(trial.number), trial.status, str(trial.evaluation),
               " ".join(map(str, trial.indices)), arch, _fmt(trial.score),
               "1" if trial.feasible else "0"]
        for name, c in zip(self.metric_names, trial.constraints, strict=True):
            row += [_fmt(trial.metrics.get(name)), _fmt(c)]
        w = csv.writer(self._fh, lineterminator="\n")
        w.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _trial_from_row(row: dict, metric_names: Sequence[str], path: Path, line: int) -> Trial:
    try:
        status = row["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        metrics = {m: float(row[m]) for m in metric_names if row[m] != ""}
        cons = tuple(float(row[f"{m}_slack"]) for m in metric_names)
        return Trial(number=int(row["trial"]),
                     indices=tuple(int(v) for v in row["indices"].split()),
                     status=status, score=float(row["score"]) if row["score"] else None,
                     constraints=cons, metrics=metrics, evaluation=int(row["evaluation"]))
    except (KeyError, ValueError, TypeError) as e:
        raise HwnasError(f"{path}: row {line} of the trajectory is malformed ({e})") from None


# --- the loop ------------------------------------------------------------------------------
def _group_size(batch: int, evaluations: int, spent: int, max_asks: int, asked: int) -> int:
    """Candidates asked together: `batch`, fewer near the end of the evaluation or ask budget
    (a function of the recorded trials only, so a resumed run groups them the same way)."""
    return max(1, min(batch, evaluations - spent, max_asks - asked))


def run_strategy(strategy: Strategy, evaluate: Callable[[np.ndarray], float],
                 constraints: Sequence = (), evaluations: int = 100,
                 trajectory: str | Path | None = None, resume: bool = True,
                 max_asks: int | None = None, dedupe: bool = True,
                 decode: Callable[[np.ndarray], str] | None = None,
                 progress: Callable[[Trial], None] | None = None, batch: int = 1,
                 evaluate_many: Callable[[list[np.ndarray]], list[float]] | None = None
                 ) -> SearchResult:
    """Run `strategy` until `evaluations` evaluations (see the module docstring).

    evaluate: the score of one candidate (an `Evaluator` or any callable on an index vector);
    constraints: objects with `name` and `__call__(idx (N, layers)) -> values` (<= 0 feasible)
    and `measure(idx) -> metric values` (`hwnas.search.constraints.Constraint`); trajectory: the
    CSV to write (and resume from when `resume`); max_asks: the cap on proposals (default
    max(1000, 20 x evaluations)); decode: an index vector -> readable arch (trajectory `arch`).

    batch: candidates asked together before any is told (Optuna's batched ask/tell): the new
    ones among them are scored together by `evaluate_many` (a list of index vectors -> their
    scores, e.g. on a Ray cluster: `hwnas.search.distributed`; default: `evaluate` one after
    the other), then all are written and told in order. A repeat inside a batch is a
    `duplicate` of its first occurrence. batch = 1 is the sequential loop. Resume replays the
    same groups (their size depends only on the recorded trials), so a batched run resumes
    exactly too; a group cut short by a kill is completed first.
    """
    if not (isinstance(evaluations, int) and evaluations >= 1):
        raise HwnasError(f"evaluations must be a positive integer, got {evaluations!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise HwnasError(f"batch must be a positive integer, got {batch!r}")
    max_asks = int(max_asks) if max_asks is not None else max(1000, 20 * evaluations)
    names = [c.name for c in constraints]
    if len(set(names)) != len(names):
        raise HwnasError(f"two constraints measure the same metric: {names}")
    trials: list[Trial] = []
    cache: dict[tuple[int, ...], float] = {}
    spent = 0
    traj = Trajectory(Path(trajectory), names) if trajectory is not None else None
    resumed = 0
    pending: list[np.ndarray] = []  # the asked, unrecorded rest of a group cut short
    held: list[Trial] = []  # that group's recorded trials, told once it is complete
    if traj is not None and resume:
        rows = [_trial_from_row(row, names, traj.path, line)
                for line, row in enumerate(traj.read(), start=2)]
        pos = 0
        while pos < len(rows):
            g = _group_size(batch, evaluations, spent, max_asks, len(trials))
            proposals = [np.asarray(strategy.ask(), dtype=np.int64) for _ in range(g)]
            group = rows[pos:pos + g]
            for k, (t, prop) in enumerate(zip(group, proposals, strict=False)):
                proposed = tuple(int(v) for v in prop)
                if t.number != len(trials) or proposed != t.indices:
                    raise HwnasError(
                        f"{traj.path}: row {pos + k + 2} records trial {t.number} = "
                        f"{list(t.indices)}, but this strategy proposes {list(proposed)} as "
                        f"trial {len(trials)}: the file was written by another strategy, seed "
                        "or setting (or --batch); use another output folder or start over")
                if t.status == EVALUATED:
                    cache[t.indices] = float(t.score)
                spent = t.evaluation
                trials.append(t)
            pos += len(group)
            if len(group) < g:  # killed while the group was being written
                pending, held = proposals[len(group):], group
            else:
                for t in group:
                    strategy.tell(t)
        resumed = len(trials)
    if traj is not None:
        traj.start(fresh=not resume or not trials)
    try:
        while pending or (spent < evaluations and len(trials) < max_asks):
            if pending:
                proposals, told_later = pending, held
                pending, held = [], []
            else:
                g = _group_size(batch, evaluations, spent, max_asks, len(trials))
                proposals, told_later = [np.asarray(strategy.ask(), dtype=np.int64)
                                         for _ in range(g)], []
            group = _run_group(strategy, proposals, constraints, cache, dedupe, evaluate,
                               evaluate_many, len(trials), spent)
            for trial, idx in zip(group, proposals, strict=True):
                trials.append(trial)
                spent = trial.evaluation
                if traj is not None:
                    traj.append(trial, decode(idx) if decode else "")
            for trial in [*told_later, *group]:
                strategy.tell(trial)
            if progress is not None:
                for trial in group:
                    progress(trial)
    finally:
        if traj is not None:
            traj.close()
    return SearchResult(trials, best_trial(trials), pareto_front(trials), spent, len(trials),
                        "evaluations" if spent >= evaluations else "max_asks", resumed)


def _run_group(strategy: Strategy, proposals: list[np.ndarray], constraints: Sequence,
               cache: dict[tuple[int, ...], float], dedupe: bool,
               evaluate: Callable[[np.ndarray], float],
               evaluate_many: Callable[[list[np.ndarray]], list[float]] | None,
               first: int, spent: int) -> list[Trial]:
    """One group of candidates (steps 2-4 of the module docstring): constraints, duplicates,
    then the new feasible ones scored together; their trials in order (`cache` updated)."""
    plans = []  # (key, values, metrics, status)
    new: dict[tuple[int, ...], np.ndarray] = {}
    for idx in proposals:
        key = tuple(int(v) for v in idx)
        if len(key) != len(strategy.sizes) or any(
                not 0 <= k < s for k, s in zip(key, strategy.sizes, strict=True)):
            raise HwnasError(f"strategy {strategy.name} proposed {list(key)}, outside the "
                             f"space (choices per layer {strategy.sizes.tolist()})")
        metrics, values = {}, []
        if constraints:
            row = idx[None, :]
            for c in constraints:
                m = float(np.asarray(c.measure(row), dtype=float)[0])
                metrics[c.name] = m
                values.append(m - float(c.limit))
        if not all(v <= 0 for v in values):
            status = INFEASIBLE
        elif (dedupe and key in cache) or key in new:
            status = DUPLICATE
        else:
            status = EVALUATED
            new[key] = idx
        plans.append((key, tuple(values), metrics, status))
    if new:
        keys = list(new)
        if evaluate_many is not None and len(keys) > 1:
            scores = [float(v) for v in evaluate_many([new[k] for k in keys])]
        else:
            scores = [float(evaluate(new[k])) for k in keys]
        for k, score in zip(keys, scores, strict=True):
            if not math.isfinite(score):
                raise HwnasError(f"the evaluator returned {score} for {list(k)}")
        fresh = dict(zip(keys, scores, strict=True))
    else:
        fresh = {}
    out, seen = [], set()
    for number, (key, values, metrics, status) in enumerate(plans, start=first):
        score = None
        if status == EVALUATED and key not in seen:
            seen.add(key)
            spent += 1
            score = fresh[key]
        elif status != INFEASIBLE:
            status = DUPLICATE
            score = fresh.get(key, cache.get(key))
        out.append(Trial(number, key, status, score, values, metrics, spent))
    cache.update(fresh)
    return out


def check_same_settings(saved: Path, mine: dict, keys: Sequence[str], out: Path,
                        hint: str) -> None:
    """Refuse to resume a run folder whose saved settings (`saved`, JSON) differ from `mine` on
    any of `keys`, naming each difference; `hint` says how to start over instead. Used by the
    strategy searches and by the ProxylessNAS search."""
    import json

    try:
        theirs = json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HwnasError(f"{saved}: unreadable ({e})") from None
    diff = [k for k in keys if theirs.get(k) != mine.get(k)]
    if diff:
        raise HwnasError(f"{out} holds a search with other settings ("
                         + ", ".join(f"{k}: {theirs.get(k)!r} vs {mine.get(k)!r}"
                                     for k in diff) + f"); {hint}")
