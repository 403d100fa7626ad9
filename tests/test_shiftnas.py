"""ShiftNAS core (hwnas.search.shiftnas): the notes' checks S1-S4 on a tiny 3-stage conv supernet
(depth {1,2,3} x width {8,16,24,32} x kernel {3,5} per stage) and scikit-learn's 8x8 digits.

- S1 matrix mapping (Eq. 9): masked entangled layer == sliced stand-alone layer; prefix masks;
  gradients reach the one-hots' logits (and the AG) through straight-through Gumbel.
- S2 constraint tracking: the AG trained on the resource loss alone follows the target C.
- S3 coverage: uniform ops rarely reach the extreme equal-width bins (Irwin-Hall); uniform bins
  (and the AG on them) cover every bin.
- S4 probability shift (Eq. 8): zero for equal snapshots; mass moves to bins whose loss falls, not
  to bins whose loss is merely high; B frozen in warm-up and untouched by task-loss steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare, spearmanr
from torch import nn

from hwnas.errors import HwnasError
from hwnas.search import shiftnas as sn

WIDTHS = (8, 16, 24, 32)
KERNELS = (3, 5)
DEPTHS = (1, 2, 3)
STRIDES = (1, 2, 2)
SIDES = (8, 4, 2)  # output side of each stage on 8x8 digits
DECISIONS = [len(WIDTHS), len(KERNELS), len(DEPTHS)] * 3  # per stage: width, kernel, depth
N_BINS = 8


@pytest.fixture(autouse=True)
def _seed(one_thread):
    """Seeded, on one intra-op thread (`one_thread`, conftest.py)."""
    torch.manual_seed(0)


# ---- the tiny supernet, its analytic MACs and an additive cost table -------------------------


class TinySupernet(nn.Module):
    """3 stages; per stage one width, one kernel and one depth decision; block 0 of a stage always
    runs, block i > 0 is a residual block gated by the depth mask (runs iff depth > i)."""

    def __init__(self) -> None:
        super().__init__()
        cin = 1
        self.stages = nn.ModuleList()
        for stride in STRIDES:
            blocks = [sn.ElasticConvBlock(cin, WIDTHS, KERNELS, stride)]
            blocks += [sn.ElasticConvBlock(WIDTHS[-1], WIDTHS, KERNELS) for _ in DEPTHS[1:]]
            self.stages.append(nn.ModuleList(blocks))
            cin = WIDTHS[-1]
        self.head = nn.Linear(WIDTHS[-1], 10)
        self.register_buffer("dmask", sn.depth_masks(DEPTHS), persistent=False)

    def forward(self, x: torch.Tensor, onehots: list[torch.Tensor]) -> torch.Tensor:
        for s, blocks in enumerate(self.stages):
            p_w, p_k, p_d = onehots[3 * s: 3 * s + 3]
            keep = sn.mask_from_onehot(p_d, self.dmask)
            x = blocks[0](x, p_w, p_k)
            for i in range(1, len(blocks)):
                x = x + keep[i] * blocks[i](x, p_w, p_k)
        return self.head(x.mean((2, 3)))

    def standalone(self, arch: list[int]) -> nn.Module:
        """The plain network of one architecture, with this supernet's weights sliced."""
        stages, cin = nn.ModuleList(), 1
        for s, blocks in enumerate(self.stages):
            w, k, d = WIDTHS[arch[3 * s]], KERNELS[arch[3 * s + 1]], DEPTHS[arch[3 * s + 2]]
            stages.append(nn.ModuleList([blocks[0].sliced(w, k, cin)]
                                        + [blocks[i].sliced(w, k, w) for i in range(1, d)]))
            cin = w
        head = nn.Linear(cin, 10)
        with torch.no_grad():
            head.weight.copy_(self.head.weight[:, :cin])
            head.bias.copy_(self.head.bias)
        return Plain(stages, head)


