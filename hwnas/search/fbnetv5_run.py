"""FBNetV5 end to end on the `fbnetv5` space: several tasks searched in one run, each under its own
latency budget, with one backbone forward and backward per step.

The estimator's parts (per-task Bernoulli keep bits, the mixture proposal, importance-weighted
REINFORCE with moving baselines) are in `hwnas.search.fbnetv5`, whose docstring holds the paper
notes; labels as there: [paper] / [reconstruction].

`run_fbnetv5(config)`, per step:

1. [paper] one architecture a ~ q (the mixture of the task distributions) and one training batch
   of the multi-task proxy data (`hwnas.data.multitask`: every image has a digit label, a
   segmentation mask and a box);
2. [paper] ONE backbone pass with the blocks of `a` (`MultiPathNetwork.forward_features`; a
   skipped block is not computed), every task's head on its features, the task losses l^t
   (`task_loss`: cross-entropy; per-pixel cross-entropy; L1 + (1 - IoU) on the sigmoid box);
3. [paper] weight_loss = sum_t r_t l^t and the REINFORCE arch_loss (importance weights r_t,
   moving baselines), plus [reconstruction] each task's latency term, the ProxylessNAS
   `add#linear` form on the closed-form expected latency of its lookup table,
   w_t * lambda * (E_t[LAT] - B_t) / B_t with E_t[LAT] = fixed_t + sum_b pi_{t,b} c_b (the
   table's ms of block b; the fixed part holds the stem, the fusions and task t's head), and
   w_t the `BudgetController` multiplier of the ProxylessNAS search (signal: the table latency
   of the derived architecture, pi > 0.5), one per task; a task without a budget has no
   latency term;
4. one backward of the sum (the arch terms reach only the logits: the task losses enter them
   detached), SGD on the weights, Adam on the logits; during `warmup` steps the logits are not
   updated [reconstruction: as ProxylessNAS' weight warm-up].

[reconstruction] the architecture terms use the same training batch as the weights (one pass
serves both, which is the point of the estimator); ProxylessNAS and FBNet v1 use a held-out
split for the architecture step.

RUN/: config.json; history.csv (one row per step: the losses, the importance weights, each
task's expected and derived table latency and controller weight); dists.safetensors (the task
logits) and supernet.safetensors; probs.json (the keep probabilities every `log_every` steps);
RUN/<task>/arch.json (the derived architecture of each task in the profile's task space, ready
for `hwnas export`); summary.json (per task: the bits, the table latency against the budget,
the keep probabilities, and the task metric of the derived net inside the supernet on the
validation split, BatchNorm recalibrated).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas._io import atomic_path, folder_lock, write_json
from hwnas.data.multitask import (
    TASK_METRIC,
    TASKS,
    MeanIoU,
    MultiTaskData,
    box_iou,
    check_multitask_spec,
    load_multitask,
)
from hwnas.errors import HwnasError
from hwnas.latency import LookupTablePredictor, NetworkPredictor
from hwnas.latency.loss import LatencyLoss
from hwnas.latency.prediction import sibling_predictor
from hwnas.profile.reader import Profile
from hwnas.search._config import check_numbers
from hwnas.search.fbnetv5 import ReinforceEstimator, TaskDistributions
from hwnas.search.trainer import (
    BudgetController,
    arch_optimizer,
    cosine_lr,
    cycle,
    torch_threads,
    weight_optimizer,
)
from hwnas.space import Arch, get_space
from hwnas.space.fbnetv5 import FBNetV5Space, MultiPathNetwork, extract

FORMAT = "hwnas-fbnetv5-1"
RUN_FILES = ("config.json", "history.csv", "dists.safetensors", "supernet.safetensors",
             "probs.json", "summary.json")
KEEP = "keep"


# ---- task losses and metrics -------------------------------------------------------------------


def task_loss(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of one task's head output: `cls` cross-entropy; `seg` per-pixel
    cross-entropy; `det` L1 between the sigmoid box and the true box + (1 - IoU) [reconstruction:
    the paper's detection head and loss were not reachable]."""
    if kind == "cls":
        return F.cross_entropy(out, target)
    if kind == "seg":
        return F.cross_entropy(out, target)
    if kind == "det":
        box = torch.sigmoid(out)
        return F.l1_loss(box, target) + (1 - _iou(box, target)).mean()
    raise HwnasError(f"unknown task {kind!r}; use {', '.join(TASKS)}")


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (N, 4) x0, y0, x1, y1 boxes (differentiable; 0 for an empty union)."""
    lo = torch.maximum(a[:, :2], b[:, :2])
    hi = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(1)
    area = lambda z: (z[:, 2:] - z[:, :2]).clamp(min=0).prod(1)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


class _Metric:
    """Accumulates one task's metric over batches (`hwnas.data.multitask.TASK_METRIC`)."""

    def __init__(self, kind: str, num_classes: int) -> None:
        self.kind = kind
        self.miou = MeanIoU(num_classes) if kind == "seg" else None
        self.total, self.n = 0.0, 0

    def update(self, out: torch.Tensor, target: torch.Tensor) -> None:
        if self.kind == "seg":
            self.miou.update(out.argmax(1), target)
        elif self.kind == "cls":
            self.total += float((out.argmax(1) == target).sum())
            self.n += int(target.numel())
        else:
            self.total += float(box_iou(torch.sigmoid(out), target, reduction="none").sum())
            self.n += int(target.shape[0])

    def compute(self) -> float:
        return self.miou.compute() if self.kind == "seg" else self.total / max(self.n, 1)


