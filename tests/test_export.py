"""`hwnas export`: parity per target, the manifest schema, clear errors, verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.export.manifest import load_manifest, validate_manifest
from hwnas.export.pipeline import ExportConfig, export, load_model
from hwnas.export.targets import TARGETS, get_target
from hwnas.space import get_space

ROOT = Path(__file__).resolve().parents[1]
PROFILE_128 = ROOT / "profiles" / "ort-cpu-1t-proxyless-128"


def _arch(tmp_path: Path, space: str, resolution: int, seed: int, classes: int | None = None):
    arch = get_space(space, resolution, num_classes=classes).sample(seed)
    path = tmp_path / f"{space}-{seed}.json"
    arch.save(path)
    return arch, path


def _tflite_ok() -> bool:
    return TARGETS["tflite"].available()[0]


@pytest.mark.parametrize("space,resolution,seed", [("proxyless", 64, 1), ("fbnet", 32, 2)])
def test_onnx_and_tflite_parity_within_1e4(tmp_path, space, resolution, seed):
    _, path = _arch(tmp_path, space, resolution, seed)
    targets = ("onnx", "tflite") if _tflite_ok() else ("onnx",)
    manifests = export(ExportConfig(arch=path, targets=targets, out=tmp_path / "out",
                                    parity_inputs=4))
    assert [m["target"] for m in manifests] == list(targets)
    for m in manifests:
        assert m["parity"]["passed"] and m["parity"]["max_abs"] <= 1e-4
        assert m["parity"]["inputs"] == 4 and m["parity"]["top1_agreement"] == 1.0
        folder = tmp_path / "out" / m["target"]
        assert (folder / m["artifact"]["file"]).stat().st_size == m["artifact"]["bytes"]
        assert load_manifest(folder / "manifest.json")["artifact"]["sha256"] == \
            m["artifact"]["sha256"]
        assert m["input"] == {"name": "input", "shape": [1, 3, resolution, resolution],
                              "layout": "NCHW", "dtype": "float32"}


def test_torch_program_parity(tmp_path):
    _, path = _arch(tmp_path, "proxyless", 32, 3)
    (m,) = export(ExportConfig(arch=path, targets=("torch",), out=tmp_path / "out",
                               parity_inputs=2))
    assert m["artifact"]["file"] == "model.pt2" and m["parity"]["max_abs"] <= 1e-5


def test_manifest_schema_rejects_broken_manifests(tmp_path):
    _, path = _arch(tmp_path, "proxyless", 32, 4)
    (m,) = export(ExportConfig(arch=path, targets=("onnx",), out=tmp_path / "out",
                               parity_inputs=2))
    validate_manifest(m)
    bad = json.loads(json.dumps(m))
    bad["artifact"]["sha256"] = "not-a-hash"
    with pytest.raises(HwnasError, match="artifact/sha256"):
        validate_manifest(bad)
    del bad["parity"]
    with pytest.raises(HwnasError, match="parity"):
        validate_manifest(bad)


def test_prediction_with_a_different_head_uses_the_op_predictor(tmp_path):
    if not PROFILE_128.is_dir():
        pytest.skip("shipped profile absent")
    _, path = _arch(tmp_path, "proxyless", 128, 5, classes=10)
    (m,) = export(ExportConfig(arch=path, targets=("onnx",), out=tmp_path / "out",
                               profiles=(PROFILE_128,), parity_inputs=2))
    pred = m["predicted"]
    assert pred["profile"] == PROFILE_128.name and pred["latency_ms"] > 0
    assert "10-class head" in pred["note"]


def test_verify_times_the_file_and_compares_with_the_profile(tmp_path):
    if not PROFILE_128.is_dir():
        pytest.skip("shipped profile absent")
    _, path = _arch(tmp_path, "proxyless", 128, 6)
    (m,) = export(ExportConfig(arch=path, targets=("onnx",), out=tmp_path / "out",
                               profiles=(PROFILE_128,), verify=True, quick=True,
                               parity_inputs=2))
    v = m["verified"]
    assert v["device"] == "ort-cpu" and v["threads"] == 1 and v["runs"] >= 10
    assert v["measured_ms"] > 0 and v["drift_scale"] > 0
    # corrected to the profile's reference speed, unless the machine is too busy to trust it
    used = v["measured_ms"] if v["drift_note"] else v["corrected_ms"]
    assert (v["corrected_ms"] is None) == bool(v["drift_note"])
    assert v["ratio_to_predicted"] == pytest.approx(used / m["predicted"]["latency_ms"])


def test_int8_onnx_reports_accuracy_change(tmp_path):
    from hwnas.search.run import train_arch

    arch, path = _arch(tmp_path, "proxyless", 32, 7, classes=10)
    train_arch(arch, "digits", epochs=1, max_batches=3, out=tmp_path / "train")
    (m,) = export(ExportConfig(arch=path, targets=("onnx",), out=tmp_path / "out",
                               weights=tmp_path / "train" / "model.safetensors",
                               precision="int8", calib="digits"))
    q = m["quantization"]
    assert m["precision"] == "int8" and q["calibration"] == "digits" and q["samples"] == 64
    assert {"accuracy_fp32", "accuracy_int8", "accuracy_change"} <= set(q)
    assert m["parity"]["criterion"] == "top1_agreement >= 0.9"


def test_wrong_target_is_one_clear_error(tmp_path, capsys):
    _, path = _arch(tmp_path, "proxyless", 32, 8)
    with pytest.raises(SystemExit) as e:
        main(["export", str(path), "--target", "onnx,coreml", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown export target 'coreml'" in err and "Traceback" not in err


def test_unsupported_precision_is_one_clear_error():
    with pytest.raises(HwnasError, match="does not support fp16"):
        get_target("onnx").require("fp16")


def test_arch_that_does_not_match_the_weights(tmp_path):
    arch, _ = _arch(tmp_path, "proxyless", 32, 9)
    other = get_space("proxyless", 32).sample(10)
    model = get_space("proxyless", 32).build(other)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights),
              metadata={"arch": other.to_json(None)})
    with pytest.raises(HwnasError, match="does not match the weights: choices"):
        load_model(arch, weights)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    with pytest.raises(HwnasError, match="does not match the weights"):
        load_model(arch, weights)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(HwnasError, match="cannot read weights"):
        load_model(arch, weights)


def test_unwritable_output_folder_is_one_clear_error(tmp_path, capsys):
    _, path = _arch(tmp_path, "proxyless", 32, 11)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["export", str(path), "--out", str(blocker / "sub")])
    assert e.value.code == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_cli_json_prints_the_manifests(tmp_path, capsys):
    _, path = _arch(tmp_path, "proxyless", 32, 12)
    with pytest.raises(SystemExit) as e:
        main(["export", str(path), "--target", "onnx", "--out", str(tmp_path / "o"), "--json"])
    assert e.value.code == 0
    (m,) = json.loads(capsys.readouterr().out)
    validate_manifest(m)
    assert m["target"] == "onnx" and m["verified"] is None


def test_tensorrt_says_what_is_missing(tmp_path):
    ok, reason = TARGETS["tensorrt"].available()
    if ok:
        pytest.skip("TensorRT and a GPU are present: covered by the GPU tests")
    assert reason
    _, path = _arch(tmp_path, "proxyless", 32, 13)
    with pytest.raises(HwnasError, match="cannot export to tensorrt") as e:
        export(ExportConfig(arch=path, targets=("tensorrt",), out=tmp_path / "o"))
    assert reason in str(e.value)


def test_tensorrt_engine_parity_on_a_gpu(tmp_path):
    ok, reason = TARGETS["tensorrt"].available()
    if not ok:
        pytest.skip(f"tensorrt export cannot run here: {reason}")
    _, path = _arch(tmp_path, "proxyless", 64, 14)
    (m,) = export(ExportConfig(arch=path, targets=("tensorrt",), out=tmp_path / "o"))
    assert m["parity"]["max_abs"] <= 1e-3  # TensorRT may pick TF32 kernels for fp32


def test_fp32_parity_rule_and_float32_noise_clause():
    import numpy as np

    from hwnas.export.pipeline import parity

    exact = np.linspace(-10, 10, 20).reshape(2, 10)
    torch32 = exact + 8e-5  # torch's own float32 rounding: 8e-5 from the truth
    ok = parity(torch32, exact - 7e-5, "fp32", exact)  # 1.5e-4 from torch, 7e-5 from the truth
    assert ok["max_abs"] > 1e-4 and ok["within_fp32_noise"] and ok["passed"]
    bad = parity(torch32, exact + 5e-4, "fp32", exact)
    assert not bad["within_fp32_noise"] and not bad["passed"]
    assert parity(torch32, torch32 + 5e-5, "fp32")["passed"]  # plain rule, no float64 run
    assert not parity(torch32, torch32 + 2e-4, "fp32")["passed"]


def test_cli_table_labels_measured_and_scaled_apart(capsys, monkeypatch) -> None:
    """`measured ms` is the time measured on the file; `scaled ms` the drift-scaled one, blank
    when the scaling did not apply (a busy machine)."""
    from hwnas import cli

    monkeypatch.setattr(cli.console, "width", 200)
    base = {"precision": "fp32", "artifact": {"bytes": 1e6},
            "parity": {"passed": True, "max_abs": 1e-8},
            "predicted": {"latency_ms": 2.0}}
    scaled = dict(base, target="onnx", verified={"measured_ms": 2.5, "corrected_ms": 2.2,
                                                  "ratio_to_predicted": 1.1})
    busy = dict(base, target="tflite", verified={"measured_ms": 4.0, "corrected_ms": None,
                                                  "ratio_to_predicted": 2.0})
    cli._print_exports([scaled, busy], Path("o"))
    out = capsys.readouterr().out
    assert "measured ms" in out and "scaled ms" in out
    onnx_row = next(line for line in out.splitlines() if "onnx fp32" in line)
    tflite_row = next(line for line in out.splitlines() if "tflite fp32" in line)
    assert "2.50" in onnx_row and "2.20" in onnx_row
    assert "4.00" in tflite_row and tflite_row.count(" - ") >= 1
