"""The ProxylessNAS over-parameterised network: mixed ops with architecture parameters and binary gates.

ProxylessNAS (Cai, Zhu, Han, ICLR 2019), Sec. 3.1-3.2, following the reference code
(mit-han-lab/proxylessnas `search/modules/mix_op.py`: `MixedEdge`, `ArchGradientFunction`;
`search/models/super_nets/super_proxyless.py`: `SuperProxylessNASNets`):

- every searchable layer is a `MixedOp` over its candidate ops (`OpSpec.module()` of
  `space.candidates(i)`, the very blocks the profile measured);
- the architecture parameters alpha are one (layers x max_choices) parameter; entries of choices a
  layer does not have are masked with -inf before the softmax, so `probs()` is Eq. (1)'s
  p_l = softmax(alpha_l) and the tensor goes straight into `ExpectedLatency` (whose table has NaN
  at the same places);
- binary gates g (Eq. (2)): one path per layer is sampled from p and only that path runs.

Modes of a `MixedOp` (set by `SuperNet.binarize` / `SuperNet.sample_paths`):

- `None` (weight steps, REINFORCE): the sampled candidate only, ordinary autograd (`MixedEdge`
  with MODE None: `active_op(x)`). The other candidates are not executed at all.
- `full_v2`: `ArchGradientFunction`: the forward runs the sampled path only; the backward returns
  the BinaryConnect estimate dL/dg_j = <o_j(x), dL/dy> for every candidate j, re-running the other
  candidates under `torch.no_grad()` (Eq. (4) with the gate gradients of Sec. 3.2). The alpha
  gradient is then dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) (`MixedEdge.set_arch_param_grad`).
- `two`: two paths sampled from p without replacement (`torch.multinomial`), probabilities
  renormalised over them, gradient only on their two alphas, and after the optimizer step both are
  shifted by the same offset so that the other paths keep their probabilities
  (`MixedEdge.binarize` / `set_arch_param_grad` / `rescale_updated_arch_param`).
  Simplification: the reference runs the second (inactive) path in the forward with a detached
  output; here it is re-run in the backward under no_grad (same values, less memory).
- `all`: not a ProxylessNAS mode: the DARTS-style continuous relaxation y = sum_j p_j o_j(x) with
  every path in autograd. It is the reference the gradient test compares against and the
  all-paths baseline of `benchmarks/supernet_memory.py`.

Skip choices: ProxylessNAS's `zero` sits in a `MobileInvertedResidualBlock` with an identity
shortcut, so a layer whose sampled op is zero outputs x; FBNet's `skip` at stride 1 and equal width
is the identity. Both are `None` in `space.candidates(i)` and become `Skip` here. Since hwnas'
inverted-residual blocks add their own residual, every candidate of such a layer computes
o_j(x) = x + body_j(x) and the skip computes x: the same network as the reference's
`x + MixedEdge(x)` with a zero op. (The binary gradients differ from the reference's by
<x, dL/dy> for every j, a constant that sum_j p_j (delta_ij - p_i) = 0 removes from dL/dalpha.)
Deviation: the reference skips the whole `MixedEdge` when zero is sampled and drops that layer's
alpha gradient for the step (`set_arch_param_grad`: `grad = None`); here the skip is an ordinary
candidate and its layer gets the estimate like any other sample.

Weight sharing (`weight_sharing`): ProxylessNAS gives every candidate its own weights
(`independent`). At the CPU proxy scale (digits, a few hundred steps) that supernet does not learn:
measured here, uniform single-path training of the proxyless space at 32x32 stays at 0.10-0.12
training accuracy after 200 steps while one fixed path reaches 0.93 after 100, and re-sampling only
the first (non-residual) layer among its 6 candidates already holds it at 0.18 after 100 steps
(0.72 with 2 candidates): each independent candidate of a layer without a shortcut projects to
its own random features, and the layers after it never see a stable input. The default is
therefore `entangled`: the MBConv candidates of a layer share one set of weights, kernel by centre
crop and expand by channel prefix (Once-for-All's elastic kernel / width, `hwnas.space.elastic`),
which learns (0.85 training accuracy after 200 uniform single-path steps in the same setting).
A path of the entangled supernet is still a network of the space (the same blocks, weights
sliced); the ProxylessNAS estimators (binary gates, `full_v2`, `two`) are unchanged.

`enc` (GM-NAS / few-shot sub-supernets): a boolean (layers x choices) mask of the choices this
supernet may use; sampling, p = softmax(alpha) and E[LAT] see only those (`masked_alpha`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import OpSpec, SearchSpace
from hwnas.space.base import Layer
from hwnas.space.elastic import ElasticChoice, SharedInvertedResidual, entangleable, max_choice
from hwnas.space.nb201 import EDGES, NB201_OPS, NB201Space

ARCH_MODES = ("full_v2", "two")
MIXED_MODES = (None, "full_v2", "two", "all")
WEIGHT_SHARING = ("entangled", "independent")


class Skip(nn.Module):
    """The identity: a skipped layer (ProxylessNAS `zero` with its identity shortcut, FBNet `skip`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """Zeros of the output shape (ProxylessNAS `ZeroLayer`), for a skip choice without a shortcut."""

    def __init__(self, cout: int, stride: int) -> None:
        super().__init__()
        self.cout, self.stride = cout, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return x.new_zeros(n, self.cout, (h - 1) // self.stride + 1, (w - 1) // self.stride + 1)


def candidate_module(layer: Layer, op: OpSpec | None) -> nn.Module:
    """The torch module of one choice: `op.module()`, or `Skip` / `Zero` where op is None."""
    if op is not None:
        return op.module()
    if layer.stride == 1 and layer.cin == layer.cout:
        return Skip()
    return Zero(layer.cout, layer.stride)


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run a module in train mode without updating BatchNorm running statistics (momentum 0).

    Used when `ArchGradientFunction.backward` re-runs the inactive candidates: their outputs are
    the train-mode outputs (batch statistics) as in the reference, but unlike the reference the
    re-run does not count as a training step of their running statistics.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None:
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


def binary_to_alpha_grad(binary_grads: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) = p_i (dL/dg_i - sum_j p_j dL/dg_j).

    `MixedEdge.set_arch_param_grad` (the double loop over i, j), vectorised. In `two` mode
    `probs` is the renormalised probability over the two sampled paths.
    """
    return probs * (binary_grads - (binary_grads * probs).sum())


class ArchGradientFunction(torch.autograd.Function):
    """Forward: the active path only; backward: grad w.r.t. x and the binary gates.

    The reference's `ArchGradientFunction`: the active candidate runs on a detached copy of x under
    `enable_grad`, its output is saved; the backward back-propagates into x through it and
    computes dL/dg_k = <o_k(x), dL/dy> for each involved candidate k, re-running the others under
    no_grad. As in the reference, the active candidate's weights get no gradient here (an arch step
    updates alpha only).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gates: torch.Tensor, mixed: MixedOp) -> torch.Tensor:
        ctx.mixed = mixed
        detached = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():
            out = mixed.candidates[mixed.active](detached)
        ctx.save_for_backward(detached, out)
        return out.detach().clone() if out is detached else out.detach()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        detached, out = ctx.saved_tensors
        mixed: MixedOp = ctx.mixed
        grad_x = None
        if ctx.needs_input_grad[0]:
            if out is detached or isinstance(mixed.candidates[mixed.active], Skip):
                grad_x = grad_output
            elif out.requires_grad:
                (grad_x,) = torch.autograd.grad(out, detached, grad_output, allow_unused=True)
        binary = torch.zeros(mixed.n, dtype=grad_output.dtype, device=grad_output.device)
        with torch.no_grad():
            x = detached.detach()
            for k in mixed.involved:
                if k == mixed.active:
                    out_k = out.detach()
                else:
                    with frozen_bn_stats(mixed):  # its candidates and any shared block
                        out_k = mixed.candidates[k](x)
                binary[k] = (out_k * grad_output).sum()
        return grad_x, binary, None


