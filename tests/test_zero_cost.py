"""Zero-cost proxies (hwnas.search.zero_cost) checked against hand computations: synflow's conservation
and its BatchNorm switch, snip / grad_norm / grasp / fisher by autograd and finite differences,
jacob_cov and NASWOT fixtures, NB201 layer lists with dead edges; the resumable proxies file
(`run_proxies`), the proxy and ParZC evaluators, and the CLI (`hwnas proxies`, `hwnas parzc`,
`hwnas search --evaluator`). Everything is tiny (NB201 at 8x8, a few cells, one thread)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.search.evaluators import ParZCEvaluator, ParZCFreeEvaluator, ProxyEvaluator
from hwnas.search.proxy_table import (
    ParZCFitConfig,
    ProxiesConfig,
    fit_parzc,
    predict_parzc,
    read_proxies,
    run_proxies,
)
from hwnas.search.zero_cost import (
    compute_proxies,
    fisher,
    grad_norm,
    grasp,
    jacob_cov_score,
    naswot,
    naswot_kernel,
    naswot_score,
    proxy_network,
    prunable_layers,
    snip,
    synflow,
)
from hwnas.space import get_space
from hwnas.space.blocks import Cell
from hwnas.space.nb201 import N_ARCHS, all_indices

SP8 = get_space("nb201", resolution=8)
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = ("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|"
            "skip_connect~2|")
# edge 2->3 none: the edges into node 2 (0->2 conv 3x3, 1->2 conv 1x1) are dead
DEAD_INTO_2 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
# only 0->3 is live; the dead 0->1 conv feeds the dead 1->2 conv (a node read only by a dead edge)
DEAD_CHAIN = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
TINY_PARZC = {"epochs": 3, "hidden": 16, "patches": 4, "dim": 16, "depth": 1, "batch_size": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --- helpers -----------------------------------------------------------------------------------
def _abs_output_sum(net: nn.Sequential, shape: tuple[int, ...]) -> float:
    """R = sum of the output of the |weights| network on ones, in float64, by hand."""
    x = torch.ones(1, *shape, dtype=torch.float64)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                x = F.conv2d(x, m.weight.double().abs(), stride=m.stride, padding=m.padding)
            elif isinstance(m, nn.Linear):
                x = F.linear(x, m.weight.double().abs())
            else:
                x = m(x)
    return float(x.sum())


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 4, bias=False), nn.ReLU(),
                         nn.Linear(4, 3, bias=False))


def _cnn(bn: bool = False) -> nn.Sequential:
    mods = [nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 5, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2, bias=False)]
    return nn.Sequential(*[m for m in mods if bn or not isinstance(m, nn.BatchNorm2d)])


def _two_layer(seed: int = 0) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(8, 6)
    y = torch.randint(0, 3, (8,))
    return net, x, y


def _weight_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    weights = [m.weight for m in prunable_layers(net)]
    return list(torch.autograd.grad(F.cross_entropy(net(x), y), weights))


def _records(df: pd.DataFrame) -> dict[int, dict]:
    """Rows by index, list columns as tuples (comparable with ==)."""
    out = {}
    for row in df.to_dict("records"):
        out[int(row["index"])] = {k: tuple(float(x) for x in v) if isinstance(v, (list, np.ndarray))
                                  else v for k, v in row.items()}
    return out


def _cli(argv: list[str]) -> None:
    from hwnas.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code in (0, None), info.value.code


def _cli_error(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error: exit 2 and exactly one `error:` line; returns it."""
    from hwnas.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- ZC1: synflow -----------------------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [(_mlp, (5,)), (_cnn, (3, 7, 7))])