class Plain(nn.Module):
    """A stand-alone network: per stage block 0, then residual blocks; pooled linear head."""

    def __init__(self, stages: nn.ModuleList, head: nn.Linear) -> None:
        super().__init__()
        self.stages, self.head = stages, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blocks in self.stages:
            x = blocks[0](x)
            for b in blocks[1:]:
                x = x + b(x)
        return self.head(x.mean((2, 3)))


def onehots_of(arch: list[int]) -> list[torch.Tensor]:
    return [F.one_hot(torch.tensor(j), n).float() for j, n in zip(arch, DECISIONS, strict=True)]


def macs(arch: list[int]) -> int:
    """Multiply-accumulates of the tiny supernet's architecture (convs + classifier)."""
    cin, total = 1, 0
    for s in range(3):
        w, k, d = WIDTHS[arch[3 * s]], KERNELS[arch[3 * s + 1]], DEPTHS[arch[3 * s + 2]]
        h2 = SIDES[s] ** 2
        total += h2 * cin * w * k * k + (d - 1) * h2 * w * w * k * k
        cin = w
    return total + cin * 10


def cost_table() -> list[torch.Tensor]:
    """An additive, lookup-table-like cost per decision (kMACs): each choice's marginal MACs from
    the smallest architecture; the smallest architecture's MACs ride on decision 0."""
    small = [0] * len(DECISIONS)
    base = macs(small)
    table = []
    for i, n in enumerate(DECISIONS):
        row = [macs(small[:i] + [j] + small[i + 1:]) - base for j in range(n)]
        table.append(torch.tensor(row, dtype=torch.float32) / 1000)
    table[0] = table[0] + base / 1000
    return table


def table_cost(idx: np.ndarray, table: list[torch.Tensor]) -> np.ndarray:
    idx = np.atleast_2d(idx)
    return sum(table[i].numpy()[idx[:, i]] for i in range(len(table)))


def uniform_archs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, k, n) for k in DECISIONS], axis=1)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:128] / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target[:128])


# ---- S1: Eq. 9 matrix mapping ----------------------------------------------------------------


def test_prefix_masks_are_prefixes():
    torch.testing.assert_close(sn.prefix_masks(3), torch.tensor([[1., 0, 0], [1, 1, 0], [1, 1, 1]]))
    wm = sn.width_masks(WIDTHS)
    assert wm.shape == (4, 32)
    for j, w in enumerate(WIDTHS):
        assert wm[j, :w].eq(1).all() and wm[j, w:].eq(0).all()
    km = sn.kernel_masks((3, 5, 7))
    assert km.shape == (3, 7, 7) and km[0].sum() == 9 and km[1].sum() == 25 and km[2].sum() == 49
    assert km[0, 2:5, 2:5].eq(1).all() and (km[1] >= km[0]).all() and (km[2] >= km[1]).all()
    torch.testing.assert_close(sn.depth_masks(DEPTHS), sn.prefix_masks(3))
    torch.testing.assert_close(sn.depth_masks((2, 3, 4)), torch.tensor([[1., 1, 0, 0], [1, 1, 1, 0],
                                                                         [1, 1, 1, 1]]))
    for masks in (sn.prefix_masks(5), wm, km.flatten(1)):  # nested: each row contains the previous
        assert (masks[1:] >= masks[:-1]).all()
    p = F.one_hot(torch.tensor(2), 4).float()
    torch.testing.assert_close(sn.mask_from_onehot(p, wm), wm[2])
    with pytest.raises(HwnasError):
        sn.mask_from_onehot(p, sn.prefix_masks(3))
    with pytest.raises(HwnasError):
        sn.width_masks((16, 8))
    with pytest.raises(HwnasError):
        sn.kernel_masks((3, 4))


