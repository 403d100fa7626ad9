"""The strategy API: strategies on a toy space with a known optimum, aging, infeasible children,
resume from the trajectory, the Pareto front, table inputs and their errors, the search flow."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.base import LatencyPredictor
from hwnas.search.constraints import LatencyConstraint, MacsConstraint, ParamsConstraint
from hwnas.search.strategies import (
    STRATEGIES,
    OptunaStrategy,
    RegularizedEvolution,
    Reinforce,
    make_strategy,
)
from hwnas.search.strategy import (
    DUPLICATE,
    EVALUATED,
    INFEASIBLE,
    Trial,
    pareto_front,
    run_strategy,
)
from hwnas.search.tables import TableLatencyPredictor, load_accuracy_table, load_latency_table
from hwnas.search.tabular import StrategySearchConfig, run_strategy_search
from hwnas.space import get_space
from hwnas.space.nb201 import NB201_OPS, all_indices, arch_string

# --- a toy space with a known constrained optimum ---------------------------------------------
SIZES = (4, 4, 4, 4)
_R = np.random.default_rng(7)
SCORE = _R.uniform(0, 10, (4, 4))  # additive score, plus a small pairwise term
PAIR = _R.uniform(-1, 1, (4, 4))
COST = 1 + 0.5 * SCORE + _R.uniform(0, 1, (4, 4))  # additive latency, higher for better choices
ALL = np.array(list(itertools.product(range(4), repeat=4)))


def toy_score(idx: np.ndarray) -> float:
    idx = np.asarray(idx)
    return float(SCORE[np.arange(4), idx].sum() + PAIR[idx[0], idx[1]])


class ToyLatency(LatencyPredictor):
    name = "toy"

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        return COST[np.arange(4)[None, :], idx].sum(axis=1)


LAT = ToyLatency().predict_indices(ALL)
BUDGET = float(np.quantile(LAT, 0.4))
FEASIBLE = LAT <= BUDGET
SCORES = np.array([toy_score(r) for r in ALL])
OPTIMUM = tuple(int(v) for v in ALL[FEASIBLE][np.argmax(SCORES[FEASIBLE])])
# the unconstrained optimum is infeasible: the constraint matters
assert tuple(ALL[np.argmax(SCORES)]) != OPTIMUM


def toy_constraint() -> LatencyConstraint:
    return LatencyConstraint(ToyLatency(), BUDGET)


def options(name: str) -> dict:
    return {"target_ms": BUDGET} if name == "reinforce" else \
        {"population_size": 10, "sample_size": 3} if name == "evolution" else \
        {"population_size": 10} if name == "nsga2" else {}


# evaluations each strategy gets (103 archs are feasible): random needs them all (it has no
# model); at these budgets each of the others found the optimum for at least 15 of seeds 0..15
BUDGETS = {"random": int(FEASIBLE.sum()), "evolution": 100, "reinforce": 90, "tpe": 100,
           "nsga2": 80}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_finds_the_known_optimum(name: str, seed: int) -> None:
    strategy = make_strategy(name, SIZES, seed, **options(name))
    res = run_strategy(strategy, toy_score, [toy_constraint()], evaluations=BUDGETS[name],
                       max_asks=5000)
    assert res.best is not None and res.best.indices == OPTIMUM, (name, res.best)
    assert res.best.feasible and res.best.status == EVALUATED
    assert res.evaluations <= BUDGETS[name]
    # only feasible, new candidates spent an evaluation
    spent = [t for t in res.trials if t.status == EVALUATED]
    assert len(spent) == res.evaluations
    assert all(t.feasible for t in spent)
    assert len({t.indices for t in spent}) == len(spent)
    assert all(t.score is None and not t.feasible for t in res.trials if t.status == INFEASIBLE)


def test_every_strategy_is_deterministic_given_its_seed() -> None:
    for name in STRATEGIES:
        runs = [run_strategy(make_strategy(name, SIZES, 3, **options(name)), toy_score,
                             [toy_constraint()], evaluations=15) for _ in range(2)]
        assert [t.indices for t in runs[0].trials] == [t.indices for t in runs[1].trials], name


# --- regularized evolution --------------------------------------------------------------------

def _told(strategy, indices, score, status=EVALUATED, number=0) -> None:
    strategy.tell(Trial(number, tuple(indices), status, score, (0.0,), {}, 0))


def test_aging_evicts_the_oldest_not_the_worst() -> None:
    ev = RegularizedEvolution(SIZES, 0, population_size=3, sample_size=2)
    for i, score in enumerate([10.0, 1.0, 2.0]):  # the oldest is the best
        ev.ask()
        _told(ev, (i, 0, 0, 0), score, number=i)
    assert [m[1] for m in ev.population] == [10.0, 1.0, 2.0]
    child = ev.ask()  # a mutation of a tournament winner
    assert sum(a != b for a, b in zip(child, (0, 0, 0, 0), strict=True)) >= 0
    _told(ev, child, 0.5, number=3)
    assert [m[1] for m in ev.population] == [1.0, 2.0, 0.5]  # 10.0 aged out
    ev.ask()
    _told(ev, (3, 3, 3, 3), 0.1, number=4)
    assert [m[1] for m in ev.population] == [2.0, 0.5, 0.1]


def test_mutation_changes_exactly_one_layer_to_another_choice() -> None:
    ev = RegularizedEvolution(SIZES, 0)
    parent = (1, 2, 3, 0)
    for _ in range(200):
        child = ev.mutate(parent)
        assert sum(a != b for a, b in zip(child, parent, strict=True)) == 1
        assert all(0 <= c < n for c, n in zip(child, SIZES, strict=True))


def test_infeasible_and_repeated_children_are_redrawn_free_and_never_the_result() -> None:
    ev = RegularizedEvolution(SIZES, 1, population_size=8, sample_size=3)
    res = run_strategy(ev, toy_score, [toy_constraint()], evaluations=40)
    trials = res.trials
    assert any(t.status == INFEASIBLE for t in trials[8:])  # children were infeasible...
    for prev, t in itertools.pairwise(trials):  # ... and cost no evaluation
        if t.status in (INFEASIBLE, DUPLICATE):
            assert t.evaluation == prev.evaluation
    assert all(LAT[np.ravel_multi_index(m[0], SIZES)] <= BUDGET for m in ev.population)
    assert res.best.feasible and res.evaluations == 40
    assert all(p.feasible for p in res.pareto)


def test_the_redraw_cap_escapes_to_a_random_candidate() -> None:
    # only a handful of feasible archs: after seeding, every child is infeasible or seen
    tight = float(np.sort(LAT)[5])
    ev = RegularizedEvolution(SIZES, 0, population_size=3, sample_size=2, max_redraws=20)
    res = run_strategy(ev, toy_score, [LatencyConstraint(ToyLatency(), tight)], evaluations=50,
                       max_asks=600)
    assert res.stopped == "max_asks" and ev.escapes > 0
    assert res.best.feasible and res.evaluations == int((tight >= LAT).sum())


def test_reinforce_reward_is_mnasnet() -> None:
    rl = Reinforce(SIZES, 0, target_ms=10.0)
    assert rl.reward(80.0, 10.0) == pytest.approx(80.0)
    assert rl.reward(80.0, 20.0) == pytest.approx(80.0 * 2 ** -0.07)
    assert rl.reward(80.0, 5.0) == pytest.approx(80.0 * 0.5 ** -0.07)  # soft: both sides
    hard = Reinforce(SIZES, 0, target_ms=10.0, alpha=0.0, beta=-1.0)
    assert hard.reward(80.0, 5.0) == 80.0 and hard.reward(80.0, 20.0) == pytest.approx(40.0)
    assert Reinforce(SIZES, 0).reward(80.0, 99.0) == 80.0  # no target: accuracy
    # a positive advantage makes the sampled choices more likely
    p0 = rl.probs().copy()
    for i in range(5):
        _told(rl, (1, 1, 1, 1), 50.0 + 10 * i, number=i)
    assert (rl.probs()[:, 1] > p0[:, 1]).all()


def test_optuna_strategies_use_optuna_samplers() -> None:
    import optuna

    tpe = make_strategy("tpe", SIZES, 0)
    nsga = make_strategy("nsga2", SIZES, 0, population_size=10)
    assert isinstance(tpe, OptunaStrategy) and isinstance(tpe.study.sampler,
                                                          optuna.samplers.TPESampler)
    assert isinstance(nsga.study.sampler, optuna.samplers.NSGAIISampler)
    assert [d.name for d in nsga.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    run_strategy(nsga, toy_score, [toy_constraint()], evaluations=12)
    done = nsga.study.trials
    assert all(t.user_attrs["constraints"] for t in done)
    assert {tuple(t.params.values()) for t in done}  # one categorical per layer


def test_unknown_strategy_and_bad_options_are_clear_errors() -> None:
    with pytest.raises(HwnasError, match="unknown search strategy 'anneal'; available: random"):
        make_strategy("anneal", SIZES)
    with pytest.raises(HwnasError, match="strategy 'evolution'"):
        make_strategy("evolution", SIZES, 0, colour="red")
    with pytest.raises(HwnasError, match="sample_size <= population_size"):
        make_strategy("evolution", SIZES, 0, population_size=3, sample_size=5)


# --- resume ------------------------------------------------------------------------------------

def _outcome(res) -> list[tuple]:
    return [(t.number, t.indices, t.status, t.score, t.evaluation) for t in res.trials]


@pytest.mark.parametrize("name", STRATEGIES)
def test_resume_gives_the_same_result_as_an_uninterrupted_run(name: str, tmp_path: Path) -> None:
    full = run_strategy(make_strategy(name, SIZES, 5, **options(name)), toy_score,
                        [toy_constraint()], evaluations=30, trajectory=tmp_path / "full.csv")
    part = tmp_path / "part.csv"
    first = run_strategy(make_strategy(name, SIZES, 5, **options(name)), toy_score,
                         [toy_constraint()], evaluations=11, trajectory=part)
    assert first.evaluations == 11
    calls = []

    def counted(idx):
        calls.append(tuple(idx))
        return toy_score(idx)

    resumed = run_strategy(make_strategy(name, SIZES, 5, **options(name)), counted,
                           [toy_constraint()], evaluations=30, trajectory=part)
    assert resumed.resumed_trials == len(first.trials)
    assert len(calls) == 30 - 11  # the recorded evaluations were not repeated
    assert _outcome(resumed) == _outcome(full)
    assert resumed.best.indices == full.best.indices
    assert part.read_text() == (tmp_path / "full.csv").read_text()


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_batched_run_scores_groups_together_and_resumes_exactly_after_a_kill(
        name: str, tmp_path: Path) -> None:
    """batch = 4: the new candidates of a group go to `evaluate_many` together; a run killed
    while writing a group (its trajectory cut after 13 rows) resumes to the same trials, the
    same file, and no recorded evaluation is repeated."""
    groups: list[int] = []

    def many(idxs):
        groups.append(len(idxs))
        return [toy_score(i) for i in idxs]

    full_path = tmp_path / "full.csv"
    full = run_strategy(make_strategy(name, SIZES, 3, **options(name)), toy_score,
                        [toy_constraint()], evaluations=30, trajectory=full_path, batch=4,
                        evaluate_many=many)
    assert full.evaluations == 30 and max(groups) <= 4 and max(groups) > 1
    lines = full_path.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:1 + 13]))
    recorded = sum(1 for t in full.trials[:13] if t.status == EVALUATED)
    calls: list[tuple] = []

    def counted(idxs):
        calls.extend(tuple(i) for i in idxs)
        return [toy_score(i) for i in idxs]

    resumed = run_strategy(make_strategy(name, SIZES, 3, **options(name)), toy_score,
                           [toy_constraint()], evaluations=30, trajectory=cut, batch=4,
                           evaluate_many=counted)
    assert resumed.resumed_trials == 13
    assert _outcome(resumed) == _outcome(full)
    assert cut.read_text() == full_path.read_text()
    single = sum(1 for t in resumed.trials[13:] if t.status == EVALUATED) - len(calls)
    assert len(calls) + single == 30 - recorded  # groups of one go to `evaluate`


def test_a_repeat_inside_a_group_is_a_free_duplicate() -> None:
    res = run_strategy(make_strategy("random", (2, 2), 0), toy_score_2, evaluations=4, batch=4,
                       max_asks=40)
    keys = [t.indices for t in res.trials]
    for i, t in enumerate(res.trials):
        first = keys.index(t.indices)
        assert (t.status == EVALUATED) == (first == i)
        assert t.score == res.trials[first].score
    assert res.evaluations == 4 == len(set(keys))


def toy_score_2(idx: np.ndarray) -> float:
    return float(idx[0] * 2 + idx[1])


def test_resume_survives_a_torn_last_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    full = run_strategy(make_strategy("evolution", SIZES, 2, **options("evolution")), toy_score,
                        [toy_constraint()], evaluations=25)
    run_strategy(make_strategy("evolution", SIZES, 2, **options("evolution")), toy_score,
                 [toy_constraint()], evaluations=10, trajectory=path)
    path.write_text(path.read_text() + "17,evaluated,1")  # killed while writing a row
    resumed = run_strategy(make_strategy("evolution", SIZES, 2, **options("evolution")),
                           toy_score, [toy_constraint()], evaluations=25, trajectory=path)
    assert _outcome(resumed) == _outcome(full)


def test_resume_refuses_another_seed(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    run_strategy(make_strategy("random", SIZES, 0), toy_score, [toy_constraint()],
                 evaluations=5, trajectory=path)
    with pytest.raises(HwnasError, match="another strategy, seed or setting"):
        run_strategy(make_strategy("random", SIZES, 1), toy_score, [toy_constraint()],
                     evaluations=10, trajectory=path)
    with pytest.raises(HwnasError, match="columns"):
        run_strategy(make_strategy("random", SIZES, 0), toy_score, [], evaluations=10,
                     trajectory=path)


def test_trajectory_rows_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    res = run_strategy(make_strategy("random", SIZES, 0), toy_score, [toy_constraint()],
                       evaluations=8, trajectory=path, decode=lambda i: "-".join(map(str, i)))
    df = pd.read_csv(path)
    assert list(df.columns) == ["trial", "status", "evaluation", "indices", "arch", "score",
                                "feasible", "latency_ms", "latency_ms_slack"]
    assert len(df) == len(res.trials)
    for t, (_, row) in zip(res.trials, df.iterrows(), strict=True):
        assert row["status"] == t.status and row["latency_ms"] == t.metrics["latency_ms"]
        assert row["arch"] == "-".join(map(str, t.indices))


# --- the result --------------------------------------------------------------------------------

def test_pareto_front_and_best() -> None:
    def t(n, score, ms, status=EVALUATED, c=-1.0):
        return Trial(n, (n,), status, score, (c,), {"latency_ms": ms}, n)

    trials = [t(0, 90.0, 10.0), t(1, 91.0, 12.0), t(2, 89.0, 11.0), t(3, 93.0, 20.0),
              t(4, 95.0, 30.0, INFEASIBLE, 5.0), t(5, 93.0, 15.0), t(6, 93.0, 15.0, DUPLICATE)]
    front = pareto_front(trials)
    assert [x.number for x in front] == [0, 1, 5]
    from hwnas.search.strategy import best_trial

    assert best_trial(trials).number == 5  # 93 at 15 ms beats 93 at 20 ms; 95 is infeasible


def test_count_constraints_match_the_built_network() -> None:
    space = get_space("nb201")
    idx = all_indices()[:50]
    macs = MacsConstraint(space, 1e12).measure(idx)
    params = ParamsConstraint(space, 1e12).measure(idx)
    for row, m, p in zip(idx, macs, params, strict=True):
        ops = space.ops(space.from_indices(row))
        assert m == sum(op.macs for op in ops) and p == sum(op.params for op in ops)
    with pytest.raises(HwnasError, match="must be a positive number"):
        MacsConstraint(space, -1)


# --- tables ------------------------------------------------------------------------------------

def _full_tables(d: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A synthetic accuracy and latency table of all 15,625 cells (HELP / NATS layouts)."""
    idx = all_indices()
    convs = (idx == 3).sum(1) * 1.0 + (idx == 2).sum(1) * 0.4
    acc = 80 + convs + 0.01 * (np.arange(len(idx)) % 97) / 97
    lat = 1 + convs * 2 + 0.1 * (idx == 4).sum(1)
    strings = [arch_string([NB201_OPS[j] for j in row]) for row in idx]
    a = d / "acc.csv"
    pd.DataFrame({"CIFAR10Acc": acc, "OtherAcc": acc - 1,
                  "ArchitectureString": strings}).to_csv(a, index=False)
    l_ = d / "lat.csv"
    pd.DataFrame({"arch_idx": np.arange(len(idx)), "arch_str": strings, "raspi4_ms": lat,
                  "fpga_ms": lat * 0.5}).to_csv(l_, index=False)
    return a, l_, acc, lat


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    return _full_tables(tmp_path_factory.mktemp("tables"))