def test_synflow_conserves_the_flow_in_every_layer(make, shape):
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = make()
        with torch.no_grad():  # "any init": rescale some layers, flip signs
            for k, layer in enumerate(prunable_layers(net)):
                layer.weight.mul_(torch.randn_like(layer.weight).sign() * (k + 0.5))
        r = _abs_output_sum(net, shape)
        s = compute_proxies(net, ["synflow"], (4, *shape))["synflow"]
        n_layers = len(prunable_layers(net))
        assert s.name == "synflow" and r > 0 and len(s.layer_sums) == n_layers == 3
        np.testing.assert_allclose(s.layer_sums, np.full(n_layers, r), rtol=1e-9)
        assert s.score == pytest.approx(n_layers * r, rel=1e-9)
        sizes = np.array([layer.weight.numel() for layer in prunable_layers(net)])
        np.testing.assert_allclose(s.layer_means, s.layer_sums / sizes, rtol=1e-12)


def test_synflow_switches_batchnorm_off_and_leaves_the_network_alone():
    torch.manual_seed(3)
    with_bn = _cnn(bn=True)
    with torch.no_grad():
        for m in with_bn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-2, 2)
                m.bias.uniform_(-1, 1)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    plain = _cnn(bn=False)
    for a, b in zip(prunable_layers(plain), prunable_layers(with_bn), strict=True):
        a.weight.data.copy_(b.weight.data)
    before = {k: v.clone() for k, v in with_bn.state_dict().items()}
    x = torch.randn(2, 3, 7, 7)
    with_bn.eval()
    with torch.no_grad():
        y_before = with_bn(x)
    s_bn = synflow(with_bn, (1, 3, 7, 7))
    s_plain = synflow(plain, (1, 3, 7, 7))
    np.testing.assert_allclose(s_bn.layer_sums, s_plain.layer_sums, rtol=1e-12)
    assert s_bn.score == pytest.approx(s_plain.score, rel=1e-12)
    assert s_bn.score == pytest.approx(3 * _abs_output_sum(plain, (3, 7, 7)), rel=1e-9)
    # the caller's network: same weights (signs kept), float32, BatchNorm still on, eval mode kept
    after = with_bn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (with_bn[0].weight < 0).any() and with_bn[0].weight.dtype == torch.float32
    assert not with_bn.training
    with torch.no_grad():
        assert torch.equal(with_bn(x), y_before)
        assert not torch.allclose(with_bn(x), plain(x))


# --- ZC2: hand checks of the gradient proxies ----------------------------------------------------
def test_snip_and_grad_norm_by_hand():
    net, x, y = _two_layer()
    g = _weight_grads(net, x, y)
    weights = [m.weight for m in prunable_layers(net)]
    snip_ref = [float((w.detach() * gw).abs().sum()) for w, gw in zip(weights, g, strict=True)]
    norms = [float(gw.norm()) for gw in g]
    both = compute_proxies(net, ["grad_norm", "snip"], x.shape, x, y)  # one shared backward pass
    for s in (both["snip"], snip(net, x, y)):
        np.testing.assert_allclose(s.layer_sums, snip_ref, rtol=1e-6)
        assert s.score == pytest.approx(sum(snip_ref), rel=1e-6)
    for s in (both["grad_norm"], grad_norm(net, x, y)):
        np.testing.assert_allclose(s.layer_sums, norms, rtol=1e-6)
        np.testing.assert_allclose(s.layer_means, norms, rtol=1e-6)  # one value per layer
        assert s.score == pytest.approx(sum(norms), rel=1e-6)
    global_norm = math.sqrt(sum(n * n for n in norms))
    assert both["grad_norm"].score > global_norm * 1.05  # per-layer norms summed, not one norm
    assert all(n > 0 for n in norms)
    # the caller's network has no gradients left on it
    assert all(p.grad is None for p in net.parameters())


