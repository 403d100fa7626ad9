"""ShiftNAS, pure parts: complexity bins with a learnable distribution, the probability shift,
the architecture generator, the prefix-mask mapping and the resource loss.

Zhang, Yu, Zhao, Ou, "ShiftNAS: Improving One-shot NAS via Probability Shift", ICCV 2023,
arXiv 2307.08300. The official repository holds only a README, so everything here follows the
paper's main text. Labels: [paper] = stated in the paper; [reconstruction] = our choice where the
paper is silent or where hwnas differs (milliseconds from a latency lookup table instead of FLOPs).

Why (Remark 1, [paper]): with uniform, independent op sampling the cost of a subnet is a sum of
per-layer costs (Irwin-Hall, close to normal), so subnets of extreme cost are rarely sampled and
stay under-trained. ShiftNAS samples a *cost target* instead, from a learnable distribution over
complexity bins, and an architecture generator turns the target into an architecture.

One training iteration t (the caller's loop; this module has the parts):

1. `s = bins.sample(generator)`: a bin through Gumbel-softmax G(B) and a target C inside it. B is
   FIXED here: `sample(grad=False)` (the default) returns tensors with no graph to B [paper: B is
   fixed while the AG and the supernet train].
2. `onehots = ag(s.target, tau)`: one straight-through Gumbel one-hot per searched decision.
3. the supernet runs with the masks p' = p M (Eq. 9: `mask_from_onehot` with `width_masks`,
   `kernel_masks`, `depth_masks`; `ElasticConvBlock` is the conv case).
4. L = L_task + lambda L_RC (Eq. 10, `resource_loss`); one optimizer steps supernet and AG
   together (DNAS) [paper].
5. after a warm-up, every k iterations: `ShiftUpdate.step` (Eq. 8) with the weights now (w_t) and a
   snapshot (w_{t-1}, `weights_snapshot`), then a new snapshot.
6. deploy: `ag.argmax(C)`, the AG's most probable architecture for a target; no search [paper].

Equations and where they are:

- Complexity bins, `ComplexityBins` [paper]: the cost range cut into K bins (the paper: 0.1 GFLOPs
  wide); the bin distribution is a learnable 1 x K logit vector B initialised uniform; each step
  samples a bin through Gumbel-softmax G(B). [reconstruction] the cost is milliseconds from a
  latency lookup table (any additive per-choice cost), and the default bins are QUANTILE bins of
  the cost of uniformly sampled subnets (`from_samples(mode="quantile")`; equal-width bins as
  `mode="width"`), since in a lookup table's milliseconds equal-width bins at the tails are almost
  empty. The target: C = sum_k g_k c_k with g the straight-through Gumbel one-hot, so C's value is
  the sampled bin's c_k and its gradient reaches B; c_k is a uniform draw inside bin k (default,
  `target="uniform"`: the AG sees the whole continuous range) or the bin centre
  (`target="centre"`).
- Eqs. 4-7 (the signal: under-trained subnets still have a falling validation loss, and
  argmin_B E_{b~G(B)}[grad_w L_val(w, alpha | b)]) and Eq. 8 (its first-order form),
  `probability_shift_step` [paper]: the second-order gradient is replaced by a DARTS-style finite
  difference across two weight snapshots,
  grad_B = grad_B L_val(w_t, alpha | G(B)) - grad_B L_val(w_{t-1}, alpha | G(B));
  Adam with lr 1e-3 on B; B updates every k iterations after a warm-up (the paper: 50 epochs of
  supernet + AG only, then every 100 iterations); B is fixed while the AG and the supernet train.
  [reconstruction] that gradient is the gradient of L_val(w_t) - L_val(w_{t-1}) w.r.t. B, so
  minimising it moves probability towards bins whose loss is still falling (the paper's Fig. 5:
  drift to larger bins); one Gumbel draw is shared by both terms, the two gradients are computed
  separately and subtracted (exactly zero when the snapshots are equal); the path from B to L_val
  is G(B) -> C -> AG -> architecture -> supernet loss (the loss functions receive the sampled
  `BinSample` and use its `target`); w_{t-1} is the snapshot taken at the previous B update
  (`ShiftUpdate`), t counting B updates; a step whose gradient is exactly zero does not step Adam
  (no signal, no move, even with momentum).
- Architecture generator, `ArchitectureGenerator` [paper]: an LSTM cell with 64 hidden units and
  fully connected layers (10 for the CNN spaces, 4 for ViT) emitting one Gumbel-softmax one-hot
  per searched decision, one after another, conditioned on the target; trained jointly with the
  supernet (DNAS); deployed by its most probable candidate. [reconstruction] the encoding of C:
  c = (C - lo) / (hi - lo), normalised by the bins' range, is the initial hidden state (through a
  linear layer) and part of every step's input, together with the embedding of the previous
  decision's one-hot (a learned start vector at step 0), so the sequence is autoregressive and
  differentiable; `fc_layers` (default 2, for CPU; the paper's 10 for CNN) counts the linear layers
  from the LSTM output to a decision's logits (`fc_layers - 1` shared hidden layers with ReLU, then
  one head per decision); `argmax` decodes greedily (each step's argmax is fed to the next).
- Eq. 9 matrix mapping, `prefix_masks`, `mask_from_onehot` [paper]: p' = M p^T with M the stacked
  prefix masks ([1,0,0], [1,1,0], [1,1,1] for 3 widths); the mask multiplies the shared weights,
  so the one-hot takes part in the forward pass and gradients reach the AG. [reconstruction]
  kernels are nested centre k x k masks of the largest kernel (`kernel_masks`: the centre crop of
  weight-entangled spaces); depth is a prefix mask over the blocks of a unit (`depth_masks`: block
  i runs iff depth > i); the channel mask of `ElasticConvBlock` multiplies the block's output after
  BatchNorm and ReLU (a masked weight alone would let BatchNorm's bias through).
- Eq. 10, `resource_loss` [paper]: L = L_task + lambda L_RC, L_RC = (sum_i sum_j b^i_j p'^i_j - C)^2.
  [reconstruction] b^i_j is the INCREMENTAL cost of chunk j (cost(j) - cost(j-1)) paired with the
  prefix mask p' (`mode="incremental"`, the default, the paper's p'); `mode="absolute"` pairs
  the absolute candidate costs with the one-hot p. The two are the same number for any p (the
  sum telescopes: sum_j p'_j (c_j - c_{j-1}) = sum_j p_j c_j). Costs are additive per decision
  (a list of 1-D tensors, absolute cost per choice, e.g. lookup-table milliseconds), and the
  squared error is divided by `scale`^2 (pass the bins' range) so lambda is scale-free; lambda
  defaults to 1.0 (`DEFAULT_LAMBDA`; not given in the paper).

Nothing here knows a search space: decisions are lists of choice counts, costs are tables.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError

__all__ = [
    "DEFAULT_LAMBDA", "ArchitectureGenerator", "BinSample", "ComplexityBins", "ElasticConvBlock",
    "ShiftUpdate", "arch_cost", "depth_masks", "gumbel_onehot", "incremental_costs", "kernel_masks",
    "mask_from_onehot", "prefix_masks", "probability_shift_step", "resource_loss",
    "straight_through", "weights_snapshot", "width_masks",
]

#: lambda of Eq. 10 on normalised costs [reconstruction: the paper does not give it].
DEFAULT_LAMBDA = 1.0
#: Adam's learning rate for B [paper].
SHIFT_LR = 1e-3
#: Hidden units of the AG's LSTM cell [paper].
AG_HIDDEN = 64


# ---- straight-through Gumbel-softmax --------------------------------------------------------


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """The one-hot of `soft`'s argmax (last dim) in the forward pass, `soft`'s gradient backward.

    Written as hard + (soft - soft.detach()), so the forward values are exactly 0 and 1 (the usual
    hard - soft.detach() + soft can round 1 to 1 - 2^-24)."""
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


def gumbel_onehot(logits: torch.Tensor, tau: float = 1.0, hard: bool = True,
                  generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
    """Gumbel-softmax over the last dim: softmax((logits + G) / tau), G ~ Gumbel(0, 1) from
    `generator` (`noise=False`: G = 0); `hard`: the straight-through one-hot of it."""
    if tau <= 0:
        raise HwnasError(f"the Gumbel-softmax temperature must be positive, got {tau!r}")
    z = logits
    if noise:
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        tiny = torch.finfo(logits.dtype).tiny
        u = u.clamp(tiny, 1.0 - torch.finfo(logits.dtype).eps)
        z = logits - torch.log(-torch.log(u))
    soft = torch.softmax(z / tau, dim=-1)
    return straight_through(soft) if hard else soft


# ---- Eq. 9: prefix masks ---------------------------------------------------------------------


def prefix_masks(n: int) -> torch.Tensor:
    """Eq. 9's M: an (n, n) matrix whose row j is the prefix mask of choice j ([1]*(j+1) + [0]*...);
    for 3 choices [[1,0,0], [1,1,0], [1,1,1]] [paper]."""
    if n < 1:
        raise HwnasError(f"prefix masks need at least one choice, got {n}")
    return torch.tril(torch.ones(n, n))


def _increasing(values: Sequence[int], what: str) -> list[int]:
    vals = [int(v) for v in values]
    if not vals or any(v <= 0 for v in vals) or any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
        raise HwnasError(f"{what} must be positive and strictly increasing, got {list(values)!r}")
    return vals


def width_masks(widths: Sequence[int]) -> torch.Tensor:
    """(n, max width) channel-prefix masks: row j keeps the first widths[j] channels. It is
    `prefix_masks(n)` over the chunks [widths[j-1], widths[j]), each column repeated once per
    channel of its chunk, so p' = p @ width_masks is Eq. 9 per channel."""
    ws = _increasing(widths, "widths")
    chunks = torch.tensor([ws[0]] + [b - a for a, b in zip(ws, ws[1:], strict=False)])
    return prefix_masks(len(ws)).repeat_interleave(chunks, dim=1)


