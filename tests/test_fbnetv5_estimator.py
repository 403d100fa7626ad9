"""FBNetV5 estimator primitives (hwnas.search.fbnetv5): the notes' check F1 and analytic variants of
F3 and F4, on analytic losses (no supernet, no data).

- F1 unbiasedness: one shared draw from the mixture proposal per step; the importance-weighted
  REINFORCE mean over 20,000 draws matches the exact gradient (all 2^8 architectures enumerated)
  to |z| < 3 per component, with no baseline and with the moving baseline; without importance
  weights it does not (|z| > 6 somewhere). Each draw is one shared sample serving all 3 tasks;
  the z-scores use 200 means of 100 draws (one backward each), so the test runs in a blink.
- expected_cost = the enumerated expectation of a lookup-table cost, and so is its gradient.
- importance weights: (1/T) sum_t r_t = 1 for every architecture, r in (0, T].
- F3 planted: task t depends only on its own 3 of 9 bits; per-task distributions recover each
  pattern, a single shared distribution cannot.
- F4 cost control: l_t = task term + kappa_t cost; for 4 increasing kappa the expected cost and the
  derived architecture's cost fall (REINFORCE on the whole loss, and REINFORCE on the task term
  plus the closed-form expected cost).
"""

from __future__ import annotations

import math

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.search import fbnetv5 as fb

pytestmark = pytest.mark.usefixtures("one_thread")


def _dists(n_tasks: int, n_bits: int, seed: int, dtype: torch.dtype = torch.float32
           ) -> fb.TaskDistributions:
    """Distributions with logits ~ N(0, 1), seeded (the tasks' distributions all differ)."""
    d = fb.TaskDistributions(n_tasks, n_bits).to(dtype)
    with torch.no_grad():
        d.logits.copy_(torch.randn(n_tasks, n_bits, generator=torch.Generator().manual_seed(seed),
                                   dtype=dtype))
    return d


# ---- F1: unbiasedness of the one-sample importance-weighted estimator ------------------------

F1_TASKS, F1_BITS = 3, 8
F1_PAIRS = ((0, 1), (2, 5), (3, 7), (4, 6))
F1_KAPPA = 0.3
F1_BATCHES, F1_BATCH = 200, 100  # 20,000 draws: 200 batch means of 100 draws each


def _f1_problem():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(F1_TASKS, F1_BITS, generator=g, dtype=torch.float64)
    v = torch.randn(F1_TASKS, len(F1_PAIRS), generator=g, dtype=torch.float64)
    lut = 0.5 + 1.5 * torch.rand(F1_BITS, generator=g, dtype=torch.float64)
    i, j = (list(x) for x in zip(*F1_PAIRS, strict=True))

    def losses(a: torch.Tensor) -> torch.Tensor:
        """(n, B) -> (n, T): linear + pairwise + kappa * LUT(a)."""
        a = a.to(torch.float64)
        pair = a[:, i] * a[:, j]  # (n, P)
        return a @ u.T + pair @ v.T + F1_KAPPA * (a @ lut).unsqueeze(1)

    return losses


def _f1_z(estimator: fb.ReinforceEstimator, seed: int = 0) -> torch.Tensor:
    """z = (mean estimate - exact) / standard error, (T, B), over F1_BATCHES batch means."""
    loss_fn = _f1_problem()
    dists = _dists(F1_TASKS, F1_BITS, seed=2, dtype=torch.float64)
    exact = fb.exact_gradient(dists, loss_fn, batched=True)
    g = torch.Generator().manual_seed(seed)
    if estimator.baseline:  # the initialising call: its baseline is this call's own losses
        a, _ = dists.sample_batch(F1_BATCH, g)
        estimator.surrogate(dists, a, loss_fn(a))
    grads = []
    for _ in range(F1_BATCHES):
        a, _ = dists.sample_batch(F1_BATCH, g)
        _, arch_loss = estimator.surrogate(dists, a, loss_fn(a))
        (grad,) = torch.autograd.grad(arch_loss, dists.logits)
        grads.append(grad)
    est = torch.stack(grads)  # (F1_BATCHES, T, B): each the mean of F1_BATCH one-sample estimates
    se = est.std(0) / math.sqrt(F1_BATCHES)
    return (est.mean(0) - exact) / se


