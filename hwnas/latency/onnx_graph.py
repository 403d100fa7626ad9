"""Latency of any ONNX model: split the graph into the ops a profile knows, price each, sum.

The kernel-sum method of nn-Meter (Zhang et al., MobiSys 2021): the graph is cut into the units
the runtime executes (a Conv with its folded BatchNorm and fused activation is one kernel), each
unit is priced from the lookup table when it was measured, else by the op predictor
(`hwnas.latency.op_predictor`), and the network latency is the sum, corrected for what the
runtime does differently inside a network than around one op timed alone (`in_network`; this
models onnxruntime's CPU provider, whose graph optimiser was read off its optimised graphs and
per-node profiles):

- fusion: a residual Add (and the activation after it) is fused into the Conv that produces one
  of its inputs, so it costs nothing extra (`fuse_residual_add`). (A Conv's HardSwish is fused
  in a network but not in a conv timed alone, whose output is the graph output; the fused
  epilogue costs about what the two extra nodes do, so such a conv keeps its own price.)
- overhead: every op timed alone pays one session call and the copies of its input and output;
  a network pays that once, so the fixed cost of one standalone run (`overhead_ms`, 3-4 us here)
  is taken off every op but one. (A network still dispatches each node, about 0.2-0.4 us, but an
  op timed alone also dispatches its two reorder nodes; on chains of 8-16 identical convs the
  two roughly cancel: predicted from measured ops within -1% to +19% of the chain.)
- layout: a conv (dense or depthwise) or pool timed alone runs in the blocked NCHWc layout
  between a ReorderInput and a ReorderOutput; inside a network the tensor stays NCHWc from one
  such op to the next, so each reorder whose neighbour is NCHWc too is taken off, priced as one
  elementwise pass over that tensor (a ReLU of its size, less the overhead);
- memory: an op timed alone finds its weights in the cache; a network whose weights and
  activations exceed the cache reloads them on every run. The cost per MB and the cache size come
  from the profile's fully connected ops (`OpPredictor.memory_`), and the network pays
  miss_fraction(weights + activations) * weights * cost per MB.

Ops that cost nothing (Flatten, Reshape, Identity, shape arithmetic ...) are listed as `free`.
Anything else is `unknown`, named with its node and op type; it is priced as one elementwise pass
over its output (a ReLU of that size) when its output shape is known, else counted as 0 ms, and
the message says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import OpSpec

FREE_OPS = {"Flatten", "Reshape", "Identity", "Constant", "Shape", "Squeeze", "Unsqueeze",
            "Dropout", "ConstantOfShape", "Cast", "Size"}
ACT_OPS = {"Relu": "relu", "HardSwish": "hswish", "Sigmoid": "sigmoid",
           "HardSigmoid": "hsigmoid"}
ELEMENTWISE = {"Add": "add", "Sub": "add", "Mul": "mul", "Div": "mul"}
POOLS = {"MaxPool": "maxpool", "AveragePool": "avgpool"}


@dataclass
class GraphOp:
    """One unit of the graph: its first node, the nodes fused into it, and its OpSpec."""

    node: str
    op_type: str
    spec: OpSpec | None
    role: str  # "op" | "free" | "fused" | "unknown"
    nodes: list[str] = field(default_factory=list)
    note: str = ""
    copy_of: OpSpec | None = None  # unknown ops: the elementwise pass that prices them
    idx: list[int] = field(default_factory=list, repr=False)  # node indices
    inputs: list[str] = field(default_factory=list, repr=False)  # data tensors it reads
    outputs: list[str] = field(default_factory=list, repr=False)  # tensors others read
    layout: str = "nchw"  # in a network: "nchwc" (blocked), "nchw", "pass" (Identity)
    graph_output: bool = False


@dataclass
class PredictedOp:
    """A row of an `OnnxPrediction`."""

    node: str
    op_type: str
    key: str | None
    source: str  # "table" | "predicted" | "free" | "unknown"
    ms: float
    note: str = ""

    def to_dict(self) -> dict:
        return {"name": self.node, "op_type": self.op_type, "key": self.key,
                "source": self.source, "ms": self.ms, "note": self.note}


@dataclass
class UnknownOp:
    node: str
    op_type: str
    message: str


@dataclass
class OnnxPrediction:
    """Predicted latency of an ONNX model: the total, one row per op, the unknown ops."""

    total_ms: float
    ops: list[PredictedOp]
    unknown: list[UnknownOp]
    overhead_ms: float = 0.0  # per op, taken off every priced op but one
    reorder_ms: float = 0.0  # layout reorders of ops timed alone that a network does not run
    memory_ms: float = 0.0  # weights a network reloads from memory on every run

    @property
    def sum_ms(self) -> float:
        return float(sum(r.ms for r in self.ops))

    def counts(self) -> dict[str, int]:
        """Number of rows per source."""
        out: dict[str, int] = {}
        for r in self.ops:
            out[r.source] = out.get(r.source, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"latency_ms": self.total_ms, "sum_ms": self.sum_ms,
                "overhead_ms": self.overhead_ms, "reorder_ms": self.reorder_ms,
                "memory_ms": self.memory_ms, "ops": [r.to_dict() for r in self.ops],
                "warnings": [f"{u.node} ({u.op_type}): {u.message}" for u in self.unknown]}


# --- reading the graph ------------------------------------------------------------------------

class _Graph:
    """Shapes (after shape inference), constants, producers and consumers of an ONNX graph."""

    def __init__(self, model, name: str = "the ONNX model") -> None:
        import onnx
        from onnx import numpy_helper

        self.name = name
        model = onnx.shape_inference.infer_shapes(model)
        g = model.graph
        self.nodes = list(g.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            dims = vi.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            self.shapes[vi.name] = shape if vi.type.tensor_type.HasField("shape") else None
        for name, arr in self.consts.items():
            self.shapes[name] = tuple(arr.shape)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.outputs = {o.name for o in g.output}

    def shape(self, name: str) -> tuple[int, ...] | None:
        s = self.shapes.get(name)
        return s if s is not None and all(d > 0 for d in s) else None

    def only_consumer(self, tensor: str) -> int | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def attr(self, node, name: str, default=None):
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default


def _nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(N, C, H, W) of a tensor of rank 1-4 (missing trailing dims are 1)."""
    if not 1 <= len(shape) <= 4:
        return None
    s = (*shape, 1, 1, 1)[:4] if len(shape) > 1 else (1, shape[0], 1, 1)
    return int(s[0]), int(s[1]), int(s[2]), int(s[3])


