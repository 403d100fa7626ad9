"""ShiftNAS end to end on the Once-for-All MobileNetV3 space (`ofa`): a masked supernet, the
lookup-table costs, the training run and deployment by the architecture generator.

The primitives (bins, Eq. 8, the AG, Eq. 9 masks, Eq. 10) are in `hwnas.search.shiftnas`, whose
docstring holds the paper notes; labels as there: [paper] / [reconstruction].

`ShiftSupernet(space)`: one weight-entangled block per searchable slot, the largest MBConv of
the slot (kernel 7, expand 6, squeeze-excite sized for the largest mid channel count when the unit
has SE), stem and head fixed (the space's own modules). `forward(x, onehots)` takes one one-hot per
slot over the slot's choices (`skip` included on slots 2-3 of a unit) and applies Eq. 9 as
p' = M p: each choice's rows of M are its centre-kernel mask (on the depthwise weight), its
expand mask (a channel prefix of mid_max, on the activations after the expand and the depthwise
BatchNorm + activation) and its SE mask (a prefix of the squeezed channels, after the SE ReLU).
A hard straight-through one-hot therefore computes exactly one choice in the forward pass while
every choice's mask receives a gradient, which reaches the AG. Depth is a prefix (OFA): the
one-hots are first closed (`close_depth`): a slot after a skipped one is read as `skip`
(q_s = a_s p_s + (1 - a_s) e_skip with a_s = prod over the earlier skippable slots of the unit of
(1 - p_skip), Eq. 9's depth masks), exactly as `OFASpace.from_indices` closes a gap; a skipped
residual slot returns its input (x + (1 - q_skip) body(x)).

BatchNorm of the expanded channels (`_masked_bn`): batch statistics in training (per channel, so
masking is exact); the running statistics move only on the active channels (the prefix of the
choice, as OFA's `DynamicBatchNorm2d` slices them). `extract(arch)` builds `space.build(arch)` and
loads the slices (first mid filters, centre kernel crop, first se channels, BatchNorm prefixes):
in eval mode (fixed running statistics) it equals the supernet under the arch's hard one-hots to
float rounding (tests: atol 1e-5). Before an accuracy is measured, the arch's BatchNorm statistics
are recalibrated (`evaluate_arch`, as OFA and `trainer.recalibrate_bn`).

Costs [reconstruction]: per slot the ABSOLUTE milliseconds of each choice from the profile's
lookup table (`LookupTablePredictor.table_`; `skip` = 0) with the one-hot p of the closed
one-hots (Eq. 10 `mode="absolute"`): a table prices whole blocks, not channel chunks, and the
incremental mode of the paper gives the same number (see `hwnas.search.shiftnas`); the fixed
stem + head cost is added to the sum. A nets-only profile (an imported table of published
latencies, e.g. one GPU column of HELP's OFA file) has no table of blocks: its costs are those
of `hwnas.latency.additive.AdditivePredictor`, a table learned by least squares from its
measured networks (the cost model is then a learned predictor, and `generate` prices with it,
interval included). The bins: `ComplexityBins.from_samples` over the table cost
of `bin_samples` (2,000) uniformly sampled valid archs (`OFASpace.sample`), K = 8 quantile bins.

`run_shiftnas(config)`, per step [paper unless marked]:

1. C ~ bins (B fixed), the AG's straight-through Gumbel one-hots for C, the supernet on one
   training batch, L = CE + lambda L_RC, one step of SGD on the supernet and Adam on the AG;
2. `sampling="shift"`: from `shift_warmup` on, every `shift_every` steps, Eq. 8 on B
   (`ShiftUpdate`) with one validation batch: the finite difference of the validation loss
   between the current supernet weights and the snapshot taken at the previous B update (the
   first snapshot `shift_every` steps before the first update) [reconstruction: the AG is the
   current one in both terms, so the difference measures the weights' progress only; BatchNorm
   uses the batch statistics, so both terms are deterministic];
   `"uniform-bins"`: the same with B frozen (uniform bins, the paper's ablation);
   `"sandwich"`: no AG in the supernet's training: each step trains the largest, the smallest
   and `sandwich_random` uniformly sampled subnets (OFA / BigNAS sandwich rule; the gradients are
   averaged) [reconstruction], and the AG learns the constraint only (an L_RC step on a batch of
   targets per step), so `generate` returns the AG's architecture for a budget under a supernet
   trained by uniform sampling: the baseline of the comparison, not ShiftNAS;
3. before the joint steps, `ag_warmup` AG-only steps on L_RC (a batch of `ag_batch` targets per
   step) [reconstruction, not in the paper: at small step counts the joint loss alone does not
   teach the AG the cost map];
4. RUN/: config.json, generator.safetensors (+ its settings as metadata), supernet.safetensors,
   bins.json (edges, final probabilities, the probabilities after each update, the cost table and
   the space), history.csv (one row per step), summary.json (per bin: the AG's arch for the bin
   centre, its table cost and, with `eval_bins`, its validation accuracy inside the supernet after
   BatchNorm recalibration). No resume: an existing run is refused unless `resume=False`, which
   overwrites it.

`generate(run, budget)`: reads generator.safetensors and bins.json only (and the profile, when
still there, for its best predictor's latency and interval); a budget outside the trained range
[lo, hi] of the bins is refused; otherwise the AG's `argmax(C)` -> indices -> `from_indices` ->
an `Arch` of the profile's space. With `calibrate` (the default; `hwnas generate --no-calibrate`
is the paper's plain argmax AG(budget)) the AG is conditioned on the C' of a grid over the
trained range whose arch is the costliest under the budget [reconstruction]: still the AG's own
output, no search over architectures. An arch over the budget is reported (`met`), never hidden.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas._io import atomic_path, folder_lock, write_json
from hwnas.data import ImageData, check_spec, load_data
from hwnas.errors import HwnasError
from hwnas.latency import LookupTablePredictor, best_predictor
from hwnas.latency.additive import AdditivePredictor
from hwnas.profile.reader import Profile
from hwnas.search._config import check_numbers
from hwnas.search.run import training_space
from hwnas.search.shiftnas import (
    DEFAULT_LAMBDA,
    SHIFT_LR,
    ArchitectureGenerator,
    BinSample,
    ComplexityBins,
    ShiftUpdate,
    arch_cost,
    mask_from_onehot,
    resource_loss,
)
from hwnas.search.trainer import (
    LABEL_SMOOTHING,
    cosine_lr,
    cycle,
    evaluate_network,
    recalibrate_bn,
    torch_threads,
    weight_optimizer,
)
from hwnas.space import Arch, SearchSpace, get_space
from hwnas.space.base import make_divisible
from hwnas.space.blocks import Network
from hwnas.space.ofa import SKIP, OFASpace
from hwnas.space.ops import OpSpec

SAMPLINGS = ("shift", "uniform-bins", "sandwich")
FORMAT = "hwnas-shiftnas-2"
RUN_FILES = ("config.json", "generator.safetensors", "supernet.safetensors", "bins.json",
             "history.csv", "summary.json", "arch.json")
LARGEST, SMALLEST = "k7_e6", "k3_e3"

__all__ = ["SAMPLINGS", "ShiftBlock", "ShiftNASConfig", "ShiftSupernet", "check_run_folder",
           "close_depth", "cost_table", "evaluate_arch", "generate", "onehots_of", "run_shiftnas"]


# ---- the masked supernet ---------------------------------------------------------------------


def _masked_bn(x: torch.Tensor, bn: nn.BatchNorm2d, mask: torch.Tensor) -> torch.Tensor:
    """BatchNorm whose running statistics move only on the channels where `mask` is 1 (training:
    batch statistics per channel, exact under masking; eval: the running statistics)."""
    if not bn.training:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                            bn.eps)
    y = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked += 1
            m = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                 else float(bn.momentum))
            n = x.numel() // x.shape[1]
            xd = x.detach()
            mean = xd.mean((0, 2, 3))
            var = xd.var((0, 2, 3), unbiased=n > 1)
            active = mask.detach().reshape(-1) > 0
            bn.running_mean.copy_(torch.where(active, (1 - m) * bn.running_mean + m * mean,
                                              bn.running_mean))
            bn.running_var.copy_(torch.where(active, (1 - m) * bn.running_var + m * var,
                                             bn.running_var))
    return y


def _mid(cin: int, expand: int) -> int:
    return make_divisible(round(cin * expand))


class ShiftBlock(nn.Module):
    """The weight-entangled MBConv of one slot, driven by a one-hot over the slot's choices (see
    the module docstring). `self.block` is the plain largest block (`InvertedResidual`, style
    mbv3): its parameters are the shared weights."""

    def __init__(self, choices: Sequence[str], ops: Sequence[OpSpec | None]) -> None:
        super().__init__()
        real = [op for op in ops if op is not None]
        if not real or any(op.kind != "mbv3conv" for op in real):
            raise HwnasError("a ShiftBlock holds mbv3conv choices")
        big = max(real, key=lambda op: (op.kernel, op.expand))
        if big.kernel != max(op.kernel for op in real) or big.expand != max(op.expand for op in real):
            raise HwnasError("the slot has no largest choice (largest kernel and expand)")
        self.choices = tuple(choices)
        self.cin, self.cout, self.stride = big.cin, big.cout, big.stride
        self.kernel, self.se = big.kernel, big.se
        self.block = big.module().train()
        body = self.block.body
        self.residual = bool(self.block.residual)
        self.skip_index = self.choices.index(SKIP) if SKIP in self.choices else None
        if self.skip_index is not None and not self.residual:
            raise HwnasError("only a residual slot can be skipped")
        self.mid_max = _mid(self.cin, big.expand)
        if body[0][0].weight.shape[0] != self.mid_max:
            raise HwnasError("unexpected mbv3 block layout (expand width)")
        self.se_max = make_divisible(self.mid_max // 4) if self.se else 1
        n = len(self.choices)
        km = torch.zeros(n, self.kernel, self.kernel)
        cm = torch.zeros(n, self.mid_max)
        sm = torch.zeros(n, self.se_max)
        for j, op in enumerate(ops):
            if op is None:
                continue
            mid = _mid(op.cin, op.expand)
            lo = (self.kernel - op.kernel) // 2
            km[j, lo:lo + op.kernel, lo:lo + op.kernel] = 1.0
            cm[j, :mid] = 1.0
            sm[j, :make_divisible(mid // 4) if self.se else 1] = 1.0
        self.register_buffer("kmask", km, persistent=False)
        self.register_buffer("cmask", cm, persistent=False)
        self.register_buffer("smask", sm, persistent=False)
        if self.residual:  # OFA `zero_last_gamma`: a residual block starts as the identity
            nn.init.zeros_(body[-1][1].weight)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if p.dim() != 1 or p.numel() != len(self.choices):
            raise HwnasError(f"a slot takes one 1-D one-hot over its {len(self.choices)} choices")
        body = self.block.body
        km = mask_from_onehot(p, self.kmask)
        cm = mask_from_onehot(p, self.cmask)
        cmv = cm.view(1, -1, 1, 1)
        conv, bn, act = body[0]
        y = act(_masked_bn(F.conv2d(x, conv.weight), bn, cm)) * cmv
        conv, bn, act = body[1]
        y = F.conv2d(y, conv.weight * km, stride=self.stride, padding=self.kernel // 2,
                     groups=self.mid_max)
        y = act(_masked_bn(y, bn, cm)) * cmv
        if self.se:
            se = body[2]
            s = torch.relu(se.reduce(y.mean((2, 3), keepdim=True)))
            s = s * mask_from_onehot(p, self.smask).view(1, -1, 1, 1)
            y = y * F.hardsigmoid(se.expand(s))
        conv, bn = body[-1][0], body[-1][1]
        y = bn(F.conv2d(y, conv.weight))
        if not self.residual:
            return y
        if self.skip_index is None:
            return x + y
        return x + (1.0 - p[self.skip_index]) * y

    @torch.no_grad()
    def load_into(self, plain: nn.Module, op: OpSpec) -> None:
        """Copy the slice of choice `op` into a plain `InvertedResidual` built from `op`."""
        mid = _mid(op.cin, op.expand)
        lo, k = (self.kernel - op.kernel) // 2, op.kernel
        src, dst = self.block.body, plain.body

        def bn_copy(d: nn.BatchNorm2d, s: nn.BatchNorm2d, c: int) -> None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(d, name).copy_(getattr(s, name)[:c])

        dst[0][0].weight.copy_(src[0][0].weight[:mid])
        bn_copy(dst[0][1], src[0][1], mid)
        dst[1][0].weight.copy_(src[1][0].weight[:mid, :, lo:lo + k, lo:lo + k])
        bn_copy(dst[1][1], src[1][1], mid)
        if self.se:
            se_mid = make_divisible(mid // 4)
            dst[2].reduce.weight.copy_(src[2].reduce.weight[:se_mid, :mid])
            dst[2].reduce.bias.copy_(src[2].reduce.bias[:se_mid])
            dst[2].expand.weight.copy_(src[2].expand.weight[:mid, :se_mid])
            dst[2].expand.bias.copy_(src[2].expand.bias[:mid])
        dst[-1][0].weight.copy_(src[-1][0].weight[:, :mid])
        bn_copy(dst[-1][1], src[-1][1], self.cout)


def close_depth(space: SearchSpace, onehots: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Depth as a prefix on one-hots (..., n_i): a slot after a skipped one of the same unit
    becomes `skip`, differentiably (see the module docstring); the identity on slots without
    `skip` before them. With hard one-hots the result is the one-hot of `space.from_indices`."""
    if len(onehots) != len(space.layers):
        raise HwnasError(f"{len(onehots)} one-hots for {len(space.layers)} slots")
    out, runs, unit = [], None, None
    for layer, p in zip(space.layers, onehots, strict=True):
        u = layer.name.split(".")[0]
        if u != unit:
            unit, runs = u, None
        if p.shape[-1] != len(layer.choices):
            raise HwnasError(f"{layer.name}: a one-hot over {p.shape[-1]} choices, the slot has "
                             f"{len(layer.choices)}")
        if SKIP not in layer.choices:
            out.append(p)
            continue
        j = layer.choices.index(SKIP)
        if runs is not None:
            e = torch.zeros(p.shape[-1], dtype=p.dtype)
            e[j] = 1.0
            p = runs * p + (1.0 - runs) * e
        out.append(p)
        runs = 1.0 - p[..., j:j + 1]
    return out


