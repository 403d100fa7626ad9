"""Any-model prediction from the runtime's own kernels: the split, the random training networks,
the kernel predictor, `hwnas measure` and `hwnas predict MODEL.onnx --verify`."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hwnas.cli import main
from hwnas.devices.kernels import runtime_kernels
from hwnas.devices.measurement import Protocol
from hwnas.devices.registry import get_backend
from hwnas.errors import NotFittedError
from hwnas.latency.kernels import FEATURES, KernelPredictor, features
from hwnas.profile.kernel_nets import measure_kernel_nets, read_kernel_tables
from hwnas.profile.random_nets import MAX_MACS, macs, random_cnn

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "profiles" / "ort-cpu-1t-proxyless-224"


def _export(module: nn.Module, shape, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
    return path


class SEBlock(nn.Module):
    """conv-bn-hswish, depthwise, squeeze-excitation, a residual add, pooling and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16),
                                nn.ReLU())
        self.se1, self.se2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x)
        y = y * torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return self.head((x + y).mean((2, 3)))


@pytest.fixture(scope="module")
def se_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _export(SEBlock(), (1, 3, 64, 64), tmp_path_factory.mktemp("m") / "se.onnx")


def test_kernel_split_is_the_runtimes_optimised_node_list(se_onnx: Path) -> None:
    backend = get_backend("ort-cpu", threads=1)
    prof, graph = backend.node_profile(se_onnx, (1, 3, 64, 64), runs=3, warmup=1)
    kt = runtime_kernels(backend, se_onnx, (1, 3, 64, 64), runs=3, warmup=1)
    executed = [n.name for n in graph.graph.node]
    assert sorted(kt["node"]) == sorted(prof.nodes()["node"])
    assert set(kt["node"]) == set(executed)  # every kernel is a node the runtime executed
    # fusion happened: BatchNorm is gone, the conv carries its activation, layouts are explicit
    original = [n.op_type for n in __import__("onnx").load(str(se_onnx)).graph.node]
    assert "BatchNormalization" not in set(kt["op_type"]) and len(kt) != len(original)
    conv = kt[kt["op_type"] == "Conv"]
    assert (conv["act"] == "HardSwish").any() and conv["macs"].gt(0).all()
    dw = conv[conv["groups"] > 1].iloc[0]
    assert dw["groups"] == dw["cin"] == 16 and dw["k"] == 3
    assert kt["ms"].ge(0).all() and conv["ms"].gt(0).all()  # a Reshape may take 0 us


def test_random_networks_are_seeded_bounded_and_run_in_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    kinds = set()
    for seed in range(6):
        a, b = random_cnn(seed, 64), random_cnn(seed, 64)
        assert a.spec == b.spec and a.input_shape == (1, 3, 64, 64)
        assert macs(a.module, a.input_shape) <= MAX_MACS
        kinds |= {blk.split(":")[0] for blk in a.spec["blocks"]}
        path = _export(a.module, a.input_shape, tmp_path / f"{seed}.onnx")
        x = torch.randn(a.input_shape)
        with torch.no_grad():
            want = a.module(x).numpy()
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"x": x.numpy()})[0]
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-3
    assert len(kinds) >= 3, kinds  # different block types across seeds