def test_tables_load_and_look_up(tables, tmp_path: Path) -> None:
    a, l_, acc, lat = tables
    space = get_space("nb201")
    ta = load_accuracy_table(a, space, "cifar10acc")  # case-insensitive column
    tl = load_latency_table(l_, space, "raspi4")
    assert load_latency_table(l_, space, "raspi4_ms").column == "raspi4_ms"
    idx = all_indices()
    np.testing.assert_array_equal(ta.lookup(idx), acc)
    np.testing.assert_array_equal(tl.lookup(idx), lat)
    pred = TableLatencyPredictor(tl)
    assert pred.name == "table:raspi4"
    assert pred.predict([space.from_index(7)])[0] == lat[7]
    # parquet, shuffled rows, index column only
    df = pd.read_csv(l_).sample(frac=1.0, random_state=0).drop(columns=["arch_str"])
    df.to_parquet(tmp_path / "lat.parquet")
    np.testing.assert_array_equal(load_latency_table(tmp_path / "lat.parquet", space,
                                                     "fpga").values, lat * 0.5)


def _table_errors(a: Path, l_: Path, d: Path) -> dict:
    acc = pd.read_csv(a)
    lat = pd.read_csv(l_)

    def write(name: str, df: pd.DataFrame) -> Path:
        df.to_csv(d / name, index=False)
        return d / name

    nan = acc.copy()
    nan.loc[5, "CIFAR10Acc"] = np.nan
    dup = pd.concat([lat, lat.iloc[[3]]], ignore_index=True)
    wrong_order = lat.copy()
    wrong_order["arch_idx"] = np.roll(wrong_order["arch_idx"].to_numpy(), 1)
    bad_str = acc.copy()
    bad_str.loc[2, "ArchitectureString"] = "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    partial = lat.iloc[:-10]
    return {
        "missing column": (lambda s: load_accuracy_table(a, s, "CIFAR100Acc"),
                           "no accuracy column 'CIFAR100Acc'; available: CIFAR10Acc, OtherAcc"),
        "ambiguous column": (lambda s: load_accuracy_table(a, s),
                             "choose the accuracy column with --accuracy-column"),
        "nan": (lambda s: load_accuracy_table(write("nan.csv", nan), s, "CIFAR10Acc"),
                "has 1 missing or non-finite value(s) (NaN), e.g. row 7"),
        "duplicate": (lambda s: load_latency_table(write("dup.csv", dup), s, "raspi4"),
                      "arch index 3 (|"),
        "index order": (lambda s: load_latency_table(write("order.csv", wrong_order), s,
                                                     "raspi4"),
                        "the index column is not NAS-Bench-201's order"),
        "not the space": (lambda s: load_accuracy_table(write("bad.csv", bad_str), s,
                                                        "CIFAR10Acc"),
                          "unknown op 'conv_5x5'"),
        "partial": (lambda s: load_latency_table(write("partial.csv", partial), s, "raspi4"),
                    "covers 15615 of the 15625 nb201 archs"),
        "unknown device": (lambda s: load_latency_table(l_, s, "pixel9"),
                           "no latency column for device 'pixel9'; devices: raspi4, fpga"),
        "no key": (lambda s: load_latency_table(write("nokey.csv", lat.drop(
            columns=["arch_idx", "arch_str"])), s, "raspi4"), "no architecture column"),
        "missing file": (lambda s: load_accuracy_table(d / "nope.csv", s), "table not found"),
        "other space": (lambda s: load_accuracy_table(a, get_space("fbnet")),
                        "supported for the nb201 space"),
    }


