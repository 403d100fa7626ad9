"""`hwnas demo`: the whole flow end to end (quick settings), and the shipped-profile reuse rule."""

from __future__ import annotations

import json
import shutil

import pytest

from hwnas.demo import SHIPPED, DemoConfig, reference_speed, run_demo, shipped_profile
from hwnas.export.manifest import load_manifest


def test_quick_demo_runs_every_step(tmp_path):
    done = run_demo(DemoConfig(out=tmp_path / "demo", quick=True))
    assert list(done) == ["profile ort-cpu", "validate", "search", "train", "export onnx",
                          "report"]
    out = tmp_path / "demo"
    summary = json.loads((out / "search" / "summary.json").read_text())
    assert summary["met"] and summary["predicted_ms"] <= summary["budget_ms"]
    m = load_manifest(out / "export" / "onnx" / "manifest.json")
    assert m["parity"]["passed"] and m["verified"]["device"] == "ort-cpu"
    assert m["weights"]["file"].endswith("model.safetensors")
    assert (out / "report.html").stat().st_size > 50_000


def test_shipped_profile_is_reused_only_when_the_fingerprint_matches(tmp_path):
    src = SHIPPED / "ort-cpu-1t-proxyless-128"
    if not src.is_dir():
        pytest.skip("shipped profile absent")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    device = json.loads((dst / "device.json").read_text())
    device["fingerprint"]["cpu_model"] = "Some Other CPU"
    (dst / "device.json").write_text(json.dumps(device))
    path, why = shipped_profile("ort-cpu", 128, root=tmp_path)
    assert path is None and "cpu_model: Some Other CPU" in why
    path, why = shipped_profile("ort-cpu", 96, root=tmp_path)
    assert path is None and "no shipped" in why


def test_budget_is_met_only_within_it() -> None:
    from hwnas.demo import budget_words

    assert budget_words(0.99, 1.0) == "budget 1.0 ms met"
    assert budget_words(1.05, 1.0) == ("budget 1.0 ms exceeded by 5.0%, within the +-10% "
                                       "noise band")
    assert budget_words(1.2, 1.0) == "budget 1.0 ms NOT met (over by 20.0%)"


def test_measured_and_scaled_times_are_labelled_apart() -> None:
    from hwnas.demo import verified_words

    scaled = {"measured_ms": 2.0, "corrected_ms": 1.8, "drift_scale": 0.9, "drift_note": ""}
    assert verified_words(scaled) == ("measured 2.000 ms (scaled to the profile's speed: "
                                      "1.800 ms, factor 0.900)")
    busy = {"measured_ms": 2.0, "corrected_ms": None, "drift_scale": 0.5,
            "drift_note": "busy"}
    assert verified_words(busy) == "measured 2.000 ms (not scaled: the machine was busy)"
    plain = {"measured_ms": 2.0, "corrected_ms": None, "drift_scale": None, "drift_note": ""}
    assert verified_words(plain) == "measured 2.000 ms"


def test_shipped_profile_is_not_reused_when_this_machine_runs_it_at_another_speed(tmp_path):
    """Same fingerprint, but the profile's reference net ran 3x faster than this machine runs
    it: another host behind the same CPU name, so the demo measures instead of reusing."""
    import pandas as pd

    from hwnas.devices.registry import get_backend

    src = SHIPPED / "ort-cpu-1t-proxyless-128"
    if not src.is_dir():
        pytest.skip("shipped profile absent")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    device = json.loads((dst / "device.json").read_text())
    device["fingerprint"] = {**device["fingerprint"],
                             **get_backend("ort-cpu", threads=1).fingerprint()}
    (dst / "device.json").write_text(json.dumps(device))

    def scale_reference(factor: float) -> None:
        for name in ("ops.parquet", "nets.parquet"):
            t = pd.read_parquet(dst / name)
            t["reference_ms"] = t["reference_ms"] * factor
            t.to_parquet(dst / name)

    scale_reference(reference_speed(dst, "ort-cpu"))  # as if profiled on this host, today
    path, why = shipped_profile("ort-cpu", 128, root=tmp_path)
    assert path == dst, why
    scale_reference(1 / 3)
    path, why = shipped_profile("ort-cpu", 128, root=tmp_path)
    assert path is None and "reference net" in why and "as long as" in why