class MixedOp(nn.Module):
    """One searchable layer: its candidate modules and the sampled path(s) (`MixedEdge`)."""

    def __init__(self, candidates: list[nn.Module], names: tuple[str, ...],
                 shared: nn.Module | None = None) -> None:
        super().__init__()
        if len(candidates) != len(names) or not candidates:
            raise ValueError("a MixedOp needs one name per candidate and at least one candidate")
        self.shared = shared  # the weights of entangled candidates (`ElasticChoice`), or None
        self.candidates = nn.ModuleList(candidates)
        self.names = tuple(names)
        self.mode: str | None = None
        self.active = 0
        self.involved: list[int] = [0]
        self.gates: torch.Tensor | None = None
        self.path_probs: torch.Tensor | None = None  # set for `all` (p over the candidates)

    @property
    def n(self) -> int:
        return len(self.candidates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode in ARCH_MODES:
            if self.gates is None:
                raise RuntimeError("MixedOp in an arch mode needs gates: call SuperNet.binarize")
            return ArchGradientFunction.apply(x, self.gates, self)
        if self.mode == "all":
            p = self.path_probs
            return sum(p[j] * self.candidates[j](x) for j in range(self.n))
        return self.candidates[self.active](x)

    def extra_repr(self) -> str:
        return f"choices={self.names}, mode={self.mode}, active={self.names[self.active]}"


class WeightSharingNet(nn.Module):
    """The base of every supernet: choices per layer, the `enc` mask, single paths, gradient sets.

    What uniform single-path training (SPOS / RSPS), the ranking of inherited weights
    (`hwnas.search.ranking`) and the GM-NAS split (`hwnas.search.gm`) need from a supernet:

    - `sizes`: the number of choices of each layer; `enc`: (layers x max choices) bool buffer, the
      choices this (sub-)supernet may use (GM-NAS's `enc`);
    - `set_paths(indices)`: run one choice per layer; `sample_uniform(generator)`: a uniform draw
      among the allowed choices (SPOS's uniform path sampling);
    - `layer_modules(i)`: the modules that hold layer i's own weights; `split_parameters(i)`: the
      gradient set GM-NAS compares when it scores layer i (every shared weight except layer i's
      own; a subclass may exclude more, as NB201 excludes stem and classifier);
    - `weight_parameters()`.
    """

    enc: torch.Tensor

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        width = max(sizes)
        mask = torch.zeros(len(sizes), width, dtype=torch.bool)
        for i, n in enumerate(sizes):
            mask[i, :n] = True
        self.register_buffer("mask", mask)
        self.register_buffer("enc", mask.clone())

    @property
    def sizes(self) -> list[int]:
        return [int(v) for v in self.mask.sum(1)]

    def set_enc(self, enc: np.ndarray | torch.Tensor) -> None:
        """Restrict the supernet to the choices where `enc` is True (a sub-supernet)."""
        enc = torch.as_tensor(np.asarray(enc, dtype=bool))
        if enc.shape != self.mask.shape:
            raise HwnasError(f"an enc mask needs shape {tuple(self.mask.shape)}, got "
                             f"{tuple(enc.shape)}")
        if (enc & ~self.mask).any() or not (enc & self.mask).any(1).all():
            raise HwnasError("an enc mask must keep at least one valid choice per layer and "
                             "no invalid one")
        self.enc.copy_(enc)

    def allowed(self) -> torch.Tensor:
        return self.mask & self.enc

    def contains(self, indices: np.ndarray) -> np.ndarray:
        """Which rows of an (N x layers) index matrix this (sub-)supernet allows."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.int64))
        allowed = self.allowed().cpu().numpy()
        return allowed[np.arange(idx.shape[1])[None, :], idx].all(1)

    def sample_uniform(self, generator: torch.Generator | None = None) -> np.ndarray:
        """One allowed choice per layer, uniformly (SPOS `get_uniform_sample_cand`)."""
        w = self.allowed().float()
        return torch.multinomial(w, 1, generator=generator)[:, 0].cpu().numpy()

    def set_paths(self, indices: np.ndarray | list[int]) -> None:
        raise NotImplementedError

    def layer_modules(self, i: int) -> list[nn.Module]:
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def layer_parameters(self, i: int) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for m in self.layer_modules(i):
            for p in m.parameters():
                seen[id(p)] = p
        return list(seen.values())

    def excluded_from_split(self) -> list[nn.Module]:
        """Modules never in a gradient set (none here; NB201: stem and classifier)."""
        return []

    def split_parameters(self, i: int) -> list[nn.Parameter]:
        """GM-NAS's gradient set for layer i (`get_split_gradients`): every weight but layer i's
        own (and those of `excluded_from_split`)."""
        own = {id(p) for p in self.layer_parameters(i)}
        for m in self.excluded_from_split():
            own |= {id(p) for p in m.parameters()}
        return [p for p in self.weight_parameters() if id(p) not in own]


class SuperNet(WeightSharingNet):
    """Stem ops, one `MixedOp` per searchable layer, head ops; alpha and the binary gates.

    `SuperProxylessNASNets`: `architecture_parameters` (alpha), `weight_parameters`,
    `binarize` (`reset_binary_gates`), `set_arch_param_grad`, `rescale_updated_arch_param`,
    `entropy`, the argmax network (`convert_to_normal_net`). `candidate_ops` overrides the
    space's candidates (the memory benchmark adds kernel/expand choices). `weight_sharing`:
    `entangled` (default) or `independent` (see the module docstring).
    """

    def __init__(self, space: SearchSpace, candidate_ops: list[list[OpSpec | None]] | None = None,
                 init_ratio: float = 1e-3, seed: int | None = None,
                 weight_sharing: str = "entangled") -> None:
        if weight_sharing not in WEIGHT_SHARING:
            raise HwnasError(f"unknown weight sharing {weight_sharing!r}; use "
                             f"{' or '.join(WEIGHT_SHARING)}")
        if candidate_ops is None:
            candidate_ops = [space.candidates(i) for i in range(len(space.layers))]
        if len(candidate_ops) != len(space.layers):
            raise HwnasError(f"need candidates for {len(space.layers)} layers, "
                             f"got {len(candidate_ops)}")
        super().__init__([len(ops) for ops in candidate_ops])
        self.space = space
        self.weight_sharing = weight_sharing
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.stem = nn.Sequential(*[op.module() for op in space.stem_ops()])
        mixed = []
        for layer, ops in zip(space.layers, candidate_ops, strict=True):
            names = layer.choices if len(ops) == len(layer.choices) else \
                tuple(_op_name(op) for op in ops)
            mixed.append(_mixed_op(layer, ops, names, weight_sharing == "entangled"))
        self.mixed = nn.ModuleList(mixed)
        self.head = nn.Sequential(*[op.module() for op in space.head_ops()])
        # `init_arch_params('normal', 1e-3)`: N(0, init_ratio) on the valid entries
        alpha = torch.randn(self.mask.shape, generator=gen) * init_ratio
        self.alpha = nn.Parameter(alpha.masked_fill(~self.mask, 0.0))
        self._old_alpha: list[tuple[int, list[int], torch.Tensor]] = []
        self.train()

    def layer_modules(self, i: int) -> list[nn.Module]:
        return [self.mixed[i]]

    # --- parameters ---------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    # --- the distribution ---------------------------------------------------------------------
    def masked_alpha(self) -> torch.Tensor:
        """alpha with -inf outside the valid and allowed (`enc`) choices."""
        return self.alpha.masked_fill(~self.allowed(), float("-inf"))

    def probs(self) -> torch.Tensor:
        """p = softmax(alpha) per layer over its valid choices (0 elsewhere); Eq. (1)."""
        return torch.softmax(self.masked_alpha(), dim=-1)

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.masked_alpha(), dim=-1)

    def entropy(self) -> float:
        """Mean over layers of the entropy of p (the reference logs the sum / #layers)."""
        with torch.no_grad():
            p = self.probs()
            ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        return float(ent.mean())

    def argmax_indices(self) -> np.ndarray:
        """The chosen op per layer: argmax of p (`chosen_index`)."""
        with torch.no_grad():
            return self.masked_alpha().argmax(-1).cpu().numpy()

    # --- sampling -----------------------------------------------------------------------------
    def set_mode(self, mode: str | None) -> None:
        if mode not in MIXED_MODES:
            raise ValueError(f"unknown mixed-op mode {mode!r}")
        for m in self.mixed:
            m.mode = mode

    def set_paths(self, indices: np.ndarray | list[int]) -> None:
        """Fix the active path of each layer (weight mode: only these run)."""
        self.set_mode(None)
        for m, j in zip(self.mixed, indices, strict=True):
            if not 0 <= int(j) < m.n:
                raise ValueError(f"path index {j} out of range for a layer with {m.n} choices")
            m.active, m.involved, m.gates = int(j), [int(j)], None

    def sample_indices(self, generator: torch.Generator | None = None) -> np.ndarray:
        """One path per layer drawn from p (`torch.multinomial(probs, 1)`)."""
        with torch.no_grad():
            return torch.multinomial(self.probs(), 1, generator=generator)[:, 0].cpu().numpy()

    def sample_paths(self, generator: torch.Generator | None = None) -> np.ndarray:
        """Weight mode: sample and activate one path per layer; returns the indices."""
        idx = self.sample_indices(generator)
        self.set_paths(idx)
        return idx

    def binarize(self, mode: str, generator: torch.Generator | None = None,
                 active: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Sample binary gates for an architecture step (`MixedEdge.binarize`); active indices.

        `active` fixes the active path of each layer instead of drawing it (tests, benchmarks);
        in `two` mode the second path is still drawn from p.
        """
        if mode not in ARCH_MODES:
            raise ValueError(f"unknown binary mode {mode!r}; use one of {', '.join(ARCH_MODES)}")
        self._old_alpha = []
        with torch.no_grad():
            probs = self.probs()
        fixed = active  # not to be shadowed by the result array (it was: every draw was path 0)
        active = np.zeros(len(self.mixed), dtype=np.int64)
        allowed = self.allowed().cpu().numpy()
        for i, m in enumerate(self.mixed):
            p = probs[i, :m.n]
            ok = [j for j in range(m.n) if allowed[i, j]]  # `enc`: the other choices never run
            pair_ok = mode == "two" and len(ok) >= 2
            if fixed is not None:
                a = int(fixed[i])
                if pair_ok:
                    rest = p.clone()
                    rest[a] = 0.0
                    other = int(torch.multinomial(rest / rest.sum(), 1, generator=generator)[0])
                    m.active, m.involved = a, [a, other]
                else:
                    m.active = a
                    m.involved = ok if mode == "full_v2" else [a]
            elif pair_ok:
                pair = torch.multinomial(p, 2, replacement=False, generator=generator)
                slice_p = torch.softmax(self.alpha.detach()[i, pair], 0)
                c = int(torch.multinomial(slice_p, 1, generator=generator)[0])
                m.active, m.involved = int(pair[c]), [int(pair[c]), int(pair[1 - c])]
            else:
                m.active = int(torch.multinomial(p, 1, generator=generator)[0])
                m.involved = ok if mode == "full_v2" else [m.active]
            gates = torch.zeros(m.n, dtype=self.alpha.dtype, device=self.alpha.device)
            gates[m.active] = 1.0
            m.gates = gates.requires_grad_(True)
            m.mode = mode
            active[i] = m.active
        return active

    def set_all_paths(self) -> None:
        """`all` mode (DARTS-style weighted sum of every candidate), for reference only."""
        probs = self.probs()
        for i, m in enumerate(self.mixed):
            m.mode, m.path_probs = "all", probs[i, :m.n]

    def latency_alpha(self) -> torch.Tensor:
        """The alpha to feed `ExpectedLatency`: all of it, or in `two` mode only the sampled pairs.

        `two` mode computes E[LAT] with `current_prob_over_ops`, the probabilities renormalised over
        the two sampled paths (0 elsewhere), as `SuperProxylessNASNets.expected_latency` does.
        """
        if not any(m.mode == "two" for m in self.mixed):
            return self.masked_alpha()
        keep = torch.zeros_like(self.mask)
        for i, m in enumerate(self.mixed):
            keep[i, m.involved] = True
        return self.alpha.masked_fill(~(keep & self.allowed()), float("-inf"))

    # --- architecture gradient ----------------------------------------------------------------
    def set_arch_param_grad(self) -> None:
        """Add the binary-gate estimate to alpha.grad (`MixedEdge.set_arch_param_grad`).

        alpha.grad may already hold the latency term's exact gradient from the backward pass;
        this adds sum_j dL/dg_j p_j (delta_ij - p_i) for each layer (in `two` mode over the pair,
        with the renormalised probabilities) and remembers the pair's alphas for the rescale.
        """
        if self.alpha.grad is None:
            self.alpha.grad = torch.zeros_like(self.alpha)
        self._old_alpha = []
        with torch.no_grad():
            probs = self.probs()
            for i, m in enumerate(self.mixed):
                if m.gates is None or m.gates.grad is None:
                    continue
                bg = m.gates.grad
                if m.mode == "two":
                    idx = torch.tensor(m.involved, device=self.alpha.device)
                    p = torch.softmax(self.alpha[i, idx], 0)
                    self.alpha.grad[i, idx] += binary_to_alpha_grad(bg[idx], p)
                    self._old_alpha.append((i, list(m.involved), self.alpha[i, idx].clone()))
                else:
                    self.alpha.grad[i, :m.n] += binary_to_alpha_grad(bg, probs[i, :m.n])

    def rescale_updated_arch_param(self) -> None:
        """`two` mode, after the optimizer step: shift the pair's alphas by
        offset = log(sum exp(new) / sum exp(old)) so that sum exp over the pair, hence every other
        path's probability, is what it was (`MixedEdge.rescale_updated_arch_param`)."""
        with torch.no_grad():
            for i, involved, old in self._old_alpha:
                idx = torch.tensor(involved, device=self.alpha.device)
                new = self.alpha[i, idx]
                offset = torch.logsumexp(new.double(), 0) - torch.logsumexp(old.double(), 0)
                self.alpha[i, idx] = (new.double() - offset).to(self.alpha.dtype)
        self._old_alpha = []

    def clear_gates(self) -> None:
        """Back to weight mode with the current active paths; gates dropped."""
        for m in self.mixed:
            m.mode, m.gates, m.path_probs = None, None, None
            m.involved = [m.active]

    # --- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for m in self.mixed:
            x = m(x)
        return self.head(x)


class NoneOp(nn.Module):
    """NB201's `none`: zeros of the input's shape (`Zero` in `cell_operations.py`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class CellSuperNet(WeightSharingNet):
    """The NAS-Bench-201 weight-sharing supernet (GM-NAS `nasbench201/search_model.py` in RSPS
    mode, the one-shot model of NAS-Bench-201's baselines).

    Every cell has its own `MixedOp` per edge over the 5 ops (`none`, `skip_connect`,
    `nor_conv_1x1`, `nor_conv_3x3`, `avg_pool_3x3`, built from the space's `edge_op` specs: the
    ops the profile measures); an edge's choice is shared by all cells (layer i = edge i, the
    6 x 5 `_arch_parameters` of the code). Node j of a cell sums the chosen ops of its incoming
    edges (`SearchCell.forward` with one path). Stem, the ResNet reduction blocks and the head are
    the space's. `cells_per_stage` defaults to the space's 5; the proxy benchmarks use 1 (the
    micro-NB201 of the research notes: C = 8, 8 x 8 inputs). The gradient set of a GM split
    excludes stem and classifier, as the NB201 code does.
    """

    def __init__(self, space: NB201Space, cells_per_stage: int | None = None) -> None:
        super().__init__([len(NB201_OPS)] * len(EDGES))
        self.space = space
        self.cells_per_stage = int(cells_per_stage or space.cells_per_stage)
        if self.cells_per_stage < 1:
            raise HwnasError(f"cells_per_stage must be >= 1, got {cells_per_stage}")
        self.stem = nn.Sequential(*[op.module() for op in space.stem_ops()])
        reductions = space.reduction_ops()
        blocks: list[nn.Module] = []
        self.cells = nn.ModuleList()
        for stage in range(len(space.stage_widths())):
            if stage:
                blocks.append(reductions[stage - 1].module())
            for _ in range(self.cells_per_stage):
                cell = nn.ModuleList(
                    MixedOp([self._candidate(choice, stage) for choice in NB201_OPS], NB201_OPS)
                    for _ in EDGES)
                self.cells.append(cell)
                blocks.append(cell)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(*[op.module() for op in space.head_ops()])
        self.train()

    def _candidate(self, choice: str, stage: int) -> nn.Module:
        if choice == "none":
            return NoneOp()
        op = self.space.edge_op(choice, stage)
        return Skip() if op is None else op.module()

    def set_paths(self, indices: np.ndarray | list[int]) -> None:
        idx = [int(j) for j in indices]
        if len(idx) != len(EDGES) or any(not 0 <= j < len(NB201_OPS) for j in idx):
            raise ValueError(f"an NB201 path is {len(EDGES)} op indices in [0, 5), got {idx}")
        for cell in self.cells:
            for m, j in zip(cell, idx, strict=True):
                m.mode, m.active, m.involved, m.gates = None, j, [j], None

    def layer_modules(self, i: int) -> list[nn.Module]:
        return [cell[i] for cell in self.cells]

    def excluded_from_split(self) -> list[nn.Module]:
        return [self.stem, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            if isinstance(block, nn.ModuleList):  # a cell
                nodes = [x]
                for j in (1, 2, 3):
                    terms = [block[e](nodes[i]) for e, (to, i) in enumerate(EDGES) if to == j]
                    nodes.append(sum(terms[1:], terms[0]))
                x = nodes[3]
            else:
                x = block(x)
        return self.head(x)


def build_supernet(space: SearchSpace, seed: int | None = None, weight_sharing: str = "entangled",
                   cells_per_stage: int | None = None) -> WeightSharingNet:
    """The supernet of a space: `CellSuperNet` for nb201, `SuperNet` for the chain spaces."""
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(space, NB201Space):
        return CellSuperNet(space, cells_per_stage)
    return SuperNet(space, seed=seed, weight_sharing=weight_sharing)


def _mixed_op(layer: Layer, ops: list[OpSpec | None], names: tuple[str, ...],
              entangle: bool) -> MixedOp:
    """The `MixedOp` of one layer; with `entangle`, its ungrouped MBConv candidates of one shape
    share a `SharedInvertedResidual` (largest kernel and expand) and run slices of it."""
    plain = [op for op in ops if entangleable(op)]
    shapes = {(op.kind, op.cin, op.cout, op.stride, op.act) for op in plain}
    if not entangle or len(plain) < 2 or len(shapes) != 1:
        return MixedOp([candidate_module(layer, op) for op in ops], names)
    kind, cin, cout, stride, act = shapes.pop()
    kernel, expand = max_choice(plain)
    shared = SharedInvertedResidual(cin, cout, stride, kernel, expand, act,
                                    "proxyless" if kind == "mbconv" else "fbnet")
    cands = [ElasticChoice(shared, op.kernel, op.expand) if entangleable(op)
             else candidate_module(layer, op) for op in ops]
    return MixedOp(cands, names, shared)


def _op_name(op: OpSpec | None) -> str:
    if op is None:
        return "skip"
    g = f"_g{op.groups}" if op.groups > 1 else ""
    return f"k{op.kernel}_e{op.expand}{g}"


def entropy_of(probs: np.ndarray) -> float:
    """Mean per-layer entropy of a (layers x choices) probability matrix (0 entries ignored)."""
    p = np.asarray(probs, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return float(terms.sum(-1).mean())


def uniform_entropy(space: SearchSpace) -> float:
    return float(np.mean([math.log(len(layer.choices)) for layer in space.layers]))
