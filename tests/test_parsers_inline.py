"""Parsers of native profiler output on small inline excerpts of the real tool outputs, so they
are tested on a clean checkout; `test_parsers.py` runs on the full files in ../shared/data and
skips without them. The excerpts are real rows and lines, trimmed (see `inline_reference_data`
and the constants below): figures that hold only for a whole file (the per-op rows summing to the
Timings line, 31 nodes) are checked there, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inline_reference_data import TFLITE_NEW_LOG, TFLITE_OLD_LOG

from hwnas.devices.parsers import (
    parse_ort_profile,
    parse_tflite_benchmark,
    parse_trtexec_profile,
    parse_trtexec_times,
)
from hwnas.errors import HwnasError

# --- TFLite benchmark_model -------------------------------------------------------------------


def test_tflite_new_format() -> None:
    r = parse_tflite_benchmark(TFLITE_NEW_LOG)
    assert r.ops["node_type"].tolist() == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D",
                                           "CONV_2D", "SQUEEZE", "SOFTMAX"]
    first = r.ops.iloc[0]
    assert first["name"] == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert (first["start_ms"], first["first_ms"], first["avg_ms"]) == (0.066, 87.754, 60.957)
    assert first["pct"] == 2.066 and first["times_called"] == 1
    # Run Order rows only: the "Top by" row (Conv2d_5_pointwise) and the initialisation
    # profile's AllocateTensors row are not ops of the regular runs
    assert r.ops["name"].is_unique and not r.ops["name"].str.contains("pointwise|Allocate").any()
    assert (r.ops["total_ms"] == r.ops["avg_ms"] * r.ops["times_called"]).all()
    # the regular runs' Timings line (count=50), not the initialisation one (count=1)
    assert r.timings.count == 50 and r.timings.avg_ms == pytest.approx(2949.9)
    assert r.timings.std_ms == pytest.approx(109.77) and r.timings.min_ms == 2727.203
    assert [t.count for t in r.loops] == [1, 50]
    assert r.avg_ms == pytest.approx(2950.34)  # the tool's own timed-loop average
    assert r.params["Num threads"] == "4" and r.init_ms == pytest.approx(17.187)
    by_type = r.by_node_type().set_index("node_type")
    assert by_type.loc["CONV_2D", "nodes"] == 2
    assert by_type.loc["CONV_2D", "ms"] == pytest.approx(60.957 + 12.185)


def test_tflite_old_format() -> None:
    r = parse_tflite_benchmark(TFLITE_OLD_LOG)
    assert len(r.ops) == 7
    assert r.ops.iloc[-1][["node_type", "avg_ms", "name"]].tolist() == [
        "RESHAPE", 0.002, "[MNasNet/Logits/output]"]
    assert r.ops.iloc[0][["node_type", "start_ms", "avg_ms", "name"]].tolist() == [
        "CONV_2D", 0.0, 3.246, "[MNasNet/Conv/Relu6]"]
    assert r.timings.count == 100 and r.timings.avg_ms == pytest.approx(80.6357)
    assert [t.count for t in r.loops] == [10, 100]
    assert r.inference.avg_ms == pytest.approx(80.6702)
    assert r.params["Num runs"] == "100" and r.init_ms == pytest.approx(47.967)
    counts = r.by_node_type().set_index("node_type")["nodes"].to_dict()
    assert counts == {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 1, "ADD": 1, "AVERAGE_POOL_2D": 1,
                      "RESHAPE": 1}


def test_tflite_truncated_and_failed_output() -> None:
    text = TFLITE_NEW_LOG
    init_only = text[: text.index("Operator-wise Profiling Info")]
    with pytest.raises(HwnasError, match="no 'Run Order' table"):  # not AllocateTensors rows
        parse_tflite_benchmark(init_only)
    cut = init_only[: init_only.index("Profiling Info for Benchmark Initialization")]
    with pytest.raises(HwnasError, match="no 'Run Order' table"):
        parse_tflite_benchmark(cut)
    assert parse_tflite_benchmark(cut, require_ops=False).avg_ms == pytest.approx(2950.34)
    failed = "STARTING!\nERROR: Didn't find op for builtin opcode 'FOO'\nFailed to construct.\n"
    with pytest.raises(HwnasError, match="Didn't find op"):
        parse_tflite_benchmark(failed)


# --- onnxruntime --------------------------------------------------------------------------------

# tool_outputs/onnxruntime_profile/ort_profile_mbv2like_cpu_optimized_ORT_ENABLE_ALL_*.json:
# its first two `model_run`s and, of the 32 kernels of each, the first three and the last
# (name, ts and dur in microseconds, op_name, node_index, shapes: verbatim; the other args and
# the other 28 kernels of each run left out).
_SHAPES = {
    "stem_relu_nchwc": ("Conv", "73", [[1, 3, 224, 224], [32, 3, 3, 3], [32]], [1, 32, 112, 112]),
    "b0_dw_relu_nchwc": ("Conv", "74", [[1, 32, 112, 112], [32, 1, 3, 3], [32]],
                         [1, 32, 112, 112]),
    "b0_project_out_nchwc": ("Conv", "75", [[1, 32, 112, 112], [16, 32, 1, 1], [16]],
                             [1, 16, 112, 112]),
    "fc": ("Gemm", "53", [[1, 1280], [1000]], [1, 1000]),
}
_KERNELS = [("stem_relu_nchwc", 11678, 377), ("b0_dw_relu_nchwc", 12060, 193),
            ("b0_project_out_nchwc", 12259, 187), ("fc", 18812, 168),
            ("stem_relu_nchwc", 19337, 203), ("b0_dw_relu_nchwc", 19546, 84),
            ("b0_project_out_nchwc", 19635, 92), ("fc", 23641, 253)]
_RUNS = [(11661, 7336), (19324, 4579)]  # model_run ts, dur


def _ort_events() -> list[dict]:
    """In the file's order: a run's kernels, then its `model_run` (written when it ends)."""
    events: list[dict] = [{"cat": "Session", "pid": 12316, "tid": 12316, "dur": 7655, "ts": 2105,
                           "ph": "X", "name": "session_initialization", "args": {}}]
    for (run_ts, run_dur), kernels in zip(_RUNS, (_KERNELS[:4], _KERNELS[4:]), strict=True):
        for node, ts, dur in kernels:
            op, index, ins, out = _SHAPES[node]
            events.append({"cat": "Node", "pid": 12316, "tid": 12316, "dur": dur, "ts": ts,
                           "ph": "X", "name": f"{node}_kernel_time",
                           "args": {"op_name": op, "provider": "CPUExecutionProvider",
                                    "node_index": index,
                                    "input_type_shape": [{"float": s} for s in ins],
                                    "output_type_shape": [{"float": out}]}})
        events.append({"cat": "Session", "pid": 12316, "tid": 12316, "dur": run_dur,
                       "ts": run_ts, "ph": "X", "name": "model_run", "args": {}})
    return events


@pytest.fixture
def ort_file(tmp_path: Path) -> Path:
    path = tmp_path / "ort_profile.json"
    path.write_text(json.dumps(_ort_events()))
    return path


def test_ort_profile(ort_file: Path) -> None:
    p = parse_ort_profile(ort_file)
    assert p.n_runs == 2
    assert (p.runs["n_kernels"] == 4).all()
    assert p.runs["model_run_ms"].tolist() == pytest.approx([7.336, 4.579])
    assert p.runs["kernel_sum_ms"].tolist() == pytest.approx([0.925, 0.632])
    assert (p.events["run"] >= 0).all()  # every kernel lies inside a model_run
    assert p.events["run"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (p.runs["kernel_sum_ms"] <= p.runs["model_run_ms"]).all()
    assert not p.events["node"].str.endswith("_kernel_time").any()
    assert set(p.events["provider"]) == {"CPUExecutionProvider"}
    first = p.events.iloc[0]
    assert first["op_type"] == "Conv" and first["node"] == "stem_relu_nchwc"
    assert first["input_shapes"][0] == [1, 3, 224, 224]
    assert first["output_shapes"] == [[1, 32, 112, 112]]
    assert p.events["dur_ms"].sum() == pytest.approx(sum(d for _, _, d in _KERNELS) / 1e3)
    nodes = p.nodes(skip_runs=1)
    assert len(nodes) == 4 and (nodes["runs"] == 1).all()
    assert nodes.set_index("node").loc["fc", "mean_ms"] == pytest.approx(0.253)
    ops = p.op_types(skip_runs=1)
    assert ops["share"].sum() == pytest.approx(1.0)
    assert ops.iloc[0]["op_type"] == "Conv"  # the convolutions dominate
    assert ops.set_index("op_type").loc["Gemm", "ms_per_run"] == pytest.approx(0.253)


def test_ort_profile_forms_and_run_inference(ort_file: Path) -> None:
    raw = json.loads(ort_file.read_text())
    by_path = parse_ort_profile(ort_file)
    assert parse_ort_profile({"traceEvents": raw}).events["dur_ms"].equals(
        by_path.events["dur_ms"])
    no_runs = parse_ort_profile([e for e in raw if e.get("name") != "model_run"])
    assert no_runs.n_runs == 2 and no_runs.runs["model_run_ms"].isna().all()
    assert no_runs.events["run"].tolist() == by_path.events["run"].tolist()
    with pytest.raises(HwnasError, match="leaves no run"):
        by_path.nodes(skip_runs=2)


def test_ort_profile_malformed(ort_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "ort.json"
    truncated.write_text(ort_file.read_text()[:700])
    with pytest.raises(HwnasError, match="not valid JSON") as e:
        parse_ort_profile(truncated)
    assert str(truncated) in str(e.value)


# --- trtexec ------------------------------------------------------------------------------------

# tool_outputs/trtexec/examples/pytorch/resnet/A100/fp32/resnet.onnx.engine.profile.json: its
# count and first 3 and last 2 of 32 layers, verbatim.
TRT_PROFILE = [
    {"count": 1},
    {"name": "Conv_0 + Relu_1", "timeMs": 0.52224, "averageMs": 0.52224, "medianMs": 0.52224,
     "percentage": 24.5902},
    {"name": "MaxPool_2", "timeMs": 0.093184, "averageMs": 0.093184, "medianMs": 0.093184,
     "percentage": 4.38766},
    {"name": "Reformatting CopyNode for Output Tensor 0 to MaxPool_2", "timeMs": 0.045056,
     "averageMs": 0.045056, "medianMs": 0.045056, "percentage": 2.1215},
    {"name": "Reformatting CopyNode for Input Tensor 0 to reshape_after_Gemm_48", "timeMs": 0,
     "averageMs": 0, "medianMs": 0, "percentage": 0},
    {"name": "reshape_after_Gemm_48", "timeMs": 0, "averageMs": 0, "medianMs": 0,
     "percentage": 0},
]
# .../tensorflow/resnet/RTX-3090/fp32/resnet.onnx.engine.timing.json: its first 3 of 263
# inferences, verbatim.
TRT_TIMES = [
    {"startEnqMs": 16.6644, "endEnqMs": 16.9316, "startH2dMs": 16.6236, "endH2dMs": 16.6236,
     "startComputeMs": 16.6236, "endComputeMs": 29.6417, "startD2hMs": 29.6417,
     "endD2hMs": 29.6417, "h2dMs": 0, "computeMs": 13.0181, "d2hMs": 0, "latencyMs": 13.0181},
    {"startEnqMs": 16.9366, "endEnqMs": 16.9503, "startH2dMs": 29.6428, "endH2dMs": 29.6428,
     "startComputeMs": 29.6428, "endComputeMs": 42.4284, "startD2hMs": 42.4284,
     "endD2hMs": 42.4284, "h2dMs": 0, "computeMs": 12.7857, "d2hMs": 0, "latencyMs": 12.7857},
    {"startEnqMs": 29.6984, "endEnqMs": 29.7076, "startH2dMs": 42.4305, "endH2dMs": 42.4305,
     "startComputeMs": 42.4305, "endComputeMs": 55.2202, "startD2hMs": 55.2202,
     "endD2hMs": 55.2202, "h2dMs": 0, "computeMs": 12.7898, "d2hMs": 0, "latencyMs": 12.7898},
]


def test_trtexec_profile_rows(tmp_path: Path) -> None:
    path = tmp_path / "resnet.onnx.engine.profile.json"
    path.write_text(json.dumps(TRT_PROFILE, indent=4))
    p = parse_trtexec_profile(path)
    assert p.count == 1 and len(p.layers) == 5
    assert p.layers["name"].tolist()[:2] == ["Conv_0 + Relu_1", "MaxPool_2"]
    assert p.layers["time_ms"].tolist() == pytest.approx((p.layers["average_ms"] * p.count)
                                                         .tolist())
    assert p.layers["median_ms"].tolist() == pytest.approx(p.layers["average_ms"].tolist())
    assert p.total_average_ms == pytest.approx(0.52224 + 0.093184 + 0.045056)
    assert p.layers["percentage"].iloc[0] == pytest.approx(24.5902)
    assert parse_trtexec_profile(TRT_PROFILE).layers.equals(p.layers)  # path or decoded list


def test_trtexec_times_rows(tmp_path: Path) -> None:
    path = tmp_path / "resnet.onnx.engine.timing.json"
    path.write_text(json.dumps(TRT_TIMES))
    t = parse_trtexec_times(path)
    assert {"compute_ms", "latency_ms", "h2d_ms", "start_compute_ms", "end_enq_ms"} <= \
        set(t.inferences)
    assert len(t.inferences) == 3
    assert t.compute_mean_ms == pytest.approx((13.0181 + 12.7857 + 12.7898) / 3)
    assert t.compute_median_ms == pytest.approx(12.7898)
    spans = t.inferences["end_compute_ms"] - t.inferences["start_compute_ms"]
    assert spans.tolist() == pytest.approx(t.inferences["compute_ms"].tolist(), abs=1e-3)


def test_trtexec_malformed(tmp_path: Path) -> None:
    truncated = tmp_path / "p.json"
    truncated.write_text(json.dumps(TRT_PROFILE, indent=4)[:300])
    with pytest.raises(HwnasError, match="not valid JSON") as e:
        parse_trtexec_profile(truncated)
    assert str(truncated) in str(e.value)
