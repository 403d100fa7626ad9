"""Parsers of native profiler output, on real tool outputs from ../shared/data (skipped when absent)
plus malformed input, which must raise HwnasError naming the problem."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hwnas.devices.parsers import (
    parse_ort_profile,
    parse_tflite_benchmark,
    parse_trtexec_profile,
    parse_trtexec_times,
)
from hwnas.errors import HwnasError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tool_outputs"


def _data(sub: str) -> Path:
    path = DATA / sub
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared/data is not part of a checkout)")
    return path


def _tflite(name: str) -> str:
    return (_data("tflite_benchmark_model") / name).read_text()


NEW_TFLITE = "meta-tensorflow-lite_qemuriscv64_mobilenet_v1_4threads.txt"
OLD_TFLITE = "proxylessnas_mobile_pixel1_mnasnet_like_oldformat.txt"
TFLITE_FILES = [NEW_TFLITE, OLD_TFLITE]


# --- TFLite benchmark_model ------------------------------------------------------------------


@pytest.mark.parametrize("name", TFLITE_FILES)
def test_tflite_op_sum_matches_timings_line(name: str) -> None:
    """README invariant: the per-op avg ms (x times called) sum within 0.1% of `Timings avg`."""
    r = parse_tflite_benchmark(_tflite(name))
    assert r.timings is not None
    assert r.ops["total_ms"].sum() == pytest.approx(r.timings.avg_ms, rel=1e-3)
    assert r.ops["pct"].sum() == pytest.approx(100.0, abs=0.05)
    assert r.ops["name"].is_unique  # Run Order only: "Top by" rows are not counted again


def test_tflite_new_format() -> None:
    r = parse_tflite_benchmark(_tflite(NEW_TFLITE))
    assert len(r.ops) == 31  # "Number of nodes executed: 31"
    first = r.ops.iloc[0]
    assert first["node_type"] == "CONV_2D"
    assert first["name"] == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert (first["start_ms"], first["first_ms"], first["avg_ms"]) == (0.066, 87.754, 60.957)
    assert first["pct"] == 2.066 and first["times_called"] == 1
    assert r.ops.iloc[-1]["node_type"] == "SOFTMAX"
    # the regular runs' Timings line (count=50), not the initialisation one (count=1)
    assert r.timings.count == 50 and r.timings.avg_ms == pytest.approx(2949.9)
    assert r.timings.std_ms == pytest.approx(109.77) and r.timings.min_ms == 2727.203
    assert [t.count for t in r.loops] == [1, 50]
    assert r.avg_ms == pytest.approx(2950.34)  # the tool's own timed-loop average
    assert r.params["Num threads"] == "4" and r.init_ms == pytest.approx(17.187)
    by_type = r.by_node_type().set_index("node_type")
    assert by_type.loc["CONV_2D", "nodes"] == 15
    assert by_type.loc["CONV_2D", "ms"] == pytest.approx(2651.853, abs=0.02)  # its summary table
    assert by_type.loc["DEPTHWISE_CONV_2D", "nodes"] == 13


def test_tflite_old_format() -> None:
    r = parse_tflite_benchmark(_tflite(OLD_TFLITE))
    assert len(r.ops) == 77  # "Number of nodes executed: 77"
    assert r.ops.iloc[-1][["node_type", "avg_ms", "name"]].tolist() == [
        "RESHAPE", 0.002, "[MNasNet/Logits/output]"]
    assert r.timings.count == 100 and r.timings.avg_ms == pytest.approx(80.6357)
    assert [t.count for t in r.loops] == [10, 100]
    assert r.inference.avg_ms == pytest.approx(80.6702)
    assert r.params["Num runs"] == "100" and r.init_ms == pytest.approx(47.967)
    counts = r.by_node_type().set_index("node_type")["nodes"].to_dict()
    assert counts == {"CONV_2D": 42, "DEPTHWISE_CONV_2D": 20, "ADD": 13, "AVERAGE_POOL_2D": 1,
                      "RESHAPE": 1}


# The layout of newer logs (INFO: prefixes, no [start] column, XNNPACK node types and names with
# spaces, ops called several times per inference); a format sample written for this test.
XNNPACK_STYLE = """INFO: Num threads: [2]
INFO: count=5 first=1200 curr=1000 min=990 max=1200 avg=1040 std=80
INFO: count=20 first=1010 curr=1000 min=980 max=1030 avg=1000.5 std=12
INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                        QUANTIZE            0.100           0.100        10.000%         10.000%             0.000                1       [tfl.quantize]:0
   Convolution (NHWC, QC8) DWConv            0.050           0.050        60.000%         70.000%             0.000               12       Delegate/Convolution (NHWC, QC8) DWConv:1
                   Add (ND, QS8)            0.300           0.300        30.000%        100.000%             0.000                1       Delegate/Add (ND, QS8):2