@pytest.mark.parametrize("baseline", [False, True], ids=["no-baseline", "moving-baseline"])
def test_f1_importance_weighted_reinforce_is_unbiased(baseline):
    z = _f1_z(fb.ReinforceEstimator(baseline=baseline))
    assert z.abs().max() < 3.0, f"|z| per component:\n{z.abs()}"


def test_f1_without_importance_weights_is_biased():
    z = _f1_z(fb.ReinforceEstimator(importance=False, baseline=False))
    assert z.abs().max() > 6.0, f"|z| per component:\n{z.abs()}"


def test_single_sample_gradient_is_the_reinforce_formula():
    """d arch_loss / d logits_t = r_t (l_t - b_t) (a - pi_t); d weight_loss / d w = sum_t r_t dl_t/dw;
    weight_loss sends nothing to the logits, arch_loss nothing to w."""
    dists = _dists(3, 5, seed=3, dtype=torch.float64)
    est = fb.ReinforceEstimator(decay=0.5)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(4)
    for step in range(3):
        a, _ = dists.sample(g)
        losses = w * (1.0 + a.sum()) + step
        b = est.baselines
        weight_loss, arch_loss = est.surrogate(dists, a, losses)
        r = dists.importance_weights(a)
        b = losses.detach() if b is None else b  # first call: initialised from these losses
        (ga,) = torch.autograd.grad(arch_loss, dists.logits)
        want = (r * (losses.detach() - b)).unsqueeze(1) * (a - dists.probs().detach())
        torch.testing.assert_close(ga, want)
        (gw,) = torch.autograd.grad(weight_loss, w)
        torch.testing.assert_close(gw, r * (1.0 + a.sum()))
        assert torch.autograd.grad(weight_loss, dists.logits, allow_unused=True)[0] is None
        assert torch.autograd.grad(arch_loss, w, allow_unused=True)[0] is None
        torch.testing.assert_close(weight_loss.detach(), (r * losses.detach()).sum())