@pytest.mark.parametrize("train", [True, False])
def test_masked_layer_equals_sliced_layer(train):
    block = sn.ElasticConvBlock(16, WIDTHS, KERNELS, stride=2)
    with torch.no_grad():  # non-trivial BatchNorm state
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-0.5, 0.5)
        block.bn.running_mean.uniform_(-0.2, 0.2)
        block.bn.running_var.uniform_(0.5, 2.0)
    block.train(train)
    x = torch.randn(4, 16, 9, 9)
    logits_w, logits_k = torch.randn(len(WIDTHS)), torch.randn(len(KERNELS))
    for j, w in enumerate(WIDTHS):
        for m, k in enumerate(KERNELS):
            for cin in (16, 8):  # a masked input (zeros after cin) == the sliced input
                xin = x.clone()
                xin[:, cin:] = 0
                p_w = F.one_hot(torch.tensor(j), len(WIDTHS)).float()
                p_k = F.one_hot(torch.tensor(m), len(KERNELS)).float()
                ref = block.sliced(w, k, cin).train(train)(xin[:, :cin])
                out = block(xin, p_w, p_k)
                assert out.shape == (4, 32, 5, 5)
                assert (out[:, :w] - ref).abs().max() < 1e-6
                assert out[:, w:].eq(0).all()
                # a straight-through one-hot with the same argmax computes the very same numbers
                st_w = sn.straight_through(torch.softmax(logits_w + 10 * p_w, -1))
                st_k = sn.straight_through(torch.softmax(logits_k + 10 * p_k, -1))
                assert torch.equal(st_w.detach(), p_w)
                assert torch.equal(block(xin, st_w, st_k), out)


def test_supernet_path_equals_standalone_network(digits):
    x, _ = digits
    net = TinySupernet().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    for arch in ([0, 0, 0] * 3, [3, 1, 2] * 3, [1, 0, 2, 2, 1, 0, 3, 1, 1], uniform_archs(1, 3)[0].tolist()):
        plain = net.standalone(arch).eval()
        torch.testing.assert_close(net(x[:16], onehots_of(arch)), plain(x[:16]), atol=1e-5, rtol=1e-5)
    # a block beyond the depth does not take part: changing its weights changes nothing
    arch = [2, 1, 0] * 3
    before = net(x[:16], onehots_of(arch))
    with torch.no_grad():
        net.stages[0][1].weight.normal_()
        net.stages[1][2].weight.normal_()
    assert torch.equal(net(x[:16], onehots_of(arch)), before)


def test_gradients_reach_logits_through_straight_through_gumbel(digits):
    x, y = digits
    block = sn.ElasticConvBlock(1, WIDTHS, KERNELS)
    lw = torch.zeros(len(WIDTHS), requires_grad=True)
    lk = torch.zeros(len(KERNELS), requires_grad=True)
    g = torch.Generator().manual_seed(0)
    p_w, p_k = sn.gumbel_onehot(lw, generator=g), sn.gumbel_onehot(lk, generator=g)
    assert set(p_w.detach().tolist()) == {0.0, 1.0} and p_w.detach().sum() == 1
    (block(x[:8], p_w, p_k) ** 2).mean().backward()
    assert lw.grad.abs().sum() > 0 and lk.grad.abs().sum() > 0
    # through the AG: its parameters get gradients of a supernet loss
    net = TinySupernet()
    ag = sn.ArchitectureGenerator(DECISIONS, hidden=16, cost_range=(0.0, 1.0))
    F.cross_entropy(net(x[:16], ag(torch.tensor(0.5), generator=g)), y[:16]).backward()
    for name in ("init_h.weight", "cell.weight_ih", "heads.0.weight", "heads.8.weight", "embeds.0.weight"):
        grad = dict(ag.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


# ---- Eq. 10 resource loss --------------------------------------------------------------------


def test_resource_loss_incremental_equals_absolute():
    table = cost_table()
    for arch in uniform_archs(20, 1):
        oh = onehots_of(arch.tolist())
        inc = sn.arch_cost(oh, table, "incremental")
        ab = sn.arch_cost(oh, table, "absolute")
        assert float(ab) == pytest.approx(float(table_cost(arch, table)[0]), rel=1e-6)
        assert float(inc) == pytest.approx(float(ab), rel=1e-6)
    soft = [torch.softmax(torch.randn(5, n), -1) for n in DECISIONS]  # telescoping: any p
    torch.testing.assert_close(sn.arch_cost(soft, table, "incremental"),
                               sn.arch_cost(soft, table, "absolute"))
    # by hand: costs (1, 3, 6) and (2, 5); choose 3 and 5; target 7; scale 2 -> ((8 - 7) / 2)^2
    costs = [torch.tensor([1.0, 3.0, 6.0]), torch.tensor([2.0, 5.0])]
    torch.testing.assert_close(sn.incremental_costs(costs[0]), torch.tensor([1.0, 2.0, 3.0]))
    oh = [torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0])]
    for mode in ("incremental", "absolute"):
        assert float(sn.resource_loss(oh, costs, 7.0, mode=mode, scale=2.0)) == pytest.approx(0.25)
    with pytest.raises(HwnasError):
        sn.resource_loss(oh[:1], costs, 7.0)
    with pytest.raises(HwnasError):
        sn.resource_loss(oh, costs, 7.0, mode="relative")


