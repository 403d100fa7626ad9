"""Any-model prediction: generic op kinds, their sampler, the ONNX graph splitter, the op predictor."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from hwnas.convert.onnx import to_onnx_bytes
from hwnas.errors import HwnasError
from hwnas.latency.onnx_graph import predict_module, predict_onnx, split_onnx
from hwnas.latency.op_predictor import (
    MemoryModel,
    OpPredictor,
    TreeEnsemble,
    bytes_moved,
    family,
    features,
    fit_memory,
    load_or_fit,
    op_from_row,
)
from hwnas.profile.generic_ops import sample_generic_ops, within_limits
from hwnas.space import OpSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


GENERIC = [
    OpSpec("conv", 16, 32, 14, 14, kernel=3, stride=2, act="relu"),
    OpSpec("conv", 3, 16, 32, 32, kernel=7, stride=2, act="hswish"),
    OpSpec("conv", 24, 24, 14, 14, kernel=5, groups=24, act="relu6"),  # depthwise
    OpSpec("conv", 16, 32, 8, 8, kernel=1, groups=4, act="none"),  # grouped
    OpSpec("linear", 64, 10, 1, 1, act="none"),
    OpSpec("linear", 64, 32, 1, 1, act="relu"),
    OpSpec("maxpool", 8, 8, 15, 15, kernel=3, stride=2),
    OpSpec("maxpool", 8, 8, 16, 16, kernel=2, stride=2),
    OpSpec("avgpool", 8, 8, 16, 16, kernel=3, stride=1),
    OpSpec("gap", 32, 32, 7, 7),
    OpSpec("add", 16, 16, 8, 8, act="relu"),
    OpSpec("add", 16, 16, 8, 8, act="none"),
    OpSpec("mul", 16, 16, 8, 8, act="none"),
    OpSpec("act", 16, 16, 8, 8, act="sigmoid"),
    OpSpec("act", 16, 16, 8, 8, act="hswish"),
    OpSpec("act", 16, 16, 8, 8, act="relu6"),
]
ONNX_TYPE = {"conv": "Conv", "linear": "Gemm", "maxpool": "MaxPool", "avgpool": "AveragePool",
             "gap": "GlobalAveragePool", "add": "Add", "mul": "Mul"}


# --- generic op kinds -------------------------------------------------------------------------

@pytest.mark.parametrize("op", GENERIC, ids=lambda op: op.key)
def test_generic_op_builds_exports_and_splits_back(op: OpSpec) -> None:
    module = op.module()
    with torch.no_grad():
        y = module(torch.randn(op.input_shape))
    expected = (op.batch, op.cout) if op.kind == "linear" else (op.batch, op.cout, op.out_h,
                                                                 op.out_w)
    assert tuple(y.shape) == expected
    data = to_onnx_bytes(module, op.input_shape)
    types = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ONNX_TYPE.get(op.kind, {"sigmoid": "Sigmoid", "hswish": "HardSwish",
                                   "relu6": "Clip"}.get(op.act)) in types
    # the splitter finds the very op again (BN folded, activation fused), the rest is free
    priced = [g for g in split_onnx(data) if g.role != "free"]
    assert [g.spec for g in priced] == [op], [g.spec.key if g.spec else g.op_type for g in priced]


def test_generic_kinds_checks_and_counts() -> None:
    assert OpSpec("maxpool", 8, 8, 16, 16, kernel=3, stride=2).act == "none"  # canonical
    assert OpSpec("gap", 8, 8, 7, 7).key == "gap-i7x7x8-o1x1x8-k1-s1-e1-g1-none-b1-float32"
    assert OpSpec("maxpool", 8, 8, 224, 224, kernel=2, stride=2).out_h == 112
    assert OpSpec("maxpool", 8, 8, 112, 112, kernel=3, stride=2).out_h == 56
    with pytest.raises(ValueError, match="cout .* must equal cin"):
        OpSpec("add", 8, 16, 4, 4)
    with pytest.raises(ValueError, match="needs an activation"):
        OpSpec("act", 8, 8, 4, 4, act="none")
    with pytest.raises(ValueError, match="h == w == 1"):
        OpSpec("linear", 8, 8, 4, 4)
    with pytest.raises(ValueError, match="groups"):
        OpSpec("conv", 6, 8, 4, 4, groups=4)
    fc = OpSpec("linear", 512, 1000, 1, 1, act="none")
    assert fc.macs == 512 * 1000 and fc.params == 512 * 1000 + 1000
    dw = OpSpec("conv", 32, 32, 56, 56, kernel=3, groups=32)
    assert dw.macs == 56 * 56 * 32 * 9 and family(dw) == "dwconv"
    assert OpSpec("add", 8, 8, 4, 4).params == 0 and OpSpec("gap", 8, 8, 4, 4).macs == 0
    assert bytes_moved(OpSpec("add", 8, 8, 4, 4, act="none")) == 4 * 3 * 128
    # existing kinds keep their keys
    assert OpSpec("conv", 3, 32, 224, 224, kernel=3, stride=2).key == \
        "conv-i224x224x3-o112x112x32-k3-s2-e1-g1-relu6-b1-float32"


def test_sample_generic_ops_is_deterministic_distinct_and_mixed() -> None:
    ops = sample_generic_ops(120, seed=0)
    assert ops == sample_generic_ops(120, seed=0)
    assert ops[:50] == sample_generic_ops(50, seed=0)  # prefix-stable: --generic can grow
    assert ops != sample_generic_ops(120, seed=1)
    assert len({op.key for op in ops}) == len(ops) == 120
    assert all(op.batch == 1 and within_limits(op) for op in ops)
    kinds = {op.kind for op in ops}
    assert {"conv", "linear", "gap", "add", "mul", "act"} <= kinds
    assert kinds & {"maxpool", "avgpool"}
    fams = [family(op) for op in ops]
    assert fams.count("conv") > len(ops) / 3 and fams.count("dwconv") >= 10
    assert any(op.cin == 3 for op in ops) and any(1 < op.groups < op.cin for op in ops)
    assert max(op.macs for op in ops) <= 6e8


# --- the graph splitter -----------------------------------------------------------------------

class Small(nn.Module):
    """conv-bn-relu, depthwise conv-bn-relu6, max pool, a residual block, gap, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
                                nn.BatchNorm2d(16), nn.ReLU6())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.c1 = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU())
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.dw(self.stem(x)))
        x = torch.relu(x + self.c2(self.c1(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def _kinds(graph_ops) -> list[str]:
    return [g.spec.kind if g.spec is not None else g.role for g in graph_ops if g.role != "free"]


def test_splitter_maps_a_small_net() -> None:
    data = to_onnx_bytes(Small(), (1, 3, 32, 32))
    ops = split_onnx(data)
    assert _kinds(ops) == ["conv", "conv", "maxpool", "conv", "conv", "fused", "gap", "linear"]
    specs = [g.spec for g in ops if g.spec is not None]
    assert specs[0] == OpSpec("conv", 3, 16, 32, 32, kernel=3, stride=2, act="relu")
    assert specs[1] == OpSpec("conv", 16, 16, 16, 16, kernel=3, groups=16, act="relu6")
    assert specs[2] == OpSpec("maxpool", 16, 16, 16, 16, kernel=3, stride=2)
    assert specs[4].act == "none"  # the conv whose output the residual Add takes
    assert specs[-1] == OpSpec("linear", 16, 10, 1, 1, act="none")
    fused = next(g for g in ops if g.role == "fused")
    assert [n.split("/")[-1] for n in fused.nodes][0].startswith("Add")
    assert len(fused.nodes) == 2  # the Add and the Relu after it
    # without runtime fusion the residual Add is an op of its own, with its ReLU
    plain = split_onnx(data, fuse_residual_add=False)
    assert _kinds(plain) == ["conv", "conv", "maxpool", "conv", "conv", "add", "gap", "linear"]
    assert next(g.spec for g in plain if g.spec is not None and g.spec.kind == "add").act == "relu"
    free = {g.op_type for g in ops if g.role == "free"}
    assert free <= {"Flatten", "Reshape", "Identity", "Constant", "Shape", "Gather", "Unsqueeze",
                    "Concat"}


def test_predict_onnx_prices_from_table_and_predictor() -> None:
    module, shape = Small().eval(), (1, 3, 32, 32)
    specs = [g.spec for g in split_onnx(to_onnx_bytes(module, shape)) if g.spec is not None]
    lut = {op.key: 0.1 * (i + 1) for i, op in enumerate(specs)}
    p = predict_module(module, shape, lut, overhead_ms=0.0)
    assert p.counts() == {"table": len(specs), "free": len(p.ops) - len(specs)}
    assert p.total_ms == pytest.approx(sum(lut.values()))
    assert not p.unknown
    q = predict_module(module, shape, lut, overhead_ms=0.01)
    assert q.total_ms == pytest.approx(sum(lut.values()) - 0.01 * (len(specs) - 1))
    # an op missing from the table and no predictor: reported, counted as 0 ms
    first = specs[0].key
    r = predict_module(module, shape, {k: v for k, v in lut.items() if k != first},
                       overhead_ms=0.0)
    assert r.total_ms == pytest.approx(sum(lut.values()) - lut[first])
    assert len(r.unknown) == 1 and "counted as 0 ms" in r.unknown[0].message
    assert first in r.unknown[0].message
    d = r.to_dict()
    assert {"latency_ms", "ops", "warnings"} <= set(d) and len(d["warnings"]) == 1


class _FlatPredictor:
    """A stand-in op predictor: an activation 0.011 ms, any other op 0.2 ms, overhead 0.001 ms,
    all weights cold."""

    overhead_ms_ = 0.001
    memory_ = MemoryModel(cache_mb=1e-3, hot_ms_per_mb=0.0, cold_ms_per_mb=1.0)

    def predict(self, ops):
        return np.array([0.011 if op.kind == "act" else 0.2 for op in ops])


def test_in_network_corrections_follow_the_layout() -> None:
    module, shape = Small().eval(), (1, 3, 32, 32)
    p = predict_module(module, shape, {}, _FlatPredictor())
    specs = [g.spec for g in split_onnx(to_onnx_bytes(module, shape)) if g.spec is not None]
    # reorders a network does not run: stem out; dw in+out; pool in+out; c1, c2 in+out; gap in
    # (its output goes to Flatten, which needs NCHW); none for the linear layer
    assert p.reorder_ms == pytest.approx(10 * 0.010)
    weights_mb = sum(s.params for s in specs) * 4 / 1e6
    assert p.memory_ms == pytest.approx(weights_mb)
    n, saved = len(specs), 0.001  # the fixed cost of a standalone run, paid once by a network
    assert p.overhead_ms == pytest.approx(saved)
    assert p.total_ms == pytest.approx(n * 0.2 - (n - 1) * saved - 0.1 + weights_mb)
    plain = predict_module(module, shape, {}, _FlatPredictor(), in_network=False)
    assert plain.reorder_ms == plain.memory_ms == 0.0
    assert plain.total_ms == pytest.approx(n * 0.2 - (n - 1) * saved)


def test_memory_model_from_linear_rows() -> None:
    """fit_memory recovers the cache size and cold cost of synthetic fully connected rows."""
    rows = []
    for cin in (64, 128, 256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384):
        w = (cin * 1000 + 1000) * 4 / 1e6
        ms = 0.004 + 0.01 * w + 0.02 * max(0.0, w - 16.0)
        rows.append({**OpSpec("linear", cin, 1000, 1, 1, act="none").to_dict(), "median_ms": ms})
    mem = fit_memory(pd.DataFrame(rows))
    assert mem is not None
    assert mem.cache_mb == pytest.approx(16.0, rel=0.1)
    assert mem.cold_ms_per_mb == pytest.approx(0.03, rel=0.05)
    assert mem.miss_fraction(1.0) == 0.0 and mem.miss_fraction(1000.0) == 1.0
    assert fit_memory(pd.DataFrame(rows[:3])) is None


def _graph_with(node: onnx.NodeProto, extra_inputs=(), out_shape=None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu0")
    graph = helper.make_graph([relu, node], "g", [x, *extra_inputs], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)])


def test_unknown_ops_are_reported_by_name_and_type() -> None:
    einsum = helper.make_node("Einsum", ["r"], ["y"], name="my_einsum", equation="bchw->bhwc")
    p = predict_onnx(_graph_with(einsum, out_shape=[1, 4, 4, 8]), {}, None, overhead_ms=0.0)
    u = {x.node: x for x in p.unknown}
    assert u["my_einsum"].op_type == "Einsum"
    # with no table and no predictor even the Relu is unpriced, and says so
    assert "counted as 0 ms" in u["my_einsum"].message and "relu0" in u
    lut = {OpSpec("act", 8, 8, 4, 4, act="relu").key: 0.02,
           OpSpec("act", 4, 4, 4, 8, act="relu").key: 0.005}  # a pass over its 1x4x4x8 output
    p = predict_onnx(_graph_with(einsum, out_shape=[1, 4, 4, 8]), lut, None, overhead_ms=0.0)
    (u,) = p.unknown
    assert (u.node, u.op_type) == ("my_einsum", "Einsum")
    assert "priced as one elementwise pass over its output" in u.message
    assert p.total_ms == pytest.approx(0.025)
    mystery = helper.make_node("Mystery", ["r"], ["y"], name="odd_one", domain="com.example")
    p = predict_onnx(_graph_with(mystery), lut, None, overhead_ms=0.0)
    (u,) = p.unknown
    assert (u.node, u.op_type) == ("odd_one", "Mystery") and "counted as 0 ms" in u.message
    assert [r.source for r in p.ops] == ["table", "unknown"]


# --- the op predictor -------------------------------------------------------------------------

def _synthetic_rows(ops: list[OpSpec], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ms = [0.01 + op.macs / 2e7 + bytes_moved(op) / 5e6 for op in ops]
    rows = [{"key": op.key, **op.to_dict(), "median_ms": m * rng.lognormal(0, 0.03)}
            for op, m in zip(ops, ms, strict=True)]
    return pd.DataFrame(rows)


def test_op_predictor_round_trip_on_synthetic_rows() -> None:
    ops = sample_generic_ops(160, seed=3)
    df = _synthetic_rows(ops)
    assert op_from_row(df.iloc[0].to_dict()) == ops[0]
    train, test = df.iloc[:120], df.iloc[120:]
    model = OpPredictor(n_estimators=50).fit(train)
    assert set(model.models_) <= set(model.n_rows_) and "conv" in model.models_
    assert model.overhead_ms_ > 0
    pred = model.predict(ops[120:])
    assert pred.shape == (40,) and (pred > 0).all()
    y = test["median_ms"].to_numpy()
    err = np.abs(np.log(pred / y))
    mean_err = np.abs(np.log(np.exp(np.log(train["median_ms"]).mean()) / y))
    assert err.mean() < 0.25 < mean_err.mean()
    assert model.predict([]).shape == (0,)
    with pytest.raises(Exception, match="not fitted"):
        OpPredictor().predict(ops[:1])


def test_tree_ensemble_predicts_what_the_boosted_trees_predict() -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    ops = sample_generic_ops(120, seed=4)
    x, _ = features(ops)
    y = np.log(_synthetic_rows(ops)["median_ms"].to_numpy())
    rng = np.random.default_rng(0)
    for kw in ({"max_depth": 3, "subsample": 0.8}, {"max_depth": 5, "loss": "huber"}):
        gbr = GradientBoostingRegressor(n_estimators=60, random_state=0, **kw).fit(x, y)
        ens = TreeEnsemble.from_gbr(gbr)
        for xx in (x, x + rng.normal(0, 0.3, x.shape)):  # at and between the thresholds
            np.testing.assert_allclose(ens.predict(xx), gbr.predict(xx), rtol=0, atol=1e-6)


def test_op_predictor_saved_in_a_profile_round_trips_safely(tmp_path) -> None:
    import pickle
    import types

    ops = sample_generic_ops(80, seed=3)
    df = _synthetic_rows(ops)
    prof = types.SimpleNamespace(root=tmp_path, ops=df)
    model, how = load_or_fit(prof)
    assert how == "fitted"
    model.save(tmp_path)
    loaded, how = load_or_fit(prof)
    assert how == "saved"
    np.testing.assert_array_equal(loaded.predict(ops), model.predict(ops))
    assert (loaded.overhead_ms_, loaded.memory_, loaded.n_rows_) == \
        (model.overhead_ms_, model.memory_, model.n_rows_)
    # other op rows: the saved predictor is stale, a fresh one is fitted (and not saved)
    changed = types.SimpleNamespace(root=tmp_path, ops=df.iloc[:70])
    assert load_or_fit(changed)[1].startswith("fitted (the saved one predates")
    # an array file holding pickled objects is refused without unpickling them
    arrays = dict(np.load(tmp_path / "op_predictor.npz"))
    arrays["conv.value"] = np.array([types.SimpleNamespace()], dtype=object)
    np.savez(tmp_path / "op_predictor.npz", **arrays)
    with pytest.raises(HwnasError, match="unreadable saved op predictor.*pickle"):
        OpPredictor.load(tmp_path)
    assert load_or_fit(prof)[1].startswith("fitted (")
    (tmp_path / "op_predictor.npz").write_bytes(pickle.dumps(arrays))
    with pytest.raises(HwnasError, match="unreadable saved op predictor"):
        OpPredictor.load(tmp_path)
    (tmp_path / "op_predictor.json").write_text("{")
    with pytest.raises(HwnasError, match="unreadable saved op predictor"):
        OpPredictor.load(tmp_path)


@pytest.mark.slow
def test_op_predictor_beats_the_mean_on_real_measurements() -> None:
    """A few real ort-cpu measurements (quick protocol): held-out error below the mean's."""
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.profile.profiler import Item, build_op, measure_items

    backend = get_backend("ort-cpu", threads=1)
    ok, reason = backend.available()
    if not ok:
        pytest.skip(reason)
    import functools

    ops = [op for op in sample_generic_ops(200, seed=5) if op.macs < 2e7 and
           op.cin * op.h * op.w < 300_000][:36]
    items = [Item(op.key, functools.partial(build_op, op), op.input_shape) for op in ops]
    m = measure_items(backend, items, Protocol.quick(), chunk=12)
    df = pd.DataFrame([{"key": op.key, **op.to_dict(), "median_ms": m[op.key].median}
                       for op in ops])
    train, test = df.iloc[:24], df.iloc[24:]
    model = OpPredictor(n_estimators=100).fit(train)
    y = test["median_ms"].to_numpy()
    err = np.abs(np.log(model.predict(ops[24:]) / y)).mean()
    mean_err = np.abs(np.log(np.exp(np.log(train["median_ms"]).mean()) / y)).mean()
    assert err < mean_err