def test_grasp_matches_a_finite_difference_hessian_vector_product():
    net, x, y = _two_layer(seed=1)
    net = net.double()
    x = x.double()
    s = grasp(net, x, y)
    ref_net = copy.deepcopy(net)
    weights = [m.weight for m in prunable_layers(ref_net)]
    g = [t.detach() for t in _weight_grads(ref_net, x, y)]
    eps = 1e-6

    def shifted(step: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, gw in zip(weights, g, strict=True):
                w.add_(step * gw)
        out = [t.detach() for t in _weight_grads(ref_net, x, y)]
        with torch.no_grad():
            for w, gw in zip(weights, g, strict=True):
                w.sub_(step * gw)
        return out

    plus, minus = shifted(eps), shifted(-eps)
    hg = [(p - m) / (2 * eps) for p, m in zip(plus, minus, strict=True)]
    per_weight = [-w.detach() * h for w, h in zip(weights, hg, strict=True)]
    ref = np.array([float(a.sum()) for a in per_weight])
    scale = max(float(a.abs().sum()) for a in per_weight)
    assert scale > 0
    np.testing.assert_allclose(s.layer_sums, ref, rtol=1e-4, atol=1e-7 * scale)
    assert s.score == pytest.approx(float(ref.sum()), rel=1e-4, abs=1e-7 * scale)
    sizes = np.array([w.numel() for w in weights])
    np.testing.assert_allclose(s.layer_means, ref / sizes, rtol=1e-4, atol=1e-7 * scale)


def test_fisher_of_one_linear_layer_by_hand():
    torch.manual_seed(2)
    net = nn.Linear(6, 4)
    x = torch.randn(8, 6)
    y = torch.randint(0, 4, (8,))
    act = net(x)
    act.retain_grad()
    F.cross_entropy(act, y).backward()
    fisher_k = 0.5 * (act.detach() * act.grad).pow(2).mean(0)  # per output unit
    net.zero_grad()
    s = fisher(net, x, y)
    assert len(s.layer_sums) == 1 and float(fisher_k.sum()) > 0
    assert s.layer_sums[0] == pytest.approx(6 * float(fisher_k.sum()), rel=1e-6)
    assert s.layer_means[0] == pytest.approx(float(fisher_k.sum()) / 4, rel=1e-6)
    assert s.score == pytest.approx(6 * float(fisher_k.sum()), rel=1e-6)


# --- jacob_cov and NASWOT --------------------------------------------------------------------------
def test_jacob_cov_score_of_orthogonal_jacobians_and_a_constant_row():
    j = np.zeros((64, 128))
    rows = np.arange(64)
    j[rows, 2 * rows] = 1.0  # zero-mean, disjoint rows: orthogonal after centring
    j[rows, 2 * rows + 1] = -1.0
    np.testing.assert_allclose(np.corrcoef(j), np.eye(64), atol=1e-14)
    expected = -64 * (math.log(1 + 1e-5) + 1 / (1 + 1e-5))
    assert jacob_cov_score(j) == pytest.approx(-64.00000000320, abs=1e-8)
    assert jacob_cov_score(j) == pytest.approx(expected, abs=1e-10)
    j[7] = 3.0  # a constant row: the correlation is undefined
    assert math.isnan(jacob_cov_score(j))


def test_naswot_kernel_is_units_minus_hamming_distance():
    gen = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 2, (6, 5), generator=gen).bool(),
             torch.randint(0, 2, (6, 7), generator=gen).bool()]
    k = naswot_kernel(codes)
    c = torch.cat(codes, 1).numpy()
    hamming = (c[:, None, :] != c[None, :, :]).sum(-1)
    assert k.shape == (6, 6)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(np.diag(k), np.full(6, 12.0))
    np.testing.assert_array_equal(k, 12.0 - hamming)
    sign, logdet = np.linalg.slogdet(k)
    assert naswot_score(k) == (logdet if sign != 0 else -math.inf)
    with pytest.raises(HwnasError, match="no ReLU"):
        naswot_kernel([])


