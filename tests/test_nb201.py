"""The NAS-Bench-201 space: official index order, arch strings, the built network, its lookup table.

Published values: NAS-Bench-201's API reports params (in millions) and FLOPs (millions of
multiply-adds, the linear bias counted) per dataset; the smallest cell (no convolution on any edge)
and the largest (nor_conv_3x3 on every edge), from the v1_1-096897 benchmark files:
CIFAR-10 0.073306 / 1.531546 M params, 7.78305 / 220.11969 MFLOPs; CIFAR-100 0.079156 / 1.537396;
ImageNet16-120 (16x16, 120 classes) 0.080456 / 1.538696 M params, 1.9534 / 55.03756 MFLOPs.
The index order is asserted by the official generator (exps/NAS-Bench-201/main.py) at indices
0, 9 and 123, and checked here against all 15,625 rows of the published tables.
"""

from __future__ import annotations

import csv
import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency.lut import LookupTablePredictor
from hwnas.profile.sampling import plan_nets
from hwnas.space import SPACES, Arch, get_space, space_of
from hwnas.space.nb201 import (
    EDGES,
    N_ARCHS,
    NB201_OPS,
    NB201Space,
    all_indices,
    arch_string,
    canonical,
    indices_of,
    official_index,
    parse_arch_string,
)

SPACE = get_space("nb201")
OFFICIAL = {  # asserted by exps/NAS-Bench-201/main.py generate_meta_info
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    123: "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- index and arch string -------------------------------------------------------------------

def test_space_is_registered_with_defaults() -> None:
    assert SPACES["nb201"] is NB201Space
    assert (SPACE.resolution, SPACE.num_classes, SPACE.size) == (32, 10, 15_625)
    assert [layer.choices for layer in SPACE.layers] == [NB201_OPS] * 6
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert [layer.name for layer in SPACE.layers] == [f"edge {i}->{j}" for j, i in EDGES]


@pytest.mark.parametrize("index,text", sorted(OFFICIAL.items()))
def test_official_indices_asserted_by_the_generator(index: int, text: str) -> None:
    arch = SPACE.from_index(index)
    assert SPACE.arch_str(arch) == text
    assert SPACE.index(SPACE.from_arch_str(text)) == index


def test_index_is_a_bijection() -> None:
    idx = all_indices()
    assert idx.shape == (N_ARCHS, 6)
    assert len(np.unique(idx, axis=0)) == N_ARCHS
    np.testing.assert_array_equal(official_index(idx), np.arange(N_ARCHS))
    np.testing.assert_array_equal(indices_of(np.arange(N_ARCHS)), idx)


@pytest.mark.parametrize("table", ["accuracy/nats_bench.csv", "latency/nb201_latency_help.csv"])
def test_all_15625_rows_match_the_published_order(shared_data, table: str) -> None:
    path = shared_data / table
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_ARCHS
    key = "arch_str" if "arch_str" in rows[0] else "ArchitectureString"
    idx = all_indices()
    for i, row in enumerate(rows):  # row i is NAS-Bench-201 index i, both ways
        assert arch_string([NB201_OPS[j] for j in idx[i]]) == row[key], i
        if "arch_idx" in row:
            assert int(row["arch_idx"]) == i
            edges = ["e1_from0", "e2_from0", "e2_from1", "e3_from0", "e3_from1", "e3_from2"]
            assert [row[e] for e in edges] == [NB201_OPS[j] for j in idx[i]]
    parsed = np.asarray([[NB201_OPS.index(c) for c in parse_arch_string(r[key])] for r in rows])
    np.testing.assert_array_equal(official_index(parsed), np.arange(N_ARCHS))


def test_arch_string_round_trip_and_json() -> None:
    rng = np.random.default_rng(0)
    for k in rng.choice(N_ARCHS, 50, replace=False):
        arch = SPACE.from_index(int(k))
        text = SPACE.arch_str(arch)
        assert parse_arch_string(text) == arch.choices
        assert SPACE.from_arch_str(text) == arch
        back = Arch.from_json(arch.to_json())
        assert space_of(back).index(back) == k


@pytest.mark.parametrize("text,message", [
    ("|none~0|+|none~0|none~1|", "3 nodes separated by '+'"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 of arch string"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read 'op~0'"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must look like |op~0|"),
])
def test_bad_arch_strings_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(HwnasError, match=message.replace("|", r"\|").replace("+", r"\+")
                       .replace("(", r"\(").replace(")", r"\)")):
        SPACE.from_arch_str(text)


def test_bad_indices_are_clear_errors() -> None:
    with pytest.raises(HwnasError, match="out of range 0..15624"):
        SPACE.from_index(15_625)
    with pytest.raises(HwnasError, match="must be an integer"):
        SPACE.from_index("3")  # type: ignore[arg-type]
    with pytest.raises(HwnasError, match="within 0..4"):
        official_index(np.array([[0, 0, 0, 0, 0, 5]]))


def test_resolution_must_halve_twice() -> None:
    with pytest.raises(HwnasError, match="divisible by 4"):
        get_space("nb201", 30)


# --- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("resolution,classes,small,large,small_flops,large_flops", [
    (32, 10, 73_306, 1_531_546, 7.78305, 220.11969),
    (32, 100, 79_156, 1_537_396, None, None),
    (16, 120, 80_456, 1_538_696, 1.9534, 55.03756),
])
def test_published_parameter_and_flop_counts(resolution, classes, small, large, small_flops,
                                             large_flops) -> None:
    space = get_space("nb201", resolution, num_classes=classes)
    for choice, params, flops in (("none", small, small_flops), ("avg_pool_3x3", small, None),
                                  ("nor_conv_3x3", large, large_flops)):
        arch = space.arch([choice] * 6)
        ops = space.ops(arch)
        assert sum(op.params for op in ops) == params
        assert n_params(space.build(arch)) == params
        assert sum(op.params for op in space.official_ops(arch)) == params
        if flops is not None:  # NAS-Bench-201 counts the linear bias as FLOPs (+classes)
            macs = sum(op.macs for op in ops) + classes
            assert abs(macs / 1e6 - flops) < 1e-5, (macs, flops)