# ---- bins ------------------------------------------------------------------------------------


def test_bins_edges_sampling_and_lookup():
    costs = np.random.default_rng(0).normal(10.0, 2.0, 5000)
    q = sn.ComplexityBins.from_samples(costs, N_BINS, "quantile")
    counts = np.bincount(q.bin_of(costs).numpy(), minlength=N_BINS)
    assert counts.min() >= 5000 / N_BINS - 2 and counts.max() <= 5000 / N_BINS + 2
    w = sn.ComplexityBins.from_samples(costs, N_BINS, "width")
    torch.testing.assert_close(w.widths, torch.full((N_BINS,), w.span / N_BINS), rtol=1e-5, atol=1e-5)
    assert q.logits.shape == (1, N_BINS) and torch.equal(q.probs(), torch.full((N_BINS,), 1 / N_BINS))
    b = sn.ComplexityBins([0.0, 1.0, 2.0, 4.0])
    assert [b.bin_of(v) for v in (-1.0, 0.0, 0.99, 1.0, 3.9, 4.0, 9.0)] == [0, 0, 0, 1, 2, 2, 2]
    g = torch.Generator().manual_seed(0)
    s = b.sample(g, n=500)
    assert s.onehot.shape == (500, 3) and torch.equal(s.onehot.sum(-1), torch.ones(500))
    lo, hi = b.edges[s.index], b.edges[s.index + 1]
    assert ((s.target >= lo) & (s.target <= hi)).all() and not s.target.requires_grad
    one = b.sample(g)
    assert isinstance(one.index, int) and one.onehot.shape == (3,) and one.target.dim() == 0
    c = sn.ComplexityBins([0.0, 1.0, 2.0, 4.0], target="centre").sample(g, n=50)
    torch.testing.assert_close(c.target, torch.tensor([0.5, 1.5, 3.0])[c.index])
    assert b.sample(g, grad=True).target.requires_grad
    with pytest.raises(HwnasError):
        sn.ComplexityBins([0.0, 1.0, 1.0])
    with pytest.raises(HwnasError):
        sn.ComplexityBins.from_samples([1.0] * 50 + [2.0], 4)  # duplicate quantile edges


# ---- S2: the generator follows C; S3: coverage ------------------------------------------------