def test_naswot_of_a_relu_net_duplicate_inputs_are_minus_infinity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(6, 10)
    y = torch.zeros(6, dtype=torch.long)
    s = compute_proxies(net, ["naswot"], x.shape, x, y)["naswot"]
    with torch.no_grad():  # by hand: the binary code of each ReLU's input
        h1 = net[0](x)
        h2 = net[2](torch.relu(h1))
    k = naswot_kernel([h1 > 0, h2 > 0])
    assert math.isfinite(s.score) and s.layer_sums is None
    assert s.score == pytest.approx(float(np.linalg.slogdet(k)[1]), rel=1e-12)
    dup = x.clone()
    dup[4] = dup[1]
    assert naswot(net, dup).score == -math.inf
    assert compute_proxies(net, ["naswot"], dup.shape, dup, y)["naswot"].score == -math.inf


def test_compute_proxies_checks_names_and_data():
    net, x, y = _two_layer()
    with pytest.raises(HwnasError, match="unknown proxy bogus"):
        compute_proxies(net, ["synflow", "bogus"], x.shape)
    with pytest.raises(HwnasError, match="need a minibatch of data"):
        compute_proxies(net, ["synflow", "snip"], x.shape)


# --- NB201 layer lists ---------------------------------------------------------------------------
def _dead_layer_ids(net: nn.Module) -> set[int]:
    """ids of the conv/linear layers on edges into node 2 (dead when edge 2->3 is none)."""
    out = set()
    for m in net.modules():
        if isinstance(m, Cell):
            for op, (_, j) in zip(m.ops, m.wiring, strict=True):
                if j == 2:
                    out |= {id(layer) for layer in prunable_layers(op)}
    return out


def test_nb201_layer_lists_all_conv_and_all_skip():
    full = proxy_network(SP8, SP8.from_arch_str(ALL_CONV), seed=0)
    assert full.training and len(prunable_layers(full)) == 98
    s = compute_proxies(full, ["synflow", "params", "conv_count"], SP8.input_shape())
    assert len(s["synflow"].layer_sums) == len(s["params"].layer_sums) == 98
    assert (s["synflow"].layer_sums > 0).all()
    assert s["conv_count"].score == 97  # stem 1 + 15 cells x 6 + 2 reductions x 3
    assert s["params"].score == sum(p.numel() for p in full.parameters())
    skip = proxy_network(SP8, SP8.from_arch_str(ALL_SKIP), seed=0)
    assert len(prunable_layers(skip)) == 8
    s = compute_proxies(skip, ["synflow", "conv_count"], SP8.input_shape())
    assert len(s["synflow"].layer_sums) == 8 and s["conv_count"].score == 7


def test_nb201_dead_edges_are_zero_layers_of_the_same_network():
    arch = SP8.from_arch_str(DEAD_INTO_2)
    dead = proxy_network(SP8, arch, seed=0)
    layers = prunable_layers(dead)
    assert len(layers) == 1 + 15 * 4 + 6 + 1
    dead_ids = _dead_layer_ids(dead)
    is_dead = np.array([id(m) in dead_ids for m in layers])
    assert is_dead.sum() == 30
    s = synflow(dead, SP8.input_shape())
    assert (s.layer_sums[is_dead] == 0).all() and (s.layer_sums[~is_dead] > 0).all()
    # the live-only network with the same weights computes the same function
    live = SP8.build(arch)
    assert len(prunable_layers(live)) == 38
    for b_dead, b_live in zip(dead.blocks, live.blocks, strict=True):
        if isinstance(b_dead, Cell):
            by_edge = dict(zip(b_dead.wiring, b_dead.ops, strict=True))
            for op, edge in zip(b_live.ops, b_live.wiring, strict=True):
                op.load_state_dict(by_edge[edge].state_dict())
        else:
            b_live.load_state_dict(b_dead.state_dict())
    x = torch.randn(4, 3, 8, 8)
    live.train()
    with torch.no_grad():
        assert torch.allclose(dead(x), live(x), rtol=1e-5, atol=1e-6)
    s_live = synflow(live, SP8.input_shape())
    assert s_live.score == pytest.approx(s.score, rel=1e-12)
    np.testing.assert_allclose(s_live.layer_sums, s.layer_sums[~is_dead], rtol=1e-12)
    c = compute_proxies(dead, ["conv_count"], SP8.input_shape())["conv_count"].score
    assert c == compute_proxies(live, ["conv_count"], SP8.input_shape())["conv_count"].score == 1 + 15 * 2 + 6