def test_official_params_count_dead_edges_the_built_network_not() -> None:
    # edge 2->3 none: node 2 feeds nothing, its two convs are dead
    arch = SPACE.arch(["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect",
                       "nor_conv_1x1", "none"])
    assert SPACE.live_choices(arch) == ("nor_conv_3x3", "none", "none", "skip_connect",
                                        "nor_conv_1x1", "none")
    official = sum(op.params for op in SPACE.official_ops(arch))
    built = n_params(SPACE.build(arch))
    assert built == sum(op.params for op in SPACE.ops(arch))
    assert official - built == 5 * 2 * (16 * 16 * 9 + 32) + 5 * 2 * (32 * 32 * 9 + 64) \
        + 5 * 2 * (64 * 64 * 9 + 128)


def test_canonical_drops_exactly_the_dead_edges() -> None:
    idx = all_indices()
    c = canonical(idx)
    np.testing.assert_array_equal(canonical(c), c)  # idempotent
    assert ((c == idx) | (c == 0)).all()  # only sets edges to none
    e = {n: idx[:, k] != 0 for k, n in enumerate(["01", "02", "12", "03", "13", "23"])}
    reach1 = e["13"] | (e["12"] & e["23"])
    np.testing.assert_array_equal(c[:, 0] != idx[:, 0], e["01"] & ~reach1)
    np.testing.assert_array_equal(c[:, 1] != idx[:, 1], e["02"] & ~e["23"])
    assert (c[:, 3:] == idx[:, 3:]).all()  # edges into the output are always live


def test_built_network_is_made_of_the_ops_blocks() -> None:
    rng = np.random.default_rng(1)
    for k in rng.choice(N_ARCHS, 8, replace=False):
        arch = SPACE.from_index(int(k))
        net = SPACE.build(arch)
        assert not net.training and len(net.blocks) == 19
        ops = SPACE.ops(arch)
        # the network's modules with parameters, in order, are the ops' modules
        modules = [m for m in net.modules() if type(m).__name__ in
                   ("Sequential", "ResNetBasicBlock", "BNClassifier", "AvgPool2d")]
        expected = [op.module() for op in ops]
        assert n_params(net) == sum(op.params for op in ops)
        reprs = [repr(m) for m in modules]
        for m in expected:  # every op's block appears, as built by OpSpec.module()
            assert repr(m) in reprs
        assert set(ops) <= set(SPACE.distinct_ops())
        with torch.inference_mode():
            y = net(torch.randn(2, 3, 32, 32))
        assert tuple(y.shape) == (2, 10) and torch.isfinite(y).all()