def test_table_mistakes_are_one_clear_error(tables, tmp_path: Path) -> None:
    a, l_, _, _ = tables
    space = get_space("nb201")
    for case, (fn, message) in _table_errors(a, l_, tmp_path).items():
        with pytest.raises(HwnasError) as e:
            fn(space)
        assert message in str(e.value), (case, str(e.value))
        assert ".csv" in str(e.value), case  # names the file


# --- the flow (what `hwnas search --method ...` runs) -----------------------------------------

def test_strategy_search_flow_and_resume(tables, tmp_path: Path) -> None:
    a, l_, acc, lat = tables
    budget = float(np.quantile(lat, 0.3))
    cfg = dict(method="evolution", accuracy_table=a, accuracy_column="CIFAR10Acc",
               latency_table=l_, device="raspi4", budget_ms=budget, evaluations=60, seed=1)
    s = run_strategy_search(StrategySearchConfig(**cfg, out=tmp_path / "run"))
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["chosen"] == s["chosen"]
    assert s["feasible"] and s["met"] and s["predicted_ms"] <= budget
    assert s["evaluations_used"] == 60
    k = s["chosen"]["index"]
    assert s["accuracy"] == acc[k] and s["predicted_ms"] == lat[k]
    ok = lat <= budget
    assert s["reference"]["accuracy"] == acc[ok].max()
    assert s["reference"]["regret"] == pytest.approx(acc[ok].max() - s["accuracy"])
    assert (tmp_path / "run" / "arch.json").exists()
    traj = pd.read_csv(tmp_path / "run" / "trajectory.csv")
    assert (traj["status"] == "evaluated").sum() == 60
    assert all(p["predicted_ms"] <= budget for p in s["pareto"])
    # interrupted at 20 evaluations, then resumed to 60: the same run
    part = run_strategy_search(StrategySearchConfig(**{**cfg, "evaluations": 20},
                                                    out=tmp_path / "part"))
    assert part["evaluations_used"] == 20
    again = run_strategy_search(StrategySearchConfig(**cfg, out=tmp_path / "part"))
    assert again["resumed_trials"] > 0 and again["chosen"] == s["chosen"]
    assert (tmp_path / "part" / "trajectory.csv").read_text() == \
        (tmp_path / "run" / "trajectory.csv").read_text()
    with pytest.raises(HwnasError, match="holds a search with other settings"):
        run_strategy_search(StrategySearchConfig(**{**cfg, "seed": 2}, out=tmp_path / "part"))


