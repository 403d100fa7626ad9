"""Does a supernet rank architectures the way training them would? One-shot, few-shot and GM-NAS.

`run_supernet_rank` (the flow behind `hwnas supernet-rank` and `benchmarks/supernet_ranking.py`):

1. the ground truth: N architectures drawn uniformly from the space (seeded), each trained from
   scratch on the proxy task with `seeds` seeds (`standalone_accuracy`: the chain spaces'
   `space.build(arch)`, the very network the profile measures; NB201 the one-path
   `CellSuperNet`, whose function is NB201's cell network with `cells_per_stage` cells); the
   mean test accuracy over seeds;
2. for each method, supernets trained by uniform single-path sampling (SPOS, Guo et al. 2020;
   RSPS of Li & Talwalkar, the sampler GM-NAS's NB201 RSPS runs use) over the same number of
   epochs (`epochs`: every sub-supernet runs the whole schedule; children inherit their parent's
   weights and optimizer state, so a split multiplies the compute after it, as in the GM-NAS
   code; the wall time is reported):
   - `oneshot`: one supernet;
   - `fewshot` (Zhao et al., ICML 2021): one exhaustive split of one layer at epoch 0 (one
     sub-supernet per op; `fewshot_layer`, default 0 as the GM-NAS repo's `--split_eid 0`);
   - `gm` (Hu et al., ICLR 2022): splits at the schedule's epochs into 2 groups each, the layer
     and the partition chosen by gradient matching (`hwnas.search.gm`) on `gm_batches`
     minibatches (the code's `repeat = 100`, 10 with `--fast`; 10 here by default), weights
     re-initialised after the last split (`--restart final`, the NB201 code), so its children
     train for the epochs after the last split only;
   - `gm-inherit`: the same splits, the children keep their parent's weights (no restart, as
     the GM ProxylessNAS code);
3. the inherited accuracy of each architecture: the weights of the sub-supernet whose `enc`
   contains it, BatchNorm statistics re-calibrated for that path on training batches (SPOS/OFA),
   accuracy on the validation split (the supernet never sees the test split);
4. Kendall tau (scipy's tau-b) and Spearman rho of inherited vs stand-alone accuracy, top-k
   overlap (the share of the ground truth's top k among the supernet's top k) and top-1 regret
   (best stand-alone accuracy minus that of the supernet's pick).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from hwnas.data import ImageData
from hwnas.errors import HwnasError
from hwnas.search import gm
from hwnas.search.supernet import CellSuperNet, WeightSharingNet, build_supernet
from hwnas.search.trainer import (
    LABEL_SMOOTHING,
    cosine_lr,
    evaluate_network,
    recalibrate_bn,
    train_network,
    weight_optimizer,
)
from hwnas.space import SearchSpace
from hwnas.space.nb201 import NB201Space

METHODS = ("oneshot", "fewshot", "gm", "gm-inherit")


# --- metrics ------------------------------------------------------------------------------------
def rank_metrics(estimate: Sequence[float], truth: Sequence[float], k: int = 5) -> dict:
    """Kendall tau-b, Spearman rho, top-k overlap and top-1 regret of `estimate` against `truth`
    (higher is better in both)."""
    est, tru = np.asarray(estimate, dtype=float), np.asarray(truth, dtype=float)
    if est.shape != tru.shape or est.ndim != 1 or len(est) < 3:
        raise HwnasError("ranking needs two equally long vectors of at least 3 values")
    k = max(1, min(k, len(est)))
    tau = stats.kendalltau(est, tru).statistic
    rho = stats.spearmanr(est, tru).statistic
    top_est = set(np.argsort(-est, kind="stable")[:k])
    top_tru = set(np.argsort(-tru, kind="stable")[:k])
    pick = int(np.argmax(est))
    return {"kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
            "spearman_rho": float(rho) if np.isfinite(rho) else float("nan"),
            "top_k": k, "top_k_overlap": len(top_est & top_tru) / k,
            "top1_regret": float(tru.max() - tru[pick]), "pick": pick}


# --- architectures ------------------------------------------------------------------------------
def sample_architectures(space: SearchSpace, n: int, seed: int) -> np.ndarray:
    """n distinct architectures drawn uniformly (index matrix, n x layers)."""
    rng = np.random.default_rng(seed)
    sizes = [len(layer.choices) for layer in space.layers]
    total = math.prod(sizes)
    if n > total:
        raise HwnasError(f"the space has only {total} architectures, asked for {n}")
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < n:
        seen[tuple(int(rng.integers(0, s)) for s in sizes)] = None
    return np.asarray(list(seen), dtype=np.int64)


def standalone_network(space: SearchSpace, indices: np.ndarray, seed: int,
                       cells_per_stage: int | None = None) -> torch.nn.Module:
    """The network of one architecture, freshly initialised with `seed`."""
    torch.manual_seed(seed)
    if isinstance(space, NB201Space):
        net = CellSuperNet(space, cells_per_stage)
        net.set_paths(indices)
        return net
    model = space.build(space.from_indices(indices))
    model.train()
    return model


def standalone_accuracy(space: SearchSpace, indices: np.ndarray, data: ImageData, epochs: int,
                        seeds: Sequence[int], batch_size: int = 64, lr: float = 0.05,
                        cells_per_stage: int | None = None) -> list[float]:
    """Test accuracy of the architecture trained from scratch once per seed (`train_network`)."""
    accs = []
    for s in seeds:
        model = standalone_network(space, indices, s, cells_per_stage)
        train_network(model, data, epochs, batch_size, lr, seed=s, evaluate_each_epoch=False)
        accs.append(evaluate_network(model, data, "test", batch_size))
    return accs


# --- supernet training --------------------------------------------------------------------------
def uniform_epoch(net: WeightSharingNet, opt: torch.optim.Optimizer, data: ImageData,
                  batch_size: int, lr: float, seed: int, generator: torch.Generator) -> float:
    """One epoch of uniform single-path training (SPOS): per step a uniformly drawn allowed path,
    cross-entropy with label smoothing, SGD; returns the mean training accuracy."""
    net.train()
    for g in opt.param_groups:
        g["lr"] = lr
    accs = []
    for x, y in data.batches("train", batch_size, True, seed=seed, drop_last=True):
        net.set_paths(net.sample_uniform(generator))
        out = net(x)
        loss = F.cross_entropy(out, y, label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        accs.append(float((out.detach().argmax(1) == y).float().mean()))
    return float(np.mean(accs)) if accs else float("nan")


@torch.no_grad()
def inherited_accuracy(net: WeightSharingNet, indices: np.ndarray, data: ImageData,
                       split: str = "valid", recalibrate_batches: int = 8, seed: int = 0) -> float:
    """Accuracy of one path with the supernet's weights, BatchNorm statistics re-calibrated for
    that path first (SPOS / OFA `set_running_statistics`)."""
    net.set_paths(indices)
    recalibrate_bn(net, data, max_batches=recalibrate_batches, seed=seed)
    return evaluate_network(net, data, split)


@dataclass
class SubSupernet:
    """One (sub-)supernet being trained: the net, its optimizer, where the cosine restarts."""

    net: WeightSharingNet
    opt: torch.optim.Optimizer
    start: int = 0
    splits: list[dict] = field(default_factory=list)


def _fresh(space: SearchSpace, seed: int, cells: int | None, lr: float,
           weight_sharing: str, enc: np.ndarray | None = None, start: int = 0) -> SubSupernet:
    net = build_supernet(space, seed, weight_sharing, cells)
    if enc is not None:
        net.set_enc(enc)
    return SubSupernet(net, weight_optimizer(net.weight_parameters(), lr), start)


def _child(parent: SubSupernet, enc: np.ndarray, split: dict) -> SubSupernet:
    """A sub-supernet inheriting its parent's weights and optimizer state (the code's copy of
    model, optimizer and scheduler below the final split)."""
    net, opt = copy.deepcopy((parent.net, parent.opt))
    net.set_enc(enc)
    return SubSupernet(net, opt, parent.start, parent.splits + [split])


def split_once(sub: SubSupernet, method: str, groups: int, data: ImageData, batch_size: int,
               gm_batches: int, seed: int, fewshot_layer: int = 0) -> list[SubSupernet]:
    """Split one sub-supernet: `fewshot` (one child per op of `fewshot_layer`) or `gm` (the
    layer and the partition into `groups` by gradient matching, `gm.plan_split`)."""
    valid = sub.net.mask.cpu().numpy()
    if method == "fewshot":
        encs, info = gm.plan_split(sub.net, valid, groups, fewshot_layer=fewshot_layer)
    else:
        gen = torch.Generator().manual_seed(seed)
        batches = list(data.batches("train", batch_size, True, seed=seed + 17, drop_last=True,
                                    max_batches=gm_batches))
        encs, info = gm.plan_split(sub.net, valid, groups, batches, gen)
    return [_child(sub, e, info) for e in encs]


def train_split_supernets(space: SearchSpace, data: ImageData, method: str, epochs: int,
                          batch_size: int = 64, lr: float = 0.05, seed: int = 0,
                          cells_per_stage: int | None = None, gm_batches: int = 10,
                          gm_splits: int = 2, fewshot_layer: int = 0,
                          weight_sharing: str = "entangled",
                          progress: Callable[[dict], None] | None = None
                          ) -> list[SubSupernet]:
    """Train the (sub-)supernets of `method` for `epochs` epochs (see the module docstring)."""
    if method not in METHODS:
        raise HwnasError(f"unknown supernet method {method!r}; use {', '.join(METHODS)}")
    if method == "oneshot":
        schedule = gm.SplitSchedule.none(epochs)
    elif method == "fewshot":
        schedule = gm.SplitSchedule.fewshot(epochs)
    else:
        schedule = gm.SplitSchedule.gm(epochs, gm_splits,
                                       restart="final" if method == "gm" else "none")
    gen = torch.Generator().manual_seed(seed)
    subs = [_fresh(space, seed, cells_per_stage, lr, weight_sharing)]
    for epoch in range(epochs):
        groups = schedule.splits_at(epoch)
        if groups is not None:
            kind = "fewshot" if method == "fewshot" else "gm"
            subs = [c for s in subs
                    for c in split_once(s, kind, groups, data, batch_size, gm_batches,
                                        seed * 1009 + epoch, fewshot_layer)]
            if schedule.reinit_at(epoch):  # `--restart final`: fresh weights, fresh cosine
                subs = [_replace_weights(s, space, seed + 1 + k, cells_per_stage, lr,
                                         weight_sharing, epoch) for k, s in enumerate(subs)]
        accs = []
        for k, s in enumerate(subs):
            lr_now = cosine_lr(lr, epoch - s.start, epochs - s.start)
            accs.append(uniform_epoch(s.net, s.opt, data, batch_size, lr_now,
                                      seed * 100003 + epoch * 101 + k, gen))
        if progress is not None:
            progress({"method": method, "epoch": epoch, "epochs": epochs,
                      "supernets": len(subs), "train_acc": float(np.mean(accs))})
    return subs


def _replace_weights(sub: SubSupernet, space: SearchSpace, seed: int, cells: int | None,
                     lr: float, weight_sharing: str, epoch: int) -> SubSupernet:
    fresh = _fresh(space, seed, cells, lr, weight_sharing, sub.net.enc.cpu().numpy(), epoch)
    fresh.splits = sub.splits
    return fresh


def owner(subs: Sequence[SubSupernet], indices: np.ndarray) -> int:
    """The sub-supernet whose mask contains the architecture (exactly one by construction)."""
    hits = [k for k, s in enumerate(subs) if s.net.contains(indices)[0]]
    if len(hits) != 1:
        raise HwnasError(f"architecture {list(indices)} lies in {len(hits)} sub-supernets")
    return hits[0]


# --- the flow -----------------------------------------------------------------------------------
@dataclass
class RankConfig:
    """Settings of `run_supernet_rank` (see the module docstring)."""

    space: SearchSpace
    data: ImageData
    archs: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    standalone_epochs: int = 10
    supernet_epochs: int = 30
    methods: tuple[str, ...] = METHODS
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    cells_per_stage: int | None = None
    gm_batches: int = 10
    gm_splits: int = 2
    fewshot_layer: int = 0
    weight_sharing: str = "entangled"
    top_k: int = 5

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise HwnasError(f"unknown supernet method(s) {bad}; use {', '.join(METHODS)}")
        if self.archs < 3:
            raise HwnasError(f"ranking needs at least 3 architectures, got {self.archs}")
        if not self.seeds:
            raise HwnasError("at least one stand-alone seed is needed")
        if self.standalone_epochs < 1 or self.supernet_epochs < 1:
            raise HwnasError("epochs must be at least 1")


def _cache_stamp(cfg: RankConfig) -> str:
    """What a cached stand-alone accuracy depends on."""
    sp = cfg.space
    return json.dumps([sp.name, sp.resolution, sp.width, list(sp.stage_widths()),
                       sp.num_classes, cfg.cells_per_stage, cfg.data.name,
                       cfg.data.describe(), list(cfg.seeds), cfg.standalone_epochs,
                       cfg.batch_size, cfg.lr], sort_keys=True)


def run_supernet_rank(cfg: RankConfig, progress: Callable[[dict], None] | None = None,
                      truth: dict[tuple[int, ...], float] | None = None,
                      cache: Path | None = None) -> dict:
    """Ground truth, supernets of each method, inherited accuracies and ranking metrics.

    `truth` (architecture tuple -> stand-alone accuracy) skips step 1 for the architectures it
    holds (a resumed or shared ground truth). `cache`: a JSON-lines file where each stand-alone
    result is appended as it finishes and read back on the next call with the same settings (an
    interrupted ground truth loses at most one architecture). Returns a dict with `archs`
    (indices, stand-alone mean and per-seed accuracies, inherited accuracy per method),
    `methods` (metrics, wall time, sub-supernets and their splits), `standalone_s` and
    `standalone_cached` (architectures whose ground truth came from `truth` or `cache`)."""
    say = progress or (lambda _row: None)
    archs = sample_architectures(cfg.space, cfg.archs, cfg.seed)
    truth = dict(truth or {})
    per_seed: dict[tuple[int, ...], list[float]] = {}
    stamp = _cache_stamp(cfg)
    if cache is not None and Path(cache).exists():
        for line in Path(cache).read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
            if row.get("stamp") == stamp:
                key = tuple(row["indices"])
                per_seed[key] = [float(v) for v in row["accs"]]
                truth[key] = float(np.mean(per_seed[key]))
    t0 = time.monotonic()
    cached = sum(tuple(int(v) for v in idx) in truth for idx in archs)
    for n, idx in enumerate(archs):
        key = tuple(int(v) for v in idx)
        if key not in truth:
            accs = standalone_accuracy(cfg.space, idx, cfg.data, cfg.standalone_epochs,
                                       cfg.seeds, cfg.batch_size, cfg.lr, cfg.cells_per_stage)
            per_seed[key] = accs
            truth[key] = float(np.mean(accs))
            if cache is not None:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
                with open(cache, "a") as f:
                    f.write(json.dumps({"stamp": stamp, "indices": list(key), "accs": accs})
                            + "\n")
        say({"stage": "standalone", "done": n + 1, "total": len(archs)})
    standalone_s = time.monotonic() - t0
    gt = np.asarray([truth[tuple(int(v) for v in idx)] for idx in archs])
    methods = {}
    inherited = {}
    for method in cfg.methods:
        t1 = time.monotonic()
        subs = train_split_supernets(cfg.space, cfg.data, method, cfg.supernet_epochs,
                                     cfg.batch_size, cfg.lr, cfg.seed, cfg.cells_per_stage,
                                     cfg.gm_batches, cfg.gm_splits, cfg.fewshot_layer,
                                     cfg.weight_sharing, lambda r: say({"stage": "supernet", **r}))
        train_s = time.monotonic() - t1
        est = np.asarray([inherited_accuracy(subs[owner(subs, idx)].net, idx, cfg.data,
                                             seed=cfg.seed) for idx in archs])
        inherited[method] = est.tolist()
        metrics = rank_metrics(est, gt, cfg.top_k)
        methods[method] = {**metrics, "supernets": len(subs), "train_s": train_s,
                           "wall_s": time.monotonic() - t1,
                           "mean_inherited_acc": float(est.mean()),
                           "splits": [s.splits for s in subs]}
        say({"stage": "method", "method": method, **metrics})
    return {"archs": [{"indices": [int(v) for v in idx],
                       "arch": "-".join(cfg.space.layers[i].choices[j]
                                        for i, j in enumerate(idx)),
                       "standalone_acc": truth[tuple(int(v) for v in idx)],
                       "standalone_per_seed": per_seed.get(tuple(int(v) for v in idx)),
                       **{f"inherited_{m}": inherited[m][n] for m in inherited}}
                      for n, idx in enumerate(archs)],
            "methods": methods, "standalone_s": standalone_s, "standalone_cached": cached,
            "standalone_mean": float(gt.mean()), "standalone_spread": float(gt.max() - gt.min())}
