"""The held-out zoo of real-world CNNs (benchmarks/zoo.py): every net builds, runs at 96x96, is
deterministic, and exports to ONNX that onnxruntime runs to the same logits."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _zoo_module():
    spec = importlib.util.spec_from_file_location("zoo", ROOT / "benchmarks" / "zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


zoo = _zoo_module()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


REQUIRED_FAMILIES = {"resnet", "vgg", "alexnet", "mobilenet", "mnasnet", "shufflenet", "squeezenet",
                     "efficientnet", "ghostnet", "densenet", "googlenet", "regnet"}


def test_the_zoo_covers_the_families() -> None:
    assert len(zoo.ZOO) >= 22
    assert {s.family for s in zoo.ZOO.values()} >= REQUIRED_FAMILIES
    assert all(s.paper for s in zoo.ZOO.values())


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_net_runs_and_exports_to_matching_onnx(name: str, tmp_path: Path) -> None:
    model, shape = zoo.build(name, 96)
    assert shape == (1, 3, 96, 96) and not model.training
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, zoo.NUM_CLASSES) and torch.isfinite(y).all()
        assert torch.equal(model(x), y), "eval mode is not deterministic"
        assert torch.equal(zoo.build(name, 96)[0](x), y), "build is not reproducible"

    path = zoo.export_onnx(name, 96, tmp_path / f"{name}.onnx")
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    # static shapes (no Shape/Gather arithmetic or If), no merged duplicate initializers (Identity)
    assert ops["Conv"] > 0 and not {"Shape", "Gather", "If", "Identity"} & set(ops), ops
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(["output"], {"input": x.numpy()})[0]
    assert out.shape == (1, zoo.NUM_CLASSES)
    assert np.abs(out - y.numpy()).max() < 1e-3


def test_published_macs_are_reproduced() -> None:
    """Where a paper states its multiply-accumulates at 224, the zoo net is within 6% of it."""
    for name, spec in zoo.ZOO.items():
        if spec.paper_mmacs:
            model = spec.builder(224)
            got = zoo.count_macs(model.eval(), (1, 3, 224, 224)) / 1e6
            assert abs(got / spec.paper_mmacs - 1) < 0.06, (name, got, spec.paper_mmacs)
    assert round(zoo.macs("mobilenet_v1_1.0", 224) / 1e6) == 569  # the paper's figure