def test_strategy_search_mistakes(tables, tmp_path: Path) -> None:
    a, l_, _, lat = tables
    base = dict(method="random", accuracy_table=a, accuracy_column="CIFAR10Acc",
                out=tmp_path / "r")
    with pytest.raises(HwnasError, match="raise the budget to at least"):
        run_strategy_search(StrategySearchConfig(**base, latency_table=l_, device="raspi4",
                                                 budget_ms=float(lat.min()) * 0.5))
    with pytest.raises(HwnasError, match="needs --device COLUMN"):
        StrategySearchConfig(**base, latency_table=l_)
    with pytest.raises(HwnasError, match="a latency budget needs a latency"):
        StrategySearchConfig(**base, budget_ms=5.0)
    with pytest.raises(HwnasError, match="unknown search method 'anneal'"):
        StrategySearchConfig(**{**base, "method": "anneal"})
    with pytest.raises(HwnasError, match="not both"):
        StrategySearchConfig(**base, latency_table=l_, device="raspi4", profile=tmp_path)


def test_strategy_search_on_the_published_tables(shared_data, tmp_path: Path) -> None:
    acc = shared_data / "accuracy" / "nats_bench.csv"
    lat = shared_data / "latency" / "nb201_latency_help.csv"
    s = run_strategy_search(StrategySearchConfig(
        method="evolution", accuracy_table=acc, accuracy_column="CIFAR10TestAccuracy200Epochs",
        latency_table=lat, device="raspi4_ms", budget_ms=20.0, evaluations=100,
        out=tmp_path / "run"))
    assert s["feasible"] and s["predicted_ms"] <= 20.0
    assert s["reference"]["accuracy"] >= s["accuracy"] > 85.0