def test_nb201_a_dead_conv_feeding_a_dead_edge_does_not_run():
    # regression: node 1 is read only by the dead edge 1->2, so its conv 0->1 must not run either
    arch = SP8.from_arch_str(DEAD_CHAIN)
    dead = proxy_network(SP8, arch, seed=0)
    assert len(prunable_layers(dead)) == 1 + 15 * 2 + 6 + 1
    live = SP8.build(arch)
    s = compute_proxies(dead, ["synflow", "conv_count", "macs"], SP8.input_shape())
    ref = compute_proxies(live, ["conv_count", "macs"], SP8.input_shape())
    assert s["conv_count"].score == ref["conv_count"].score == 7
    assert s["macs"].score == ref["macs"].score > 0
    cell_layers = np.array([any(layer is m for c in dead.modules() if isinstance(c, Cell)
                                for m in prunable_layers(c)) for layer in prunable_layers(dead)])
    assert cell_layers.sum() == 30 and (s["synflow"].layer_sums[cell_layers] == 0).all()


# --- the proxies file ------------------------------------------------------------------------------
def _config(out: Path, **kw) -> ProxiesConfig:
    base = {"proxies": ("synflow", "snip"), "resolution": 8, "batch_size": 16, "threads": 1}
    if "indices" not in kw:
        base["archs"] = 4
    return ProxiesConfig(out=out, **{**base, **kw})


@pytest.fixture(scope="module")
def proxies_run(tmp_path_factory):
    """`--archs 4` then `--archs 6` on one file: (path, rows after 4, summary of 4, summary of 6)."""
    out = tmp_path_factory.mktemp("proxies") / "p.parquet"
    s4 = run_proxies(_config(out))
    df4, _ = read_proxies(out)
    s6 = run_proxies(_config(out, archs=6))
    return out, df4, s4, s6


@pytest.fixture(scope="module")
def accuracy_csv(tmp_path_factory) -> Path:
    """A synthetic accuracy table over all 15,625 cells (deterministic in the index)."""
    path = tmp_path_factory.mktemp("tables") / "acc.csv"
    k = np.arange(N_ARCHS)
    pd.DataFrame({"arch_idx": k, "acc": 50.0 + (k * 37 % 101) / 10.0}).to_csv(path, index=False)
    return path


def test_run_proxies_writes_a_readable_prefix_stable_file(proxies_run):
    out, df4, s4, s6 = proxies_run
    assert (s4["scored"], s4["resumed"], s4["rows"]) == (4, 0, 4)
    assert (s6["scored"], s6["resumed"], s6["rows"]) == (2, 4, 6)
    df, settings = read_proxies(out)
    assert settings == {"format": "hwnas-proxies-1", "space": "nb201", "resolution": 8, "num_classes": 10,
                        "proxies": ["synflow", "snip"], "data": "digits", "batch_size": 16,
                        "data_seed": 42, "seed": 0}
    drawn = [int(k) for k in np.random.default_rng(0).permutation(N_ARCHS)[:6]]
    assert df["index"].tolist() == drawn and df4["index"].tolist() == drawn[:4]
    rows, rows4 = _records(df), _records(df4)
    assert all(rows[k] == rows4[k] for k in rows4)  # the first four were not scored again
    assert not (out.parent / "p.parquet.partial.jsonl").exists()
    for k, row in rows.items():
        arch = SP8.from_index(k)
        n_layers = len(prunable_layers(proxy_network(SP8, arch, 0)))
        assert row["arch_str"] == SP8.arch_str(arch) and json.loads(row["arch"]) == list(arch.choices)
        for p in ("synflow", "snip"):
            assert len(row[f"{p}_layer_sum"]) == len(row[f"{p}_layer_mean"]) == n_layers
            assert row[p] == pytest.approx(sum(row[f"{p}_layer_sum"]), rel=1e-9)
            assert row[p] >= 0 and min(row[f"{p}_layer_sum"]) >= 0
        if row["synflow"] == 0:  # only a cell whose output does not depend on its input
            net = SP8.build(arch).eval()
            with torch.no_grad():
                assert torch.equal(net(torch.randn(2, 3, 8, 8)), net(torch.randn(2, 3, 8, 8)))
    assert 0 < sum(r["synflow"] == 0 for r in rows.values()) < len(rows)  # 11759: node 1 is zero


