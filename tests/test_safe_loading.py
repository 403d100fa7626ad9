"""No code from files: every file hwnas reads that could carry a pickle is refused without
unpickling it, and paths written inside profiles and manifests cannot send a write elsewhere.

Each payload below creates a marker file when it is unpickled; a control unpickles one on
purpose (the payload works), and every test then asserts that hwnas refused the file with one
error and that the marker does not exist. Covered elsewhere, with the same proof: a ParZC
model's weights (`test_parzc.py`, `ParZC.load`), HELP's weights (`test_few_shot.py`), multi-task
labels (`test_multitask_data.py`). Here: a profile's predictor.skops (a pickle, an untrusted
type), op_predictor.npz and kernel_predictor.npz holding object arrays, CIFAR batches, a torch
pickle passed as `hwnas export --weights`, a ParZC folder through the command line.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_rules import run_cli

from hwnas.errors import HwnasError
from hwnas.space import get_space

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
P128 = ROOT / "profiles" / "ort-cpu-1t-proxyless-128"


class _Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))




def refused(argv: list, name: str) -> str:
    """One `error:` line naming `name`, exit 2, no traceback; returns the line."""
    code, out, err = run_cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err, err
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert name in lines[0], lines[0]
    return lines[0]


def files(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under `root` (lock files aside) with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The control: without hwnas's refusal, loading these files would run the payload."""
    import torch

    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()
    marker.unlink()
    torch.save({"w": _Payload(marker)}, tmp_path / "w.pt")
    torch.load(tmp_path / "w.pt", weights_only=False)
    assert marker.exists()


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    root = tmp_path / "prof"
    root.mkdir()
    for name in ("device.json", "ops.parquet", "nets.parquet"):
        shutil.copy(P128 / name, root / name)
    return root


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    get_space("proxyless", 128).sample(0).save(path)
    return path