def kernel_masks(kernels: Sequence[int], size: int | None = None) -> torch.Tensor:
    """(n, K, K) nested centre masks: row j is 1 on the centre kernels[j] x kernels[j] of the
    K x K largest kernel (K = `size` or max(kernels)) [reconstruction of Eq. 9 for kernels]."""
    ks = _increasing(kernels, "kernels")
    big = ks[-1] if size is None else int(size)
    if any(k % 2 == 0 for k in ks) or big % 2 == 0 or big < ks[-1]:
        raise HwnasError(f"kernels must be odd and fit in {big}x{big}, got {list(kernels)!r}")
    masks = torch.zeros(len(ks), big, big)
    for j, k in enumerate(ks):
        lo = (big - k) // 2
        masks[j, lo:lo + k, lo:lo + k] = 1.0
    return masks


def depth_masks(depths: Sequence[int]) -> torch.Tensor:
    """(n, max depth) block masks: row j is 1 for block i < depths[j] (block i of a unit runs iff
    depth > i), prefix masks over blocks [reconstruction of Eq. 9 for depth]."""
    ds = _increasing(depths, "depths")
    return (torch.arange(ds[-1])[None, :] < torch.tensor(ds)[:, None]).float()


def mask_from_onehot(p: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """p' = sum_j p_j masks[j] (Eq. 9: p' = M p^T); p (..., n), masks (n, *shape) -> (..., *shape).

    With a (straight-through) one-hot p this is exactly the chosen choice's mask, and its gradient
    w.r.t. p_j is masks[j]."""
    if p.shape[-1] != masks.shape[0]:
        raise HwnasError(f"a one-hot over {p.shape[-1]} choices does not fit {masks.shape[0]} masks")
    return torch.tensordot(p, masks.to(p.dtype), dims=1)


# ---- an entangled conv block -----------------------------------------------------------------


class ElasticConvBlock(nn.Module):
    """conv(k x k, stride) -> BatchNorm -> ReLU holding the largest weights (max(widths) output
    channels, max(kernels) kernel); `forward(x, p_w, p_k)` takes one-hots over `widths` and
    `kernels` and applies Eq. 9's masks: the centre-crop mask multiplies the conv weight and the
    channel-prefix mask multiplies the output (after BatchNorm and ReLU, so dropped channels are
    exactly 0). With a hard one-hot it computes the stand-alone layer of `sliced(width, kernel)`
    on its first `width` channels (and zeros after), and a straight-through one-hot carries
    gradients to whatever produced it. The input has `cin` channels; zero channels of a masked
    input contribute nothing (the slice of the next layer's input)."""

    def __init__(self, cin: int, widths: Sequence[int], kernels: Sequence[int], stride: int = 1
                 ) -> None:
        super().__init__()
        self.cin = int(cin)
        self.widths = _increasing(widths, "widths")
        self.kernels = _increasing(kernels, "kernels")
        self.stride = int(stride)
        if self.cin < 1 or self.stride < 1:
            raise HwnasError(f"cin and stride must be positive, got {cin!r}, {stride!r}")
        big = self.kernels[-1]
        w = torch.empty(self.widths[-1], self.cin, big, big)
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        self.weight = nn.Parameter(w)
        self.bn = nn.BatchNorm2d(self.widths[-1])
        self.register_buffer("wmask", width_masks(self.widths), persistent=False)
        self.register_buffer("kmask", kernel_masks(self.kernels), persistent=False)

    def forward(self, x: torch.Tensor, p_w: torch.Tensor, p_k: torch.Tensor) -> torch.Tensor:
        if p_w.dim() != 1 or p_k.dim() != 1:
            raise HwnasError("ElasticConvBlock runs one architecture: 1-D one-hots, one per decision")
        km = mask_from_onehot(p_k, self.kmask)
        cm = mask_from_onehot(p_w, self.wmask)
        y = F.conv2d(x, self.weight * km, stride=self.stride, padding=self.kernels[-1] // 2)
        return F.relu(self.bn(y)) * cm.view(1, -1, 1, 1)

    def sliced(self, width: int, kernel: int, cin: int | None = None) -> nn.Sequential:
        """The stand-alone layer of one choice: conv(cin -> width, kernel) + BN(width) + ReLU
        with this block's weights sliced (first `width` filters, first `cin` input channels,
        centre kernel crop; BatchNorm's first `width` entries)."""
        if width not in self.widths or kernel not in self.kernels:
            raise HwnasError(f"({width}, {kernel}) is not a choice of {self.widths} x {self.kernels}")
        cin = self.cin if cin is None else int(cin)
        lo = (self.kernels[-1] - kernel) // 2
        conv = nn.Conv2d(cin, width, kernel, self.stride, padding=kernel // 2, bias=False)
        bn = nn.BatchNorm2d(width, eps=self.bn.eps, momentum=self.bn.momentum)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:width, :cin, lo:lo + kernel, lo:lo + kernel])
            bn.weight.copy_(self.bn.weight[:width])
            bn.bias.copy_(self.bn.bias[:width])
            bn.running_mean.copy_(self.bn.running_mean[:width])
            bn.running_var.copy_(self.bn.running_var[:width])
        return nn.Sequential(conv, bn, nn.ReLU())


# ---- Eq. 10: the resource loss ---------------------------------------------------------------


def _cost_table(costs: Sequence[torch.Tensor | Sequence[float] | np.ndarray]) -> list[torch.Tensor]:
    table = [torch.as_tensor(c, dtype=torch.get_default_dtype()) for c in costs]
    if not table or any(c.dim() != 1 or c.numel() < 1 or not torch.isfinite(c).all() for c in table):
        raise HwnasError("the cost table is a non-empty list of 1-D finite cost vectors, one per decision")
    return table


def incremental_costs(costs: torch.Tensor) -> torch.Tensor:
    """b_j = cost(j) - cost(j-1) (b_0 = cost(0)): the cost of chunk j of a prefix mask."""
    c = torch.as_tensor(costs, dtype=torch.get_default_dtype())
    return c - torch.cat([c.new_zeros(1), c[:-1]])


def arch_cost(onehots: Sequence[torch.Tensor], costs: Sequence[torch.Tensor],
              mode: str = "incremental") -> torch.Tensor:
    """sum_i sum_j b^i_j p'^i_j (Eq. 10's inner sum): `incremental` pairs the prefix mask
    p' = p M with the incremental costs, `absolute` the one-hot p with the absolute costs (the
    same number for any p). onehots: one (..., n_i) tensor per decision; costs: one (n_i,) tensor
    of absolute costs per decision. Returns a (...,) tensor."""
    table = _cost_table(costs)
    if len(onehots) != len(table):
        raise HwnasError(f"{len(onehots)} decisions but a cost table of {len(table)}")
    if mode not in ("incremental", "absolute"):
        raise HwnasError(f"mode is 'incremental' or 'absolute', got {mode!r}")
    total = None
    for p, c in zip(onehots, table, strict=True):
        if p.shape[-1] != c.numel():
            raise HwnasError(f"a one-hot over {p.shape[-1]} choices with {c.numel()} costs")
        c = c.to(p.dtype)
        if mode == "incremental":
            term = mask_from_onehot(p, prefix_masks(c.numel()).to(p.dtype)) @ incremental_costs(c)
        else:
            term = p @ c
        total = term if total is None else total + term
    return total


def resource_loss(onehots: Sequence[torch.Tensor], costs: Sequence[torch.Tensor],
                  target: torch.Tensor | float, mode: str = "incremental", scale: float = 1.0
                  ) -> torch.Tensor:
    """Eq. 10's L_RC = ((sum_i sum_j b^i_j p'^i_j - C) / scale)^2, averaged over a batch of
    targets. `scale` (e.g. `ComplexityBins.span`) makes lambda scale-free [reconstruction]."""
    if not scale > 0:
        raise HwnasError(f"the cost scale must be positive, got {scale!r}")
    total = arch_cost(onehots, costs, mode)
    target = torch.as_tensor(target, dtype=total.dtype)
    return (((total - target) / scale) ** 2).mean()


# ---- complexity bins -------------------------------------------------------------------------


class BinSample(NamedTuple):
    """One draw of `ComplexityBins.sample`: the bin `index` (int, or (n,) long), the
    straight-through one-hot `onehot` g over the K bins, and the `target` C = sum_k g_k c_k."""

    index: int | torch.Tensor
    onehot: torch.Tensor
    target: torch.Tensor


class ComplexityBins(nn.Module):
    """K cost bins [edges[k], edges[k+1]) with the learnable 1 x K logit vector B (`logits`,
    initialised uniform) [paper]. `sample` draws a bin through Gumbel-softmax G(B) and a target C
    inside it (`target`: "uniform" draw inside the bin, or its "centre") [reconstruction].

    `frozen`: while True, `probability_shift_step` neither computes nor applies an update (warm-up,
    and the iterations in which the AG and supernet train; `ShiftUpdate` manages it)."""

    def __init__(self, edges: Sequence[float] | np.ndarray | torch.Tensor, target: str = "uniform"
                 ) -> None:
        super().__init__()
        e = torch.as_tensor(np.asarray(edges, dtype=float), dtype=torch.get_default_dtype())
        if e.dim() != 1 or e.numel() < 2 or not torch.isfinite(e).all() or not (e[1:] > e[:-1]).all():
            raise HwnasError(f"bin edges must be >= 2 finite, strictly increasing numbers, got {edges!r}")
        if target not in ("uniform", "centre"):
            raise HwnasError(f"the bin target is 'uniform' or 'centre', got {target!r}")
        self.register_buffer("edges", e)
        self.logits = nn.Parameter(torch.zeros(1, e.numel() - 1))
        self.target = target
        self.frozen = False

    @classmethod
    def from_samples(cls, costs: Sequence[float] | np.ndarray | torch.Tensor, k: int,
                     mode: str = "quantile", target: str = "uniform") -> ComplexityBins:
        """K bins over the costs of (uniformly) sampled subnets: `quantile` bins (equal counts,
        the default [reconstruction]) or equal-`width` bins between min and max (the paper's
        fixed-width FLOPs bins)."""
        if isinstance(costs, torch.Tensor):
            costs = costs.detach().cpu().numpy()
        c = np.asarray(costs, dtype=float).ravel()
        if k < 1 or c.size < 2 or not np.isfinite(c).all():
            raise HwnasError(f"need k >= 1 and >= 2 finite costs, got k={k}, {c.size} costs")
        if mode == "quantile":
            edges = np.quantile(c, np.linspace(0.0, 1.0, k + 1))
        elif mode == "width":
            edges = np.linspace(c.min(), c.max(), k + 1)
        else:
            raise HwnasError(f"bin mode is 'quantile' or 'width', got {mode!r}")
        if not (np.diff(edges) > 0).all():
            raise HwnasError(f"{k} {mode} bins of these costs have empty ranges (too few distinct "
                             "costs); use fewer bins")
        return cls(edges, target=target)

    @property
    def k(self) -> int:
        return self.edges.numel() - 1

    @property
    def lo(self) -> float:
        return float(self.edges[0])

    @property
    def hi(self) -> float:
        return float(self.edges[-1])

    @property
    def span(self) -> float:
        """hi - lo: the scale of `resource_loss` and of the AG's target encoding."""
        return self.hi - self.lo

    @property
    def widths(self) -> torch.Tensor:
        return self.edges[1:] - self.edges[:-1]

    @property
    def centres(self) -> torch.Tensor:
        return (self.edges[1:] + self.edges[:-1]) / 2

    def probs(self) -> torch.Tensor:
        """softmax(B): the (K,) bin distribution."""
        return torch.softmax(self.logits, dim=-1)[0]

    def bin_of(self, cost: float | np.ndarray | torch.Tensor) -> int | torch.Tensor:
        """The bin of each cost (below lo: bin 0, at or above hi: bin K-1)."""
        scalar = isinstance(cost, (int, float, np.number))
        c = torch.as_tensor(cost, dtype=self.edges.dtype)
        idx = torch.bucketize(c, self.edges[1:-1], right=True)
        return int(idx) if scalar else idx

    def sample(self, generator: torch.Generator | None = None, n: int | None = None, tau: float = 1.0,
               grad: bool = False) -> BinSample:
        """Draw a bin through G(B) (straight-through Gumbel-softmax, temperature tau) and a target
        C = sum_k g_k c_k inside it; `n` draws as a batch. `grad=False` (training the AG and
        supernet): no graph to B [paper: B fixed]; `grad=True`: the Eq. 8 path."""
        shape = (1 if n is None else int(n), self.k)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx:
            g = gumbel_onehot(self.logits.expand(shape), tau=tau, hard=True, generator=generator)
            if self.target == "uniform":
                u = torch.rand(shape, generator=generator, dtype=self.edges.dtype)
                c = self.edges[:-1] + u * self.widths
            else:
                c = self.centres.expand(shape)
            target = (g * c).sum(-1)
        index = g.detach().argmax(-1)
        if n is None:
            return BinSample(int(index[0]), g[0], target[0])
        return BinSample(index, g, target)


# ---- Eq. 8: the probability shift ------------------------------------------------------------

LossFn = Callable[[BinSample], torch.Tensor]


def probability_shift_step(bins: ComplexityBins, loss_fn_t: LossFn, loss_fn_prev: LossFn,
                           optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None,
                           tau: float = 1.0) -> torch.Tensor:
    """Eq. 8: grad_B = grad_B L_val(w_t | G(B)) - grad_B L_val(w_{t-1} | G(B)); one Adam step on B.

    One bin sample s = `bins.sample(generator, tau=tau, grad=True)` (the same Gumbel draw for both
    terms); `loss_fn_t(s)` / `loss_fn_prev(s)` are the validation losses with the current weights
    and the snapshot, reaching B through s.target (C -> AG -> architecture -> supernet loss) or
    s.onehot [reconstruction]. Both must be deterministic given s (the same validation batch; the
    AG without Gumbel noise), so that equal snapshots give exactly zero. The two gradients are
    computed separately (`torch.autograd.grad`: no .grad of any other parameter is touched) and
    subtracted. `optimizer` must hold B (`bins.logits`) only. Returns the (1, K) gradient applied;
    zeros, and nothing stepped, when `bins.frozen` or when the gradient is exactly zero."""
    b = bins.logits
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(params) != 1 or params[0] is not b:
        raise HwnasError("the probability-shift optimizer must hold the bin logits B and nothing else")
    if bins.frozen:
        return torch.zeros_like(b)
    s = bins.sample(generator, tau=tau, grad=True)
    grads = []
    for i, fn in enumerate((loss_fn_t, loss_fn_prev)):
        loss = fn(s)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise HwnasError("a probability-shift loss function must return a scalar tensor")
        if not loss.requires_grad:
            grads.append(torch.zeros_like(b))
            continue
        (gb,) = torch.autograd.grad(loss, b, retain_graph=i == 0, allow_unused=True)
        grads.append(torch.zeros_like(b) if gb is None else gb)
    grad = (grads[0] - grads[1]).detach()
    if not torch.isfinite(grad).all():
        raise HwnasError("the probability-shift gradient is not finite")
    if bool((grad != 0).any()):
        optimizer.zero_grad(set_to_none=True)
        b.grad = grad.clone()
        optimizer.step()
        b.grad = None
    return grad


def weights_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a module's parameters and buffers, for
    `torch.func.functional_call(module, snapshot, args)`: the loss with the weights w_{t-1}.
    (BatchNorm in training mode updates the snapshot's running statistics in place, as it would
    the module's; the outputs use batch statistics either way.)"""
    out = {name: p.detach().clone() for name, p in module.named_parameters()}
    out.update({name: b.detach().clone() for name, b in module.named_buffers()})
    return out


class ShiftUpdate:
    """Eq. 8's schedule [paper]: Adam (lr 1e-3) on B only; B is frozen during the `warmup`
    iterations and between updates, and updated at iterations warmup, warmup + every, ... .

    `snapshot(module)` stores w_{t-1} (`weights_snapshot`); call it at the first update time (and
    `step` again takes one after each update when given `module`) [reconstruction: w_{t-1} is
    the weights at the previous B update]. `bins.frozen` is set True on construction; `step`
    lifts it only for the update itself."""

    def __init__(self, bins: ComplexityBins, lr: float = SHIFT_LR, warmup: int = 0, every: int = 100,
                 tau: float = 1.0) -> None:
        if warmup < 0 or every < 1 or not lr > 0 or not tau > 0:
            raise HwnasError(f"need warmup >= 0, every >= 1, lr > 0 and tau > 0, got {warmup}, {every}, "
                             f"{lr}, {tau}")
        self.bins = bins
        self.warmup = int(warmup)
        self.every = int(every)
        self.tau = float(tau)
        self.optimizer = torch.optim.Adam([bins.logits], lr=lr)
        self.previous: dict[str, torch.Tensor] | None = None
        self.history: list[torch.Tensor] = []
        bins.frozen = True

    def due(self, iteration: int) -> bool:
        """Whether B updates at this (0-based) training iteration."""
        return iteration >= self.warmup and (iteration - self.warmup) % self.every == 0

    def snapshot(self, module: nn.Module) -> None:
        self.previous = weights_snapshot(module)

    @contextlib.contextmanager
    def _unfrozen(self) -> Iterator[None]:
        self.bins.frozen = False
        try:
            yield
        finally:
            self.bins.frozen = True

    def step(self, iteration: int, loss_fn_t: LossFn, loss_fn_prev: LossFn,
             generator: torch.Generator | None = None, module: nn.Module | None = None
             ) -> torch.Tensor | None:
        """At a due iteration: `probability_shift_step` and, with `module`, a new snapshot;
        returns the gradient applied. Otherwise None (B frozen, untouched)."""
        if not self.due(iteration):
            return None
        with self._unfrozen():
            grad = probability_shift_step(self.bins, loss_fn_t, loss_fn_prev, self.optimizer,
                                          generator=generator, tau=self.tau)
        self.history.append(self.bins.probs().detach().clone())
        if module is not None:
            self.snapshot(module)
        return grad


# ---- the architecture generator --------------------------------------------------------------


class ArchitectureGenerator(nn.Module):
    """The AG [paper: LSTM cell (64 hidden) + FC layers, one Gumbel-softmax one-hot per decision,
    in sequence, conditioned on the target C]. `decisions`: the number of choices of each searched
    decision, in the order they are emitted. `cost_range` (lo, hi) normalises C to
    c = (C - lo) / (hi - lo) [reconstruction; pass the bins' range]. `fc_layers` linear layers go
    from the LSTM output to a decision's logits (default 2 for CPU; the paper uses 10 for CNN
    spaces) [reconstruction]; `embed`: size of a decision's embedding fed to the next step."""

    def __init__(self, decisions: Sequence[int], hidden: int = AG_HIDDEN, fc_layers: int = 2,
                 embed: int = 16, cost_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.decisions = [int(n) for n in decisions]
        if not self.decisions or any(n < 1 for n in self.decisions):
            raise HwnasError(f"decisions are positive choice counts, got {list(decisions)!r}")
        if hidden < 1 or fc_layers < 1 or embed < 1:
            raise HwnasError("hidden, fc_layers and embed must be positive")
        lo, hi = (float(v) for v in cost_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise HwnasError(f"cost_range must be finite with hi > lo, got {cost_range!r}")
        self.register_buffer("cost_range", torch.tensor([lo, hi]))
        self.hidden = int(hidden)
        self.fc_layers = int(fc_layers)
        self.start = nn.Parameter(torch.zeros(embed))
        self.embeds = nn.ModuleList(nn.Linear(n, embed, bias=False) for n in self.decisions)
        self.init_h = nn.Linear(1, hidden)
        self.cell = nn.LSTMCell(embed + 1, hidden)
        trunk: list[nn.Module] = []
        for _ in range(self.fc_layers - 1):
            trunk += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.decisions)

    def encode(self, target: torch.Tensor | float) -> torch.Tensor:
        """c = (C - lo) / (hi - lo) as a (B, 1) tensor; differentiable in C (the Eq. 8 path)."""
        c = torch.as_tensor(target, dtype=self.cost_range.dtype)
        lo, hi = self.cost_range[0], self.cost_range[1]
        return ((c - lo) / (hi - lo)).reshape(-1, 1)

    def _decode(self, target: torch.Tensor | float, choose: Callable[[torch.Tensor], torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        c = self.encode(target)
        h = torch.tanh(self.init_h(c))
        state = (h, torch.zeros_like(h))
        x = self.start.expand(c.shape[0], -1)
        onehots, logits = [], []
        for i in range(len(self.decisions)):
            state = self.cell(torch.cat([c, x], dim=1), state)
            z = self.heads[i](self.trunk(state[0]))
            p = choose(z)
            logits.append(z)
            onehots.append(p)
            x = self.embeds[i](p)
        return onehots, logits

    def forward(self, target: torch.Tensor | float, tau: float = 1.0, hard: bool = True,
                noise: bool = True, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One (straight-through, `hard`) Gumbel-softmax one-hot per decision for each target:
        a list of (n_i,) tensors for a scalar C, (B, n_i) for a (B,) batch. `noise=False`: the
        straight-through argmax of softmax(logits / tau) (deterministic)."""
        onehots, _ = self._decode(
            target, lambda z: gumbel_onehot(z, tau=tau, hard=hard, generator=generator, noise=noise))
        if torch.as_tensor(target).dim() == 0:
            return [p[0] for p in onehots]
        return onehots

    def logits(self, target: torch.Tensor | float) -> list[torch.Tensor]:
        """Each decision's logits along the greedy (argmax) decode."""
        with torch.no_grad():
            _, logits = self._decode(target, lambda z: F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype))
        return logits

    def argmax(self, target: torch.Tensor | float) -> torch.Tensor:
        """Deployment [paper]: the most probable choice of every decision, decoded greedily;
        (n_decisions,) choice indices for a scalar C, (B, n_decisions) for a batch."""
        with torch.no_grad():
            onehots, _ = self._decode(target,
                                      lambda z: F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype))
        idx = torch.stack([p.argmax(-1) for p in onehots], dim=1)
        return idx[0] if torch.as_tensor(target).dim() == 0 else idx