def onehots_of(space: SearchSpace, indices: Sequence[int]) -> list[torch.Tensor]:
    """Hard one-hots (float, no graph) of one index row."""
    return [F.one_hot(torch.tensor(int(j)), len(layer.choices)).float()
            for layer, j in zip(space.layers, indices, strict=True)]


class ShiftSupernet(nn.Module):
    """The masked ShiftNAS supernet of an `ofa` space (see the module docstring)."""

    def __init__(self, space: OFASpace) -> None:
        super().__init__()
        if space.name != "ofa":
            raise HwnasError(f"ShiftNAS runs on the ofa space, not {space.name!r}")
        self.space = space
        self.stem = nn.Sequential(*[op.module().train() for op in space.stem_ops()])
        self.slots = nn.ModuleList(
            ShiftBlock(layer.choices, space.candidates(i)) for i, layer in enumerate(space.layers))
        self.head = nn.Sequential(*[op.module().train() for op in space.head_ops()])
        self.train()

    def forward(self, x: torch.Tensor, onehots: Sequence[torch.Tensor]) -> torch.Tensor:
        q = close_depth(self.space, onehots)
        x = self.stem(x)
        for block, p in zip(self.slots, q, strict=True):
            x = block(x, p)
        return self.head(x)

    def extract(self, arch: Arch) -> Network:
        """`space.build(arch)` (eval mode) with this supernet's slices loaded: the stand-alone
        network of the arch (equal to `forward` with its hard one-hots in eval mode)."""
        arch = self.space.arch(arch.choices)
        net = self.space.build(arch)
        blocks = list(net.blocks)
        n_stem, n_head = len(self.stem), len(self.head)
        with torch.no_grad():
            for dst, src in zip(blocks[:n_stem], self.stem, strict=True):
                dst.load_state_dict(src.state_dict())
            for dst, src in zip(blocks[len(blocks) - n_head:], self.head, strict=True):
                dst.load_state_dict(src.state_dict())
            body = iter(blocks[n_stem:len(blocks) - n_head])
            for i, choice in enumerate(arch.choices):
                op = self.space.candidates(i)[self.space.layers[i].choices.index(choice)]
                if op is not None:
                    self.slots[i].load_into(next(body), op)
        return net.eval()