# ---- one step ----------------------------------------------------------------------------------


def search_step(net: MultiPathNetwork, dists: TaskDistributions, estimator: ReinforceEstimator,
                kinds: Mapping[str, str], x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                generator: torch.Generator | None = None,
                latency_terms: torch.Tensor | None = None) -> dict:
    """Steps 1-4 of the module docstring up to the backward (the caller steps the optimizers and
    zeroes the gradients): one a ~ q, ONE backbone forward (`forward_features`) and one backward
    for the T = len(kinds) tasks (`kinds`: head name -> task kind; the heads of `net.heads`, in
    `dists.tasks` order). `latency_terms`: a (T,) differentiable tensor added to the arch
    objective (None: none). Returns the step's numbers."""
    a, proposed = dists.sample(generator)
    feats = net.forward_features(x, a.bool().tolist())
    names = list(dists.tasks)
    losses = torch.stack([task_loss(kinds[n], net.heads[n](feats), targets[kinds[n]])
                          for n in names])
    r = dists.importance_weights(a)
    weight_loss, arch_loss = estimator.surrogate(dists, a, losses)
    total = weight_loss + arch_loss
    if latency_terms is not None:
        total = total + latency_terms.sum()
    total.backward()
    return {"bits": a.detach(), "proposed_by": int(proposed), "losses": losses.detach(),
            "weights": r.detach()}


# ---- the run -----------------------------------------------------------------------------------


