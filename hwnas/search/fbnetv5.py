"""FBNetV5, pure parts: per-task keep/skip distributions over a supernet's blocks and the one-sample
REINFORCE + importance-sampling estimator that serves every task with one forward/backward.

Wu et al., "FBNetV5: Neural Architecture Search for Multiple Tasks in One Run", arXiv 2111.10007.
No public implementation exists and only the abstract was reachable; the method comes second-hand,
mainly from a DNAS survey (Heuillet et al., arXiv 2304.05405: its FBNetV5 paragraph, Eq. 50 and
Fig. 16). Labels: [paper] = stated in the paper or the survey's account of it; [reconstruction] =
our choice where both are silent. The research notes (shared/research/fbnetv5_shiftnas.md, §1 and
§3.2) give the sources of each point.

The problem [paper]: a supernet of B skippable blocks; an architecture is a in {0,1}^B (keep/skip
bits), each bit an independent Bernoulli; each task t (classification, segmentation, detection)
has its own distribution p_{pi^t}(a) = prod_b pi_{t,b}^{a_b} (1 - pi_{t,b})^{1 - a_b}; all tasks
share the supernet weights w. The objective (the survey's Eq. 50):

    min over pi^1..pi^T and w of  sum_t E_{a ~ p_{pi^t}}[ l^t(a, w) ].

The estimator [paper]: REINFORCE (policy gradient) for the distributions, backpropagation for the
weights, plus importance sampling, which cuts the forward/backward passes per step from T to 1.

One search step (the caller's loop; this module has the parts) [reconstruction, notes §1.4]:

1. `a, _ = dists.sample(generator)`: ONE architecture from the proposal q = (1/T) sum_t p_{pi^t}
   (a uniform task, then that task's Bernoulli bits). The proposal is our choice: the paper names
   importance sampling but not its proposal. `sample_batch(n)` draws n at once; `surrogate` takes
   such a batch and averages the n one-sample estimates (tests, or several draws per step).
2. one backbone forward with the blocks of `a` kept, all T heads, losses l^t(a, w) -> (T,).
3. `weight_loss, arch_loss = estimator.surrogate(dists, a, losses)`:
   weight_loss = sum_t r_t l^t(a, w) and arch_loss = sum_t r_t (l^t - b_t) log p_{pi^t}(a), with
   r_t = p_{pi^t}(a) / q(a) (detached) and b_t a moving-average baseline. Backpropagating
   weight_loss gives w the importance-weighted gradient of sum_t E_{p_t}[l^t]; backpropagating
   arch_loss gives each pi^t its REINFORCE estimate r_t (l^t - b_t) grad log p_{pi^t}(a). Both are
   unbiased, since E_q[r_t f(a)] = E_{p_t}[f(a)] for any f, and E_{p_t}[grad log p_t] = 0 for a
   baseline that does not depend on the current sample.
4. one optimizer step on w (weight_loss) and one on the logits (arch_loss).
5. deploy: `dists.derive()`, the bits with pi_{t,b} > 0.5, per task.

Parts and their status:

- `TaskDistributions` [paper: independent Bernoulli keep/skip bits, one distribution per task].
  [reconstruction] pi = sigmoid(logits), logits a (T, B) parameter initialised at logit(init_keep);
  log-probabilities in log-sigmoid form (finite at any logit); the mixture proposal q.
- `ReinforceEstimator` [paper: REINFORCE + importance sampling, one pass for all tasks].
  [reconstruction] the proposal, the baseline, no clipping of r (r_t <= T always, since
  q >= p_t / T, so the weights need none). The baseline b_t estimates E_{p_t}[l^t], not E_q[l^t]:
  it is a self-normalised importance-weighted moving average, b_t = N_t / D_t with
  N_t <- decay N_t + (1 - decay) r_t l^t and D_t <- decay D_t + (1 - decay) r_t, initialised from
  the first call's losses (so the first call's arch_loss is 0 for a single sample). The
  baseline is read before it is updated with the current sample, so it keeps the estimate
  unbiased. `importance=False` (r_t := 1) is the WRONG estimator, kept for tests: it estimates the
  gradient of sum_t E_q[l^t] and is biased whenever the tasks' distributions differ.
- `TaskDistributions.expected_cost` [reconstruction, notes §1.5 [infer]]: the paper's cost term
  was not reachable. For an additive cost (a lookup table of per-block latencies, or FLOPs) the
  expectation is closed-form, E_{p_t}[fixed + sum_b a_b c_b] = fixed + sum_b pi_{t,b} c_b, and
  differentiable, so its gradient needs no REINFORCE. Adding kappa_t * expected_cost to the
  loss is our choice; a non-additive cost (a predictor, a measurement) can instead enter l^t(a)
  and go through REINFORCE.
- `exact_expectation`, `exact_gradient`, `all_architectures` [reconstruction]: enumeration of
  all 2^B architectures (B <= 16) for tests and the benchmark's estimator check.

Nothing here knows a supernet: architectures are 0/1 tensors, losses are tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError

__all__ = [
    "DEFAULT_DECAY", "MAX_ENUMERATE_BITS", "ReinforceEstimator", "TaskDistributions",
    "all_architectures", "exact_expectation", "exact_gradient",
]

#: Decay of the moving-average baseline [reconstruction].
DEFAULT_DECAY = 0.9
#: The most bits `exact_expectation` / `exact_gradient` enumerate (2^16 architectures).
MAX_ENUMERATE_BITS = 16


def _check_arch(a: torch.Tensor, n_bits: int) -> None:
    if not isinstance(a, torch.Tensor):
        raise ValueError(f"an architecture must be a tensor of 0/1 bits, got {type(a).__name__}")
    if a.dim() < 1 or a.shape[-1] != n_bits:
        raise ValueError(f"an architecture must have {n_bits} bits in its last dim, got shape "
                         f"{tuple(a.shape)}")
    if not bool(((a == 0) | (a == 1)).all()):
        raise ValueError("an architecture's bits must be 0 or 1")


def _log_prob(logits: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log p_t(a) for every task: logits (T, B), a (..., B) -> (..., T), in log-sigmoid form."""
    a = a.to(logits.dtype).unsqueeze(-2)  # (..., 1, B)
    per_bit = a * F.logsigmoid(logits) + (1.0 - a) * F.logsigmoid(-logits)
    return per_bit.sum(-1)