# --- the command line ------------------------------------------------------------------------

def _cli(argv: list[str]) -> None:
    from hwnas.cli import main

    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), e.code


def test_cli_strategy_search(tables, tmp_path: Path, capsys) -> None:
    a, l_, acc, lat = tables
    out = tmp_path / "run"
    budget = float(np.quantile(lat, 0.5))
    _cli(["search", "--accuracy-table", str(a), "--accuracy-column", "CIFAR10Acc",
          "--latency-table", str(l_), "--device", "raspi4", "--budget-ms", str(budget),
          "--evaluations", "40", "--seed", "3", "--out", str(out)])  # evolution by default
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "evolution" and s["evaluations_used"] == 40 and s["feasible"]
    assert s["predicted_ms"] <= budget and (out / "trajectory.csv").exists()
    assert "exact optimum of the tables" in capsys.readouterr().out
    # `hwnas report --run` shows the strategy run: the chosen arch against the optimum, and
    # every evaluated trial (score per evaluation, latency against the budget)
    profile = Path(__file__).resolve().parents[1] / "profiles" / "ort-cpu-1t-proxyless-128"
    if profile.is_dir():
        from hwnas.report import build_report

        page = build_report(profile, out, None, tmp_path / "report.html").read_text()
        assert "Strategy search: run" in page and s["chosen"]["arch_str"] in page
        assert "regret" in page and page.count("data:image/png;base64,") == 2  # + validation
    _cli(["search", "--method", "tpe", "--accuracy-table", str(a), "--accuracy-column",
          "CIFAR10Acc", "--evaluations", "15", "--out", str(tmp_path / "tpe")])  # no latency
    s = json.loads((tmp_path / "tpe" / "summary.json").read_text())
    assert s["method"] == "tpe" and s["predicted_ms"] is None and s["budget_ms"] is None


