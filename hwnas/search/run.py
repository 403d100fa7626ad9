"""`run_search`: ProxylessNAS under a latency budget on a measured profile; `train_arch`.

What a search does (and writes to `out`):

1. loads the profile (`Profile.load`) and the predictor that prices networks (a
   `LatencyPredictor` passed to `run_search`, by default `best_predictor`: the learned
   correction when the profile has one, else the lookup-table sum), builds the lookup table
   (`LookupTablePredictor`) and the differentiable `ExpectedLatency` over it; when the predictor
   is affine in the table sum (the linear learned correction) its scale and offset go into E[LAT]
   exactly; for another predictor E[LAT] is scaled by the mean predictor / table ratio over 256
   sampled networks (a simplification: those corrections are not linear in the probabilities);
2. refuses at once (`HwnasError`) a budget below the latency of the fastest network of the space,
   naming that latency;
3. builds the supernet at the training resolution and width (`train_resolution`, default 32, and
   `train_width`, default the profile's: the proxy task), on the data of `data` (default
   `digits`); the latency always comes from the profile's table at the profile's own resolution
   and width;
4. warm-up epochs: weights only (one sampled path per step, cosine LR from 0.05); then search
   epochs: weight steps on the train split interleaved with architecture steps (every
   `arch_every` weight steps) on the held-out validation split: `full_v2` / `two` (binary gates,
   Adam lr 6e-3 betas (0, 0.999)) with `LatencyLoss(ref = budget)`, or `reinforce`;
   a `BudgetController` multiplier on the latency term grows while the controlled latency is
   over the budget and decays below it (by default the latency of the current argmax network,
   the one the search delivers; `controller_signal="expected"` holds E[LAT] instead);
5. after each epoch: a row of history.csv (train loss, accuracy of the argmax network on the
   validation split, E[LAT], latency of the argmax network, latency weight, mean entropy of p) and
   checkpoint.safetensors (weights, alpha, BatchNorm statistics, the torch RNG; no optimizer
   state); a later call with the same `out` resumes after the last finished epoch;
6. the final network is the argmax of p per layer, checked with the best predictor. Over budget,
   it is repaired greedily: repeatedly switch the one layer whose switch to a faster choice saves
   the most table latency per unit of log-probability lost (log p_current - log p_new), until the
   best predictor says it fits. Below `fill_floor` (85%) of the budget it is filled greedily, the
   mirror image (`fill_to_budget`: slower choices, least log-probability lost per ms added, never
   over the budget; not in the paper, whose loss only pushes latency down). arch.json is the
   network that fits (the argmax when it does); summary.json says which, with the predicted
   latency, its interval and the accuracies.

The mul#log loss takes logarithms of milliseconds: it needs every network above 1 ms (log E[LAT] >
0), so the default `auto` picks it only then and add#linear otherwise (`latency_loss_mode`).

Sub-supernets (`split`, GM-NAS / few-shot NAS; `hwnas.search.gm`): with `split="gm"` the supernet
is split `splits` times into 2 groups at the epochs of `SplitSchedule.gm(total epochs, splits)`
(the released NB201 schedule [15, 30] of 60, scaled), the layer and its partition chosen by
gradient matching on `gm_batches` training minibatches; with `split="fewshot"`, one sub-supernet
per op of layer 0 at epoch 0 (Zhao et al.). Children inherit their parent's weights, optimizer
state and controller; alpha stays frozen (weight steps only, uniform over each child's allowed
ops) until the last split, as the GM code's `warmup_epoch = last split`; with `restart="final"`
the children's weights are re-initialised at the last split (the GM NB201 code), with `"none"`
(default here) they are inherited (the GM ProxylessNAS code has no restart). Each child then runs
the ProxylessNAS search above on its own op set (its E[LAT] is over its allowed ops only); the
result is the child whose final network meets the budget with the highest supernet validation
accuracy (GM-NAS's pick across sub-supernets). history.csv has one row per sub-supernet per epoch
(`sub`), summary.json lists every sub-supernet (`subsupernets`).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hwnas._io import atomic_path, folder_lock, write_json
from hwnas.data import ImageData, check_spec, load_data
from hwnas.errors import HwnasError
from hwnas.latency import LatencyPredictor, LookupTablePredictor, best_predictor
from hwnas.latency.loss import ExpectedLatency, LatencyLoss
from hwnas.profile.reader import Profile
from hwnas.search import gm
from hwnas.search.strategy import check_same_settings
from hwnas.search.supernet import WEIGHT_SHARING, SuperNet
from hwnas.search.trainer import (
    BudgetController,
    SearchLoop,
    evaluate_network,
    torch_threads,
    train_network,
)
from hwnas.space import Arch, SearchSpace, get_space, space_of

GRAD_MODES = ("full_v2", "two", "reinforce")
LOSSES = ("auto", "mul#log", "add#linear")
SPLITS = ("none", "gm", "fewshot")
HISTORY_COLUMNS = ["epoch", "sub", "supernets", "phase", "lr", "train_loss", "train_acc",
                   "arch_loss", "valid_acc",
                   "expected_ms", "argmax_ms", "latency_weight", "entropy", "seconds"]
CHECKPOINT = "checkpoint.safetensors"
# settings a resumed run must share with the run that wrote the checkpoint
RESUME_KEYS = ("profile", "budget_ms", "grad_mode", "loss", "data", "warmup_epochs",
               "batch_size", "lr", "arch_lr", "seed", "train_resolution", "train_width",
               "controller", "controller_rate", "controller_signal", "arch_every", "rl_batch", "valid_frac",
               "test_frac", "data_limit", "max_batches", "weight_sharing", "split", "splits",
               "gm_batches", "restart")


@dataclass
class SearchConfig:
    """Settings of one search (see the module docstring)."""

    profile: Path
    budget_ms: float
    out: Path = Path("runs/search")
    grad_mode: str = "full_v2"  # full_v2 | two | reinforce
    loss: str = "auto"  # auto | mul#log | add#linear (auto: see `latency_loss_mode`)
    data: str = "digits"  # digits | folder:PATH | cifar10:PATH
    epochs: int = 10  # search epochs (after the warm-up)
    warmup_epochs: int = 2
    batch_size: int = 64
    lr: float = 0.025  # weight lr of the search epochs (`--init_lr`)
    arch_lr: float = 6e-3
    seed: int = 0
    train_resolution: int | None = 32  # proxy-task resolution; None: the profile's
    train_width: float | None = None  # proxy-task width multiplier; None: the profile's
    controller: str = "mul"  # budget controller: mul | add | none
    controller_rate: float = 0.1
    controller_signal: str = "argmax"  # argmax | expected | max
    fill_floor: float = 0.85  # fill a final net below this share of the budget (0: off)
    arch_every: int = 1  # an arch step after every this many weight steps (reference: 5)
    rl_batch: int = 10  # networks per REINFORCE step
    valid_frac: float = 0.2
    test_frac: float = 0.2
    data_limit: int | None = None  # at most this many training images
    max_batches: int | None = None  # at most this many weight steps per epoch
    threads: int | None = None  # torch.set_num_threads for the run
    resume: bool = True
    weight_sharing: str = "entangled"  # entangled | independent (hwnas.search.supernet)
    split: str = "none"  # none | gm | fewshot (sub-supernets, see the module docstring)
    splits: int = 2  # GM splits (2 groups each)
    gm_batches: int = 10  # minibatches per gradient-matching distance (the code: 100, --fast 10)
    restart: str = "none"  # none | final: re-initialise the weights at the last split

    def __post_init__(self) -> None:
        self.profile, self.out = Path(self.profile), Path(self.out)
        if self.grad_mode not in GRAD_MODES:
            raise HwnasError(f"unknown grad mode {self.grad_mode!r}; use {', '.join(GRAD_MODES)}")
        if self.loss not in LOSSES:
            raise HwnasError(f"unknown latency loss {self.loss!r}; use {', '.join(LOSSES)}")
        if self.controller not in ("mul", "add", "none"):
            raise HwnasError(f"unknown budget controller {self.controller!r}; use mul, add, none")
        if self.controller_signal not in ("argmax", "expected", "max"):
            raise HwnasError(f"unknown controller signal {self.controller_signal!r}; "
                             "use argmax, expected or max")
        if not (isinstance(self.budget_ms, (int, float)) and math.isfinite(self.budget_ms)
                and self.budget_ms > 0):
            raise HwnasError(f"the budget must be a positive number of ms, got {self.budget_ms!r}")
        if self.loss == "mul#log" and self.budget_ms <= 1.0:
            raise HwnasError(f"the mul#log latency loss needs a budget above 1 ms (it divides by "
                             f"log(budget)); got {self.budget_ms} ms: use --loss add#linear")
        for name in ("epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise HwnasError(f"{name} must be >= 0")
        if self.epochs + self.warmup_epochs < 1:
            raise HwnasError("nothing to do: epochs + warmup_epochs must be at least 1")
        if self.batch_size < 2:
            raise HwnasError("batch_size must be at least 2 (BatchNorm needs a batch)")
        if not 0.0 <= self.fill_floor <= 1.0:
            raise HwnasError(f"fill_floor must be within [0, 1], got {self.fill_floor}")
        check_spec(self.data)
        if self.weight_sharing not in WEIGHT_SHARING:
            raise HwnasError(f"unknown weight sharing {self.weight_sharing!r}; use "
                             f"{' or '.join(WEIGHT_SHARING)}")
        if self.split not in SPLITS:
            raise HwnasError(f"unknown split {self.split!r}; use {', '.join(SPLITS)}")
        if self.restart not in ("none", "final"):
            raise HwnasError(f"unknown restart {self.restart!r}; use none or final")
        if self.split == "gm" and not 1 <= self.splits <= 4:
            raise HwnasError(f"splits must be within 1..4 (2**splits sub-supernets), got "
                             f"{self.splits}")
        if self.gm_batches < 1:
            raise HwnasError(f"gm_batches must be at least 1, got {self.gm_batches}")
        if self.train_resolution is not None and self.train_resolution < 8:
            raise HwnasError(f"train_resolution must be at least 8, got {self.train_resolution}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["profile"], d["out"] = str(self.profile.resolve()), str(self.out)
        return d


@dataclass
class LatencyModel:
    """The latency predictor as the search uses it: `best` prices networks (the argmax network,
    the repairs, the final one), `expected` is the differentiable E[LAT] over the profile's table
    (scaled to follow `best`, see `expected_latency_fit`)."""

    profile: Profile
    lut: LookupTablePredictor
    best: LatencyPredictor
    expected: ExpectedLatency
    scale: float
    offset: float
    note: str
    fastest_ms: float = field(default=0.0)
    slowest_ms: float = field(default=0.0)

    @property
    def predictor_name(self) -> str:
        return self.best.name

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.best.predict_indices(np.asarray(idx)), dtype=float)

    def interval(self, arch: Arch) -> tuple[float, float] | None:
        bounds = self.best.interval([arch])
        return None if bounds is None else (float(bounds[0][0]), float(bounds[1][0]))


def expected_latency_fit(best: LatencyPredictor, lut: LookupTablePredictor,
                         samples: int = 256) -> tuple[float, float, str]:
    """(scale, offset, note) with which E[LAT] = scale * table sum + offset follows `best`.

    On `samples` uniformly sampled networks (seed 0): when `best` is the table sum, (1, 0); when
    it is exactly affine in the table sum (the `linear` learned correction), that line, so E[LAT]
    is exact; otherwise the mean ratio of `best` to the table sum (a simplification: such
    corrections are not linear in the probabilities).
    """
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, len(layer.choices), samples)
                    for layer in lut.space_.layers], 1)
    s = lut.predict_indices(idx)
    p = np.asarray(best.predict_indices(idx), dtype=float)
    if np.allclose(p, s, rtol=1e-9, atol=0.0):
        return 1.0, 0.0, "lookup-table sum"
    a, b = (float(v) for v in np.polyfit(s, p, 1))
    if np.allclose(a * s + b, p, rtol=1e-9, atol=1e-9):
        return a, b, f"linear correction of the table sum ({a:.4g} x + {b:.4g} ms)"
    scale = float(np.mean(p / s))
    return scale, 0.0, (f"table sum scaled by {scale:.4g}, the mean ratio of the {best.name} "
                        f"predictor to the table sum over {samples} sampled networks")


def latency_model(profile_dir: Path | str, predictor: LatencyPredictor | None = None
                  ) -> LatencyModel:
    """Load a profile, the predictor that prices networks (`predictor`, default the profile's
    `best_predictor`) and the differentiable E[LAT] for the search."""
    profile = Profile.load(profile_dir)
    if not len(profile.ops):
        raise HwnasError(f"{profile.root}: the profile has no lookup table (ops.parquet): a "
                         "gradient search needs per-op latencies")
    best = predictor if predictor is not None else best_predictor(profile)
    lut = LookupTablePredictor.from_profile(profile)
    scale, offset, note = expected_latency_fit(best, lut)
    expected = ExpectedLatency.from_predictor(lut, scale, offset)
    model = LatencyModel(profile, lut, best, expected, scale, offset, note)
    fastest, slowest = lut.extremes()
    model.fastest_ms = float(model.best.predict([fastest])[0])
    model.slowest_ms = float(model.best.predict([slowest])[0])
    return model


def latency_loss_mode(loss: str, model: LatencyModel, budget_ms: float) -> str:
    """The latency loss a search uses. mul#log, CE * alpha * (log E[LAT] / log budget)^beta,
    takes logarithms of milliseconds (the reference's unit on phones, tens of ms): it needs
    E[LAT] above 1 ms at every step, or the power of a negative base is NaN. So `auto` is mul#log
    when the fastest network of the space is above 1 ms, else add#linear; an explicit mul#log
    with a network at or below 1 ms is refused before training."""
    if loss == "auto":
        return "mul#log" if model.fastest_ms > 1.0 and budget_ms > 1.0 else "add#linear"
    if loss == "mul#log" and model.fastest_ms <= 1.0:
        raise HwnasError(f"the mul#log latency loss takes log(E[LAT] in ms), which must stay "
                         f"above 1 ms; the fastest network here is {model.fastest_ms:.4g} ms: use "
                         "--loss add#linear (or auto)")
    return loss


def check_budget(model: LatencyModel, budget_ms: float) -> None:
    """Refuse a budget that no network of the space meets, naming the smallest latency."""
    if budget_ms < model.fastest_ms:
        space = model.profile.space
        raise HwnasError(
            f"budget {budget_ms:g} ms is below the fastest network of space {space.name!r} "
            f"(resolution {space.resolution}) on profile {model.profile.name}: the smallest "
            f"latency is {model.fastest_ms:.4g} ms ({model.predictor_name}); raise the budget to "
            f"at least {model.fastest_ms:.4g} ms")


def _greedy_switches(indices: np.ndarray, log_probs: np.ndarray, unfinished, moves,
                     field: str) -> tuple[np.ndarray, list[dict]]:
    """The greedy loop shared by `fit_to_budget` and `fill_to_budget`.

    While `unfinished(idx)`, take the move (i, j, gain_ms, tiebreak) from `moves(idx)` with the
    largest gain / (log p_current - log p_new) (a choice at least as probable as the current one
    costs nothing and is taken first; ties go to the larger `tiebreak`) and switch layer i to j.
    Stops when no move is left. Returns the indices and the switches made (gain in `field`).
    """
    idx = np.asarray(indices, dtype=np.int64).copy()
    steps = []
    while unfinished(idx):
        best, best_key = None, None
        for i, j, gain, tiebreak in moves(idx):
            cost = max(float(log_probs[i, idx[i]] - log_probs[i, j]), 0.0)
            key = (gain / cost if cost > 1e-12 else math.inf, tiebreak)
            if best_key is None or key > best_key:
                best, best_key = (i, j, gain), key
        if best is None:
            break
        i, j, gain = best
        steps.append({"layer": int(i), "from": int(idx[i]), "to": int(j), field: float(gain)})
        idx[i] = j
    return idx, steps


def fit_to_budget(indices: np.ndarray, log_probs: np.ndarray, table: np.ndarray,
                  predict_ms: Callable[[np.ndarray], np.ndarray], budget_ms: float
                  ) -> tuple[np.ndarray, list[dict]]:
    """Greedy repair of an over-budget network (see the module docstring, step 6).

    Each step switches one layer to a choice with a lower table latency, the one with the largest
    saving / (log p_current - log p_new) (a choice at least as probable as the current one costs
    nothing and is taken first), until `predict_ms` is within the budget or no faster choice is
    left. Returns the indices and the list of switches made.
    """
    t = np.where(np.isnan(table), np.inf, table)

    def faster(idx: np.ndarray):
        for i in range(len(idx)):
            for j in range(t.shape[1]):
                if np.isfinite(t[i, j]) and t[i, j] < t[i, idx[i]]:
                    saving = t[i, idx[i]] - t[i, j]
                    yield i, j, saving, saving

    return _greedy_switches(indices, log_probs,
                            lambda idx: float(predict_ms(idx[None, :])[0]) > budget_ms, faster,
                            "saving_ms")


def fill_to_budget(indices: np.ndarray, log_probs: np.ndarray, table: np.ndarray,
                   predict_ms: Callable[[np.ndarray], np.ndarray], budget_ms: float,
                   floor: float = 0.85) -> tuple[np.ndarray, list[dict]]:
    """Greedy fill of a network far under its budget (the mirror of `fit_to_budget`).

    Not in the ProxylessNAS paper: its latency loss only pushes latency down, so a search can end
    well below the budget (on the development VM at 80% of it), leaving capacity unused. While the
    predicted latency is below `floor` x budget, switch the one layer to a slower choice that keeps
    the network within the budget, the one losing the least log-probability per ms added (a choice
    at least as probable as the current one costs nothing and is taken first). Returns the indices
    and the switches made.
    """
    t = np.where(np.isnan(table), -np.inf, table)

    def slower_within_budget(idx: np.ndarray) -> list[tuple]:
        cands = [(i, j) for i in range(len(idx)) for j in range(t.shape[1])
                 if np.isfinite(t[i, j]) and t[i, j] > t[i, idx[i]]]
        if not cands:
            return []
        trial = np.repeat(idx[None, :], len(cands), axis=0)
        for row, (i, j) in enumerate(cands):
            trial[row, i] = j
        ms = predict_ms(trial)  # every candidate in one call
        return [(i, j, t[i, j] - t[i, idx[i]], -(t[i, j] - t[i, idx[i]]))
                for row, (i, j) in enumerate(cands) if ms[row] <= budget_ms]

    return _greedy_switches(indices, log_probs,
                            lambda idx: float(predict_ms(idx[None, :])[0]) < floor * budget_ms,
                            slower_within_budget, "added_ms")


def training_space(profile_space: SearchSpace, resolution: int | None, width: float | None,
                   num_classes: int) -> SearchSpace:
    """The profile's space at the proxy task's resolution / width / number of classes."""
    space = get_space(profile_space.name, resolution or profile_space.resolution,
                      width if width is not None else profile_space.width, num_classes,
                      profile_space.channels)
    mine = [layer.choices for layer in space.layers]
    theirs = [layer.choices for layer in profile_space.layers]
    if mine != theirs:
        raise HwnasError("the training space's layers differ from the profile's: use another "
                         "train_resolution / train_width")
    return space


# --- run_search ---------------------------------------------------------------------------------
def run_search(config: SearchConfig, progress: Callable[[dict], None] | None = None,
               predictor: LatencyPredictor | None = None) -> dict:
    """Run (or resume) a search; returns the summary dict that is written to summary.json.

    `progress`, when given, is called after every epoch with that epoch's history row plus
    `epochs_total`. `predictor` prices the networks (default: the profile's `best_predictor`),
    the way once-for-all's `EvolutionFinder` receives its efficiency predictor; E[LAT] stays the
    profile's table sum, fitted to follow it (`expected_latency_fit`).
    """
    with torch_threads(config.threads), contextlib.ExitStack() as held:
        return _run_search(config, progress, predictor, held)


def _run_search(config: SearchConfig, progress: Callable[[dict], None] | None,
                predictor: LatencyPredictor | None, held: contextlib.ExitStack) -> dict:
    t_start = time.monotonic()
    model = latency_model(config.profile, predictor)
    check_budget(model, config.budget_ms)
    pspace = model.profile.space
    data = load_data(config.data, config.train_resolution or pspace.resolution, config.seed,
                     config.valid_frac, config.test_frac, config.data_limit)
    tspace = training_space(pspace, config.train_resolution, config.train_width,
                            data.num_classes)
    out = config.out
    held.enter_context(folder_lock(out))  # creates out; a second search on it is refused

    torch.manual_seed(config.seed)
    loss_mode = latency_loss_mode(config.loss, model, config.budget_ms)
    try:
        loss = LatencyLoss(loss_mode, ref_ms=config.budget_ms)
    except ValueError as e:
        raise HwnasError(str(e)) from None

    def new_sub(seed: int) -> _Sub:
        net = SuperNet(tspace, seed=seed, weight_sharing=config.weight_sharing)
        if not torch.equal(net.mask, model.expected.mask):
            raise HwnasError("the supernet's choices do not match the profile's lookup table")
        controller = BudgetController(config.budget_ms, config.controller,
                                      config.controller_rate, signal=config.controller_signal)
        loop = SearchLoop(net, data, model.expected, loss, controller, config.grad_mode,
                          model.predict_indices, config.lr, config.arch_lr, config.batch_size,
                          config.arch_every, config.rl_batch, max_batches=config.max_batches,
                          seed=config.seed)
        return _Sub(net, loop, [])

    subs = [new_sub(config.seed)]
    if subs[0].loop.batches_per_epoch < 1:
        raise HwnasError(f"{data.name}: the train split ({len(data.train)} images) is smaller "
                         f"than one batch of {config.batch_size}")
    total = config.warmup_epochs + config.epochs
    schedule = split_schedule(config, total)
    warmup = max(config.warmup_epochs, schedule.alpha_warmup_epochs)  # alpha frozen until then

    history: list[dict] = []
    start = 0
    ckpt = out / CHECKPOINT
    if config.resume and ckpt.exists():
        start, history, subs = _resume(config, out, subs[0], new_sub)
    else:
        for stale in (ckpt, out / "history.csv", out / "summary.json", out / "arch.json"):
            stale.unlink(missing_ok=True)
    write_json(out / "config.json", config.to_dict())

    for epoch in range(start, total):
        groups = schedule.splits_at(epoch)
        if groups is not None:
            subs = _split_all(subs, config, data, groups, epoch)
            if schedule.reinit_at(epoch):  # `--restart final`: fresh weights, same masks
                subs = [_reinit(sub, new_sub(config.seed + 1 + k))
                        for k, sub in enumerate(subs)]
        rows = []
        for k, sub in enumerate(subs):
            t0 = time.monotonic()
            phase = "warmup" if epoch < warmup else "search"
            stats = sub.loop.epoch(epoch, warmup, total - warmup)
            idx = sub.net.argmax_indices()
            rows.append({"epoch": epoch, "sub": k, "supernets": len(subs), "phase": phase,
                         **stats,
                         "valid_acc": sub.loop.evaluate(idx, "valid", config.max_batches),
                         "expected_ms": sub.loop.expected_ms(),
                         "argmax_ms": float(model.predict_indices(idx[None, :])[0]),
                         "latency_weight": sub.loop.controller.weight,
                         "entropy": sub.net.entropy(), "seconds": time.monotonic() - t0})
        history += rows
        # the history first: a kill between the two writes leaves a row past the checkpoint
        # (dropped and redone on resume), never a checkpointed epoch without its row
        _write_history(out / "history.csv", history)
        _save_checkpoint(ckpt, subs, epoch + 1)
        if progress is not None:
            best = max(rows, key=lambda r: r["valid_acc"])
            progress({**best, "epochs_total": total})

    summary = _finish(config, model, subs, data, tspace, history)
    summary["wall_s"] = time.monotonic() - t_start
    write_json(out / "summary.json", summary)
    return summary


@dataclass
class _Sub:
    """One (sub-)supernet of a search: its net (with its `enc`), its loop, how it was split."""

    net: SuperNet
    loop: SearchLoop
    splits: list[dict]


def split_schedule(config: SearchConfig, total: int) -> gm.SplitSchedule:
    """The split schedule of a search over `total` epochs (see the module docstring)."""
    if config.split == "gm":
        sched = gm.SplitSchedule.gm(total, config.splits, restart=config.restart)
        # alpha frozen until the last split, with or without restart (`warmup_epoch = last split`)
        sched = dataclasses.replace(sched, alpha_warmup=sched.split_epochs[-1])
        if sched.split_epochs[0] < 1:
            raise HwnasError(f"{total} epochs are too few for {config.splits} GM split(s): "
                             "the supernet needs at least one epoch before the first split")
        return sched
    if config.split == "fewshot":
        return gm.SplitSchedule(total, [0], [0], restart=config.restart)
    return gm.SplitSchedule.none(total)


def _split_all(subs: list[_Sub], config: SearchConfig, data: ImageData, groups: int,
               epoch: int) -> list[_Sub]:
    """Split every sub-supernet (GM: layer and partition by gradient matching; few-shot: one
    child per op of layer 0); children copy weights, optimizer state and controller."""
    out = []
    for sub in subs:
        valid = sub.net.mask.cpu().numpy()
        if config.split == "fewshot":
            encs, info = gm.plan_split(sub.net, valid, groups, fewshot_layer=0)
        else:
            gen = torch.Generator().manual_seed(config.seed * 1009 + epoch)
            batches = list(data.batches("train", config.batch_size, True,
                                        seed=config.seed * 7 + epoch, drop_last=True,
                                        max_batches=config.gm_batches))
            encs, info = gm.plan_split(sub.net, valid, groups, batches, gen)
            info = {"epoch": epoch, **info}
        for e in encs:
            net = copy.deepcopy(sub.net)
            net.set_enc(e)
            loop = copy.copy(sub.loop)
            loop.net = net
            loop.controller = copy.deepcopy(sub.loop.controller)
            loop.w_opt = type(sub.loop.w_opt)(net.weight_parameters(),
                                              **sub.loop.w_opt.defaults)
            loop.w_opt.load_state_dict(sub.loop.w_opt.state_dict())
            loop.a_opt = type(sub.loop.a_opt)(net.arch_parameters(), **sub.loop.a_opt.defaults)
            loop.a_opt.load_state_dict(sub.loop.a_opt.state_dict())
            out.append(_Sub(net, loop, sub.splits + [info]))
    return out


def _reinit(sub: _Sub, fresh: _Sub) -> _Sub:
    fresh.net.set_enc(sub.net.enc.cpu().numpy())
    fresh.loop.controller = sub.loop.controller
    return _Sub(fresh.net, fresh.loop, sub.splits)


def _final_indices(config: SearchConfig, model: LatencyModel, net: SuperNet
                   ) -> tuple[np.ndarray, float, np.ndarray, list, list]:
    """Step 6a: the argmax network, repaired when over budget or filled when far under it
    (`fit_to_budget` / `fill_to_budget`); returns (argmax, its ms, final, repairs, fills)."""
    argmax = net.argmax_indices()
    argmax_ms = float(model.predict_indices(argmax[None, :])[0])
    with torch.no_grad():
        log_probs = net.log_probs().cpu().double().numpy()
    table = model.lut.table_ * model.scale
    final, steps, fills = argmax, [], []
    if argmax_ms > config.budget_ms:
        final, steps = fit_to_budget(argmax, log_probs, table, model.predict_indices,
                                     config.budget_ms)
    elif config.fill_floor and argmax_ms < config.fill_floor * config.budget_ms:
        final, fills = fill_to_budget(argmax, log_probs, table, model.predict_indices,
                                      config.budget_ms, config.fill_floor)
    return argmax, argmax_ms, final, steps, fills


def _final_message(budget: float, argmax_ms: float, final_ms: float, steps: list,
                   fills: list) -> str:
    """Step 6b: one sentence on what arch.json is and why."""
    if fills:
        return (f"the argmax network used {argmax_ms / budget:.0%} of the budget "
                f"({argmax_ms:.4g} ms); {len(fills)} layer(s) switched to slower, most "
                f"probable choices: {final_ms:.4g} ms <= budget {budget:g} ms")
    if argmax_ms <= budget:
        return f"the argmax network fits: {argmax_ms:.4g} ms <= budget {budget:g} ms"
    if final_ms <= budget:
        return (f"the argmax network is over budget ({argmax_ms:.4g} ms > {budget:g} ms); "
                f"arch.json is the closest network that fits ({final_ms:.4g} ms, "
                f"{len(steps)} layer(s) switched to faster choices)")
    return f"no network within the budget was found ({final_ms:.4g} ms > {budget:g} ms)"


def _save_final_arch(config: SearchConfig, model: LatencyModel, final: np.ndarray,
                     final_ms: float, data: ImageData, tspace: SearchSpace) -> Arch:
    """Step 6c: arch.json, with how it was found in its `meta`."""
    pspace = model.profile.space
    meta = {"method": "proxylessnas", "grad_mode": config.grad_mode,
            "loss": latency_loss_mode(config.loss, model, config.budget_ms),
            "budget_ms": config.budget_ms, "predicted_ms": round(final_ms, 6),
            "profile": model.profile.name, "data": data.name,
            "train_resolution": tspace.resolution, "train_width": tspace.width,
            "train_num_classes": data.num_classes}
    arch = pspace.from_indices(final)
    arch = Arch(arch.space, arch.choices, arch.resolution, arch.width, arch.num_classes,
                arch.channels, meta)
    arch.save(config.out / "arch.json")
    return arch


def _finish(config: SearchConfig, model: LatencyModel, subs: list[_Sub],
            data: ImageData, tspace: SearchSpace, history: list[dict]) -> dict:
    """Step 6: the final network of each sub-supernet, the pick among them (meets the budget,
    then the highest supernet validation accuracy), arch.json, cloud.csv and the summary."""
    pspace = model.profile.space
    finals = []
    for k, sub in enumerate(subs):
        argmax, argmax_ms, final, steps, fills = _final_indices(config, model, sub.net)
        final_ms = float(model.predict_indices(final[None, :])[0])
        finals.append({"sub": k, "argmax": argmax, "argmax_ms": argmax_ms, "final": final,
                       "steps": steps, "fills": fills, "final_ms": final_ms,
                       "valid_acc": sub.loop.evaluate(final, "valid")})
    pick = max(finals, key=lambda f: (f["final_ms"] <= config.budget_ms, f["valid_acc"],
                                      -f["sub"]))
    sub = subs[pick["sub"]]
    net, loop = sub.net, sub.loop
    argmax, argmax_ms, final = pick["argmax"], pick["argmax_ms"], pick["final"]
    steps, fills, final_ms = pick["steps"], pick["fills"], pick["final_ms"]
    arch = _save_final_arch(config, model, final, final_ms, data, tspace)
    interval = model.interval(arch)
    valid_acc = pick["valid_acc"]
    test_acc = loop.evaluate(final, "test") if len(data.test) else float("nan")
    _write_cloud(config.out / "cloud.csv", pspace, loop, model, final, config.seed)
    return {
        "budget_ms": config.budget_ms,
        "met": bool(final_ms <= config.budget_ms),
        "predicted_ms": final_ms,
        "interval_ms": list(interval) if interval else None,
        "interval_note": _interval_note(model.best, interval is not None),
        "predictor": model.predictor_name,
        "expected_latency_model": model.note,
        "message": _final_message(config.budget_ms, argmax_ms, final_ms, steps, fills),
        "choices": list(arch.choices),
        "argmax_choices": list(pspace.from_indices(argmax).choices),
        "argmax_ms": argmax_ms,
        "argmax_met": bool(argmax_ms <= config.budget_ms),
        "repair_steps": _named(pspace, steps),
        "fill_steps": _named(pspace, fills),
        "fastest_ms": model.fastest_ms,
        "slowest_ms": model.slowest_ms,
        "expected_ms": loop.expected_ms(),
        "latency_weight": loop.controller.weight,
        "entropy": net.entropy(),
        "accuracy": {"valid": valid_acc, "test": test_acc,
                     "note": "accuracy of the network inside the supernet (shared weights, "
                             "train-mode BatchNorm) on the proxy task; train it from scratch "
                             "with train_arch for its own accuracy"},
        "latency_note": (f"latency from profile {model.profile.name} ({pspace.name}, resolution "
                         f"{pspace.resolution}, width {pspace.width:g}); the proxy task trained "
                         f"at resolution {tspace.resolution}, width {tspace.width:g}, "
                         f"{data.num_classes} classes ({data.name})"),
        "data": data.describe(),
        "epochs_done": int(history[-1]["epoch"]) + 1 if history else 0,
        "last_epoch": next((r for r in reversed(history) if r.get("sub", 0) == pick["sub"]),
                           history[-1] if history else {}),
        "grad_mode": config.grad_mode,
        "loss": latency_loss_mode(config.loss, model, config.budget_ms),
        "profile": str(model.profile.root),
        "split": config.split,
        "chosen_sub": pick["sub"],
        "subsupernets": [{"sub": f["sub"], "splits": subs[f["sub"]].splits,
                          "allowed": subs[f["sub"]].net.allowed().int().tolist(),
                          "choices": list(pspace.from_indices(f["final"]).choices),
                          "predicted_ms": f["final_ms"], "valid_acc": f["valid_acc"]}
                         for f in finals],
    }


def _interval_note(predictor: LatencyPredictor, has_interval: bool) -> str:
    if not has_interval:
        return f"{predictor.name}: no interval"
    if predictor.coverage is None:
        return f"{predictor.name} interval"
    return f"{predictor.name} interval, nominal coverage {predictor.coverage:.0%}"


def _write_cloud(path: Path, space: SearchSpace, loop: SearchLoop, model: LatencyModel,
                 final: np.ndarray, seed: int, samples: int = 30) -> None:
    """cloud.csv: predicted latency and shared-weight validation accuracy of `samples` random
    networks of the space and of the final one (the report's latency/accuracy cloud)."""
    rng = np.random.default_rng(seed + 1)
    rows = [("final", final)] + [("sampled", space.indices(space.sample(rng)))
                                 for _ in range(samples)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "predicted_ms", "valid_acc", "choices"])
        for kind, idx in rows:
            idx = np.asarray(idx)
            w.writerow([kind, float(model.predict_indices(idx[None, :])[0]),
                        loop.evaluate(idx, "valid"),
                        " ".join(space.from_indices(idx).choices)])


def _named(space: SearchSpace, steps: list[dict]) -> list[dict]:
    return [{**s, "layer_name": space.layers[s["layer"]].name,
             "from": space.layers[s["layer"]].choices[s["from"]],
             "to": space.layers[s["layer"]].choices[s["to"]]} for s in steps]


# --- checkpoint and resume ----------------------------------------------------------------------
def _save_checkpoint(path: Path, subs: list[_Sub], epochs_done: int) -> None:
    """checkpoint.safetensors: every sub-supernet's weights, alpha, BatchNorm statistics and
    `enc` (keys `sub<k>.`), its optimizers' state (SGD momentum, Adam moments; keys `opt<k>.`),
    the torch RNG; controller weights, REINFORCE baselines, validation batches drawn and splits
    in the metadata (JSON). A resume from it continues exactly as the uninterrupted run."""
    import json

    from safetensors.torch import save_file

    tensors = {f"sub{k}.{name}": v.detach().contiguous().clone()
               for k, sub in enumerate(subs) for name, v in sub.net.state_dict().items()}
    tensors |= {f"opt{k}.{name}": v.contiguous() for k, sub in enumerate(subs)
                for name, v in sub.loop.optimizer_tensors().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"epochs_done": str(epochs_done), "subs": str(len(subs)),
            "latency_weights": json.dumps([s.loop.controller.weight for s in subs]),
            "rl_baselines": json.dumps([s.loop.rl_baseline for s in subs]),
            "valid_used": json.dumps([s.loop.valid_used for s in subs]),
            "splits": json.dumps([s.splits for s in subs]), "format": "hwnas-search-2"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _resume(config: SearchConfig, out: Path, first: _Sub, new_sub: Callable[[int], _Sub]
            ) -> tuple[int, list[dict], list[_Sub]]:
    import json

    from safetensors import safe_open

    saved_config = out / "config.json"
    if saved_config.exists():
        check_same_settings(saved_config, config.to_dict(), RESUME_KEYS, out,
                            "use another out folder or resume=False to start over")
    try:
        with safe_open(str(out / CHECKPOINT), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "hwnas-search-2":
                raise ValueError(f"format {meta.get('format')!r}, expected hwnas-search-2")
            names = list(f.keys())
            n = int(meta["subs"])
            states = [{k[len(f"sub{i}."):]: f.get_tensor(k) for k in names
                       if k.startswith(f"sub{i}.")} for i in range(n)]
            opts = [{k[len(f"opt{i}."):]: f.get_tensor(k) for k in names
                     if k.startswith(f"opt{i}.")} for i in range(n)]
            # older checkpoints hold no optimizer state: fresh optimizers, as they resumed then
            used = json.loads(meta.get("valid_used", "null")) or [0] * n
            rng = f.get_tensor("rng.torch") if "rng.torch" in names else None
            weights = json.loads(meta["latency_weights"])
            baselines = json.loads(meta["rl_baselines"])
            splits = json.loads(meta["splits"])
            if not (len(weights) == len(baselines) == len(splits) == len(used) == n >= 1):
                raise ValueError("metadata lists disagree with the number of sub-supernets")
    except Exception as e:  # a truncated or foreign file
        raise HwnasError(f"{out / CHECKPOINT}: unreadable checkpoint ({e})") from None
    subs = [first] + [new_sub(config.seed) for _ in range(n - 1)]
    for sub, state, opt, k, w, b, sp in zip(subs, states, opts, used, weights, baselines, splits,
                                            strict=True):
        try:
            sub.net.load_state_dict(state)
            sub.loop.restore(opt, int(k))
        except (RuntimeError, ValueError, KeyError) as e:
            raise HwnasError(f"{out / CHECKPOINT} does not fit this supernet: {e}") from None
        sub.loop.controller.weight = float(w)
        sub.loop.rl_baseline = None if b is None else float(b)
        sub.splits = sp
    if rng is not None:
        torch.set_rng_state(rng)
    start = int(meta.get("epochs_done", "0"))
    history = [r for r in _read_history(out / "history.csv") if int(r["epoch"]) < start]
    return start, history, subs


def _write_history(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        d: dict = {}
        for k, v in r.items():
            if k == "phase":
                d[k] = v
            elif k in ("epoch", "sub", "supernets"):
                d[k] = int(v)
            else:
                d[k] = float(v) if v not in ("", None) else float("nan")
        out.append(d)
    return out




# --- train_arch ---------------------------------------------------------------------------------
def train_arch(arch: Arch | str | Path, data_spec: str = "digits", epochs: int = 10,
               batch_size: int = 64, lr: float = 0.05, seed: int = 0,
               train_resolution: int | None = 32, train_width: float | None = None,
               out: Path | str | None = None, max_batches: int | None = None,
               data_limit: int | None = None, valid_frac: float = 0.2, test_frac: float = 0.2,
               threads: int | None = None, progress: Callable[[dict], None] | None = None
               ) -> dict:
    """Train a chosen network from scratch (`space.build`) on a data spec; report its accuracy.

    `arch` is an Arch or the path of an arch.json. The network is the arch's choices in its space
    at `train_resolution` (None: the arch's), `train_width` (None: the arch's) and the data's
    number of classes. SGD Nesterov, cosine LR, label smoothing 0.1; accuracy with BatchNorm
    running statistics. With `out`, writes model.safetensors and train.json there.
    """
    if not isinstance(arch, Arch):
        arch = Arch.load(arch)
    space_of(arch)  # validates the arch against its own space
    if epochs < 1:
        raise HwnasError("epochs must be at least 1")
    if batch_size < 2:
        raise HwnasError(f"batch_size must be at least 2 (BatchNorm needs a batch), got "
                         f"{batch_size}")
    if train_resolution is not None and train_resolution < 8:
        raise HwnasError(f"train_resolution must be at least 8, got {train_resolution}")
    check_spec(data_spec)
    with torch_threads(threads):
        return _train_arch(arch, data_spec, epochs, batch_size, lr, seed, train_resolution,
                           train_width, out, max_batches, data_limit, valid_frac, test_frac,
                           progress)


def _train_arch(arch: Arch, data_spec: str, epochs: int, batch_size: int, lr: float, seed: int,
                train_resolution: int | None, train_width: float | None,
                out: Path | str | None, max_batches: int | None, data_limit: int | None,
                valid_frac: float, test_frac: float,
                progress: Callable[[dict], None] | None) -> dict:
    t0 = time.monotonic()
    data = load_data(data_spec, train_resolution or arch.resolution, seed, valid_frac,
                     test_frac, data_limit)
    space = get_space(arch.space, train_resolution or arch.resolution,
                      train_width if train_width is not None else arch.width, data.num_classes,
                      arch.channels)
    net_arch = space.arch(arch.choices)
    torch.manual_seed(seed)
    model = space.build(net_arch).train()
    history = train_network(model, data, epochs, batch_size, lr, seed, max_batches, progress)
    result = {
        "arch": arch.to_dict(),
        "data": data.describe(),
        "train_resolution": space.resolution,
        "train_width": space.width,
        "epochs": epochs,
        "params": int(sum(p.numel() for p in model.parameters())),
        "train_loss": history[-1]["train_loss"],
        "valid_acc": history[-1]["valid_acc"],
        "test_acc": evaluate_network(model, data, "test", batch_size) if len(data.test)
        else float("nan"),
        "history": history,
        "wall_s": time.monotonic() - t0,
    }
    if out is not None:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "model.safetensors") as tmp:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(tmp), metadata={"arch": net_arch.to_json(None)})
        write_json(out / "train.json", result)
    return result