def test_dead_edges_change_nothing() -> None:
    arch = SPACE.arch(["nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_3x3",
                       "none", "none"])  # node 1 and node 2 are dead
    live = SPACE.arch(SPACE.live_choices(arch))
    assert live.choices == ("none", "none", "none", "nor_conv_3x3", "none", "none")
    torch.manual_seed(0)
    a = SPACE.build(arch)
    torch.manual_seed(0)
    b = SPACE.build(live)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))
    assert SPACE.ops(arch) == SPACE.ops(live)


def test_a_node_without_inputs_is_zero() -> None:
    # edge 0->1 none: node 1 is zero; edge 1->3 reads it; the output is skip(node 0) + conv(0)
    arch = SPACE.arch(["none", "none", "none", "skip_connect", "avg_pool_3x3", "none"])
    cell = SPACE.build(arch).blocks[1]
    x = torch.randn(1, 16, 32, 32)
    with torch.inference_mode():
        assert torch.equal(cell(x), x)  # avg pool of zeros adds nothing


def test_onnx_export_matches_torch(tmp_path) -> None:
    from hwnas.convert.onnx import export_onnx

    arch = SPACE.from_index(0)
    net = SPACE.build(arch)
    path = export_onnx(net, SPACE.input_shape(), tmp_path / "nb201.onnx")
    x = np.random.default_rng(0).standard_normal(SPACE.input_shape()).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


# --- the lookup table and the profiler's plan -----------------------------------------------

def test_distinct_ops_are_few_and_complete() -> None:
    ops = SPACE.distinct_ops()
    kinds = sorted(op.kind for op in ops)
    assert len(ops) == 13  # stem, 2 reductions, head, 3 stages x (conv1x1, conv3x3, pool)
    assert kinds.count("reluconvbn") == 6 and kinds.count("avgpool_excl") == 3
    assert kinds.count("resblock") == 2
    with pytest.raises(HwnasError, match="cell space"):
        SPACE.candidates(0)


def test_lookup_table_sum_is_the_sum_of_the_ops() -> None:
    lut = {op.key: 0.001 * (1 + op.params) + 0.37 * (op.kind == "avgpool_excl")
           for op in SPACE.distinct_ops()}
    pred = LookupTablePredictor().fit(SPACE, lut)
    idx = all_indices()
    fast = pred.predict_indices(idx)
    for k in np.random.default_rng(2).choice(N_ARCHS, 200, replace=False):
        arch = SPACE.from_indices(idx[k])
        by_ops = sum(lut[op.key] for op in SPACE.ops(arch))
        assert fast[k] == pytest.approx(by_ops, rel=1e-12)
        assert sum(ms for _, ms in pred.breakdown(arch)) == pytest.approx(by_ops, rel=1e-12)
    fastest, slowest = pred.extremes()
    assert fastest.choices == ("none",) * 6 or pred.predict([fastest])[0] == fast.min()
    assert pred.predict([slowest])[0] == pytest.approx(fast.max())


def test_profiler_plan_spreads_over_the_space() -> None:
    archs = plan_nets(SPACE, 20, seed=0)
    assert len(set(archs)) == 20
    assert all(a.space == "nb201" for a in archs)


def test_every_arch_validates_and_builds_fast_enough_to_profile() -> None:
    # 6 x 5 choices: the same layers API as the chain spaces
    for seed in range(3):
        arch = SPACE.sample(seed)
        SPACE.validate(arch)
        assert SPACE.encode(arch).sum() == 6
    for combo in itertools.islice(itertools.product(range(5), repeat=6), 0, 15_625, 3121):
        SPACE.build(SPACE.from_indices(list(combo)))