def _synthetic(n_nets: int = 30, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kernels whose time is 1 us + 1 ns per MAC + 0.1 ns per byte, nets = their sum + 20 us."""
    rng = np.random.default_rng(seed)
    rows, nets = [], []
    for i in range(n_nets):
        k = int(rng.integers(5, 40))
        cin = rng.choice([8, 16, 32, 64], k)
        cout = rng.choice([8, 16, 32, 64], k)
        hw = rng.choice([8, 16, 32], k) ** 2
        op = rng.choice(["Conv@nchwc", "Add"], k, p=[0.7, 0.3])
        macs_ = np.where(op == "Conv@nchwc", cin * cout * hw * 9, 0)
        inn, out = cin * hw, cout * hw
        w = np.where(op == "Conv@nchwc", cin * cout * 9, 0)
        ms = 1e-3 + macs_ * 1e-6 + 4 * (inn + out + w) * 1e-7
        for j in range(k):
            rows.append({"net": f"n{i}", "node": f"n{i}_{j}", "op": op[j], "op_type": op[j],
                         "macs": macs_[j], "in_elems": inn[j], "out_elems": out[j],
                         "weight_elems": w[j], "n_inputs": 1 if op[j] != "Add" else 2,
                         "k": 3 if op[j] != "Add" else 0, "stride": 1, "groups": 1,
                         "cin": cin[j], "cout": cout[j], "out_hw": hw[j], "act": "",
                         "ms": ms[j]})
        nets.append({"net": f"n{i}", "median_ms": ms.sum() + 0.02, "kernel_sum_ms": ms.sum(),
                     "n_kernels": k})
    return pd.DataFrame(rows), pd.DataFrame(nets)


def test_kernel_predictor_learns_costs_and_the_network_sum(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        KernelPredictor().predict(_synthetic(2)[0])
    k, n = _synthetic(40)
    kp = KernelPredictor(n_estimators=100).fit(k[k["net"] != "n0"], n[n["net"] != "n0"])
    assert set(kp.models_) == {"Conv@nchwc", "Add"}
    held = k[k["net"] == "n0"]
    ms, used = kp.predict(held)
    assert np.allclose(ms, held["ms"], rtol=0.15)
    total = kp.predict_model(held).total_ms
    assert total == pytest.approx(float(n.loc[n["net"] == "n0", "median_ms"].iloc[0]), rel=0.1)
    assert kp.combine_["c"] == pytest.approx(0.02, abs=0.01)
    # an unseen kernel type is priced by the global model, not dropped
    odd = held.assign(op="LRN").iloc[:3]
    assert (kp.predict(odd)[1] == "global").all() and (kp.predict(odd)[0] > 0).all()
    # saved as arrays + JSON and read back without pickle: the same predictions
    kp.save(tmp_path, fitted_on="x")
    again, fitted_on = KernelPredictor.load(tmp_path)
    assert fitted_on == "x" and np.allclose(again.predict(held)[0], ms)
    assert features(held)[0].shape[1] == len(FEATURES)


def test_kernel_nets_are_written_per_chunk_and_resumed(tmp_path: Path) -> None:
    from hwnas.profile.drift import reference_item
    from hwnas.space import get_space

    backend = get_backend("ort-cpu", threads=1)
    ref = reference_item(get_space("proxyless", 64))
    left = measure_kernel_nets(backend, tmp_path, 2, Protocol.quick(), ref, chunk=1,
                               node_runs=3, resolution=64)
    assert left == 0
    kernels, nets = read_kernel_tables(tmp_path)
    assert list(nets["seed"]) == [0, 1] and set(kernels["net"]) == {"k0", "k1"}
    assert nets["median_ms"].gt(0).all() and nets["reference_ms"].gt(0).all()
    assert (nets["n_kernels"] == kernels.groupby("net").size().loc[nets["net"]].values).all()
    # a resumed run measures only the networks not there yet
    left = measure_kernel_nets(backend, tmp_path, 3, Protocol.quick(), ref, chunk=1,
                               node_runs=3, resolution=64)
    assert left == 0 and list(read_kernel_tables(tmp_path)[1]["seed"]) == [0, 1, 2]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, ANSI.sub("", out.out), ANSI.sub("", out.err)


def test_hwnas_measure_gives_the_protocols_statistics_and_fingerprint(se_onnx: Path,
                                                                        capsys) -> None:
    code, out, err = _cli(["measure", str(se_onnx), "--quick", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["median_ms"] > 0 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["n"] >= Protocol.quick().min_runs and r["input_shape"] == [1, 3, 64, 64]
    assert r["reference_ms"] > 0 and r["fingerprint"]["backend"] == "ort-cpu"
    assert r["fingerprint"]["cpu_model"] and r["protocol"]["min_runs"] >= 1
    code, out, err = _cli(["measure", str(se_onnx), "--quick"], capsys)
    assert code == 0 and "measured: median" in out and "drift reference" in out
    code, out, err = _cli(["measure", str(se_onnx), "--device", "litert"], capsys)
    assert code == 2 and err.startswith("error: ") and "runs .tflite files" in err


def test_predict_verify_shows_predicted_and_measured_per_kernel(se_onnx: Path, capsys) -> None:
    if not len(read_kernel_tables(SHIPPED)[1]):
        pytest.skip(f"{SHIPPED.name} has no kernel measurements")
    code, out, err = _cli(["predict", str(se_onnx), "--profile", str(SHIPPED), "--verify",
                           "--quick"], capsys)
    assert code == 0, err
    assert "predicted ms" in out and "measured ms" in out and "diff ms" in out
    assert "as onnxruntime runs them" in out and "largest kernel differences" in out
    assert re.search(r"predicted latency: [0-9.]+ ms", out)
    code, out, err = _cli(["predict", str(se_onnx), "--profile", str(SHIPPED), "--json"],
                          capsys)
    r = json.loads(out)
    assert r["latency_ms"] > 0 and r["kernels"] == len(r["kernel_rows"])
    assert sum(k["predicted_ms"] for k in r["kernel_rows"]) == pytest.approx(r["kernel_sum_ms"])
