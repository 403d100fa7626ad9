"""The differentiable latency: E[LAT] and its gradient, the ProxylessNAS loss forms."""

import math

import numpy as np
import pytest
import torch

from hwnas.latency.loss import ExpectedLatency, LatencyLoss


def _table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.5, 5.0, size=(5, 7))
    t[[0, 2], 6] = np.nan  # layers without the 7th choice (like 'zero' only on some layers)
    t[[1, 3], 6] = 0.0  # 'zero': no latency
    return t


def test_expected_latency_is_the_probability_weighted_sum():
    t = _table()
    alpha = torch.randn(5, 7)
    e = ExpectedLatency(t, fixed_ms=3.0)
    p = e.probs(alpha).numpy()
    assert np.allclose(p.sum(1), 1.0, atol=1e-6)
    assert np.allclose(p[[0, 2], 6], 0.0)
    expected = 3.0 + np.nansum(p * t)
    assert float(e(alpha)) == pytest.approx(expected, rel=1e-5)


def test_one_hot_distribution_gives_the_lookup_table_sum():
    t = _table()
    choice = [1, 6, 3, 6, 0]
    alpha = torch.full((5, 7), -1e4)
    alpha[range(5), choice] = 0
    e = ExpectedLatency(t, fixed_ms=1.5)
    assert float(e(alpha)) == pytest.approx(1.5 + sum(t[i, c] for i, c in enumerate(choice)),
                                            rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_gradient_matches_closed_form_and_autograd(seed):
    torch.manual_seed(seed)
    t = _table(seed)
    e = ExpectedLatency(t, fixed_ms=2.0, scale=1.1, offset=0.3)
    alpha = torch.randn(5, 7, requires_grad=True)
    e(alpha).backward()
    closed = e.closed_form_grad(alpha.detach())
    assert torch.allclose(alpha.grad, closed, atol=1e-5)
    # the closed form by hand: p_li (F_li - E_l) on valid entries, 0 elsewhere
    p = torch.softmax(alpha.detach().masked_fill(torch.isnan(torch.tensor(t)), -math.inf), -1)
    f = torch.nan_to_num(torch.tensor(t, dtype=torch.float32))
    by_hand = 1.1 * p * (f - (p * f).sum(-1, keepdim=True))
    assert torch.allclose(alpha.grad, by_hand, atol=1e-5)
    # and double precision finite differences on one entry
    a64 = alpha.detach().double()
    e64 = ExpectedLatency(t, 2.0, 1.1, 0.3).double()
    eps = 1e-6
    for i, j in [(0, 0), (1, 6), (4, 3)]:
        ap, am = a64.clone(), a64.clone()
        ap[i, j] += eps
        am[i, j] -= eps
        fd = (e64(ap) - e64(am)) / (2 * eps)
        assert float(fd) == pytest.approx(float(alpha.grad[i, j]), abs=1e-4)


def test_mul_log_loss_matches_the_reference_formula():
    loss = LatencyLoss("mul#log", ref_ms=20.0, alpha=0.2, beta=0.3)
    ce, lat = torch.tensor(1.7), torch.tensor(25.0)
    ref = 0.2 * 1.7 * (math.log(25.0) / math.log(20.0)) ** 0.3
    assert float(loss(ce, lat)) == pytest.approx(ref, rel=1e-6)


def test_add_linear_loss_matches_the_reference_formula_and_weight():
    loss = LatencyLoss("add#linear", ref_ms=20.0, lam=0.1)
    ce, lat = torch.tensor(1.7), torch.tensor(25.0)
    assert float(loss(ce, lat)) == pytest.approx(1.7 + 0.1 * 5 / 20, rel=1e-6)
    loss.weight = 3.0
    assert float(loss(ce, lat)) == pytest.approx(1.7 + 3 * 0.1 * 5 / 20, rel=1e-6)


def test_loss_is_differentiable_in_alpha_and_pushes_latency_down():
    t = _table()
    e = ExpectedLatency(t, 1.0)
    alpha = torch.zeros(5, 7, requires_grad=True)
    loss = LatencyLoss("add#linear", ref_ms=5.0)
    opt = torch.optim.Adam([alpha], lr=0.1)
    start = float(e(alpha))
    for _ in range(50):
        opt.zero_grad()
        loss(torch.tensor(1.0), e(alpha)).backward()
        opt.step()
    assert float(e(alpha)) < start


def test_bad_loss_settings_are_refused():
    with pytest.raises(ValueError, match="unknown latency loss"):
        LatencyLoss("mul#exp")
    with pytest.raises(ValueError, match="ref > 1 ms"):
        LatencyLoss("mul#log", ref_ms=0.5)
