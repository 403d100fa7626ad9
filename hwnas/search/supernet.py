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

ARCH_MODES = ("full_v2", "two")
MIXED_MODES = (None, "full_v2", "two", "all")


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
                    with frozen_bn_stats(mixed.candidates[k]):
                        out_k = mixed.candidates[k](x)
                binary[k] = (out_k * grad_output).sum()
        return grad_x, binary, None


class MixedOp(nn.Module):
    """One searchable layer: its candidate modules and the sampled path(s) (`MixedEdge`)."""

    def __init__(self, candidates: list[nn.Module], names: tuple[str, ...]) -> None:
        super().__init__()
        if len(candidates) != len(names) or not candidates:
            raise ValueError("a MixedOp needs one name per candidate and at least one candidate")
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


class SuperNet(nn.Module):
    """Stem ops, one `MixedOp` per searchable layer, head ops; alpha and the binary gates.

    `SuperProxylessNASNets`: `architecture_parameters` (alpha), `weight_parameters`,
    `binarize` (`reset_binary_gates`), `set_arch_param_grad`, `rescale_updated_arch_param`,
    `entropy`, the argmax network (`convert_to_normal_net`). `candidate_ops` overrides the
    space's candidates (the memory benchmark adds kernel/expand choices).
    """

    def __init__(self, space: SearchSpace, candidate_ops: list[list[OpSpec | None]] | None = None,
                 init_ratio: float = 1e-3, seed: int | None = None) -> None:
        super().__init__()
        self.space = space
        if candidate_ops is None:
            candidate_ops = [space.candidates(i) for i in range(len(space.layers))]
        if len(candidate_ops) != len(space.layers):
            raise HwnasError(f"need candidates for {len(space.layers)} layers, "
                             f"got {len(candidate_ops)}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.stem = nn.Sequential(*[op.module() for op in space.stem_ops()])
        mixed = []
        for layer, ops in zip(space.layers, candidate_ops, strict=True):
            names = layer.choices if len(ops) == len(layer.choices) else \
                tuple(_op_name(op) for op in ops)
            mixed.append(MixedOp([candidate_module(layer, op) for op in ops], names))
        self.mixed = nn.ModuleList(mixed)
        self.head = nn.Sequential(*[op.module() for op in space.head_ops()])
        width = max(m.n for m in self.mixed)
        mask = torch.zeros(len(self.mixed), width, dtype=torch.bool)
        for i, m in enumerate(self.mixed):
            mask[i, :m.n] = True
        self.register_buffer("mask", mask)
        # `init_arch_params('normal', 1e-3)`: N(0, init_ratio) on the valid entries
        alpha = torch.randn(mask.shape, generator=gen) * init_ratio
        self.alpha = nn.Parameter(alpha.masked_fill(~mask, 0.0))
        self._old_alpha: list[tuple[int, list[int], torch.Tensor]] = []
        self.train()

    # --- parameters ---------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    # --- the distribution ---------------------------------------------------------------------
    def masked_alpha(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.mask, float("-inf"))

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
        for i, m in enumerate(self.mixed):
            p = probs[i, :m.n]
            if fixed is not None:
                a = int(fixed[i])
                if mode == "two" and m.n >= 2:
                    rest = p.clone()
                    rest[a] = 0.0
                    other = int(torch.multinomial(rest / rest.sum(), 1, generator=generator)[0])
                    m.active, m.involved = a, [a, other]
                else:
                    m.active = a
                    m.involved = list(range(m.n)) if mode == "full_v2" else [a]
            elif mode == "two" and m.n >= 2:
                pair = torch.multinomial(p, 2, replacement=False, generator=generator)
                slice_p = torch.softmax(self.alpha.detach()[i, pair], 0)
                c = int(torch.multinomial(slice_p, 1, generator=generator)[0])
                m.active, m.involved = int(pair[c]), [int(pair[c]), int(pair[1 - c])]
            else:
                m.active = int(torch.multinomial(p, 1, generator=generator)[0])
                m.involved = list(range(m.n)) if mode == "full_v2" else [m.active]
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
            return self.alpha
        keep = torch.zeros_like(self.mask)
        for i, m in enumerate(self.mixed):
            keep[i, m.involved] = True
        return self.alpha.masked_fill(~keep, float("-inf"))

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