def _activation(g: _Graph, node) -> str | None:
    """The OpSpec activation a node computes, or None."""
    if node.op_type in ACT_OPS:
        return ACT_OPS[node.op_type]
    if node.op_type == "Clip":
        lo, hi = g.attr(node, "min"), g.attr(node, "max")
        if len(node.input) > 1 and node.input[1] in g.consts:
            lo = float(g.consts[node.input[1]])
        if len(node.input) > 2 and node.input[2] in g.consts:
            hi = float(g.consts[node.input[2]])
        if lo == 0 and hi == 6:
            return "relu6"
        if lo == 0 and (hi is None or hi > 1e30):
            return "relu"
    return None


def _follow_act(g: _Graph, tensor: str, used: set[int]) -> tuple[str, str, list[int]]:
    """An activation that is the only consumer of `tensor`: (act, its output, [its index])."""
    j = g.only_consumer(tensor)
    if j is not None and j not in used:
        act = _activation(g, g.nodes[j])
        if act is not None:
            return act, g.nodes[j].output[0], [j]
    return "none", tensor, []


def _is_shape_arithmetic(g: _Graph, node) -> bool:
    """Nodes on small integer shape tensors (Shape -> Gather -> Concat -> Reshape ...)."""
    shapes = [g.shape(o) for o in node.output]
    return all(s is not None and len(s) <= 1 and int(np.prod(s)) <= 16 for s in shapes) and \
        all(g.shape(i) is None or len(g.shape(i)) <= 1 for i in node.input if i)


# --- splitting --------------------------------------------------------------------------------