def test_baseline_is_the_weighted_moving_average():
    """b_t = N_t / D_t, N_t and D_t moving averages of r_t l_t and r_t, initialised from the first
    call; each call's arch_loss uses the baseline from before that call."""
    dists = _dists(2, 4, seed=5, dtype=torch.float64)
    est = fb.ReinforceEstimator(decay=0.9)
    assert est.baselines is None
    g = torch.Generator().manual_seed(6)
    for _ in range(5):  # constant losses: the baseline is that constant, and arch_loss is 0
        a, _ = dists.sample(g)
        _, arch_loss = est.surrogate(dists, a, torch.tensor([2.0, -1.0], dtype=torch.float64))
        assert arch_loss.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(est.baselines, torch.tensor([2.0, -1.0], dtype=torch.float64))
    est.reset()
    assert est.baselines is None
    num = den = None
    for step in range(6):
        a, _ = dists.sample(g)
        losses = torch.randn(2, generator=g, dtype=torch.float64) + step
        r = dists.importance_weights(a)
        before = est.baselines
        _, arch_loss = est.surrogate(dists, a, losses)
        if num is None:
            num, den = r * losses, r
            assert arch_loss.item() == pytest.approx(0.0, abs=1e-12)  # b = these losses
        else:
            want = (r * (losses - before) * dists.log_prob(a)).sum()
            assert arch_loss.item() == pytest.approx(want.item())
            num, den = 0.9 * num + 0.1 * r * losses, 0.9 * den + 0.1 * r
        torch.testing.assert_close(est.baselines, num / den)
    off = fb.ReinforceEstimator(baseline=False)
    off.surrogate(dists, a, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert off.baselines is None


def test_importance_false_weights_are_one():
    dists = _dists(3, 4, seed=7, dtype=torch.float64)
    a = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    weight_loss, arch_loss = fb.ReinforceEstimator(importance=False, baseline=False).surrogate(
        dists, a, losses)
    assert weight_loss.item() == pytest.approx(6.0)
    torch.testing.assert_close(arch_loss, (losses.detach() * dists.log_prob(a)).sum())


# ---- the distributions: sampling, probabilities, expected cost -------------------------------


def test_log_probs_normalise_and_mixture_identity():
    dists = _dists(3, 6, seed=8, dtype=torch.float64)
    archs = fb.all_architectures(6)
    lp = dists.log_prob(archs)  # (64, T)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(3, dtype=torch.float64))
    lq = dists.proposal_log_prob(archs)
    assert lq.exp().sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(lq.exp(), lp.exp().mean(1))
    r = dists.importance_weights(archs)
    assert r.shape == (64, 3) and not r.requires_grad
    assert bool((r > 0).all()) and bool((r <= 3 + 1e-12).all())
    torch.testing.assert_close(r.mean(1), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(dists.importance_weights(archs[5]), r[5])


def test_sample_batch_follows_the_mixture():
    dists = _dists(3, 5, seed=9)
    n = 30_000
    a, task = dists.sample_batch(n, torch.Generator().manual_seed(10))
    assert a.shape == (n, 5) and task.shape == (n,) and a.dtype == dists.logits.dtype
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    pi = dists.probs().detach()
    counts = torch.bincount(task, minlength=3).double() / n
    assert (counts - 1 / 3).abs().max() < 0.02
    for t in range(3):  # a draw's bits follow the drawn task's Bernoulli (5 sigma at n/3 draws)
        assert (a[task == t].mean(0) - pi[t]).abs().max() < 5 * 0.5 / math.sqrt(n / 3 * 0.95)
    one, t0 = dists.sample(torch.Generator().manual_seed(11))
    assert one.shape == (5,) and isinstance(t0, int) and 0 <= t0 < 3
    a1, t1 = dists.sample_batch(7, torch.Generator().manual_seed(12))
    a2, t2 = dists.sample_batch(7, torch.Generator().manual_seed(12))
    assert torch.equal(a1, a2) and torch.equal(t1, t2)


def test_expected_cost_is_the_enumerated_expectation():
    dists = _dists(3, 7, seed=13, dtype=torch.float64)
    costs = 0.2 + torch.rand(7, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    fixed = 1.25
    closed = dists.expected_cost(costs, fixed=fixed)
    archs = fb.all_architectures(7)
    p = dists.log_prob(archs).exp()  # (128, T)
    enumerated = (p * (fixed + archs @ costs).unsqueeze(1)).sum(0)
    torch.testing.assert_close(closed, enumerated, atol=1e-6, rtol=0)
    weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    (g_closed,) = torch.autograd.grad((weights * closed).sum(), dists.logits)
    (g_enum,) = torch.autograd.grad((weights * enumerated).sum(), dists.logits)
    torch.testing.assert_close(g_closed, g_enum, atol=1e-6, rtol=0)
    pi = dists.probs().detach()
    torch.testing.assert_close(g_closed, weights.unsqueeze(1) * pi * (1 - pi) * costs)
    # exact_expectation on the same cost agrees too (and so does the per-row loss_fn path)
    row_fn = lambda a: (fixed + a @ costs).repeat(3)  # noqa: E731
    torch.testing.assert_close(fb.exact_expectation(dists, row_fn), enumerated)


def test_exact_gradient_matches_finite_differences():
    dists = _dists(2, 4, seed=15, dtype=torch.float64)
    u = torch.randn(2, 4, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    loss_fn = lambda a: a @ u.T + a[..., 0:1] * a[..., 1:2]  # noqa: E731
    grad = fb.exact_gradient(dists, loss_fn, batched=True)
    assert grad.shape == (2, 4)
    torch.testing.assert_close(grad, fb.exact_gradient(dists, loss_fn))
    eps = 1e-6
    for t, b in [(0, 0), (1, 2), (1, 3)]:
        with torch.no_grad():
            dists.logits[t, b] += eps
            hi = fb.exact_expectation(dists, loss_fn, batched=True).sum()
            dists.logits[t, b] -= 2 * eps
            lo = fb.exact_expectation(dists, loss_fn, batched=True).sum()
            dists.logits[t, b] += eps
        assert float(grad[t, b]) == pytest.approx(float((hi - lo) / (2 * eps)), abs=1e-6)


def test_derive_and_deterministic_log_prob():
    dists = fb.TaskDistributions(2, 4, tasks=["cls", "seg"])
    assert dists.tasks == ("cls", "seg")
    torch.testing.assert_close(dists.probs(), torch.full((2, 4), 0.5))
    with torch.no_grad():
        dists.logits.copy_(torch.tensor([[20.0, -20.0, 20.0, -20.0], [-20.0, -20.0, 20.0, 20.0]]))
    derived = dists.derive()
    assert derived.dtype == torch.bool
    assert derived.tolist() == [[True, False, True, False], [False, False, True, True]]
    lp = dists.log_prob(derived[0].float()).detach()
    assert float(lp[0]) == pytest.approx(0.0, abs=1e-6) and float(lp[1]) < -30
    assert torch.isfinite(dists.log_prob(torch.zeros(4))).all()
    with torch.no_grad():
        dists.logits.copy_(torch.tensor([[0.1, -0.1, 2.0, -2.0], [0.0, 1.0, -1.0, 3.0]]))
    assert dists.derive().tolist() == [[True, False, True, False], [False, True, False, True]]
    assert dists.derive(0.8).tolist() == [[False, False, True, False], [False, False, False, True]]
    init = fb.TaskDistributions(1, 3, init_keep=0.8)
    torch.testing.assert_close(init.probs(), torch.full((1, 3), 0.8))


def test_bad_input():
    with pytest.raises(HwnasError, match="at least one task"):
        fb.TaskDistributions(0, 4)
    with pytest.raises(HwnasError, match="at least one searchable block"):
        fb.TaskDistributions(2, 0)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(HwnasError, match="init_keep"):
            fb.TaskDistributions(2, 4, init_keep=bad)
    with pytest.raises(HwnasError, match="task names"):
        fb.TaskDistributions(2, 4, tasks=["cls"])
    with pytest.raises(HwnasError, match="distinct"):
        fb.TaskDistributions(2, 4, tasks=["cls", "cls"])
    with pytest.raises(HwnasError, match="decay"):
        fb.ReinforceEstimator(decay=1.0)
    dists = fb.TaskDistributions(2, 4)
    with pytest.raises(HwnasError, match="one cost per block"):
        dists.expected_cost([1.0, 2.0])
    with pytest.raises(HwnasError, match="finite"):
        dists.expected_cost([1.0, float("nan"), 1.0, 1.0])
    with pytest.raises(HwnasError, match="threshold"):
        dists.derive(1.5)
    # programmer errors: ValueError (HwnasError is a ValueError too, so check the type exactly)
    with pytest.raises(ValueError, match="0 or 1") as err:
        dists.log_prob(torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert type(err.value) is ValueError
    with pytest.raises(ValueError, match="4 bits"):
        dists.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="task_losses must have shape"):
        fb.ReinforceEstimator().surrogate(dists, torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="refuses B = 17"):
        fb.exact_gradient(fb.TaskDistributions(1, 17), lambda a: torch.zeros(1))


# ---- F3 (analytic): planted per-task bits ------------------------------------------------------

F3_TASKS, F3_BITS = 3, 9
F3_SETS = [list(range(3 * t, 3 * t + 3)) for t in range(F3_TASKS)]


def _f3_losses(a: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B,) -> (T,): l_t = -sum_{S_t} a + 0.5 sum_{not S_t} a + noise."""
    own = torch.stack([a[s].sum() for s in F3_SETS])
    return -own + 0.5 * (a.sum() - own) + noise


def _f3_search(n_tasks: int, combine: bool, steps: int = 1500, seed: int = 0) -> torch.Tensor:
    """Adam (lr 0.05) on arch_loss with the moving baseline; returns the final pi (n_tasks, B).
    `combine`: one shared distribution on the sum of the three losses."""
    dists = fb.TaskDistributions(n_tasks, F3_BITS)
    est = fb.ReinforceEstimator()
    opt = torch.optim.Adam(dists.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        a, _ = dists.sample(g)
        losses = _f3_losses(a, 0.1 * torch.randn(F3_TASKS, generator=g))
        if combine:
            losses = losses.sum().reshape(1)
        _, arch_loss = est.surrogate(dists, a, losses)
        opt.zero_grad()
        arch_loss.backward()
        opt.step()
    return dists.probs().detach()


def _f3_pass(pi: torch.Tensor, t: int) -> bool:
    on = torch.zeros(F3_BITS, dtype=torch.bool)
    on[F3_SETS[t]] = True
    return bool((pi[on] > 0.8).all() and (pi[~on] < 0.2).all())


def test_f3_planted_bits_per_task():
    pi = _f3_search(F3_TASKS, combine=False)
    for t in range(F3_TASKS):
        assert _f3_pass(pi[t], t), f"task {t}: pi = {pi[t]}"
    # one shared distribution trained on the sum of the losses (constant in a here: every bit is
    # -1 for its own task and +0.5 for the two others) meets none of the three patterns; no single
    # pi could meet all three, as they disagree on every bit
    shared = _f3_search(1, combine=True, steps=500)[0]
    assert not any(_f3_pass(shared, t) for t in range(F3_TASKS)), f"shared pi = {shared}"


# ---- F4 (analytic): cost control ---------------------------------------------------------------

F4_COSTS = torch.tensor([1.0, 0.6, 1.4, 0.8, 1.2, 0.5])  # a per-block cost table
F4_RATIOS = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])  # g_b / c_b
F4_GAINS = F4_RATIOS * F4_COSTS
F4_KAPPAS = torch.tensor([1.0, 2.0, 3.0, 4.0])  # one task each: 5, 4, 3, 2 blocks kept
F4_STEPS, F4_BATCH = 600, 8


@pytest.mark.parametrize("path", ["reinforce", "closed-form-cost"])
def test_f4_cost_falls_with_kappa(path):
    """l_t(a) = -sum_b g_b a_b + kappa_t sum_b c_b a_b, one task per kappa; the optimum keeps
    block b iff g_b > kappa_t c_b (margins |g_b - kappa_t c_b| = c_b / 2). `closed-form-cost`:
    REINFORCE on the task term only, plus kappa_t * expected_cost (its exact gradient). Each step
    uses a batch of F4_BATCH draws from q (a mean of one-sample estimates) to keep the test short
    and its outcome seed-independent."""
    n = len(F4_KAPPAS)
    dists = fb.TaskDistributions(n, len(F4_COSTS), tasks=[f"kappa={k:g}" for k in F4_KAPPAS.tolist()])
    est = fb.ReinforceEstimator()
    opt = torch.optim.Adam(dists.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(20)
    for _ in range(F4_STEPS):
        a, _ = dists.sample_batch(F4_BATCH, g)
        task_term = -(a @ F4_GAINS).unsqueeze(1)  # (n_draws, 1)
        if path == "reinforce":
            _, arch_loss = est.surrogate(dists, a, task_term + F4_KAPPAS * (a @ F4_COSTS).unsqueeze(1))
        else:
            _, arch_loss = est.surrogate(dists, a, task_term.expand(-1, n))
            arch_loss = arch_loss + (F4_KAPPAS * dists.expected_cost(F4_COSTS)).sum()
        opt.zero_grad()
        arch_loss.backward()
        opt.step()
    expected = dists.expected_cost(F4_COSTS).detach()
    derived = dists.derive()
    derived_cost = derived.float() @ F4_COSTS
    assert bool((expected.diff() < 0).all()), f"expected cost per kappa: {expected}"
    assert bool((derived_cost.diff() < 0).all()), f"derived cost per kappa: {derived_cost}"
    optimum = F4_GAINS.unsqueeze(0) > F4_KAPPAS.unsqueeze(1) * F4_COSTS
    assert torch.equal(derived, optimum), f"derived\n{derived}\noptimum\n{optimum}"