# --- inside a profile ---------------------------------------------------------------------------
def test_predictor_skops_holding_a_pickle(profile: Path, arch: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (profile / "predictor.json").write_text(json.dumps(
        {"family": "rf", "alpha": 0.1, "q": 0.05, "format": "skops"}))
    (profile / "predictor.skops").write_bytes(pickle.dumps(_Payload(marker)))
    refused(["predict", arch, "--profile", profile], "predictor.skops")
    assert not marker.exists()


def test_predictor_skops_holding_an_untrusted_type(profile: Path, arch: Path,
                                                   tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "ran"
    (profile / "predictor.json").write_text(json.dumps(
        {"family": "rf", "alpha": 0.1, "q": 0.05, "format": "skops"}))
    (profile / "predictor.skops").write_bytes(sio.dumps({"model": _Payload(marker)}))
    line = refused(["predict", arch, "--profile", profile], "predictor.skops")
    assert "_Payload" in line  # the type is named
    assert not marker.exists()


def _npz_with_object_array(path: Path, marker: Path, **arrays) -> None:
    np.savez(path, **arrays, payload=np.array([_Payload(marker)], dtype=object))


def test_op_predictor_npz_holding_an_object_array(profile: Path, tmp_path: Path) -> None:
    from hwnas.latency.op_predictor import OpPredictor, load_or_fit
    from hwnas.profile.reader import Profile

    marker = tmp_path / "ran"
    load_or_fit(Profile.load(profile))[0].save(profile)  # a real one, then one array replaced
    arrays = dict(np.load(profile / "op_predictor.npz"))
    _npz_with_object_array(profile / "op_predictor.npz", marker, **arrays)
    with pytest.raises(HwnasError, match="op_predictor|op predictor"):
        OpPredictor.load(profile)
    assert not marker.exists()
    # `hwnas predict MODEL.onnx` treats the saved op predictor as a cache: refused, refitted,
    # said so, and still nothing of the file ran
    from hwnas.latency.onnx_graph import predict_onnx_profile

    onnx_path = _tiny_onnx(tmp_path)
    result = predict_onnx_profile(Profile.load(profile), onnx_path)
    assert result["op_predictor"].startswith("fitted (") and "pickle" in result["op_predictor"]
    assert not marker.exists()


def test_kernel_predictor_npz_holding_an_object_array(profile: Path, tmp_path: Path) -> None:
    from hwnas.latency.kernels import FEATURES, KernelPredictor

    marker = tmp_path / "ran"
    _npz_with_object_array(profile / "kernel_predictor.npz", marker,
                           **{"0_threshold": np.zeros(3)})
    (profile / "kernel_predictor.json").write_text(json.dumps(
        {"features": list(FEATURES), "params": {}, "combine": {"a": 1, "b": 0, "c": 0},
         "rows": {}, "models": {"__global__": {"index": 0, "coef": [], "init": 0.0,
                                               "depth": 1}}}))
    with pytest.raises(HwnasError, match="kernel predictor"):
        KernelPredictor.load(profile)
    assert not marker.exists()


def _tiny_onnx(d: Path) -> Path:
    from onnx import TensorProto, helper, save

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save(m, d / "tiny.onnx")
    return d / "tiny.onnx"


# --- data and weights given on the command line -------------------------------------------------
def test_cifar_batches_holding_a_pickle(arch: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    root = tmp_path / "cifar"
    root.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (root / name).write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    refused(["train", arch, "--data", f"cifar10:{root}", "--epochs", "1", "--out",
             tmp_path / "t"], "data_batch_1")
    assert not marker.exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
def test_weights_that_are_a_torch_pickle(name: str, arch: Path, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "ran"
    weights = tmp_path / name
    torch.save({"stem.0.weight": _Payload(marker)}, weights)
    refused(["export", arch, "--weights", weights, "--target", "onnx", "--out",
             tmp_path / "exp"], name)
    assert not marker.exists()
    assert not (tmp_path / "exp").exists() or not any((tmp_path / "exp").rglob("*.onnx"))


def test_parzc_model_folder_holding_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = tmp_path / "model"
    model.mkdir()
    (model / "parzc.json").write_text(json.dumps({"format": "hwnas-parzc-1"}))
    (model / "parzc.safetensors").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    refused(["parzc", "predict", model, "--proxies-table", tmp_path / "p.parquet"], "parzc")
    assert not marker.exists()


# --- paths inside files ---------------------------------------------------------------------------
@pytest.mark.parametrize("artifact", ["../../escaped.onnx", "/tmp/escaped.onnx", "..",
                                      "sub/escaped.onnx"])
def test_a_manifest_path_cannot_lead_outside(artifact: str, tmp_path: Path) -> None:
    """An artifact path in a manifest that leads out of its folder is refused, and the report
    writes nothing, there or anywhere under the folder given."""
    from hwnas.export.manifest import MANIFEST_VERSION

    export = tmp_path / "user" / "export"
    (export / "onnx").mkdir(parents=True)
    doc = {"manifest_version": MANIFEST_VERSION, "hwnas": "0", "created": "2026-11-29",
           "target": "onnx", "precision": "fp32",
           "arch": {"space": "proxyless", "choices": ["k3_e3"] * 21, "resolution": 128},
           "weights": None, "input": {"name": "input", "shape": [1, 3, 128, 128],
                                      "layout": "NCHW", "dtype": "float32"},
           "output": {"shape": [1, 1000]},
           "artifact": {"file": artifact, "bytes": 1000, "sha256": "0" * 64},
           "runtimes": {}, "parity": {"inputs": 1, "max_abs": 0.0, "max_rel": 0.0,
                                      "tolerance_abs": 1e-4, "criterion": "max_abs",
                                      "passed": True, "top1_agreement": 1.0},
           "predicted": None, "verified": None}
    (export / "onnx" / "manifest.json").write_text(json.dumps(doc))
    before = files(tmp_path)
    line = refused(["report", "--profile", P128, "--export", export, "--out",
                    tmp_path / "user" / "r.html"], "manifest.json")
    assert "artifact/file" in line
    assert files(tmp_path) == before
    assert not (tmp_path / "escaped.onnx").exists()


@pytest.mark.parametrize("choice", ["../../escaped", "/tmp/escaped", "k3_e3/../../escaped"])
def test_a_profile_plan_cannot_lead_outside(choice: str, profile: Path, tmp_path: Path) -> None:
    """plan.json names the networks a resumed profile measures; a choice shaped like a path is
    refused before anything is converted or written."""
    from hwnas.devices.registry import get_backend

    doc = json.loads((profile / "device.json").read_text())
    doc["status"] = "incomplete"
    doc["fingerprint"] = get_backend("ort-cpu", threads=1).fingerprint()  # this machine's
    (profile / "device.json").write_text(json.dumps(doc))
    plan = get_space("proxyless", 128).sample(1).to_dict()
    plan["choices"][2] = choice
    (profile / "plan.json").write_text(json.dumps({"archs": [plan]}))
    before = files(tmp_path)
    refused(["profile", "--resolution", "128", "--nets", "200", "--quick", "--out", profile,
             "--resume"], "plan.json")
    assert files(tmp_path) == before
    assert not (tmp_path.parent / "escaped").exists() and not Path("/tmp/escaped").exists()


def test_weights_metadata_cannot_name_another_space(arch: Path, tmp_path: Path) -> None:
    """The arch recorded in a weights file is data, never a path or a module to import."""
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    meta = json.loads(arch.read_text())
    meta["space"] = "../../escaped"
    import torch

    save_file({"x": torch.zeros(1)}, str(weights), metadata={"arch": json.dumps(meta)})
    refused(["export", arch, "--weights", weights, "--target", "onnx", "--out",
             tmp_path / "exp"], "w.safetensors")
    assert not (tmp_path.parent / "escaped").exists()