def _conv(g: _Graph, i: int, used: set[int]) -> GraphOp:
    node = g.nodes[i]
    x, wshape = g.shape(node.input[0]), g.shape(node.input[1])
    if x is None or wshape is None or len(x) != 4:
        return _unknown(g, node, "its input is not a known 4-D tensor")
    groups = int(g.attr(node, "group", 1))
    if len(wshape) != 4 or x[1] != wshape[1] * groups:  # onnxruntime would refuse to run it
        raise HwnasError(f"{g.name}: Conv node {node.name or i!r} has an input of {x[1]} "
                         f"channels but a weight of shape {list(wshape)} (group {groups})")
    kh, kw = wshape[2], wshape[3]
    strides = g.attr(node, "strides", [1, 1])
    notes = []
    if kh != kw or strides[0] != strides[1]:
        notes.append(f"kernel {kh}x{kw} stride {strides[0]}x{strides[1]} priced as square")
    if any(d != 1 for d in g.attr(node, "dilations", [1, 1])):
        notes.append("dilation ignored")
    nodes, out = [i], node.output[0]
    j = g.only_consumer(out)
    if j is not None and g.nodes[j].op_type == "BatchNormalization":
        nodes.append(j)
        out = g.nodes[j].output[0]
    act, out, more = _follow_act(g, out, used)
    nodes += more
    spec = OpSpec("conv", x[1], wshape[0], x[2], x[3], kernel=max(kh, kw),
                  stride=max(strides), groups=groups, act=act, batch=x[0])
    op = GraphOp(node.name, "Conv", spec, "op", [g.nodes[k].name for k in nodes], "; ".join(notes))
    used.update(nodes)
    return op


def _residual_add(g: _Graph, i: int, used: set[int]) -> list[int] | None:
    """onnxruntime's Conv + Add (+ activation) fusion: the Add (and act) indices, or None.

    Applies when this Conv's output (after an activation-free chain) goes only to an Add whose
    other input is a same-shaped computed tensor (not a constant)."""
    node = g.nodes[i]
    out = node.output[0]
    j = g.only_consumer(out)
    if j is None or j in used or g.nodes[j].op_type != "Add":
        return None
    add = g.nodes[j]
    other = [t for t in add.input if t != out]
    if len(other) != 1 or other[0] in g.consts or g.shape(other[0]) != g.shape(out):
        return None
    _, _, act = _follow_act(g, add.output[0], used)
    return [j, *act]


def _linear(g: _Graph, i: int, used: set[int]) -> GraphOp:
    node = g.nodes[i]
    a, b = g.shape(node.input[0]), g.shape(node.input[1])
    if node.op_type == "MatMul" and (node.input[1] not in g.consts or a is None or len(a) != 2):
        return _unknown(g, node, "a MatMul of two computed tensors (or not 2-D) is no linear layer")
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return _unknown(g, node, "its inputs are not known 2-D tensors")
    trans_a, trans_b = g.attr(node, "transA", 0), g.attr(node, "transB", 0)
    n, k = (a[1], a[0]) if trans_a else a
    m = b[0] if trans_b else b[1]
    nodes, out = [i], node.output[0]
    if node.op_type == "MatMul":  # + a bias Add
        j = g.only_consumer(out)
        if j is not None and g.nodes[j].op_type == "Add" and \
                any(t in g.consts for t in g.nodes[j].input):
            nodes.append(j)
            out = g.nodes[j].output[0]
    act, out, more = _follow_act(g, out, used)
    nodes += more
    used.update(nodes)
    spec = OpSpec("linear", int(k), int(m), 1, 1, act=act, batch=int(n))
    return GraphOp(node.name, node.op_type, spec, "op", [g.nodes[x].name for x in nodes])


