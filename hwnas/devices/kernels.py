"""The kernels of a model as the runtime runs them: the nodes of its optimised graph.

onnxruntime rewrites a model before running it (Conv + BatchNorm + activation fused into one
`Conv`/`FusedConv`, the NCHWc blocked layout with explicit `ReorderInput`/`ReorderOutput`,
constant folding, ...). `Backend.node_profile` runs a file with the per-node profiler on and
returns that optimised graph; `kernel_table` describes each executed node as a kernel row:
its kernel type (`op`: the op type, `@nchwc` for blocked-layout ops), configuration (input /
output / weight elements, MACs, kernel size, stride, groups, channels, fused activation) and its
median time. This is nn-Meter's kernel detection (Zhang et al., MobiSys 2021, Sec. 4) done by
the runtime itself instead of by hand-written fusion rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CONV_OPS = {"Conv", "FusedConv", "ConvTranspose"}
MATMUL_OPS = {"Gemm", "MatMul", "FusedGemm", "FusedMatMul"}


def _prod(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def kernel_table(nodes: pd.DataFrame, graph) -> pd.DataFrame:
    """The kernels of one model: one row per node of `nodes` (`OrtProfile.nodes()`: node,
    op_type, median_ms, input_shapes, output_shapes), described with the attributes and
    initializers of the optimised `graph` (an `onnx.ModelProto`) the runtime executed."""
    g = graph.graph
    weights = {t.name for t in g.initializer}
    by_name = {n.name: n for n in g.node}
    rows = []
    for r in nodes.itertuples(index=False):
        node = by_name.get(r.node)
        ins = [list(s) for s in r.input_shapes]
        outs = [list(s) for s in r.output_shapes]
        names = list(node.input) if node is not None else []
        is_w = [i < len(names) and names[i] in weights for i in range(len(ins))]
        data = [s for s, w in zip(ins, is_w, strict=True) if not w]
        wts = [s for s, w in zip(ins, is_w, strict=True) if w]
        out = outs[0] if outs else []
        row = {"node": r.node, "op_type": r.op_type,
               "op": r.op_type + ("@nchwc" if node is not None and node.domain.endswith("nchwc")
                                  else ""),
               "in_elems": sum(_prod(s) for s in data), "out_elems": sum(_prod(s) for s in outs),
               "weight_elems": sum(_prod(s) for s in wts), "n_inputs": len(data), "macs": 0,
               "k": 0, "stride": 1, "groups": 1, "cin": 0, "cout": 0,
               "out_hw": _prod(out[2:]) if len(out) >= 3 else 1,
               "act": (_attr(node, "activation", "") or "") if node is not None else ""}
        if r.op_type in CONV_OPS and len(ins) >= 2 and len(ins[1]) >= 3 and len(ins[0]) >= 3:
            x, w = ins[0], ins[1]
            row.update(macs=_prod(out) * _prod(w[1:]), k=int(w[2]), cin=int(x[1]),
                       cout=int(w[0]), groups=max(1, int(x[1]) // max(1, int(w[1]))),
                       stride=max(1, round(x[2] / out[2])) if len(out) >= 3 and out[2] else 1)
        elif r.op_type in MATMUL_OPS and ins and ins[0]:
            row.update(macs=_prod(out) * int(ins[0][-1]), cin=int(ins[0][-1]),
                       cout=int(out[-1]) if out else 0)
        if "median_ms" in nodes.columns:
            row["ms"] = float(r.median_ms)
        rows.append(row)
    return pd.DataFrame(rows)




def runtime_kernels(backend, path: str | Path, input_shape: tuple[int, ...], runs: int = 20,
                    warmup: int = 5) -> pd.DataFrame:
    """The kernels of the model file at `path` as `backend` runs them, timed per node
    (`ms`: the median over `runs` profiled runs after `warmup`)."""
    prof, graph = backend.node_profile(Path(path), input_shape, runs=runs, warmup=warmup)
    return kernel_table(prof.nodes(), graph)