@pytest.mark.parametrize("args,message", [
    (["--method", "evolution"], "--method evolution needs --accuracy-table FILE"),
    (["--method", "darts"], "unknown search method 'darts'; available: proxyless, random"),
    (["--method", "proxyless", "--accuracy-table", "{a}"], "--accuracy-table: for the strategy"),
    (["--method", "proxyless"], "--method proxyless needs --profile DIR and --budget-ms X"),
    (["--accuracy-table", "{a}", "--accuracy-column", "CIFAR10Acc", "--latency-table", "{l}"],
     "needs --device COLUMN"),
    (["--accuracy-table", "{a}", "--accuracy-column", "CIFAR10Acc", "--latency-table", "{l}",
      "--device", "pixel9", "--budget-ms", "5"], "no latency column for device 'pixel9'"),
    (["--accuracy-table", "{a}", "--accuracy-column", "CIFAR10Acc", "--latency-table", "{l}",
      "--device", "raspi4", "--budget-ms", "0.01"], "raise the budget to at least"),
    (["--accuracy-table", "{a}", "--accuracy-column", "CIFAR10Acc", "--evaluations", "0"],
     "evaluations must be a positive integer"),
    (["--accuracy-table", "{a}", "--space", "proxyless", "--accuracy-column", "CIFAR10Acc"],
     "supports for the nb201 space"),
])
def test_cli_strategy_search_mistakes(tables, tmp_path: Path, capsys, args, message) -> None:
    from hwnas.cli import main

    a, l_, _, _ = tables
    out = tmp_path / "out"
    argv = ["search", *[x.format(a=a, l=l_) for x in args], "--out", str(out)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not captured.out.strip()  # checked before any progress is shown
    assert message in err[0]
    assert not out.exists()


def test_trained_evaluator_scores_the_from_scratch_validation_accuracy() -> None:
    from hwnas.search.evaluators import TrainedEvaluator
    from hwnas.search.run import train_arch

    space = get_space("nb201")
    idx = np.array([3, 1, 0, 2, 4, 3])
    ev = TrainedEvaluator(space, "digits", epochs=1, seed=1, max_batches=2)
    direct = train_arch(space.from_indices(list(idx)), "digits", epochs=1, seed=1,
                        train_resolution=32, max_batches=2, threads=1)["valid_acc"]
    assert ev(idx) == pytest.approx(direct) and 0.0 <= direct <= 1.0
    for bad in ("train:0", "train:x"):
        with pytest.raises(HwnasError, match="train"):
            StrategySearchConfig(method="evolution", evaluator=bad)