def test_run_proxies_resumes_an_interrupted_run_exactly(proxies_run, tmp_path):
    _, df4, _, _ = proxies_run
    out = tmp_path / "a.parquet"
    partial = tmp_path / "a.parquet.partial.jsonl"

    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        run_proxies(_config(out), stop_after_two)
    assert not out.exists() and len(partial.read_text().splitlines()) == 2
    # a rerun with other settings is refused, and leaves the partial file alone
    with pytest.raises(HwnasError, match="other settings"):
        run_proxies(_config(out, proxies=("synflow",)))
    third = int(df4["index"].iloc[2])
    with open(partial, "a") as f:  # a torn last line (killed mid-write), of an arch not yet scored
        f.write(json.dumps({"index": third, "synflow": 1.0})[:-5])
    s = run_proxies(_config(out))
    assert (s["scored"], s["resumed"], s["rows"]) == (2, 2, 4)
    df, _ = read_proxies(out)
    assert df["index"].tolist() == df4["index"].tolist() and df["index"].is_unique
    assert _records(df) == _records(df4)  # the same as the uninterrupted run into another file
    assert not partial.exists()


def test_run_proxies_refuses_other_settings_and_is_order_free(proxies_run, tmp_path):
    out, df4, _, _ = proxies_run
    before = out.read_bytes()
    with pytest.raises(HwnasError, match="other settings"):
        run_proxies(_config(out, proxies=("synflow",), archs=6))
    assert out.read_bytes() == before
    # the same archs in another order, in another file: the same scores (seeded init)
    k0, k1 = (int(v) for v in df4["index"].iloc[:2])
    rev = tmp_path / "rev.parquet"
    run_proxies(_config(rev, indices=[k1, k0]))
    df, settings = read_proxies(rev)
    assert df["index"].tolist() == [k1, k0] and settings["proxies"] == ["synflow", "snip"]
    rows, ref = _records(df), _records(df4)
    assert rows[k0] == ref[k0] and rows[k1] == ref[k1]


# --- evaluators ------------------------------------------------------------------------------------
def test_proxy_evaluator_matches_the_table(proxies_run):
    out, _, _, _ = proxies_run
    df, settings = read_proxies(out)
    k = int(df["index"].iloc[0])
    row = df.iloc[0]
    idx = np.asarray(SP8.indices(SP8.from_index(k)))
    ev = ProxyEvaluator(SP8, "synflow", batch_size=16)
    assert ev.name == "proxy:synflow"
    assert ev.evaluate(idx) == pytest.approx(float(row["synflow"]), rel=1e-12)
    ev_snip = ProxyEvaluator(SP8, "snip", batch_size=16)  # the same minibatch as the file's
    assert ev_snip.evaluate(idx) == pytest.approx(float(row["snip"]), rel=1e-6)
    from_table = ProxyEvaluator(SP8, "synflow", batch_size=16, table=df, table_settings=settings)
    all_idx = np.asarray([SP8.indices(SP8.from_index(int(i))) for i in df["index"]])
    np.testing.assert_array_equal(from_table.evaluate_many(all_idx), df["synflow"].to_numpy())
    with pytest.raises(HwnasError, match="other settings"):
        ProxyEvaluator(SP8, "synflow", batch_size=16, seed=1, table=df, table_settings=settings)
    with pytest.raises(HwnasError, match="no 'naswot' column"):
        ProxyEvaluator(SP8, "naswot", batch_size=16, table=df, table_settings=settings)