def _pool(g: _Graph, i: int) -> GraphOp:
    node = g.nodes[i]
    x = g.shape(node.input[0])
    if x is None or len(x) != 4:
        return _unknown(g, node, "its input is not a known 4-D tensor")
    k = g.attr(node, "kernel_shape", [1, 1])
    s = g.attr(node, "strides", [1, 1])
    note = "" if k[0] == k[1] and s[0] == s[1] else "non-square window priced as square"
    kernel = max(k)
    if kernel % 2 == 0 and min(x[2], x[3]) < kernel:
        return _unknown(g, node, f"pool window {kernel} is larger than its input")
    spec = OpSpec(POOLS[node.op_type], x[1], x[1], x[2], x[3], kernel=kernel, stride=max(s),
                  batch=x[0])
    return GraphOp(node.name, node.op_type, spec, "op", [node.name], note)


def _gap(g: _Graph, i: int) -> GraphOp:
    node = g.nodes[i]
    x = g.shape(node.input[0])
    if node.op_type == "ReduceMean":
        axes = g.attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1] in g.consts:
            axes = g.consts[node.input[1]].tolist()
        if x is None or len(x) != 4 or axes is None or \
                sorted(a % 4 for a in axes) != [2, 3]:
            return _unknown(g, node, "only a mean over H and W is a global pool")
    if x is None or len(x) != 4:
        return _unknown(g, node, "its input is not a known 4-D tensor")
    note = "max priced as average" if node.op_type == "GlobalMaxPool" else ""
    spec = OpSpec("gap", x[1], x[1], x[2], x[3], batch=x[0])
    return GraphOp(node.name, node.op_type, spec, "op", [node.name], note)


def _eltwise(g: _Graph, i: int, used: set[int], kind: str | None = None) -> GraphOp:
    node = g.nodes[i]
    if all(t in g.consts for t in node.input if t):
        return GraphOp(node.name, node.op_type, None, "free", [node.name], "constant")
    out = g.shape(node.output[0])
    dims = _nchw(out) if out is not None else None
    if dims is None:
        return _unknown(g, node, "its output shape is unknown or of rank > 4")
    n, c, h, w = dims
    note = "priced as an elementwise mul" if node.op_type == "BatchNormalization" else ""
    nodes = [i]
    if kind is None:  # a standalone activation
        spec = OpSpec("act", c, c, h, w, act=_activation(g, node), batch=n)
    else:
        act, _, more = _follow_act(g, node.output[0], used)
        nodes += more
        spec = OpSpec(kind, c, c, h, w, act=act, batch=n)
    used.update(nodes)
    return GraphOp(node.name, node.op_type, spec, "op", [g.nodes[x].name for x in nodes], note)


def _unknown(g: _Graph, node, why: str = "") -> GraphOp:
    out = g.shape(node.output[0]) if node.output else None
    dims = _nchw(out) if out is not None else None
    copy = OpSpec("act", dims[1], dims[1], dims[2], dims[3], act="relu", batch=dims[0]) \
        if dims is not None else None
    return GraphOp(node.name, node.op_type, None, "unknown", [node.name], why, copy)


def split_onnx(model, fuse_residual_add: bool = True) -> list[GraphOp]:
    """The ops of an ONNX model (path, bytes or ModelProto) in graph order."""
    g = _Graph(_load(model), _name(model))
    used: set[int] = set()
    ops: list[GraphOp] = []
    for i, node in enumerate(g.nodes):
        if i in used:
            continue
        before = set(used)
        t = node.op_type
        if t == "Conv":
            fused = _residual_add(g, i, used) if fuse_residual_add else None
            ops.append(_conv(g, i, used))
            ops[-1].idx = sorted((used - before) | {i})
            if fused:
                used.update(fused)
                names = [g.nodes[j].name for j in fused]
                ops.append(GraphOp(names[0], "Add", None, "fused", names,
                                   f"fused into Conv {node.name} by the runtime", idx=fused))
            continue
        used.add(i)
        if t in FREE_OPS or _is_shape_arithmetic(g, node):
            ops.append(GraphOp(node.name, t, None, "free", [node.name]))
        elif t in ("Gemm", "MatMul"):
            ops.append(_linear(g, i, used))
        elif t in POOLS:
            ops.append(_pool(g, i))
        elif t in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
            ops.append(_gap(g, i))
        elif t in ELEMENTWISE:
            ops.append(_eltwise(g, i, used, ELEMENTWISE[t]))
        elif t == "BatchNormalization":
            ops.append(_eltwise(g, i, used, "mul"))
        elif _activation(g, node) is not None:
            ops.append(_eltwise(g, i, used))
        else:
            ops.append(_unknown(g, node))
        ops[-1].idx = sorted((used - before) | {i})
    _link(g, ops)
    return ops


