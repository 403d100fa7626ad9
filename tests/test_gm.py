"""GM-NAS / few-shot NAS pure parts (`hwnas.search.gm`): the notes' tests GM1-GM7.

`ToyNet` is a small real weight-sharing supernet implementing `gm.SplittableNet`: a stem conv,
3 searchable layers of 5 candidates (conv1x1, conv3x3, identity, avgpool, zero), a fixed conv
between layers, a head. Its gradient set for layer e (`split_parameters`) is every parameter of
the other layers' candidates plus the fixed convs, without stem and head (NB201's gradient set).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.search import gm

C = 4
N_CLASSES = 4
CONV3 = 1  # choice index of conv3x3
TIED = 5  # choice index of the tied duplicate of conv3x3 (ToyNet(tie=True))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ToyNet(nn.Module):
    def __init__(self, tie: bool = False, enc: np.ndarray | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, C, 3, padding=1)
        self.cands = nn.ModuleList()
        for _ in range(3):
            conv3 = nn.Conv2d(C, C, 3, padding=1)
            ops = [nn.Conv2d(C, C, 1), conv3, nn.Identity(), nn.AvgPool2d(3, 1, 1), Zero()]
            if tie:
                ops.append(conv3)  # the SAME module object: weights tied with choice 1
            self.cands.append(nn.ModuleList(ops))
        self.fixed = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, padding=1), nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(C, N_CLASSES)
        n_ops = 6 if tie else 5
        mask = torch.ones(3, n_ops, dtype=torch.bool) if enc is None else torch.as_tensor(enc)
        self.register_buffer("enc", mask.bool())
        self.path = [0, 0, 0]

    def set_paths(self, indices) -> None:
        self.path = [int(i) for i in indices]

    def sample_uniform(self, generator: torch.Generator) -> np.ndarray:
        out = []
        for row in self.enc.cpu().numpy():
            allowed = np.flatnonzero(row)
            out.append(int(allowed[int(torch.randint(len(allowed), (1,), generator=generator))]))
        return np.asarray(out)

    def split_parameters(self, layer: int) -> list[nn.Parameter]:
        own = {id(p) for p in self.cands[layer].parameters()}
        params: list[nn.Parameter] = []
        seen: set[int] = set()
        for i, cands in enumerate(self.cands):
            if i == layer:
                continue
            for p in cands.parameters():
                if id(p) not in seen and id(p) not in own:
                    seen.add(id(p))
                    params.append(p)
        params.extend(self.fixed.parameters())
        return params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, cands in enumerate(self.cands):
            x = cands[self.path[i]](x)
            if i < len(self.fixed):
                x = self.fixed[i](x)
        return self.head(x.mean(dim=(2, 3)))


def make_batches(n: int, seed: int = 0, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=g),
             torch.randint(0, N_CLASSES, (size,), generator=g)) for _ in range(n)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _seed(one_thread):
    """Seeded, on one intra-op thread (`one_thread`, conftest.py)."""
    torch.manual_seed(0)


# ---- GM1 distance matrix -------------------------------------------------------------------


def test_cosine_distance_matrix_formula():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(50, generator=g) for _ in range(4)] + [torch.zeros(50)]
    grads.append(-grads[0])
    D = gm.cosine_distance_matrix(grads)
    assert D.dtype == np.float64 and D.shape == (6, 6)
    np.testing.assert_array_equal(D, D.T)
    G = torch.stack(grads).double()
    n = G.norm(dim=1)
    ref = 1 - (G @ G.T) / (n[:, None] * n[None, :] + 1e-6)
    np.testing.assert_allclose(D, ref.numpy(), rtol=0, atol=1e-12)
    sq = float(n[0] ** 2)
    assert D[0, 0] == pytest.approx(1 - sq / (sq + 1e-6), abs=1e-12)
    assert D[4, 4] == 1.0  # zero gradient: distance 1 to everything
    assert D[0, 5] == pytest.approx(2.0, abs=1e-6)
    assert D.min() >= 0.0 and D.max() <= 2.0
    with pytest.raises(HwnasError):
        gm.cosine_distance_matrix([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(HwnasError):
        gm.cosine_distance_matrix([])


def test_flat_gradient_zeros_for_missing_grads():
    a = nn.Parameter(torch.ones(2, 3))
    b = nn.Parameter(torch.ones(4))
    (a.sum() * 2).backward()
    v = gm.flat_gradient([a, b])
    assert v.shape == (10,)
    np.testing.assert_array_equal(v.numpy(), [2.0] * 6 + [0.0] * 4)
    with pytest.raises(HwnasError):
        gm.flat_gradient([])


def test_gm1_toy_net_distance_and_tied_duplicate():
    torch.manual_seed(0)
    net = ToyNet(tie=True)
    batches = make_batches(3)
    res = gm.gradient_distance(net, 1, batches, gen(0))
    D = res.matrix
    assert res.ops == (0, 1, 2, 3, 4, 5) and D.shape == (6, 6)
    np.testing.assert_array_equal(D, D.T)
    assert D.min() >= 0.0 and D.max() <= 2.0
    # the diagonal is the mean over batches of 1 - |g|^2 / (|g|^2 + 1e-6). The 1e-6 is absolute, so
    # with this toy's small gradients (|g|^2 ~ 5e-4) the diagonal is ~3e-3, not < 1e-6.
    assert np.all(np.diag(D) < 1e-2)
    # the tied duplicate computes exactly what conv3x3 computes: identical gradients, so its
    # distance to conv3x3 is conv3x3's own diagonal value (cosine part exactly 0)
    assert abs(D[CONV3, TIED] - D[CONV3, CONV3]) < 1e-12
    np.testing.assert_allclose(D[TIED], D[CONV3], rtol=0, atol=1e-12)
    others = [j for j in range(6) if j not in (CONV3, TIED)]
    assert np.all(D[CONV3, others] > D[CONV3, TIED] + 1e-2)
    # with gradients of norm >= 1 the notes' bound holds: identical gradients -> distance < 1e-6
    g = torch.randn(1000, generator=gen(2))
    assert gm.cosine_distance_matrix([g, g.clone()])[0, 1] < 1e-6
    for k in (2, 3):
        part = gm.best_partition(D, k)
        assert any(CONV3 in g and TIED in g for g in part), (k, part)


def test_gm1_diagonal_equals_formula_for_one_batch():
    net = ToyNet()
    res = gm.gradient_distance(net, 0, make_batches(1), gen(3))
    # recompute op 1's gradient on the same path by hand
    path = ToyNet().sample_uniform(gen(3))
    path[0] = 1
    net.set_paths(path)
    net.zero_grad(set_to_none=True)
    x, y = make_batches(1)[0]
    F.cross_entropy(net(x), y).backward()
    g = gm.flat_gradient(net.split_parameters(0)).double()
    sq = float(g @ g)
    assert res.matrix[1, 1] == pytest.approx(1 - sq / (sq + 1e-6), rel=1e-9, abs=1e-15)


# ---- GM2 gradient set ----------------------------------------------------------------------


def test_gm2_gradient_set_excludes_own_layer_and_is_deterministic():
    net = ToyNet()
    assert isinstance(net, gm.SplittableNet)
    for e in range(3):
        ids = {id(p) for p in net.split_parameters(e)}
        assert not ids & {id(p) for p in net.cands[e].parameters()}
        assert not ids & {id(p) for p in net.stem.parameters()}
        assert not ids & {id(p) for p in net.head.parameters()}
        numel = sum(p.numel() for p in net.split_parameters(e))
        net.zero_grad(set_to_none=True)
        net.set_paths([1, 1, 1])
        x, y = make_batches(1)[0]
        F.cross_entropy(net(x), y).backward()
        assert gm.flat_gradient(net.split_parameters(e)).numel() == numel
    batches = make_batches(3, seed=5)
    a = gm.gradient_distance(net, 1, batches, gen(7))
    b = gm.gradient_distance(net, 1, batches, gen(7))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.ops == b.ops and a.batches == 3
    # scoring leaves no gradient behind, and puts the net in train mode
    net.eval()
    gm.gradient_distance(net, 0, batches, gen(7))
    assert net.training
    assert all(p.grad is None for p in net.parameters())


def test_gradient_distance_respects_mask_and_errors():
    enc = np.ones((3, 5), dtype=bool)
    enc[2] = [True, False, True, False, True]
    net = ToyNet(enc=enc)
    res = gm.gradient_distance(net, 2, make_batches(2), gen(0))
    assert res.ops == (0, 2, 4) and res.matrix.shape == (3, 3)
    with pytest.raises(HwnasError):
        gm.gradient_distance(net, 3, make_batches(1), gen(0))
    with pytest.raises(HwnasError):
        gm.gradient_distance(net, 0, [], gen(0))


# ---- GM3 partition brute force ---------------------------------------------------------------


def _exhaustive(D: np.ndarray, k: int, sizes=None) -> tuple[float, set]:
    """Independent brute force over label assignments: (best within cost, the best partitions)."""
    n = D.shape[0]
    best, arg = np.inf, set()
    for labels in itertools.product(range(k), repeat=n):
        groups = [frozenset(i for i in range(n) if labels[i] == g) for g in range(k)]
        if any(not g for g in groups):
            continue
        if sizes is not None and sorted(len(g) for g in groups) != sorted(sizes):
            continue
        cost = sum(D[i, j] for g in groups for i, j in itertools.combinations(sorted(g), 2))
        part = frozenset(groups)
        if cost < best - 1e-12:
            best, arg = cost, {part}
        elif abs(cost - best) <= 1e-12:
            arg.add(part)
    return best, arg


def test_gm3_partition_counts():
    assert len(gm.partitions(5, 2, (2, 3))) == 10
    assert len(gm.partitions(7, 3)) == 301
    assert len(gm.partitions(7, 2)) == 63
    assert len(gm.partitions(7, 2, (2, 5))) == 21
    assert len(gm.partitions(7, 2, (3, 4))) == 35
    parts = gm.partitions(7, 3)
    assert len({frozenset(frozenset(g) for g in p) for p in parts}) == 301  # each exactly once
    for p in parts:
        assert [g[0] for g in p] == sorted(g[0] for g in p)
        assert sorted(i for g in p for i in g) == list(range(7))
    assert gm.partitions(3, 2) == [((0, 1), (2,)), ((0, 2), (1,)), ((0,), (1, 2))]
    for bad in [(5, 6, None), (5, 0, None), (5, 2, (2, 2)), (5, 2, (1, 2, 2)), (5, 2, (0, 5))]:
        with pytest.raises(HwnasError):
            gm.partitions(*bad)


def test_gm3_best_partition_matches_exhaustive_on_random_D():
    rng = np.random.default_rng(0)
    for trial in range(200):
        A = rng.uniform(0, 2, (5, 5))
        D = np.triu(A, 1) + np.triu(A, 1).T
        for k, sizes in [(2, (2, 3)), (2, None), (3, None)]:
            part = gm.best_partition(D, k, sizes)
            best, arg = _exhaustive(D, k, sizes)
            assert gm.within_cost(D, part) == pytest.approx(best, abs=1e-12), (trial, k, sizes)
            assert frozenset(frozenset(g) for g in part) in arg


def test_gm3_planted_split():
    # ops: 0 none, 1 skip, 2 conv1x1, 3 conv3x3, 4 pool
    D = np.full((5, 5), 2.0)
    for group in [(2, 3), (0, 1, 4)]:
        for i, j in itertools.product(group, repeat=2):
            D[i, j] = 0.0
    for sizes in [(2, 3), None]:
        part = gm.best_partition(D, 2, sizes)
        assert part == ((0, 1, 4), (2, 3))
        assert gm.within_cost(D, part) == 0.0
        assert gm.cut_cost(D, part) == -6.0  # 6 cross pairs of similarity 1 - 2


# ---- GM4 edge choice -------------------------------------------------------------------------


def _planted_distances(seed: int = 0) -> dict[int, tuple[tuple[int, ...], np.ndarray]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in range(6):
        base = torch.randn(64, generator=g)
        if layer == 3:
            grads = [s * base + 0.01 * torch.randn(64, generator=g) for s in (1, 1, -1, -1, -1)]
        else:
            grads = [base + 0.05 * torch.randn(64, generator=g) for _ in range(5)]
        out[layer] = (tuple(range(5)), gm.cosine_distance_matrix(grads))
    return out


@pytest.mark.parametrize("rule", ["mincut", "nb201"])
@pytest.mark.parametrize("sizes", [(2, 3), None])
def test_gm4_planted_edge(rule, sizes):
    chosen, scores = gm.choose_edge(_planted_distances(), 2, sizes, rule=rule)
    assert chosen.layer == 3
    assert chosen.groups == ((0, 1), (2, 3, 4))
    assert [s.layer for s in scores] == list(range(6))
    assert chosen.within < 0.01 and chosen.cut < -5.9 and chosen.cross > 11.9


def test_gm4_groups_are_choice_indices_and_rules_agree():
    # a sub-supernet whose layer 0 keeps choices (1, 3, 4, 6, 7): groups name choices, not positions
    D = np.full((5, 5), 2.0)
    for group in [(0, 1), (2, 3, 4)]:
        for i, j in itertools.product(group, repeat=2):
            D[i, j] = 0.0
    chosen, _ = gm.choose_edge({0: ((1, 3, 4, 6, 7), D)}, 2, (2, 3))
    assert chosen.groups == ((1, 3), (4, 6, 7))
    # equal op counts and fixed sizes: the min-cut and max-cross rules pick the same layer
    rng = np.random.default_rng(1)
    for _ in range(50):
        dist = {}
        for layer in range(6):
            A = rng.uniform(0, 2, (5, 5))
            dist[layer] = (tuple(range(5)), np.triu(A, 1) + np.triu(A, 1).T)
        a, _ = gm.choose_edge(dist, 2, (2, 3), rule="mincut")
        b, _ = gm.choose_edge(dist, 2, (2, 3), rule="nb201")
        assert a.layer == b.layer and a.groups == b.groups


def test_choose_edge_candidates_and_errors():
    dist = _planted_distances()
    dist[3] = ((0, 1), np.zeros((2, 2)))  # an already split layer: 2 ops, not a 2|3 candidate
    chosen, scores = gm.choose_edge(dist, 2, (2, 3))
    assert 3 not in [s.layer for s in scores] and chosen.layer != 3
    with pytest.raises(HwnasError):
        gm.choose_edge({0: ((0,), np.zeros((1, 1)))}, 2)
    with pytest.raises(HwnasError):
        gm.choose_edge(dist, 2, rule="maxcut")
    with pytest.raises(HwnasError):
        gm.choose_edge({0: ((0, 1, 2), np.zeros((2, 2)))}, 2)


def test_gm4_choose_edge_from_toy_net_results():
    net = ToyNet()
    batches = make_batches(2)
    dist = {e: gm.gradient_distance(net, e, batches, gen(e)) for e in range(3)}
    chosen, scores = gm.choose_edge(dist, 2, (2, 3))
    assert len(scores) == 3 and chosen.layer in (0, 1, 2)
    assert sorted(c for g in chosen.groups for c in g) == [0, 1, 2, 3, 4]


# ---- GM4b 3-way -------------------------------------------------------------------------------


def test_gm4b_three_clusters():
    rng = np.random.default_rng(3)
    clusters = [(0, 1), (2, 3, 4), (5, 6)]
    D = np.full((7, 7), 2.0)
    for group in clusters:
        for i, j in itertools.product(group, repeat=2):
            D[i, j] = 0.0
    noise = rng.uniform(0, 0.05, (7, 7))
    D = D + np.triu(noise, 1) + np.triu(noise, 1).T
    np.fill_diagonal(D, 0.0)
    assert gm.best_partition(D, 3) == tuple(clusters)
    assert gm.best_partition(D, 3, (2, 2, 3)) == tuple(clusters)
    chosen, _ = gm.choose_edge({0: (tuple(range(7)), D)}, 3)
    assert chosen.groups == tuple(clusters)
    assert len(gm.partitions(7, 3)) == 301


# ---- GM5 coverage -----------------------------------------------------------------------------


def _all_archs(layers: int = 6, ops: int = 5) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(ops)] * layers, indexing="ij"), -1).reshape(-1, layers)


def test_gm5_two_level_split_partitions_the_space():
    root = np.ones((6, 5), dtype=bool)
    first = gm.split_enc(root, 2, [(0, 1), (2, 3, 4)])
    children = [c for parent in first for c in gm.split_enc(parent, 4, [(0, 4), (1, 2, 3)])]
    assert len(children) == 4
    assert sum(gm.n_archs(c) for c in children) == 15_625 == gm.n_archs(root)
    archs = _all_archs()
    assert archs.shape == (15_625, 6)
    counts = gm.membership(children, archs)
    assert np.all(counts == 1)
    assert gm.coverage(children, root) and gm.coverage(first, root)
    # children copy every other row and keep exactly their group on the split row
    assert np.array_equal(first[0][2], [True, True, False, False, False])
    assert np.array_equal(np.delete(first[1], 2, axis=0), np.delete(root, 2, axis=0))


def test_gm5_fewshot_split_and_rejections():
    root = np.ones((6, 5), dtype=bool)
    kids = gm.fewshot_split(root, 0)
    assert len(kids) == 5 and all(gm.n_archs(k) == 3125 for k in kids)
    assert np.all(gm.membership(kids, _all_archs()) == 1)
    assert gm.coverage(kids, root)
    overlap = [root.copy(), root.copy()]
    overlap[0][2] = [1, 1, 1, 0, 0]
    overlap[1][2] = [0, 0, 1, 1, 1]
    assert not gm.coverage(overlap, root)
    missing = gm.split_enc(root, 2, [(0, 1), (2, 3, 4)])[:1]
    assert not gm.coverage(missing, root)
    for bad in [[(0, 1), (2, 3)], [(0, 1), (1, 2, 3, 4)], [(0, 1, 2, 3, 4)],
                [(0, 1), (), (2, 3, 4)], [(0, 1), (2, 3, 4, 5)]]:
        with pytest.raises(HwnasError):
            gm.split_enc(root, 2, bad)
    masked = gm.split_enc(root, 2, [(0, 1), (2, 3, 4)])[0]
    with pytest.raises(HwnasError):  # choice 2 is no longer allowed on row 2
        gm.split_enc(masked, 2, [(0,), (1, 2)])
    with pytest.raises(HwnasError):
        gm.fewshot_split(gm.fewshot_split(root, 1)[0], 1)
    with pytest.raises(HwnasError):
        gm.split_enc(root, 6, [(0,), (1, 2, 3, 4)])


# ---- GM6 schedule -----------------------------------------------------------------------------


def test_gm6_gm_schedule():
    s = gm.SplitSchedule.gm(60)
    assert s.split_epochs == [15, 30] and s.groups == [2, 2] and s.restart == "final"
    assert all(s.alpha_frozen(e) for e in range(30))
    assert not any(s.alpha_frozen(e) for e in range(30, 60))
    assert [e for e in range(60) if s.reinit_at(e)] == [30]
    assert s.children_after(14) == 1 and s.children_after(15) == 2 and s.children_after(30) == 4
    assert s.children_after(59) == 4
    assert s.splits_at(15) == 2 and s.splits_at(30) == 2 and s.splits_at(16) is None
    none = gm.SplitSchedule(60, [15, 30], [2, 2], restart="none")
    assert not any(none.reinit_at(e) for e in range(60))
    assert not any(none.alpha_frozen(e) for e in range(60))
    assert gm.SplitSchedule.gm(90).split_epochs == [22, 45]
    assert gm.SplitSchedule.gm(60, splits=3).split_epochs == [10, 20, 30]


def test_gm6_presets_and_validation():
    fs = gm.SplitSchedule.fewshot(20)
    assert fs.split_epochs == [0] and fs.groups == [0] and fs.restart == "final"
    assert fs.splits_at(0) == 0 and fs.reinit_at(0) and not fs.alpha_frozen(0)
    assert fs.children_after(0, n_ops=5) == 5
    with pytest.raises(HwnasError):
        fs.children_after(0)
    one = gm.SplitSchedule.none(50)
    assert one.split_epochs == [] and one.children_after(49) == 1
    assert not any(one.alpha_frozen(e) or one.reinit_at(e) for e in range(50))
    everything = gm.SplitSchedule(21, [2, 4, 6], [2, 2, 2], restart="all")
    assert [e for e in range(21) if everything.reinit_at(e)] == [2, 4, 6]
    assert everything.children_after(20) == 8
    for args, kwargs in [((60, [15, 60], [2, 2]), {}), ((60, [30, 15], [2, 2]), {}),
                         ((60, [15, 15], [2, 2]), {}), ((60, [15], [2, 2]), {}),
                         ((60, [15], [1]), {}), ((60, [-1], [2]), {}), ((0, [], []), {}),
                         ((60, [15], [2]), {"restart": "sometimes"})]:
        with pytest.raises(HwnasError):
            gm.SplitSchedule(*args, **kwargs)
    with pytest.raises(HwnasError):
        gm.SplitSchedule.gm(1)  # two splits cannot fit into one epoch
    with pytest.raises(HwnasError):
        gm.SplitSchedule.gm(60, splits=0)


# ---- GM7 cost accounting ----------------------------------------------------------------------


def test_gm7_backward_passes_counted():
    calls = {"n": 0}

    def counting_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad

        loss.register_hook(hook)
        return loss

    R = 3
    net = ToyNet()
    batches = make_batches(R)
    total = 0
    for e in range(3):  # a first split scores every layer: layers x R x |O|
        res = gm.gradient_distance(net, e, batches, gen(e), loss_fn=counting_loss)
        assert res.backward_passes == R * 5
        total += res.backward_passes
    assert total == calls["n"] == 3 * R * 5
    enc = np.ones((3, 5), dtype=bool)
    enc[1] = [False, True, True, False, True]
    calls["n"] = 0
    res = gm.gradient_distance(ToyNet(enc=enc), 1, batches, gen(0), loss_fn=counting_loss)
    assert res.backward_passes == calls["n"] == R * 3