def test_training_free_parzc_evaluator_weights_layer_sums_by_depth(proxies_run):
    out, _, _, _ = proxies_run
    df, settings = read_proxies(out)
    row = df.iloc[0]
    idx = np.asarray(SP8.indices(SP8.from_index(int(row["index"]))))
    sums = np.asarray(row["synflow_layer_sum"], dtype=float)
    i = np.arange(len(sums))
    for weighting, w in (("sin", (np.sin(0.1 * i) + 1) / 2),
                         ("quadratic", ((len(sums) - i) / len(sums)) ** 2)):
        ev = ParZCFreeEvaluator(SP8, "synflow", weighting, batch_size=16, table=df,
                                table_settings=settings)
        assert ev.name == f"parzc-free:synflow:{weighting}"
        assert ev.evaluate(idx) == pytest.approx(float((w * sums).sum()), rel=1e-12)
    with pytest.raises(HwnasError, match="per-layer proxy"):
        ParZCFreeEvaluator(SP8, "naswot")
    with pytest.raises(HwnasError, match="weighting"):
        ParZCFreeEvaluator(SP8, "synflow", "cubic")


def test_parzc_evaluator_predicts_as_predict_parzc(proxies_run, accuracy_csv, tmp_path):
    out, _, _, _ = proxies_run
    model_dir = tmp_path / "model"
    r = fit_parzc(ParZCFitConfig(proxies_table=out, accuracy_table=accuracy_csv, out=model_dir,
                                 features=("synflow", "snip"), train=4, options=TINY_PARZC))
    assert (r["train_rows"], r["held_out_rows"], r["length"]) == (4, 2, 98)
    assert -1 <= r["held_out_kendall_tau"] <= 1
    ev = ParZCEvaluator(SP8, model_dir)
    assert ev.name == "parzc:model" and ev.proxies == ("synflow", "snip") and ev.length == 98
    pred, report = predict_parzc(model_dir, out, accuracy_csv, samples=ev.model.samples)
    df, settings = read_proxies(out)
    assert pred["index"].tolist() == df["index"].tolist() and report["evaluated_rows"] == 2
    k = df["index"].to_numpy()
    np.testing.assert_allclose(pred["accuracy"], 50.0 + (k * 37 % 101) / 10.0)
    all_idx = np.asarray([SP8.indices(SP8.from_index(int(i))) for i in k])
    from_table = ParZCEvaluator(SP8, model_dir, table=df, table_settings=settings)
    np.testing.assert_allclose(from_table.evaluate_many(all_idx), pred["parzc"], rtol=1e-5)
    # computed from scratch (the settings saved with the model): the same as from the file
    for i in (0, 5):
        assert ev.evaluate(all_idx[i]) == pytest.approx(float(pred["parzc"].iloc[i]), rel=1e-5)
    assert float(pred["parzc_std"].min()) >= 0