class _FixedArch(nn.Module):
    """The supernet under fixed one-hots, as a plain `model(x)` (BN recalibration, evaluation)."""

    def __init__(self, net: ShiftSupernet, onehots: list[torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.onehots = onehots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.onehots)


def evaluate_arch(net: ShiftSupernet, indices: Sequence[int], data: ImageData, split: str = "valid",
                  bn_batches: int = 20, batch_size: int = 128, seed: int = 0) -> float:
    """Accuracy of one arch inside the supernet after recalibrating its BatchNorm statistics
    (this overwrites the supernet's running statistics)."""
    model = _FixedArch(net, onehots_of(net.space, indices))
    recalibrate_bn(model, data, batch_size, bn_batches, seed)
    acc = evaluate_network(model, data, split, batch_size)
    net.train()
    return acc


# ---- costs -----------------------------------------------------------------------------------


CostModel = LookupTablePredictor | AdditivePredictor


def cost_table(lut: CostModel) -> tuple[list[torch.Tensor], float]:
    """(per slot: the absolute table ms of each choice, `skip` = 0; the fixed stem + head ms), of
    a measured lookup table or of the additive table learned from a nets-only profile."""
    space = lut.space_
    table = [torch.tensor(lut.table_[i, :len(layer.choices)], dtype=torch.get_default_dtype())
             for i, layer in enumerate(space.layers)]
    return table, float(lut.fixed_ms_)


def _rc(space: SearchSpace, onehots: Sequence[torch.Tensor], costs: list[torch.Tensor], fixed: float,
        target: torch.Tensor, bins: ComplexityBins) -> torch.Tensor:
    """Eq. 10 on the depth-closed one-hots, total ms vs the target, scaled by the bins' span."""
    return resource_loss(close_depth(space, onehots), costs, target - fixed, mode="absolute",
                         scale=bins.span)


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class ShiftNASConfig:
    """Settings of one ShiftNAS run (see the module docstring)."""

    profile: Path
    out: Path = Path("runs/shiftnas")
    sampling: str = "shift"  # shift | uniform-bins | sandwich
    cost: str = "latency"  # latency (ms, the profile's table) | flops (GFLOPs, the paper's)
    steps: int = 300  # joint supernet + AG steps
    bins: int = 8
    bin_mode: str = "quantile"  # quantile | width
    bin_samples: int = 2000
    lambda_rc: float = DEFAULT_LAMBDA
    shift_warmup: int = 100  # steps before the first B update
    shift_every: int = 50  # steps between B updates
    shift_lr: float = SHIFT_LR
    ag_warmup: int = 300  # AG-only steps on L_RC before the joint steps
    ag_batch: int = 64  # targets per AG-only step
    ag_lr: float = 1e-3
    ag_hidden: int = 64
    ag_fc_layers: int = 2
    ag_embed: int = 16
    tau: float = 1.0  # Gumbel temperature of the AG
    sandwich_random: int = 2  # random subnets per sandwich step (plus largest and smallest)
    data: str = "digits"
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    train_resolution: int | None = 32
    train_width: float | None = None
    valid_frac: float = 0.2
    test_frac: float = 0.2
    data_limit: int | None = None
    eval_bins: bool = True  # accuracy of each bin centre's arch in summary.json
    bn_batches: int = 20  # BatchNorm recalibration batches per evaluated arch
    threads: int | None = None
    resume: bool = True  # no resume: True refuses an existing run, False overwrites it

    def __post_init__(self) -> None:
        self.profile, self.out = Path(self.profile), Path(self.out)
        if self.sampling not in SAMPLINGS:
            raise HwnasError(f"unknown ShiftNAS sampling {self.sampling!r}; use "
                             f"{', '.join(SAMPLINGS)}")
        if self.cost not in COSTS:
            raise HwnasError(f"ShiftNAS cost is {' or '.join(COSTS)}, got {self.cost!r}")
        if self.bin_mode not in ("quantile", "width"):
            raise HwnasError(f"bin mode is 'quantile' or 'width', got {self.bin_mode!r}")
        check_numbers(self, {"steps": 1, "bins": 1, "bin_samples": 2, "shift_warmup": 0,
                             "shift_every": 1, "ag_warmup": 0, "ag_batch": 1, "ag_hidden": 1,
                             "ag_fc_layers": 1, "ag_embed": 1, "sandwich_random": 0,
                             "batch_size": 2, "bn_batches": 1},
                      ("lambda_rc", "shift_lr", "ag_lr", "tau", "lr"))
        if not self.tau > 0 or not self.shift_lr > 0:
            raise HwnasError("tau and shift_lr must be positive")
        if self.train_resolution is not None and self.train_resolution < 8:
            raise HwnasError(f"train_resolution must be at least 8, got {self.train_resolution}")
        check_spec(self.data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["profile"], d["out"] = str(self.profile.resolve()), str(self.out)
        d["method"] = "shiftnas"
        return d


def run_shiftnas(config: ShiftNASConfig, progress: Callable[[dict], None] | None = None) -> dict:
    """Train a ShiftNAS supernet and AG; returns the summary written to RUN/summary.json.
    `progress`, when given, is called after every joint step with its history row plus
    `steps_total`."""
    with torch_threads(config.threads), contextlib.ExitStack() as held:
        return _run(config, progress, held)


def check_run_folder(config: ShiftNASConfig) -> None:
    """The checks made before anything is shown or written: the profile (space `ofa`, with a
    lookup table or measured networks), and an `out` that already holds a run while `resume`
    is True (no resume)."""
    _checked_profile(config.profile)
    _check_out(config)


def _check_out(config: ShiftNASConfig) -> None:
    present = [name for name in RUN_FILES if (config.out / name).exists()]
    if present and config.resume:
        raise HwnasError(f"{config.out} already holds a run ({', '.join(present)}); ShiftNAS "
                         "cannot resume: use another --out, or --no-resume (resume=False) to "
                         "overwrite it")


def _prepare_out(config: ShiftNASConfig) -> None:
    _check_out(config)
    out = config.out
    for name in [name for name in RUN_FILES if (out / name).exists()]:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _checked_profile(path: Path) -> Profile:
    """The profile, of space `ofa`, with a lookup table or measured networks."""
    profile = Profile.load(path)
    if profile.space.name != "ofa":
        raise HwnasError(f"{profile.root}: ShiftNAS needs a profile of space 'ofa', this one is "
                         f"{profile.space.name!r}")
    if not len(profile.ops) and not len(profile.nets):
        raise HwnasError(f"{profile.root}: the profile has neither a lookup table (ops.parquet) "
                         "nor measured networks (nets.parquet): ShiftNAS prices choices per slot")
    return profile


def _load_profile(path: Path) -> tuple[Profile, CostModel]:
    """The profile and its cost model: the measured lookup table, or for a nets-only profile
    (an imported latency table) the additive table learned from its networks."""
    profile = _checked_profile(path)
    if len(profile.ops):
        return profile, LookupTablePredictor.from_profile(profile)
    return profile, AdditivePredictor.from_profile(profile)


COSTS = ("latency", "flops")


def flops_table(space: SearchSpace) -> LookupTablePredictor:
    """The paper's complexity as a table: GFLOPs of each op (`OpSpec.flops` / 1e9, as
    `torch.utils.flop_counter` counts them), so that a FLOPs run prices choices exactly as a
    latency run does with milliseconds."""
    table = LookupTablePredictor().fit(space, {op.key: op.flops / 1e9
                                               for op in space.distinct_ops()})
    table.name = "flops"
    return table


def _cost_model(config: ShiftNASConfig) -> tuple[Profile, CostModel, str]:
    """(profile, the run's cost model, its unit): the profile's latency model in ms, or the
    space's FLOPs table in GFLOPs (`cost="flops"`)."""
    if config.cost == "flops":
        profile = _checked_profile(config.profile)
        return profile, flops_table(profile.space), "GFLOPs"
    profile, model = _load_profile(config.profile)
    return profile, model, "ms"


def _cost_kind(model: CostModel) -> str:
    if isinstance(model, AdditivePredictor):
        return (f"the additive table learned from the profile's {model.n_train_} measured "
                f"networks (cross-validated MAPE {model.cv_mape_:.3f})")
    if model.name == "flops":
        return "the space's FLOPs (GFLOPs per op, torch's flop counter)"
    return "the profile's lookup table"


def _latency_model(profile: Profile):
    """What `generate` prices an arch with: the profile's best predictor; None for a nets-only
    profile (whose table of nets holds few of the generator's archs): then the run's own cost
    table, the additive table learned at training, with its conformal interval."""
    return best_predictor(profile) if len(profile.ops) else None


def _index_of(space: SearchSpace, names: Callable[[tuple[str, ...]], str]) -> list[int]:
    return [layer.choices.index(names(layer.choices)) for layer in space.layers]


def _run(config: ShiftNASConfig, progress: Callable[[dict], None] | None,
         held: contextlib.ExitStack) -> dict:
    t_start = time.monotonic()
    profile, lut, unit = _cost_model(config)
    pspace = profile.space
    out = config.out
    held.enter_context(folder_lock(out))  # creates out; a second run on it is refused
    _prepare_out(config)
    data = load_data(config.data, config.train_resolution or pspace.resolution, config.seed,
                     config.valid_frac, config.test_frac, config.data_limit)
    if data.n_batches("train", config.batch_size, drop_last=True) < 1 or \
            len(data.train) < config.batch_size:
        raise HwnasError(f"{data.name}: the train split ({len(data.train)} images) is smaller "
                         f"than one batch of {config.batch_size}")
    tspace = training_space(pspace, config.train_resolution, config.train_width, data.num_classes)
    write_json(out / "config.json", config.to_dict())

    costs, fixed = cost_table(lut)
    rng = np.random.default_rng(config.seed)
    sampled = np.array([pspace.indices(pspace.sample(rng)) for _ in range(config.bin_samples)])
    bins = ComplexityBins.from_samples(lut.predict_indices(sampled), config.bins,
                                       mode=config.bin_mode)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net = ShiftSupernet(tspace)
    decisions = [len(layer.choices) for layer in tspace.layers]
    ag = ArchitectureGenerator(decisions, hidden=config.ag_hidden, fc_layers=config.ag_fc_layers,
                               embed=config.ag_embed, cost_range=(bins.lo, bins.hi))
    w_opt = weight_optimizer(list(net.parameters()), config.lr)
    ag_opt = torch.optim.Adam(ag.parameters(), lr=config.ag_lr)
    lam = float(config.lambda_rc)

    def ag_rc_step() -> float:
        s = bins.sample(gen, n=config.ag_batch)
        rc = _rc(tspace, ag(s.target, tau=config.tau, generator=gen), costs, fixed, s.target, bins)
        ag_opt.zero_grad(set_to_none=True)
        rc.backward()
        ag_opt.step()
        return float(rc.detach())

    ag_warmup_rc = [ag_rc_step() for _ in range(config.ag_warmup)]

    shift = None
    if config.sampling == "shift":
        shift = ShiftUpdate(bins, lr=config.shift_lr, warmup=config.shift_warmup,
                            every=config.shift_every, tau=1.0)
    bins.frozen = True
    snapshot_at = max(config.shift_warmup - config.shift_every, 0)
    train = cycle(lambda k: data.batches("train", config.batch_size, True,
                                         seed=config.seed * 1000003 + k, drop_last=True))
    valid = cycle(lambda k: data.batches("valid", config.batch_size, True,
                                         seed=config.seed * 1000033 + k))
    largest = onehots_of(tspace, _index_of(tspace, lambda c: LARGEST))
    smallest = onehots_of(tspace, _index_of(tspace, lambda c: SKIP if SKIP in c else SMALLEST))
    history: list[dict] = []
    updates: list[dict] = []
    for step in range(config.steps):
        lr = cosine_lr(config.lr, step, config.steps)
        for g in w_opt.param_groups:
            g["lr"] = lr
        if shift is not None and step == snapshot_at:
            shift.snapshot(net)
        x, y = next(train)
        row: dict = {"step": step, "lr": lr}
        if config.sampling == "sandwich":
            subnets = [largest, smallest] + [
                onehots_of(tspace, tspace.indices(tspace.sample(rng)))
                for _ in range(config.sandwich_random)]
            w_opt.zero_grad(set_to_none=True)
            ces, accs = [], []
            for oh in subnets:
                logits = net(x, oh)
                ce = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
                (ce / len(subnets)).backward()
                ces.append(float(ce.detach()))
                accs.append(float((logits.argmax(1) == y).float().mean()))
            w_opt.step()
            rc = ag_rc_step()
            row.update(loss=float(np.mean(ces)) + lam * rc, ce=float(np.mean(ces)), rc_loss=rc,
                       train_acc=float(np.mean(accs)), bin=-1, target=math.nan,
                       arch_cost=math.nan)
        else:
            s = bins.sample(gen)
            onehots = ag(s.target, tau=config.tau, generator=gen)
            logits = net(x, onehots)
            ce = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
            rc = _rc(tspace, onehots, costs, fixed, s.target, bins)
            loss = ce + lam * rc
            w_opt.zero_grad(set_to_none=True)
            ag_opt.zero_grad(set_to_none=True)
            loss.backward()
            w_opt.step()
            ag_opt.step()
            with torch.no_grad():
                arch_ms = float(arch_cost(close_depth(tspace, onehots), costs, "absolute")) + fixed
            row.update(loss=float(loss.detach()), ce=float(ce.detach()), rc_loss=float(rc.detach()),
                       train_acc=float((logits.argmax(1) == y).float().mean()), bin=int(s.index),
                       target=float(s.target), arch_cost=arch_ms)
        if shift is not None and shift.due(step):
            xv, yv = next(valid)

            def val_loss(s: BinSample, params: dict | None, xv=xv, yv=yv) -> torch.Tensor:
                oh = ag(s.target, tau=config.tau, noise=False)
                logits = (net(xv, oh) if params is None
                          else torch.func.functional_call(net, params, (xv, oh)))
                return (F.cross_entropy(logits, yv, label_smoothing=LABEL_SMOOTHING)
                        + lam * _rc(tspace, oh, costs, fixed, s.target, bins))

            previous = shift.previous
            grad = shift.step(step, lambda s: val_loss(s, None),
                              lambda s, prev=previous: val_loss(s, prev), generator=gen,
                              module=net)
            ag_opt.zero_grad(set_to_none=True)  # the Eq. 8 graph touches no .grad, to be sure
            updates.append({"step": step, "probs": bins.probs().detach().tolist(),
                            "grad": grad.reshape(-1).tolist() if grad is not None else None})
        row.update({f"p{k}": float(v) for k, v in enumerate(bins.probs().detach())})
        history.append(row)
        if progress is not None:
            progress({**row, "steps_total": config.steps})

    _save_run(out, config, net, ag, bins, lut, pspace, decisions, history, updates, unit)
    summary = _summary(config, profile, lut, pspace, tspace, net, ag, bins, data, history,
                       ag_warmup_rc, updates, unit)
    summary["wall_s"] = time.monotonic() - t_start
    write_json(out / "summary.json", summary)
    return summary


def _history_columns(k: int) -> list[str]:
    return ["step", "lr", "loss", "ce", "rc_loss", "train_acc", "bin", "target", "arch_cost",
            *(f"p{i}" for i in range(k))]


def _save_run(out: Path, config: ShiftNASConfig, net: ShiftSupernet, ag: ArchitectureGenerator,
              bins: ComplexityBins, lut: CostModel, pspace: SearchSpace,
              decisions: list[int], history: list[dict], updates: list[dict], unit: str
              ) -> None:
    from safetensors.torch import save_file

    def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}

    meta = {"format": FORMAT, "decisions": json.dumps(decisions), "hidden": str(ag.hidden),
            "fc_layers": str(ag.fc_layers), "embed": str(ag.start.numel()),
            "sampling": config.sampling}
    with atomic_path(out / "generator.safetensors") as tmp:
        save_file(tensors(ag), str(tmp), metadata=meta)
    with atomic_path(out / "supernet.safetensors") as tmp:
        save_file(tensors(net), str(tmp), metadata={"format": FORMAT,
                                                    "space": json.dumps(net.space.settings())})
    costs, fixed = cost_table(lut)
    learned = ({"predictor": lut.name, "log_half_width": lut.q_, "coverage": lut.coverage,
                "cv_mape": lut.cv_mape_, "n_train": lut.n_train_}
               if isinstance(lut, AdditivePredictor) else {})
    write_json(out / "bins.json", {
        "format": FORMAT, "unit": unit, "cost": config.cost, "mode": config.bin_mode,
        "edges": bins.edges.tolist(),
        "probs": bins.probs().detach().tolist(), "history": updates,
        "space": {"name": pspace.name, **pspace.settings()},
        "cost_table": {"fixed": fixed, "choices": [c.tolist() for c in costs],
                       "note": f"absolute {unit} per slot and choice (skip = 0) of "
                               f"{_cost_kind(lut)}", **learned},
        "profile": str(config.profile.resolve())})
    with atomic_path(out / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_history_columns(bins.k), extrasaction="ignore")
        w.writeheader()
        for r in history:
            w.writerow(r)


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rho (scipy: tied values share their average rank); NaN when one side is
    constant."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def _summary(config: ShiftNASConfig, profile: Profile, lut: CostModel,
             pspace: SearchSpace, tspace: SearchSpace, net: ShiftSupernet, ag: ArchitectureGenerator,
             bins: ComplexityBins, data: ImageData, history: list[dict], ag_warmup_rc: list[float],
             updates: list[dict], unit: str) -> dict:
    per_bin = []
    for k, centre in enumerate(bins.centres.tolist()):
        idx = ag.argmax(float(centre)).numpy()
        arch = pspace.from_indices(idx)
        row = {"bin": k, "target": centre, "cost": float(lut.predict_indices(idx[None, :])[0]),
               "choices": list(arch.choices)}
        if config.eval_bins:
            row["valid_acc"] = evaluate_arch(net, pspace.indices(arch), data, "valid",
                                             config.bn_batches, seed=config.seed)
        per_bin.append(row)
    tail = history[-max(1, len(history) // 10):]
    return {
        "method": "shiftnas", "sampling": config.sampling, "steps": config.steps, "unit": unit,
        "profile": profile.name, "space": {"name": pspace.name, **pspace.settings()},
        "train_space": {"name": tspace.name, **tspace.settings()}, "data": data.describe(),
        "trained_range": [bins.lo, bins.hi], "edges": bins.edges.tolist(),
        "probs": bins.probs().detach().tolist(), "b_updates": len(updates),
        "ag_warmup_final_rc": ag_warmup_rc[-1] if ag_warmup_rc else None,
        "final_rc_loss": float(np.mean([r["rc_loss"] for r in tail])),
        "final_train_acc": float(np.mean([r["train_acc"] for r in tail])),
        "per_bin": per_bin,
        "spearman_target_vs_cost": _spearman([r["target"] for r in per_bin],
                                            [r["cost"] for r in per_bin]),
        "accuracy_note": ("valid_acc: the AG's arch for each bin centre inside the supernet "
                          "(shared weights, BatchNorm recalibrated) on the proxy task"),
        "cost_note": (f"{unit} of {_cost_kind(lut)}, profile {profile.name} ({pspace.name}, "
                         f"resolution "
                         f"{pspace.resolution}, width {pspace.width:g}); the proxy task trained at "
                         f"resolution {tspace.resolution}, width {tspace.width:g}"),
    }


# ---- deployment ------------------------------------------------------------------------------


def _read_run(run: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    if not run.is_dir():
        raise HwnasError(f"ShiftNAS run folder not found: {run}")
    bins_path, gen_path = run / "bins.json", run / "generator.safetensors"
    for p in (bins_path, gen_path):
        if not p.exists():
            raise HwnasError(f"{run} is not a finished ShiftNAS run: {p.name} is missing (train "
                             "one with `hwnas search --method shiftnas`)")
    try:
        info = json.loads(bins_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HwnasError(f"{bins_path}: unreadable ({e})") from None
    try:
        from safetensors import safe_open

        with safe_open(str(gen_path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # a truncated or foreign file
        raise HwnasError(f"{gen_path}: unreadable ({e})") from None
    if info.get("format") != FORMAT or meta.get("format") != FORMAT:
        raise HwnasError(f"{run}: not a {FORMAT} run")
    return info, meta, state


CALIBRATION_GRID = 256


def _table_cost(table: dict, idx: np.ndarray) -> np.ndarray:
    """The run's cost table (bins.json) summed over (N, layers) canonical index rows."""
    choices = table["choices"]
    return np.array([float(table["fixed"]) + sum(float(choices[i][int(j)])
                                                     for i, j in enumerate(row)) for row in idx])


def generate(run_dir: Path | str, budget: float, calibrate: bool = True,
             unit: str | None = None) -> dict:
    """The AG's architecture for a budget in the run's unit (`unit`: ms for a latency run,
    GFLOPs for a `cost="flops"` run), see the module docstring: a dict with `arch` (an `Arch` of
    the profile's space, its `meta` saying how it was made), `cost` (by the run's cost table, in
    `unit`), `predicted_ms` / `interval_ms` / `predictor` (the latency by the profile's best
    predictor, the learned additive table for a nets-only profile; None when the profile is not
    readable, `predictor_note` says why), `met`, `condition` (the C the AG was given) and
    `trained_range`.

    `calibrate=False` is the paper's deployment: argmax AG(C = budget). `calibrate=True`
    [reconstruction, not in the paper; the default] conditions the AG on the C' of a grid of
    `CALIBRATION_GRID` values over the trained range (and the budget itself) whose argmax arch
    costs the most without exceeding the budget, by the latency model that reports it for a
    latency run (the profile's best predictor, the additive table of a nets-only profile; the
    run's cost table when the profile cannot be read) and by the run's table for a FLOPs run:
    the generator's mapping C -> cost is monotone but off by a few percent on both sides, and a
    user asking for a budget wants a network under it. The architecture is still one the AG
    emits; nothing is searched outside the AG's outputs, and no network is trained or measured.
    When no C' gives a network under the budget, the cheapest is returned (`met` False).
    `unit`, when given ("ms" or "GFLOPs"), must be the run's."""
    run = Path(run_dir)
    info, meta, state = _read_run(run)
    run_unit = str(info.get("unit", "ms"))
    if unit is not None and unit != run_unit:
        flag = "--budget-ms" if run_unit == "ms" else "--budget-gflops"
        raise HwnasError(f"{run} was trained with budgets in {run_unit}, not {unit}: give the "
                         f"budget with {flag}")
    unit = run_unit
    lo, hi = float(info["edges"][0]), float(info["edges"][-1])
    if isinstance(budget, bool) or not (isinstance(budget, (int, float))
                                        and math.isfinite(budget)):
        raise HwnasError(f"the budget must be a number of {unit}, got {budget!r}")
    if not lo <= budget <= hi:
        raise HwnasError(f"budget {budget:g} {unit} is outside the range this ShiftNAS run was "
                         f"trained for: {lo:.4g} .. {hi:.4g} {unit} (its complexity bins); pick "
                         "a budget inside it or train a run on another profile")
    try:
        ag = ArchitectureGenerator(json.loads(meta["decisions"]), hidden=int(meta["hidden"]),
                                   fc_layers=int(meta["fc_layers"]), embed=int(meta["embed"]),
                                   cost_range=(lo, hi))
        ag.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise HwnasError(f"{run / 'generator.safetensors'} does not fit its settings: {e}") from None
    sp = info["space"]
    channels = tuple(sp["channels"]) if sp.get("channels") else None
    space = get_space(sp["name"], sp["resolution"], sp["width"], sp["num_classes"], channels)
    table = info["cost_table"]
    model, note = None, ""
    learned = "log_half_width" in table  # the additive table of a nets-only profile
    if not learned:
        try:
            model = _latency_model(Profile.load(info["profile"]))
        except HwnasError as e:
            note = f"no best-predictor latency: {e}"

    def price(rows: np.ndarray) -> np.ndarray:
        """What the budget is held to: the latency model of a latency run, else the table."""
        if model is None or unit != "ms":
            return _table_cost(table, rows)
        return np.asarray(model.predict([space.from_indices(r) for r in rows]), dtype=float)

    condition = float(budget)
    idx = space.canonical_indices(ag.argmax(condition).numpy()[None, :])[0]
    if calibrate:
        grid = np.unique(np.append(np.linspace(lo, hi, CALIBRATION_GRID), condition))
        rows = space.canonical_indices(ag.argmax(torch.tensor(grid, dtype=torch.float32)).numpy())
        distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
        priced = price(distinct)[inverse.reshape(-1)]
        under = np.flatnonzero(priced <= budget)
        if under.size:  # the costliest under budget; of equal costs, the C' nearest the budget
            best = under[np.lexsort((np.abs(grid[under] - budget), -priced[under]))[0]]
        else:
            best = int(np.argmin(priced))
        condition, idx = float(grid[best]), rows[best]
    cost = float(_table_cost(table, idx[None, :])[0])
    predicted, interval, predictor = None, None, None
    if learned:
        q = float(table["log_half_width"])
        predicted, interval, predictor = cost, [cost * math.exp(-q), cost * math.exp(q)], \
            str(table.get("predictor", "additive"))
    elif model is not None:
        plain = space.from_indices(idx)
        predicted = float(model.predict([plain])[0])
        bounds = model.interval([plain])
        interval = [float(bounds[0][0]), float(bounds[1][0])] if bounds is not None else None
        predictor = model.name
    held = predicted if predicted is not None and unit == "ms" else cost
    arch = space.from_indices(idx)
    arch = Arch(arch.space, arch.choices, arch.resolution, arch.width, arch.num_classes,
                arch.channels, {"method": "shiftnas", "sampling": meta.get("sampling"),
                                "budget": float(budget), "unit": unit, "condition": condition,
                                "calibrated": bool(calibrate), "cost": round(cost, 6),
                                "predicted_ms": None if predicted is None else round(predicted, 6),
                                "predictor": predictor, "run": run.name})
    return {"arch": arch, "choices": list(arch.choices), "budget": float(budget), "unit": unit,
            "cost": cost, "predicted_ms": predicted, "interval_ms": interval,
            "predictor": predictor, "predictor_note": note, "met": bool(held <= budget),
            "condition": condition, "calibrated": bool(calibrate), "trained_range": [lo, hi]}