def _link(g: _Graph, ops: list[GraphOp]) -> None:
    """Fill each op's data inputs, outputs and in-network layout."""
    for op in ops:
        inside = {t for j in op.idx for t in g.nodes[j].output}
        op.inputs = list(dict.fromkeys(t for j in op.idx for t in g.nodes[j].input
                                       if t and t not in inside and t not in g.consts))
        op.outputs = [t for t in inside if t in g.outputs or
                      any(c not in op.idx for c in g.consumers.get(t, []))]
        op.graph_output = any(t in g.outputs for t in op.outputs)
        op.layout = _layout(g, op)


def _layout(g: _Graph, op: GraphOp) -> str:
    """The layout onnxruntime's CPU provider runs an op in, inside a network (NCHWc transformer:
    dense and depthwise Conv, pools, same-shape Add/Mul, activations, BatchNorm, Concat)."""
    if op.role == "fused":
        return "nchwc"
    if op.role == "free":
        return "pass" if op.op_type in ("Identity", "Dropout") else "nchw"
    if op.role == "unknown":
        return "nchwc" if op.op_type == "Concat" else "nchw"
    spec = op.spec
    if spec.kind == "conv":
        return "nchwc" if _nchwc_conv(spec) else "nchw"
    if spec.kind in ("maxpool", "avgpool", "act"):
        return "nchwc"
    if spec.kind == "gap":
        return "nchw" if op.op_type == "ReduceMean" else "nchwc"
    if spec.kind in ("add", "mul"):
        out = g.shape(op.outputs[0]) if op.outputs else None
        same = out is not None and all(g.shape(t) == out for t in op.inputs)
        return "nchwc" if same else "nchw"
    return "nchw"


def _nchwc_conv(spec: OpSpec) -> bool:
    return spec.groups == 1 or spec.groups == spec.cin == spec.cout


def _name(model) -> str:
    """How errors name a model: its path, else "the ONNX model" (bytes or a ModelProto)."""
    return str(model) if isinstance(model, str | Path) else "the ONNX model"


def _load(model):
    """A ModelProto from a path, bytes or a ModelProto; an unreadable or empty model is an
    `HwnasError` naming the file (a corrupt file must not be "predicted" at 0 ms)."""
    import onnx

    from hwnas.convert import check_onnx_model

    name = _name(model)
    try:
        if isinstance(model, onnx.ModelProto):
            proto = model
        elif isinstance(model, bytes | bytearray):
            proto = onnx.load_from_string(bytes(model))
        else:
            if not Path(model).is_file():
                raise HwnasError(f"{name}: file not found")
            proto = onnx.load(name)
    except HwnasError:
        raise
    except Exception as e:  # protobuf's DecodeError and friends
        raise HwnasError(f"{name}: not a readable ONNX model ({type(e).__name__}: {e})") \
            from None
    check_onnx_model(proto, name)
    if proto is model:  # the caller's own: pin the batch on a copy
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    init = {t.name for t in proto.graph.initializer}
    for inp in proto.graph.input:  # a symbolic batch is priced as one image, as it is timed
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in init and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return proto


# --- pricing ----------------------------------------------------------------------------------