# --- the command line ------------------------------------------------------------------------------
def test_cli_proxies_happy_path(tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    _cli(["proxies", "--out", str(out), "--proxies", "synflow,params", "--archs", "2",
          "--resolution", "8", "--threads", "1"])
    assert "2 architectures (2 scored now, 0 from before)" in capsys.readouterr().out
    df, settings = read_proxies(out)
    assert len(df) == 2 and settings["proxies"] == ["synflow", "params"] and settings["data"] is None
    assert settings["resolution"] == 8
    for row in df.to_dict("records"):
        net = proxy_network(SP8, SP8.from_index(int(row["index"])), 0)
        assert row["params"] == sum(p.numel() for p in net.parameters())
        assert len(row["params_layer_sum"]) == len(prunable_layers(net))
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("args,message", [
    (["--proxies", "synflow,bogus", "--archs", "2"], "unknown proxy bogus"),
    (["--archs", "2", "--all"], "exactly one of --archs N or --all"),
    ([], "exactly one of --archs N or --all"),
    (["--archs", "2", "--out", "{tmp}/p.csv"], "name it *.parquet"),
    (["--proxies", "snip", "--archs", "2", "--data", "mnist"], "unknown data spec 'mnist'"),
])
def test_cli_proxies_mistakes(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "p.parquet")]
    err = _cli_error(["proxies", "--resolution", "8", *args], capsys)
    assert message in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_parzc_mistakes(proxies_run, accuracy_csv, tmp_path, capsys):
    out, _, _, _ = proxies_run
    model = tmp_path / "m"
    err = _cli_error(["parzc", "fit", "--proxies-table", str(out), "--accuracy-table", str(accuracy_csv),
                      "--out", str(model), "--epochs", "1"], capsys)  # default features need grad_norm
    assert "no layer-wise column grad_norm_layer_mean" in err
    err = _cli_error(["parzc", "fit", "--proxies-table", str(out), "--accuracy-table", str(accuracy_csv),
                      "--out", str(model), "--features", "synflow,naswot"], capsys)
    assert "naswot_layer_mean" in err
    assert not model.exists()
    err = _cli_error(["parzc", "predict", str(tmp_path / "no_model"), "--proxies-table", str(out)], capsys)
    assert "file not found" in err and "no_model" in err


@pytest.fixture(scope="module")
def latency_csv(tmp_path_factory) -> Path:
    """dev_ms = 1 + the number of conv edges of the cell, for all 15,625 cells."""
    path = tmp_path_factory.mktemp("lat") / "lat.csv"
    idx = all_indices()
    convs = ((idx == 2) | (idx == 3)).sum(1)  # nor_conv_1x1, nor_conv_3x3
    pd.DataFrame({"arch_idx": np.arange(N_ARCHS), "dev_ms": 1.0 + convs}).to_csv(path, index=False)
    return path


def test_cli_search_with_a_proxy_evaluator(latency_csv, tmp_path, capsys):
    out = tmp_path / "run"
    _cli(["search", "--method", "evolution", "--evaluator", "synflow", "--latency-table", str(latency_csv),
          "--device", "dev", "--budget-ms", "3", "--evaluations", "5", "--out", str(out)])
    s = json.loads((out / "summary.json").read_text())
    assert s["evaluator"] == "proxy:synflow" and s["met"] and s["feasible"]
    assert s["evaluations_used"] == 5 and s["accuracy"] is None and s["reference"] is None
    chosen = s["chosen"]
    n_conv = sum(op.startswith("nor_conv") for op in chosen["choices"])
    assert chosen["predicted_ms"] == s["predicted_ms"] == 1.0 + n_conv <= 3.0
    traj = pd.read_csv(out / "trajectory.csv")
    evaluated = traj[traj["status"] == "evaluated"]
    assert len(evaluated) == 5 and chosen["score"] == pytest.approx(evaluated["score"].max())
    space = get_space("nb201")  # resolution 32: the chosen score is the arch's synflow
    net = proxy_network(space, space.from_arch_str(chosen["arch_str"]), 0)
    assert chosen["score"] == pytest.approx(synflow(net, space.input_shape()).score, rel=1e-9)
    assert "proxy:synflow" in capsys.readouterr().out
    err = _cli_error(["search", "--method", "evolution", "--evaluator", "bogus", "--latency-table",
                      str(latency_csv), "--device", "dev", "--out", str(tmp_path / "bad")], capsys)
    assert "unknown evaluator 'bogus'" in err and not (tmp_path / "bad").exists()