def _parse_tasks(tasks: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise HwnasError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; use a comma "
                         f"list of {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise HwnasError(f"a task is listed twice: {','.join(tasks)}")
    return tasks


def parse_budgets(text: str | Mapping[str, float] | None, tasks: Sequence[str]
                  ) -> dict[str, float]:
    """`cls=3.5,seg=6` (or a mapping) -> {task: ms}; a task of the run may have no budget."""
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            if "=" not in part:
                raise HwnasError(f"budget {part.strip()!r}: write TASK=MS, e.g. cls=3.5,seg=6")
            k, v = part.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    out = {}
    for k, v in pairs:
        if k not in tasks:
            raise HwnasError(f"budget for {k!r}, which is not a task of this run "
                             f"({', '.join(tasks)})")
        try:
            ms = float(v)
        except (TypeError, ValueError):
            raise HwnasError(f"budget {k}={v!r} is not a number of ms") from None
        if not (math.isfinite(ms) and ms > 0):
            raise HwnasError(f"budget {k}={v!r} must be a positive number of ms")
        out[k] = ms
    return out


@dataclass
class FBNetV5Config:
    """Settings of one FBNetV5 run (see the module docstring)."""

    profile: Path
    out: Path = Path("runs/fbnetv5")
    tasks: tuple[str, ...] | str = TASKS
    budgets_ms: dict[str, float] | str | None = field(default_factory=dict)
    steps: int = 300
    warmup: int = 50  # weight-only steps before the logits move
    batch_size: int = 64
    lr: float = 0.05
    arch_lr: float = 0.05
    init_keep: float = 0.5
    baseline_decay: float = 0.9
    latency_lambda: float = 1.0  # lambda of the add#linear latency term
    controller: str = "mul"  # BudgetController kind: mul | add | none
    controller_rate: float = 0.1
    data: str = "multitask:digits"
    train_resolution: int | None = 32
    train_width: float | None = None
    valid_frac: float = 0.2
    test_frac: float = 0.2
    seed: int = 0
    bn_batches: int = 10
    log_every: int = 10
    threads: int | None = None
    resume: bool = True  # no resume: True refuses an existing run, False overwrites it

    def __post_init__(self) -> None:
        self.profile, self.out = Path(self.profile), Path(self.out)
        self.tasks = _parse_tasks(self.tasks)
        self.budgets_ms = parse_budgets(self.budgets_ms, self.tasks)
        check_numbers(self, {"steps": 1, "warmup": 0, "batch_size": 2, "bn_batches": 1,
                             "log_every": 1}, ("lr", "arch_lr", "latency_lambda", "controller_rate"))
        if not 0 < self.init_keep < 1:
            raise HwnasError(f"init_keep must be within (0, 1), got {self.init_keep}")
        if self.controller not in ("mul", "add", "none"):
            raise HwnasError(f"controller is mul, add or none, got {self.controller!r}")
        check_multitask_spec(self.data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["profile"], d["out"] = str(self.profile.resolve()), str(self.out)
        d["tasks"] = list(self.tasks)
        d["method"] = "fbnetv5"
        return d


def load_profile(path: Path | str) -> tuple[Profile, FBNetV5Space]:
    """The profile (of space `fbnetv5` or one of its task spaces, with a lookup table)."""
    profile = Profile.load(path)
    if not isinstance(profile.space, FBNetV5Space):
        raise HwnasError(f"{profile.root}: FBNetV5 needs a profile of space 'fbnetv5' "
                         f"(`hwnas profile --space fbnetv5`), this one is {profile.space.name!r}")
    if not len(profile.ops):
        raise HwnasError(f"{profile.root}: the profile has no lookup table (ops.parquet)")
    return profile, profile.space


def task_tables(profile: Profile, space: FBNetV5Space, tasks: Sequence[str]
                ) -> dict[str, LookupTablePredictor | NetworkPredictor]:
    """Each task's latency model (`hwnas.latency.prediction.sibling_predictor`): its task space
    (its head) priced by the profile's lookup table, with the linear correction of the table
    sum fitted on the profile's measured networks when it has 10 or more. Both are additive in
    the blocks, so each task's expected latency stays closed-form (`keep_costs`)."""
    return {t: sibling_predictor(profile, space.for_task(t)) for t in tasks}


def keep_costs(model: LookupTablePredictor | NetworkPredictor) -> tuple[torch.Tensor, float]:
    """(per block: the ms of keeping it, the fixed ms) of a task's latency model: the table's,
    times w, and w * fixed + b, for a linear correction w * S + b."""
    lut = model.lut_ if isinstance(model, NetworkPredictor) else model
    w, b = model.linear_correction() if isinstance(model, NetworkPredictor) else (1.0, 0.0)
    keep = [layer.choices.index(KEEP) for layer in lut.space_.layers]
    c = torch.tensor([w * lut.table_[i, j] for i, j in enumerate(keep)], dtype=torch.float32)
    return c, float(w * lut.fixed_ms_ + b)


def _bits_arch(space: FBNetV5Space, bits: Sequence[bool]) -> Arch:
    return space.arch([KEEP if b else "skip" for b in bits])


def check_run_folder(config: FBNetV5Config) -> None:
    """The checks made before anything is shown or written."""
    load_profile(config.profile)
    _check_out(config)


def _check_out(config: FBNetV5Config) -> None:
    present = [n for n in RUN_FILES if (config.out / n).exists()]
    if present and config.resume:
        raise HwnasError(f"{config.out} already holds a run ({', '.join(present)}); an FBNetV5 run "
                         "cannot resume: use another --out, or --no-resume to overwrite it")


def run_fbnetv5(config: FBNetV5Config, progress: Callable[[dict], None] | None = None) -> dict:
    """Train the supernet and the task distributions; returns the summary (summary.json).
    `progress`, when given, is called after every step with its history row + `steps_total`."""
    with torch_threads(config.threads), contextlib.ExitStack() as held:
        return _run(config, progress, held)


def _train_space(space: FBNetV5Space, config: FBNetV5Config) -> FBNetV5Space:
    return get_space(space.name, config.train_resolution or space.resolution,
                     config.train_width if config.train_width is not None else space.width,
                     None, space.channels)


def _run(config: FBNetV5Config, progress: Callable[[dict], None] | None,
         held: contextlib.ExitStack) -> dict:
    t_start = time.monotonic()
    profile, pspace = load_profile(config.profile)
    out = config.out
    held.enter_context(folder_lock(out))  # creates out; a second run on it is refused
    _check_out(config)
    for n in RUN_FILES:
        if (out / n).exists():
            (out / n).unlink()
    out.mkdir(parents=True, exist_ok=True)
    tasks = config.tasks
    data = load_multitask(config.data, config.train_resolution or pspace.resolution, config.seed,
                          config.valid_frac, config.test_frac, tasks=tasks)
    if len(data.train) < config.batch_size:
        raise HwnasError(f"{data.name}: the train split ({len(data.train)} images) is smaller "
                         f"than one batch of {config.batch_size}")
    write_json(out / "config.json", config.to_dict())
    tspace = _train_space(pspace, config)
    tables = task_tables(profile, pspace, tasks)
    costs = {t: keep_costs(tables[t]) for t in tasks}
    task_spaces = {t: pspace.for_task(t) for t in tasks}
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net = tspace.supernet(tasks, num_classes=data.num_classes)
    dists = TaskDistributions(len(tasks), len(tspace.layers), config.init_keep, tasks=tasks)
    est = ReinforceEstimator(decay=config.baseline_decay)
    w_opt = weight_optimizer(list(net.parameters()), config.lr)
    a_opt = arch_optimizer(list(dists.parameters()), config.arch_lr)
    lat_loss = {t: LatencyLoss("add#linear", ref_ms=b, lam=config.latency_lambda)
                for t, b in config.budgets_ms.items()}
    ctrl = {t: BudgetController(b, kind=config.controller, rate=config.controller_rate)
            for t, b in config.budgets_ms.items()}
    train = cycle(lambda k: data.batches("train", config.batch_size, True,
                                         seed=config.seed * 1000003 + k, drop_last=True))
    kinds = {t: t for t in tasks}
    history, probs_log = [], []
    net.train()
    for step in range(config.steps):
        lr = cosine_lr(config.lr, step, config.steps)
        for g in w_opt.param_groups:
            g["lr"] = lr
        x, y = next(train)
        arch_on = step >= config.warmup
        expected = torch.stack([dists.expected_cost(*costs[t])[i] for i, t in enumerate(tasks)])
        terms = None
        if arch_on and lat_loss:
            terms = torch.stack([
                ctrl[t].weight * lat_loss[t].lam * (expected[i] - lat_loss[t].ref_ms)
                / lat_loss[t].ref_ms if t in lat_loss else expected[i] * 0
                for i, t in enumerate(tasks)])
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        res = search_step(net, dists, est, kinds, x, y, generator=gen, latency_terms=terms)
        w_opt.step()
        if arch_on:
            a_opt.step()
        derived = dists.derive()
        row = {"step": step, "lr": lr, "arch_updated": int(arch_on),
               "keep_bits": int(res["bits"].sum())}
        for i, t in enumerate(tasks):
            ms = float(tables[t].predict([_bits_arch(task_spaces[t], derived[i].tolist())])[0])
            if arch_on and t in ctrl:
                ctrl[t].update(ms)
            row.update({f"{t}_loss": float(res["losses"][i]), f"{t}_r": float(res["weights"][i]),
                        f"{t}_expected_ms": float(expected[i].detach()), f"{t}_derived_ms": ms,
                        f"{t}_weight": ctrl[t].weight if t in ctrl else math.nan})
        history.append(row)
        if step % config.log_every == 0 or step == config.steps - 1:
            probs_log.append({"step": step, "probs": dists.probs().detach().tolist()})
        if progress is not None:
            progress({**row, "steps_total": config.steps})
    summary = _finish(config, profile, pspace, tspace, net, dists, tables, data, history,
                      probs_log)
    summary["wall_s"] = time.monotonic() - t_start
    write_json(out / "summary.json", summary)
    return summary


def _recalibrated_metric(net: MultiPathNetwork, task: str, bits: Sequence[bool],
                         data: MultiTaskData, split: str, bn_batches: int, seed: int) -> float:
    """The task metric of one architecture inside the supernet, BatchNorm statistics re-estimated
    on `bn_batches` training batches first (the supernet's are a mix of paths)."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            for k, (x, _) in enumerate(data.batches("train", 64, True, seed=seed)):
                if k >= bn_batches:
                    break
                net.forward_features(x, list(bits))
        net.eval()
        metric = _Metric(task, data.num_classes[task])
        with torch.no_grad():
            for x, y in data.batches(split, 256, False):
                metric.update(net.heads[task](net.forward_features(x, list(bits))), y[task])
        return metric.compute()
    finally:
        net.load_state_dict(state)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        net.train()


def train_task_net(space: FBNetV5Space, arch: Arch, data: MultiTaskData, steps: int = 300,
                   batch_size: int = 64, lr: float = 0.05, seed: int = 0,
                   split: str = "test") -> dict:
    """Train one task's network from scratch (`space.build(arch)`, the task of `space`) on the
    proxy data and return its metric on `split`: the evaluation of a derived architecture
    (the paper retrains the searched architectures in the tasks' own pipelines; here the same
    proxy data, its held-out test split). SGD with Nesterov momentum, cosine learning rate."""
    torch.manual_seed(seed)
    task = space.task
    net = space.build(arch).train()
    opt = weight_optimizer(list(net.parameters()), lr)
    batches = cycle(lambda k: data.batches("train", batch_size, True, seed=seed * 7919 + k,
                                           drop_last=True))
    t0 = time.monotonic()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, step, steps)
        x, y = next(batches)
        loss = task_loss(task, net(x), y[task])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_s = time.monotonic() - t0
    net.eval()
    metric = _Metric(task, data.num_classes[task])
    with torch.no_grad():
        for x, y in data.batches(split, 256, False):
            metric.update(net(x), y[task])
    return {"task": task, "metric": TASK_METRIC[task], "value": metric.compute(),
            "steps": steps, "train_s": train_s, "split": split}


def _finish(config: FBNetV5Config, profile: Profile, pspace: FBNetV5Space, tspace: FBNetV5Space,
            net: MultiPathNetwork, dists: TaskDistributions,
            tables: dict[str, LookupTablePredictor], data: MultiTaskData, history: list[dict],
            probs_log: list[dict]) -> dict:
    from safetensors.torch import save_file

    out = config.out
    with atomic_path(out / "dists.safetensors") as tmp:
        save_file({"logits": dists.logits.detach().contiguous().clone()}, str(tmp),
                  metadata={"format": FORMAT, "tasks": json.dumps(list(dists.tasks))})
    with atomic_path(out / "supernet.safetensors") as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in net.state_dict().items()},
                  str(tmp), metadata={"format": FORMAT, "space": json.dumps(tspace.settings())})
    write_json(out / "probs.json", {"tasks": list(dists.tasks), "history": probs_log})
    with atomic_path(out / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    derived = dists.derive()
    per_task = {}
    for i, t in enumerate(dists.tasks):
        bits = [bool(b) for b in derived[i].tolist()]
        tsp = pspace.for_task(t)
        arch = _bits_arch(tsp, bits)
        ms = float(tables[t].predict([arch])[0])
        bounds = tables[t].interval([arch])
        budget = config.budgets_ms.get(t)
        arch = Arch(arch.space, arch.choices, arch.resolution, arch.width, arch.num_classes,
                    arch.channels, {"method": "fbnetv5", "task": t, "budget_ms": budget,
                                    "predicted_ms": round(ms, 6), "predictor": tables[t].name,
                                    "run": out.name})
        (out / t).mkdir(exist_ok=True)
        arch.save(out / t / "arch.json")
        per_task[t] = {
            "bits": "".join("1" if b else "0" for b in bits), "choices": list(arch.choices),
            "keep_probs": dists.probs()[i].detach().tolist(), "predicted_ms": ms,
            "interval_ms": None if bounds is None else [float(bounds[0][0]), float(bounds[1][0])],
            "predictor": tables[t].name, "budget_ms": budget,
            "met": None if budget is None else bool(ms <= budget),
            "metric": TASK_METRIC[t],
            "valid_metric": _recalibrated_metric(net, t, bits, data, "valid", config.bn_batches,
                                                 config.seed),
            "arch": str(out / t / "arch.json")}
    tail = history[-max(1, len(history) // 10):]
    return {"method": "fbnetv5", "tasks": list(dists.tasks), "steps": config.steps,
            "profile": profile.name, "space": {"name": pspace.name, **pspace.settings()},
            "train_space": {"name": tspace.name, **tspace.settings()}, "data": data.describe(),
            "per_task": per_task,
            "final_losses": {t: float(np.mean([r[f"{t}_loss"] for r in tail]))
                             for t in dists.tasks},
            "latency_note": (f"ms of profile {profile.name} at resolution "
                             f"{pspace.resolution}, width {pspace.width:g}: each task's lookup "
                             "table (its own head), linearly corrected when the profile has "
                             "measured networks; the proxy task trained at resolution "
                             f"{tspace.resolution}, width {tspace.width:g}"),
            "metric_note": ("valid_metric: the derived net inside the supernet (shared weights, "
                            "BatchNorm recalibrated) on the validation split"),
            "extract": "hwnas.space.fbnetv5.extract builds the plain net with these weights"}


__all__ = ["FBNetV5Config", "check_run_folder", "extract", "keep_costs", "load_profile",
           "parse_budgets", "run_fbnetv5", "search_step", "task_loss", "task_tables",
           "train_task_net"]
