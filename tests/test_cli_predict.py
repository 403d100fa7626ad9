"""`hwnas predict MODEL.onnx --profile DIR`: any ONNX model, priced op by op from a shipped
profile's measurements and its op predictor, through the real command line (`hwnas.cli.main`,
the console entry point), plus the one-line errors for a missing or non-ONNX file.

This is the path of a profile without kernel measurements (the profile is copied without its
kernel tables); the kernel path (`--kernel-nets`) is tested in tests/test_kernels.py."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from hwnas.cli import main

ROOT = Path(__file__).resolve().parents[1]
# the profile with generic op measurements (README: 300) and a saved op predictor
PROFILE = ROOT / "profiles" / "ort-cpu-1t-proxyless-224"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True, scope="module")
def _op_profile(tmp_path_factory) -> None:
    """The shipped profile without its kernel tables (same folder name)."""
    global PROFILE
    shipped = ROOT / "profiles" / "ort-cpu-1t-proxyless-224"
    if not (shipped / "device.json").is_file():
        pytest.skip(f"shipped profile {shipped.name} absent (being replaced?)")
    import shutil

    PROFILE = tmp_path_factory.mktemp("op-profile") / shipped.name
    shutil.copytree(shipped, PROFILE, ignore=shutil.ignore_patterns("kernel*"))


class SmallCNN(nn.Module):
    """A user's own network, not built by hwnas: conv-bn-relu stem, a depthwise separable block
    with a residual add, global pooling and a linear head."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False),
                                nn.BatchNorm2d(width), nn.ReLU6(),
                                nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.dw(x)
        x = self.down(x)
        return self.head(x.mean((2, 3)))


def _onnx(tmp_path: Path, width: int = 16, resolution: int = 64) -> Path:
    """Exported with plain `torch.onnx.export`, as a user would (its own input name)."""
    torch.manual_seed(0)
    path = tmp_path / f"cnn{width}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallCNN(width).eval(), (torch.zeros(1, 3, resolution, resolution),),
                          str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["logits"])
    return path


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, ANSI.sub("", out.out), ANSI.sub("", out.err)


def test_predict_onnx_prints_a_positive_latency(tmp_path: Path, capsys) -> None:
    model = _onnx(tmp_path)
    code, out, err = _cli(["predict", str(model), "--profile", str(PROFILE)], capsys)
    assert code == 0, err
    found = re.findall(r"predicted latency: ([0-9.]+) ms", out)
    assert len(found) == 1, out
    ms = float(found[0])
    assert 0 < ms < 1000
    assert f"{model.name} on {PROFILE.name}" in out  # the per-op table's title
    assert "conv-i64x64x3" in out and "linear-" in out  # per-op rows: the stem, the head
    assert "Traceback" not in out + err


def test_predict_onnx_json(tmp_path: Path, capsys) -> None:
    model = _onnx(tmp_path)
    code, out, err = _cli(["predict", str(model), "--profile", str(PROFILE), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["latency_ms"] > 0 and r["profile"] == PROFILE.name
    assert r["op_predictor"]  # saved in the profile, or fitted now
    ops = r["ops"]
    types = {o["op_type"] for o in ops}
    assert {"Conv", "Gemm"} <= types
    priced = [o for o in ops if o["ms"] > 0]
    assert priced and all(o["source"] in ("table", "predicted") for o in priced)
    # the convs of a user's 64x64 CNN are not in the proxyless 224 table: the op predictor
    # priced them, from the profile's generic op measurements
    assert any(o["source"] == "predicted" for o in priced)
    assert not any(o["source"] == "unknown" for o in ops), r["warnings"]
    # the total is the op sum less the per-op overhead and layout reorders, plus memory
    n = len(priced)
    total = r["sum_ms"] - r["overhead_ms"] * max(0, n - 1) - r["reorder_ms"] + r["memory_ms"]
    assert r["latency_ms"] == pytest.approx(max(total, max(o["ms"] for o in ops)))
    # the text output prints the same figure
    code, text, _ = _cli(["predict", str(model), "--profile", str(PROFILE)], capsys)
    assert code == 0
    assert f"predicted latency: {r['latency_ms']:.3f} ms" in text


def test_a_wider_network_is_predicted_slower(tmp_path: Path, capsys) -> None:
    ms = {}
    for width in (8, 64):
        code, out, err = _cli(["predict", str(_onnx(tmp_path, width)), "--profile",
                               str(PROFILE), "--json"], capsys)
        assert code == 0, err
        ms[width] = json.loads(out)["latency_ms"]
    assert ms[64] > 1.5 * ms[8] > 0, ms  # 64x the MACs in every conv but the stem


@pytest.mark.parametrize("name,content,message", [
    ("missing.onnx", None, "file not found"),
    ("garbage.onnx", b"this is not an onnx model", "not a readable ONNX model"),
    ("model.txt", b"conv 3x3, 16 channels\n", ""),  # not .onnx: read as an arch JSON, refused
])
def test_missing_or_non_onnx_file_is_one_error_line(tmp_path: Path, capsys, name: str,
                                                     content: bytes | None,
                                                     message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out, err = _cli(["predict", str(path), "--profile", str(PROFILE)], capsys)
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and name in lines[0]
    assert "predicted latency" not in out