@pytest.fixture(scope="module")
def trained_ag():
    """The AG trained on the resource loss alone, targets from uniform quantile bins."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    table = cost_table()
    bins = sn.ComplexityBins.from_samples(table_cost(uniform_archs(10_000), table), N_BINS, "quantile")
    ag = sn.ArchitectureGenerator(DECISIONS, hidden=32, fc_layers=2, cost_range=(bins.lo, bins.hi))
    opt = torch.optim.Adam(ag.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        s = bins.sample(g, n=64)
        loss = sn.resource_loss(ag(s.target, generator=g), table, s.target, scale=bins.span)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return ag, bins, table


def test_s2_generator_follows_target(trained_ag):
    ag, bins, table = trained_ag
    s = bins.sample(torch.Generator().manual_seed(1), n=200)
    idx = ag.argmax(s.target).numpy()
    assert idx.shape == (200, len(DECISIONS))
    cost, target = table_cost(idx, table), s.target.numpy()
    assert spearmanr(target, cost)[0] > 0.95
    bin_width = bins.widths.numpy()[bins.bin_of(s.target).numpy()]
    assert np.median(np.abs(cost - target) / bin_width) < 0.5
    # argmax of one target == the row of a batch == the noise-free straight-through forward
    one = ag.argmax(s.target[7])
    assert torch.equal(one, torch.as_tensor(idx[7]))
    det = ag(s.target[7], noise=False)
    assert [int(p.argmax()) for p in det] == idx[7].tolist()
    # true MACs (not additive) still rise with the target
    assert spearmanr(target, [macs(a.tolist()) for a in idx])[0] > 0.8


def test_s3_uniform_ops_miss_extreme_bins_uniform_bins_cover_them(trained_ag):
    ag, quantile_bins, table = trained_ag
    costs = table_cost(uniform_archs(10_000, 2), table)
    width = sn.ComplexityBins.from_samples(costs, N_BINS, "width")
    share = np.bincount(width.bin_of(costs).numpy(), minlength=N_BINS) / costs.size
    assert share[0] < 0.25 / N_BINS and share[-1] < 0.25 / N_BINS  # Irwin-Hall tails
    assert share[N_BINS // 2 - 1: N_BINS // 2 + 1].min() > 1.2 / N_BINS
    # uniform B: the sampled bins are uniform
    s = width.sample(torch.Generator().manual_seed(3), n=8000)
    hist = np.bincount(s.index.numpy(), minlength=N_BINS)
    assert chisquare(hist).pvalue > 0.01
    assert hist[0] / 8000 > 4 * share[0] and hist[-1] / 8000 > 4 * share[-1]
    # through the AG: the generated architectures fall in every bin evenly
    s = quantile_bins.sample(torch.Generator().manual_seed(4), n=400)
    gen_costs = table_cost(ag.argmax(s.target).numpy(), table)
    hist = np.bincount(quantile_bins.bin_of(gen_costs).numpy(), minlength=N_BINS)
    assert hist.min() > 0 and chisquare(hist).pvalue > 0.01


# ---- S4: Eq. 8 probability shift -------------------------------------------------------------

#: planted per-bin validation losses: bins 0-2 flat and high (converged, capacity-limited),
#: 3-4 flat, 5-7 still falling between the snapshots (under-trained)
LOSS_PREV = torch.tensor([3.0, 3.0, 3.0, 2.0, 2.0, 1.6, 1.6, 1.6])
LOSS_NOW = torch.tensor([3.0, 3.0, 3.0, 2.0, 2.0, 1.3, 1.3, 1.3])


def planted(losses: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None):
    def fn(s: sn.BinSample) -> torch.Tensor:
        eps = noise * torch.randn(len(losses), generator=generator) if noise else 0.0
        return (s.onehot * (losses + eps)).sum()
    return fn


def test_s4_zero_when_snapshots_equal_planted():
    bins = sn.ComplexityBins.from_samples(np.linspace(0.0, 8.0, 100), N_BINS, "width")
    opt = torch.optim.Adam([bins.logits], lr=1e-3)
    before = bins.logits.detach().clone()
    for seed in range(5):
        grad = sn.probability_shift_step(bins, planted(LOSS_NOW), planted(LOSS_NOW), opt,
                                         torch.Generator().manual_seed(seed))
        assert grad.shape == (1, N_BINS) and torch.equal(grad, torch.zeros(1, N_BINS))
    assert torch.equal(bins.logits.detach(), before)
    # flat-but-high everywhere outside bins 5-7: those entries of the per-bin signal are 0
    assert (LOSS_NOW - LOSS_PREV)[:5].eq(0).all()


def test_s4_zero_when_snapshots_equal_through_generator_and_supernet(digits):
    """The full path G(B) -> C -> AG -> architecture -> supernet loss: exactly zero for equal
    weights, non-zero once the weights moved."""
    x, y = digits
    net = TinySupernet()
    bins = sn.ComplexityBins([10.0, 20.0, 30.0, 40.0, 50.0])
    ag = sn.ArchitectureGenerator(DECISIONS, hidden=16, cost_range=(bins.lo, bins.hi))
    shift = sn.ShiftUpdate(bins, warmup=0, every=1)
    shift.snapshot(net)

    def loss_now(s):
        return F.cross_entropy(net(x[64:], ag(s.target, noise=False)), y[64:])

    def loss_prev(s):
        out = torch.func.functional_call(net, shift.previous, (x[64:], ag(s.target, noise=False)))
        return F.cross_entropy(out, y[64:])

    before = bins.logits.detach().clone()
    grad = shift.step(0, loss_now, loss_prev, torch.Generator().manual_seed(0))
    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(bins.logits.detach(), before)
    assert all(p.grad is None for p in ag.parameters())  # B's step touches no other .grad
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x[:64], ag(torch.tensor(30.0), noise=False)), y[:64]).backward()
        opt.step()
    grad = shift.step(1, loss_now, loss_prev, torch.Generator().manual_seed(0), module=net)
    assert grad.abs().sum() > 0 and not torch.equal(bins.logits.detach(), before)
    assert torch.equal(shift.previous["head.weight"], net.head.weight.detach())  # new snapshot
    assert float(bins.probs().detach().sum()) == pytest.approx(1.0, abs=1e-6)


def _shift_run(seed: int, loss_now, loss_prev, steps: int = 600) -> torch.Tensor:
    bins = sn.ComplexityBins.from_samples(np.linspace(0.0, 8.0, 100), N_BINS, "width")
    shift = sn.ShiftUpdate(bins, lr=1e-3, warmup=0, every=1)
    g = torch.Generator().manual_seed(seed)
    for it in range(steps):
        shift.step(it, loss_now(g), loss_prev(g), g)
    probs = bins.probs().detach()
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    return probs


def test_s4_mass_moves_to_falling_bins_not_to_high_loss_bins():
    moved, high_kept_low = 0, 0
    for seed in range(5):
        probs = _shift_run(seed, lambda g: planted(LOSS_NOW, 0.3, g), lambda g: planted(LOSS_PREV, 0.3, g))
        moved += float(probs[5:].sum()) > 3 / N_BINS + 0.03
        high_kept_low += float(probs[:3].sum()) < 3 / N_BINS
    assert moved >= 4 and high_kept_low >= 4
    # the "highest loss" fake: bins 0-2 just high (not falling) attract nothing; a rule that
    # chased the highest loss (minimise -L_val(w_t)) would have moved the mass there
    fake = _shift_run(0, lambda g: (lambda s: -planted(LOSS_NOW)(s)), lambda g: (lambda s: torch.zeros(())))
    assert float(fake[:3].sum()) > 3 / N_BINS + 0.03


def test_s4_shift_through_the_target_moves_to_larger_bins():
    """Through C only (the AG path's view of B): a validation loss whose drop between snapshots
    grows with the cost moves mass to larger bins."""
    def loss_at(drop: float):
        def make(g):
            def fn(s):
                c = s.target / 8.0
                return 2.0 - drop * torch.sigmoid(8 * (c - 0.5)) + 0.05 * torch.randn((), generator=g)
            return fn
        return make

    larger = 0
    for seed in range(5):
        probs = _shift_run(seed, loss_at(0.5), loss_at(0.0))
        larger += float((probs * torch.arange(N_BINS)).sum()) > (N_BINS - 1) / 2 + 0.1
    assert larger >= 4


def test_s4_frozen_in_warmup_and_untouched_by_task_loss(digits):
    x, y = digits
    bins = sn.ComplexityBins([10.0, 20.0, 30.0, 40.0, 50.0])
    shift = sn.ShiftUpdate(bins, warmup=50, every=10)
    assert bins.frozen
    before = bins.logits.detach().clone()
    calls = []

    def loss_now(s):
        calls.append(1)
        return planted(LOSS_NOW[4:])(s)

    for it in range(50):
        assert shift.step(it, loss_now, planted(LOSS_PREV[4:])) is None
    assert not calls and torch.equal(bins.logits.detach(), before) and bins.frozen
    assert [it for it in range(50, 90) if shift.due(it)] == [50, 60, 70, 80]
    # frozen: no update even when called directly
    zero = sn.probability_shift_step(bins, planted(LOSS_NOW[4:]), planted(LOSS_PREV[4:]), shift.optimizer)
    assert torch.equal(zero, torch.zeros_like(zero)) and torch.equal(bins.logits.detach(), before)
    # a task-loss step of the supernet and the AG does not move B nor give it a gradient
    net = TinySupernet()
    ag = sn.ArchitectureGenerator(DECISIONS, hidden=16, cost_range=(bins.lo, bins.hi))
    opt = torch.optim.Adam(list(net.parameters()) + list(ag.parameters()), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        s = bins.sample(g)
        oh = ag(s.target, generator=g)
        loss = F.cross_entropy(net(x[:32], oh), y[:32]) + sn.DEFAULT_LAMBDA * sn.resource_loss(
            oh, cost_table(), s.target, scale=bins.span)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert bins.logits.grad is None and torch.equal(bins.logits.detach(), before)
    # at a due iteration B moves, and is frozen again afterwards
    grad = shift.step(50, planted(LOSS_NOW[4:]), planted(LOSS_PREV[4:]), g)
    assert grad.abs().sum() > 0 and bins.frozen and not torch.equal(bins.logits.detach(), before)
    assert float(bins.probs().detach().sum()) == pytest.approx(1.0, abs=1e-6) and len(shift.history) == 1
    with pytest.raises(HwnasError):  # the B optimizer holds B only
        sn.probability_shift_step(bins, planted(LOSS_NOW[4:]), planted(LOSS_PREV[4:]), opt)


def test_generator_shapes_and_validation():
    ag = sn.ArchitectureGenerator([4, 2, 3], hidden=8, fc_layers=3, cost_range=(0.0, 10.0))
    assert sum(isinstance(m, nn.Linear) for m in ag.trunk) == 2
    out = ag(torch.tensor([1.0, 5.0, 9.0]))
    assert [tuple(p.shape) for p in out] == [(3, 4), (3, 2), (3, 3)]
    assert all(torch.equal(p.detach().sum(-1), torch.ones(3)) for p in out)
    single = ag(2.0, hard=False)
    assert [tuple(p.shape) for p in single] == [(4,), (2,), (3,)]
    assert ag.argmax(2.0).shape == (3,) and ag.argmax(torch.tensor([1.0, 2.0])).shape == (2, 3)
    assert [tuple(z.shape) for z in ag.logits(torch.tensor([1.0]))] == [(1, 4), (1, 2), (1, 3)]
    c = torch.tensor(4.0, requires_grad=True)  # the Eq. 8 path: C's gradient through the AG
    sum(p @ torch.arange(p.numel(), dtype=torch.float32) for p in ag(c, noise=False)).backward()
    assert c.grad is not None
    with pytest.raises(HwnasError):
        sn.ArchitectureGenerator([4, 0])
    with pytest.raises(HwnasError):
        sn.ArchitectureGenerator([4], cost_range=(1.0, 1.0))