============================== Top by Computation Time ==============================
                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
   Convolution (NHWC, QC8) DWConv            0.050           0.050        60.000%         60.000%             0.000               12       Delegate/Convolution (NHWC, QC8) DWConv:1

Timings (microseconds): count=20 first=1000 curr=1000 min=990 max=1010 avg=1000 std=5
"""  # noqa: E501


def test_tflite_space_aligned_with_spaces_in_names() -> None:
    r = parse_tflite_benchmark(XNNPACK_STYLE)
    assert r.ops["node_type"].tolist() == ["QUANTIZE", "Convolution (NHWC, QC8) DWConv",
                                           "Add (ND, QS8)"]
    assert r.ops["name"].tolist()[1] == "Delegate/Convolution (NHWC, QC8) DWConv:1"
    assert "start_ms" not in r.ops
    assert r.ops["times_called"].tolist() == [1, 12, 1]
    assert r.ops["total_ms"].sum() == pytest.approx(1.0) == r.timings.avg_ms
    assert r.avg_ms == pytest.approx(1.0005) and r.params["Num threads"] == "2"


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_tflite_empty_output(text: str) -> None:
    with pytest.raises(HwnasError, match="empty"):
        parse_tflite_benchmark(text)


def test_tflite_truncated_and_failed_output() -> None:
    text = _tflite(NEW_TFLITE)
    cut = text[: text.index("Operator-wise Profiling Info")]
    cut = cut[: cut.index("Profiling Info for Benchmark Initialization")]
    with pytest.raises(HwnasError, match="no 'Run Order' table"):
        parse_tflite_benchmark(cut)
    assert parse_tflite_benchmark(cut, require_ops=False).avg_ms == pytest.approx(2950.34)
    init_only = text[: text.index("Operator-wise Profiling Info")]
    with pytest.raises(HwnasError, match="no 'Run Order' table"):  # not AllocateTensors rows
        parse_tflite_benchmark(init_only)
    failed = "STARTING!\nERROR: Didn't find op for builtin opcode 'FOO'\nFailed to construct.\n"
    with pytest.raises(HwnasError, match="Didn't find op"):
        parse_tflite_benchmark(failed)


def test_tflite_bad_row() -> None:
    bad = XNNPACK_STYLE.replace("0.300           0.300", "0.300           x.yz")
    with pytest.raises(HwnasError, match="line 9"):
        parse_tflite_benchmark(bad)


# --- onnxruntime ------------------------------------------------------------------------------


def _ort_files() -> list[Path]:
    return sorted(_data("onnxruntime_profile").glob("*.json"))


@pytest.mark.parametrize("kind,kernels", [("optimized", 32), ("unoptimized", 54)])
def test_ort_profile(kind: str, kernels: int) -> None:
    path = next(p for p in _ort_files() if f"_{kind}_" in p.name)
    p = parse_ort_profile(path)
    assert p.n_runs == 5
    assert (p.runs["n_kernels"] == kernels).all()
    assert (p.events["run"] >= 0).all()  # every kernel lies inside a model_run
    assert (p.runs["kernel_sum_ms"] <= p.runs["model_run_ms"]).all()
    assert not p.events["node"].str.endswith("_kernel_time").any()
    assert set(p.events["provider"]) == {"CPUExecutionProvider"}
    first = p.events.iloc[0]
    assert first["op_type"] == "Conv"
    assert first["input_shapes"][0] == [1, 3, 224, 224]
    raw = json.loads(path.read_text())
    kernel_us = sum(e["dur"] for e in raw if e.get("cat") == "Node"
                    and e["name"].endswith("_kernel_time"))
    assert p.events["dur_ms"].sum() == pytest.approx(kernel_us / 1e3)
    nodes = p.nodes(skip_runs=1)
    assert len(nodes) == kernels and (nodes["runs"] == 4).all()
    ops = p.op_types(skip_runs=1)
    assert ops["share"].sum() == pytest.approx(1.0)
    assert ops.iloc[0]["op_type"] == "Conv"  # the convolutions dominate this net
    fused = "Relu" not in set(p.events["op_type"])
    assert fused == (kind == "optimized")  # graph optimisation fuses the activations


def test_ort_profile_forms_and_run_inference() -> None:
    path = _ort_files()[0]
    raw = json.loads(path.read_text())
    by_path = parse_ort_profile(path)
    assert parse_ort_profile({"traceEvents": raw}).events["dur_ms"].equals(
        by_path.events["dur_ms"])
    no_runs = parse_ort_profile([e for e in raw if e.get("name") != "model_run"])
    assert no_runs.n_runs == 5 and no_runs.runs["model_run_ms"].isna().all()
    assert no_runs.events["run"].tolist() == by_path.events["run"].tolist()
    with pytest.raises(HwnasError, match="leaves no run"):
        by_path.nodes(skip_runs=5)


def test_ort_profile_malformed(tmp_path: Path) -> None:
    path = _ort_files()[0]
    truncated = tmp_path / "ort.json"
    truncated.write_text(path.read_text()[:5000])
    with pytest.raises(HwnasError, match="not valid JSON") as e:
        parse_ort_profile(truncated)
    assert str(truncated) in str(e.value)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(HwnasError, match="is empty"):
        parse_ort_profile(empty)
    with pytest.raises(HwnasError, match="not found"):
        parse_ort_profile(tmp_path / "missing.json")
    with pytest.raises(HwnasError, match="list of trace events"):
        parse_ort_profile({"events": []})
    with pytest.raises(HwnasError, match="no Node"):
        parse_ort_profile([{"cat": "Session", "name": "model_run", "ts": 0, "dur": 5}])
    with pytest.raises(HwnasError, match="dur should be a number"):
        parse_ort_profile([{"cat": "Node", "name": "a_kernel_time", "ts": 0, "dur": "5"}])


# --- trtexec ----------------------------------------------------------------------------------

# The README's 3-35% band has one measured exception: on this RTX-3090 fp32 ResNet the per-layer
# averages sum to only 1.7% above the end-to-end GPU compute mean (1.4% against its timing.json).
BELOW_BAND = {"examples/tensorflow/resnet/RTX-3090/fp32/resnet.onnx.engine.profile.json"}


def _trt_profiles() -> list[Path]:
    return sorted(_data("trtexec").rglob("*.profile.json"))


def _gpu_compute_mean(profile: Path) -> float:
    meta = json.loads(Path(str(profile).replace(".profile.json", ".profile.metadata.json"))
                      .read_text())
    lo, hi, mean = meta["performance_summary"]["GPU Compute Time"][:3]  # min, max, mean, ...
    assert lo <= mean <= hi
    return mean


def test_trtexec_profiles_and_overhead_invariant() -> None:
    seen = {}
    for path in _trt_profiles():
        p = parse_trtexec_profile(path)
        layers = p.layers
        assert p.count >= 1 and len(layers) > 10
        assert layers["percentage"].sum() == pytest.approx(100.0, abs=0.01)
        assert layers["time_ms"].tolist() == pytest.approx(
            (layers["average_ms"] * p.count).tolist(), rel=1e-3, abs=1e-4)
        overhead = p.total_average_ms / _gpu_compute_mean(path) - 1
        rel = path.relative_to(DATA / "trtexec").as_posix()
        seen[rel] = overhead
        assert 0 < overhead < 0.35, (rel, overhead)
        assert (overhead >= 0.03) == (rel not in BELOW_BAND), (rel, overhead)
    assert len(seen) == 10


def test_trtexec_times_agree_with_summary() -> None:
    timings = sorted(_data("trtexec").rglob("*.timing.json"))
    assert timings
    for path in timings:
        t = parse_trtexec_times(path)
        assert {"compute_ms", "latency_ms", "h2d_ms", "start_compute_ms"} <= set(t.inferences)
        profile = Path(str(path).replace(".timing.json", ".profile.json"))
        assert t.compute_mean_ms == pytest.approx(_gpu_compute_mean(profile), rel=0.01)
        assert parse_trtexec_profile(profile).total_average_ms > t.compute_mean_ms


def test_trtexec_object_input_and_optional_median() -> None:
    p = parse_trtexec_profile([{"count": 4}, {"name": "conv", "timeMs": 4.0, "averageMs": 1.0,
                                              "percentage": 100.0}])
    assert p.count == 4 and p.total_average_ms == 1.0
    assert math.isnan(p.layers["median_ms"].iloc[0])


def test_trtexec_malformed(tmp_path: Path) -> None:
    path = _trt_profiles()[0]
    truncated = tmp_path / "p.json"
    truncated.write_text(path.read_text()[:700])
    with pytest.raises(HwnasError, match="not valid JSON") as e:
        parse_trtexec_profile(truncated)
    assert str(truncated) in str(e.value)
    with pytest.raises(HwnasError, match="non-empty JSON list"):
        parse_trtexec_profile([])
    with pytest.raises(HwnasError, match="count"):
        parse_trtexec_profile([{"name": "conv", "averageMs": 1.0}])
    with pytest.raises(HwnasError, match="has no averageMs"):
        parse_trtexec_profile([{"count": 1}, {"name": "conv", "timeMs": 1.0}])
    with pytest.raises(HwnasError, match="element 1"):
        parse_trtexec_profile([{"count": 1}, ["conv", 1.0]])
    with pytest.raises(HwnasError, match="no computeMs"):
        parse_trtexec_times([{"latencyMs": 1.0}])