def predict_onnx(model, lut: dict[str, float], op_predictor=None,
                 overhead_ms: float | None = None, fuse_residual_add: bool = True,
                 in_network: bool = True) -> OnnxPrediction:
    """Predict the latency of an ONNX model (path, bytes or ModelProto) on a profiled device.

    `lut`: op key -> measured ms (a profile's `lut`); `op_predictor`: a fitted `OpPredictor`
    for ops the table lacks (without one they count as 0 ms and are reported as unknown).
    `overhead_ms`: the fixed cost of one standalone op run, taken off every priced op but one
    (default: the predictor's `overhead_ms_`, else 0). `in_network`: the corrections for what
    onnxruntime's CPU provider does inside a network (layout reorders, weights reloaded from
    memory; see the module doc); False gives the plain sum (less the overhead).
    """
    graph_ops = split_onnx(model, fuse_residual_add)
    prices = {op_i: _priced_spec(op) for op_i, op in enumerate(graph_ops)}
    passes = _reorder_passes(graph_ops) if in_network else []
    need = [s for s in [*prices.values(), *(p for p, _ in passes)]
            if s is not None and s.key not in lut]
    predicted = {}
    if op_predictor is not None and need:
        uniq = list(dict.fromkeys(need))
        predicted = dict(zip([o.key for o in uniq], op_predictor.predict(uniq), strict=True))
    rows, unknown = [], []
    for op_i, op in enumerate(graph_ops):
        row, msg = _price(op, prices[op_i], lut, predicted)
        rows.append(row)
        if msg:
            unknown.append(UnknownOp(op.node, op.op_type, msg))
    fixed = float(getattr(op_predictor, "overhead_ms_", 0.0))
    if overhead_ms is None:
        overhead_ms = fixed
    reorder = _reorder_ms(passes, lut, predicted, fixed)
    memory = _memory_ms(graph_ops, getattr(op_predictor, "memory_", None)) if in_network else 0.0
    priced = [r for r in rows if r.ms > 0]
    total = sum(r.ms for r in rows) - overhead_ms * max(0, len(priced) - 1) - reorder + memory
    floor = max((r.ms for r in rows), default=0.0)
    return OnnxPrediction(float(max(total, floor)), rows, unknown, overhead_ms, reorder, memory)


def _priced_spec(op: GraphOp) -> OpSpec | None:
    """The op whose time stands for this graph op (an unknown op: its elementwise pass)."""
    return op.spec if op.role == "op" else op.copy_of if op.role == "unknown" else None


def _pass(shape: tuple[int, int, int, int]) -> OpSpec:
    n, c, h, w = shape
    return OpSpec("act", c, c, h, w, act="relu", batch=n)


def _reorder_passes(ops: list[GraphOp]) -> list[tuple[OpSpec, str]]:
    """The reorders that ops timed alone ran and a network does not: (pass over the tensor,
    which op). A conv or pool timed alone reorders its input (a conv only with >= 16 input
    channels; fewer are read as NCHW) and its output; in a network the input reorder goes when
    its producer runs NCHWc too, the output reorder when all its readers do."""
    producer: dict[str, GraphOp] = {t: op for op in ops for t in op.outputs}
    readers: dict[str, list[GraphOp]] = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)

    def layout_of(t: str) -> str:
        op = producer.get(t)
        while op is not None and op.layout == "pass" and op.inputs:
            op = producer.get(op.inputs[0])
        return "nchw" if op is None else op.layout

    def read_nchwc(t: str) -> bool:
        out = []
        for r in readers.get(t, []):
            out += [read_nchwc(u) for u in r.outputs] if r.layout == "pass" else \
                [r.layout == "nchwc"]
        return bool(out) and all(out)

    passes = []
    for op in ops:
        spec = op.spec
        if op.role != "op" or spec.kind not in ("conv", "maxpool", "avgpool", "gap") or \
                (spec.kind == "conv" and not _nchwc_conv(spec)):
            continue
        alone_in = spec.kind != "conv" or spec.cin >= 16
        runs_nchw = op.layout == "nchw"  # e.g. a ReduceMean, timed alone as a NCHWc pool
        data_in = op.inputs[0] if op.inputs else ""
        if alone_in and (runs_nchw or layout_of(data_in) == "nchwc"):
            passes.append((_pass((spec.batch, spec.cin, spec.h, spec.w)), op.node))
        out_ok = all(read_nchwc(t) for t in op.outputs) and not op.graph_output
        if runs_nchw or out_ok:
            passes.append((_pass((spec.batch, spec.cout, spec.out_h, spec.out_w)), op.node))
    return passes