class TaskDistributions(nn.Module):
    """One independent-Bernoulli keep/skip distribution per task over B blocks [paper]:
    p_t(a) = prod_b pi_{t,b}^{a_b} (1 - pi_{t,b})^{1 - a_b}, pi = sigmoid(logits).

    `logits` is a (T, B) parameter initialised at logit(init_keep) [reconstruction]; `tasks` names
    the rows (default task0, task1, ...). Sampling uses the mixture proposal
    q = (1/T) sum_t p_t [reconstruction]."""

    def __init__(self, n_tasks: int, n_bits: int, init_keep: float = 0.5,
                 tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise HwnasError(f"FBNetV5 needs at least one task, got n_tasks={n_tasks!r}")
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < 1:
            raise HwnasError(f"FBNetV5 needs at least one searchable block, got n_bits={n_bits!r}")
        init = float(init_keep)
        if not 0.0 < init < 1.0:
            raise HwnasError(f"init_keep is a keep probability strictly between 0 and 1, got "
                             f"{init_keep!r}")
        if tasks is None:
            names = tuple(f"task{t}" for t in range(n_tasks))
        else:
            names = tuple(str(t) for t in tasks)
            if len(names) != n_tasks:
                raise HwnasError(f"{len(names)} task names given for n_tasks={n_tasks}: {names}")
            if len(set(names)) != len(names):
                raise HwnasError(f"task names must be distinct, got {names}")
        self.tasks: tuple[str, ...] = names
        self.n_tasks = n_tasks
        self.n_bits = n_bits
        self.logits = nn.Parameter(torch.full((n_tasks, n_bits), math.log(init / (1.0 - init))))

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, n_bits={self.n_bits}"

    def probs(self) -> torch.Tensor:
        """pi = sigmoid(logits), (T, B), differentiable."""
        return torch.sigmoid(self.logits)

    @torch.no_grad()
    def sample_batch(self, n: int, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """n independent draws from q: (a (n, B) float 0/1, task (n,) long), the task each draw's
        bits came from (uniform over tasks)."""
        if n < 1:
            raise ValueError(f"sample_batch needs n >= 1, got {n}")
        dev = self.logits.device
        task = torch.randint(self.n_tasks, (n,), generator=generator, device=dev)
        pi = torch.sigmoid(self.logits.detach())[task]
        u = torch.rand((n, self.n_bits), generator=generator, dtype=pi.dtype, device=dev)
        return (u < pi).to(pi.dtype), task

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """One draw from the mixture proposal q: (a (B,) float 0/1, index of the task drawn)."""
        a, task = self.sample_batch(1, generator)
        return a[0], int(task[0])

    def log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """log p_t(a) for every task: a (B,) -> (T,), a (n, B) -> (n, T); differentiable w.r.t.
        the logits."""
        _check_arch(a, self.n_bits)
        return _log_prob(self.logits, a)

    def proposal_log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """log q(a) = logsumexp_t log p_t(a) - log T: a (B,) -> scalar, a (n, B) -> (n,)."""
        return torch.logsumexp(self.log_prob(a), dim=-1) - math.log(self.n_tasks)

    @torch.no_grad()
    def importance_weights(self, a: torch.Tensor) -> torch.Tensor:
        """r_t = p_t(a) / q(a), detached, in (0, T]: a (B,) -> (T,), a (n, B) -> (n, T).
        (1/T) sum_t r_t = 1 for every a (the mixture identity)."""
        lp = self.log_prob(a)
        lq = torch.logsumexp(lp, dim=-1, keepdim=True) - math.log(self.n_tasks)
        return torch.exp(lp - lq)

    @torch.no_grad()
    def derive(self, threshold: float = 0.5) -> torch.Tensor:
        """The deployed architecture per task: (T, B) bool, keep where pi > threshold."""
        if not 0.0 <= threshold <= 1.0:
            raise HwnasError(f"the derive threshold is a probability in [0, 1], got {threshold!r}")
        return self.probs() > threshold

    def expected_cost(self, costs: torch.Tensor | Sequence[float], fixed: float = 0.0
                      ) -> torch.Tensor:
        """E_{p_t}[fixed + sum_b a_b c_b] = fixed + sum_b pi_{t,b} c_b, (T,), differentiable.

        Exact for an additive cost (a lookup table of per-block latencies): its gradient needs no
        REINFORCE [reconstruction, notes §1.5 [infer]]. `fixed` is the cost of what is never
        skipped (stem, heads)."""
        c = torch.as_tensor(costs, dtype=self.logits.dtype, device=self.logits.device)
        if c.shape != (self.n_bits,):
            raise HwnasError(f"expected_cost needs one cost per block ({self.n_bits}), got shape "
                             f"{tuple(c.shape)}")
        if not bool(torch.isfinite(c).all()):
            raise HwnasError("block costs must be finite")
        return fixed + self.probs() @ c


class ReinforceEstimator:
    """REINFORCE with importance sampling for T task distributions from ONE shared sample [paper],
    with per-task moving-average baselines [reconstruction].

    `surrogate(dists, a, losses)` returns (weight_loss, arch_loss): backpropagate weight_loss into
    the supernet weights and arch_loss into the logits. `importance=False` sets r_t := 1 (biased,
    for tests); `baseline=False` sets b_t := 0. See the module docstring for the baseline."""

    def __init__(self, decay: float = DEFAULT_DECAY, importance: bool = True,
                 baseline: bool = True) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise HwnasError(f"the baseline decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.importance = bool(importance)
        self.baseline = bool(baseline)
        self._num: torch.Tensor | None = None  # EMA of r_t l_t, (T,)
        self._den: torch.Tensor | None = None  # EMA of r_t, (T,)
        self._plain: torch.Tensor | None = None  # EMA of l_t, the fallback where D_t underflows

    @property
    def baselines(self) -> torch.Tensor | None:
        """b_t, (T,), or None before the first call (or with baseline=False)."""
        if not self.baseline or self._num is None:
            return None
        assert self._den is not None and self._plain is not None
        tiny = torch.finfo(self._den.dtype).tiny
        return torch.where(self._den > tiny, self._num / self._den.clamp_min(tiny), self._plain)

    def reset(self) -> None:
        """Forget the baselines (the next call re-initialises them)."""
        self._num = self._den = self._plain = None

    def surrogate(self, dists: TaskDistributions, a: torch.Tensor, task_losses: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two surrogate losses of one step, then the baselines' update.

        a (B,) with task_losses (T,), or a batch a (n, B) with task_losses (n, T) (each row its own
        draw from q; the surrogates are then means over the rows).
        weight_loss = sum_t r_t l_t (r detached: the gradient reaches w through l_t only);
        arch_loss = sum_t r_t (l_t.detach() - b_t) log p_t(a) (the gradient reaches the logits
        only). b_t is the baseline from earlier calls; on the first call it is initialised from
        this call's losses."""
        if not isinstance(task_losses, torch.Tensor):
            raise ValueError("task_losses must be a tensor of per-task losses")
        _check_arch(a, dists.n_bits)
        want = (*a.shape[:-1], dists.n_tasks)
        if a.dim() > 2 or tuple(task_losses.shape) != want:
            raise ValueError(f"task_losses must have shape {want} for an architecture of shape "
                             f"{tuple(a.shape)} and {dists.n_tasks} tasks, got "
                             f"{tuple(task_losses.shape)}")
        log_p = dists.log_prob(a)  # (..., T)
        if self.importance:
            r = dists.importance_weights(a).to(task_losses.dtype)
        else:
            r = torch.ones_like(task_losses).detach()
        lt = task_losses.detach()
        first = self._num is None
        if self.baseline and first:
            self._num, self._den, self._plain = self._stats(r, lt)
        if self.baseline:
            b = self.baselines
            assert b is not None
        else:
            b = torch.zeros(dists.n_tasks, dtype=lt.dtype, device=lt.device)
        weight_terms = (r * task_losses).sum(-1)
        arch_terms = (r * (lt - b) * log_p.to(lt.dtype)).sum(-1)
        if a.dim() == 2:
            weight_terms, arch_terms = weight_terms.mean(), arch_terms.mean()
        if self.baseline and not first:
            assert self._num is not None and self._den is not None and self._plain is not None
            num, den, plain = self._stats(r, lt)
            d = self.decay
            self._num = d * self._num + (1 - d) * num
            self._den = d * self._den + (1 - d) * den
            self._plain = d * self._plain + (1 - d) * plain
        return weight_terms, arch_terms

    @staticmethod
    @torch.no_grad()
    def _stats(r: torch.Tensor, lt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This call's means of r_t l_t, r_t and l_t over its rows, (T,) each."""
        rows, ls = r.reshape(-1, r.shape[-1]), lt.reshape(-1, lt.shape[-1])
        return (rows * ls).mean(0), rows.mean(0), ls.mean(0)


# ---- enumeration (tests, the benchmark's estimator check) ------------------------------------


def all_architectures(n_bits: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All 2^n_bits architectures, (2^B, B) 0/1, row i the binary digits of i (bit b = 2^b)."""
    if n_bits < 1 or n_bits > MAX_ENUMERATE_BITS:
        raise ValueError(f"enumeration is for 1..{MAX_ENUMERATE_BITS} bits, got {n_bits}")
    idx = torch.arange(2 ** n_bits).unsqueeze(1)
    return ((idx >> torch.arange(n_bits)) & 1).to(dtype)


def exact_expectation(dists: TaskDistributions, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                      batched: bool = False) -> torch.Tensor:
    """E_{p_t}[l_t(a)] per task, (T,) float64, by enumerating all 2^B architectures; differentiable
    w.r.t. the logits. loss_fn(a (B,)) -> (T,) losses that do not depend on the logits; with
    `batched`, loss_fn(A (2^B, B)) -> (2^B, T) in one call. B > 16 raises ValueError."""
    if dists.n_bits > MAX_ENUMERATE_BITS:
        raise ValueError(f"exact enumeration refuses B = {dists.n_bits} > {MAX_ENUMERATE_BITS} bits "
                         f"(2^B architectures)")
    archs = all_architectures(dists.n_bits).to(dists.logits.device)
    if batched:
        losses = torch.as_tensor(loss_fn(archs))
    else:
        losses = torch.stack([torch.as_tensor(loss_fn(row)) for row in archs])
    losses = losses.detach().to(torch.float64)
    if losses.shape != (archs.shape[0], dists.n_tasks):
        raise ValueError(f"loss_fn must give {dists.n_tasks} losses per architecture, got shape "
                         f"{tuple(losses.shape)} for {archs.shape[0]} architectures")
    p = torch.exp(_log_prob(dists.logits.double(), archs))  # (2^B, T)
    return (p * losses).sum(0)


def exact_gradient(dists: TaskDistributions, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                   batched: bool = False) -> torch.Tensor:
    """The exact gradient of sum_t E_{p_t}[l_t(a)] w.r.t. the logits, (T, B) in the logits' dtype,
    by enumerating all 2^B architectures (`exact_expectation`; B > 16 raises ValueError)."""
    total = exact_expectation(dists, loss_fn, batched=batched).sum()
    (grad,) = torch.autograd.grad(total, dists.logits)
    return grad.detach()