def _reorder_ms(passes: list[tuple[OpSpec, str]], lut: dict[str, float],
                predicted: dict[str, float], overhead_ms: float) -> float:
    total = 0.0
    for spec, _ in passes:
        ms = lut.get(spec.key, predicted.get(spec.key))
        if ms is not None:
            total += max(0.0, ms - overhead_ms)
    return total


def _memory_ms(ops: list[GraphOp], memory) -> float:
    """Weights reloaded from memory on every run (see `OpPredictor.memory_`)."""
    specs = [op.spec for op in ops if op.role == "op"]
    if memory is None or not specs:
        return 0.0
    weights = sum(s.params for s in specs) * 4 / 1e6
    acts = sum(s.batch * s.cout * s.out_h * s.out_w for s in specs) * 4 / 1e6
    return memory.miss_fraction(weights + acts) * weights * memory.cold_ms_per_mb


def _price(op: GraphOp, spec: OpSpec | None, lut: dict[str, float],
           predicted: dict[str, float]) -> tuple[PredictedOp, str]:
    """A row for one graph op and, for an unknown one, the message saying what was done."""
    if op.role in ("free", "fused"):
        return PredictedOp(op.node, op.op_type, None, "free", 0.0, op.note), ""
    if op.role == "op":
        key = spec.key
        if key in lut:
            return PredictedOp(op.node, op.op_type, key, "table", float(lut[key]), op.note), ""
        if key in predicted:
            return PredictedOp(op.node, op.op_type, key, "predicted", float(predicted[key]),
                               op.note), ""
        return (PredictedOp(op.node, op.op_type, key, "unknown", 0.0, op.note),
                f"{key} is not in the table and no op predictor was given: counted as 0 ms")
    why = f" ({op.note})" if op.note else ""
    ms = None if spec is None else lut.get(spec.key, predicted.get(spec.key))
    if ms is None:
        return (PredictedOp(op.node, op.op_type, None, "unknown", 0.0, op.note),
                f"op type {op.op_type} is not modelled{why}: counted as 0 ms")
    return (PredictedOp(op.node, op.op_type, None, "unknown", float(ms), op.note),
            f"op type {op.op_type} is not modelled{why}: priced as one elementwise pass over "
            f"its output ({spec.cin}x{spec.h}x{spec.w}), {ms:.4f} ms")


def predict_module(module: nn.Module, input_shape: tuple[int, ...], lut: dict[str, float],
                   op_predictor=None, **kwargs) -> OnnxPrediction:
    """`predict_onnx` of a torch module, exported as `hwnas.convert.onnx` exports it."""
    from hwnas.convert.onnx import to_onnx_bytes

    return predict_onnx(to_onnx_bytes(module.eval(), tuple(input_shape)), lut, op_predictor,
                        **kwargs)


def predict_onnx_profile(profile, path: str | Path) -> dict:
    """`hwnas predict MODEL.onnx --profile P`: the profile's op predictor (the one saved by
    `hwnas validate` while it matches the op rows, else fitted now) and the prediction; a
    JSON-ready dict (latency_ms, ops, warnings, op_predictor). The onnxruntime-CPU corrections
    (residual-add fusion, layout reorders, memory) apply to `ort-cpu` profiles only."""
    from hwnas.latency.op_predictor import load_or_fit

    predictor, how = load_or_fit(profile)
    ort_cpu = (profile.record.backend or "ort-cpu") == "ort-cpu"
    result = predict_onnx(path, profile.lut, predictor, fuse_residual_add=ort_cpu,
                          in_network=ort_cpu).to_dict()
    result["profile"] = profile.name
    result["op_predictor"] = how
    if predictor is not None and how != "saved":
        result["warnings"].append(f"op predictor {how}; `hwnas validate --profile "
                                  f"{profile.root}` saves it in the profile")
    if not ort_cpu:
        result["warnings"].append(f"the in-network corrections model onnxruntime's CPU provider; "
                                  f"for {profile.record.backend} this is the plain op sum")
    if "source" in profile.ops and not (profile.ops["source"] == "generic").any():
        result["warnings"].append("the profile has no generic ops (hwnas profile --generic N): "
                                  "ops outside its space are extrapolated")
    return result
