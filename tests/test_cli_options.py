"""Every CLI option with an invalid value: one `error:` line on stderr, exit code 2, no traceback,
and nothing measured, trained or written first (the value is refused at the boundary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.space import get_space

ROOT = Path(__file__).resolve().parents[1]
P128 = str(ROOT / "profiles" / "ort-cpu-1t-proxyless-128")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("opts")
    arch = d / "arch.json"
    get_space("proxyless", 128).sample(0).save(arch)
    (d / "not_utf8.json").write_bytes(b"\xff\xfe{\x00")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "list.json").write_text(json.dumps([1, 2, 3]))
    huge = get_space("proxyless").sample(0).to_dict()
    huge["resolution"] = 10**9
    (d / "huge.json").write_text(json.dumps(huge))
    (d / "empty.onnx").write_bytes(b"")
    (d / "garbage.onnx").write_bytes(b"not an onnx model at all")
    (d / "a_file").write_text("x")
    return {"arch": str(arch), "dir": str(d), "not_utf8": str(d / "not_utf8.json"),
            "deep": str(d / "deep.json"), "list": str(d / "list.json"),
            "huge": str(d / "huge.json"), "empty_onnx": str(d / "empty.onnx"),
            "garbage_onnx": str(d / "garbage.onnx"), "a_file": str(d / "a_file")}


def cases(f: dict[str, str]) -> dict[str, list[str]]:
    out = f["out"]
    return {
        # arch
        "sample resolution 0": ["arch", "sample", "--resolution", "0"],
        "sample resolution huge": ["arch", "sample", "--resolution", "1000000000"],
        "sample classes 0": ["arch", "sample", "--num-classes", "0"],
        "sample width nan": ["arch", "sample", "--width", "nan"],
        "sample not an int": ["arch", "sample", "--seed", "abc"],
        "sample unknown option": ["arch", "sample", "--bogus"],
        "info not utf-8": ["arch", "info", f["not_utf8"]],
        "info deep json": ["arch", "info", f["deep"]],
        "info json list": ["arch", "info", f["list"]],
        "info resolution 1e9": ["arch", "info", f["huge"]],
        "info a folder": ["arch", "info", f["dir"]],
        # profile
        "profile threads 0": ["profile", "--threads", "0", "--out", out],
        "profile threads -1": ["profile", "--threads", "-1", "--out", out],
        "profile nets -1": ["profile", "--nets", "-1", "--out", out],
        "profile generic -5": ["profile", "--generic", "-5", "--out", out],
        "profile max-minutes 0": ["profile", "--max-minutes", "0", "--out", out],
        "profile resolution 2": ["profile", "--resolution", "2", "--out", out],
        "profile width 0": ["profile", "--width", "0", "--out", out],
        "profile unknown device": ["profile", "--device", "npu9000", "--out", out],
        "profile unknown space": ["profile", "--space", "darts", "--out", out],
        "profile out is a file": ["profile", "--out", f["a_file"]],
        "profile gpu here": ["profile", "--device", "torch-cuda", "--out", out],
        # validate / predict
        "validate missing profile": ["validate", "--profile", f["dir"] + "/nope"],
        "validate test-frac 0": ["validate", "--profile", P128, "--test-frac", "0"],
        "validate test-frac 1": ["validate", "--profile", P128, "--test-frac", "1"],
        "validate alpha 0": ["validate", "--profile", P128, "--alpha", "0"],
        "validate alpha 1.5": ["validate", "--profile", P128, "--alpha", "1.5"],
        "predict nothing": ["predict", "--profile", P128],
        "predict two things": ["predict", f["arch"], "--profile", P128, "--smallest"],
        "predict missing file": ["predict", f["dir"] + "/nope.json", "--profile", P128],
        "predict empty onnx": ["predict", f["empty_onnx"], "--profile", P128],
        "predict garbage onnx": ["predict", f["garbage_onnx"], "--profile", P128],
        "predict folder as profile": ["predict", f["arch"], "--profile", f["dir"]],
        # search / train
        "search budget -1": ["search", "--profile", P128, "--budget-ms", "-1", "--out", out],
        "search budget nan": ["search", "--profile", P128, "--budget-ms", "nan", "--out", out],
        "search method": ["search", "--profile", P128, "--budget-ms", "2", "--method", "darts",
                          "--out", out],
        "search grad": ["search", "--profile", P128, "--budget-ms", "2", "--grad", "x",
                        "--out", out],
        "search loss": ["search", "--profile", P128, "--budget-ms", "2", "--loss", "x",
                        "--out", out],
        "search data": ["search", "--profile", P128, "--budget-ms", "2", "--data", "mnist",
                        "--out", out],
        "search epochs -1": ["search", "--profile", P128, "--budget-ms", "2", "--epochs", "-1",
                             "--out", out],
        "search batch 1": ["search", "--profile", P128, "--budget-ms", "2", "--batch-size", "1",
                           "--out", out],
        "search train-resolution 2": ["search", "--profile", P128, "--budget-ms", "2",
                                      "--train-resolution", "2", "--out", out],
        "search fill-floor 2": ["search", "--profile", P128, "--budget-ms", "2",
                                "--fill-floor", "2", "--out", out],
        "search below fastest": ["search", "--profile", P128, "--budget-ms", "0.01",
                                 "--loss", "add#linear", "--out", out],
        "train missing arch": ["train", f["dir"] + "/nope.json"],
        "train data": ["train", f["arch"], "--data", "mnist", "--out", out],
        "train epochs 0": ["train", f["arch"], "--epochs", "0", "--out", out],
        "train batch 1": ["train", f["arch"], "--batch-size", "1", "--out", out],
        "train resolution 2": ["train", f["arch"], "--train-resolution", "2", "--out", out],
        # export
        "export target": ["export", f["arch"], "--target", "coreml", "--out", out],
        "export no target": ["export", f["arch"], "--target", ",", "--out", out],
        "export fp16+int8": ["export", f["arch"], "--fp16", "--int8", "--out", out],
        "export int8 no calib": ["export", f["arch"], "--int8", "--out", out],
        "export calib": ["export", f["arch"], "--int8", "--calib", "mnist", "--out", out],
        "export missing weights": ["export", f["arch"], "--weights", f["dir"] + "/w.safetensors",
                                   "--out", out],
        "export not weights": ["export", f["arch"], "--weights", f["arch"], "--out", out],
        "export missing profile": ["export", f["arch"], "--profile", f["dir"] + "/nope",
                                   "--out", out],
        "export device": ["export", f["arch"], "--verify", "--device", "npu", "--out", out],
        "export threads 0": ["export", f["arch"], "--verify", "--threads", "0", "--out", out],
        "export out is a file": ["export", f["arch"], "--out", f["a_file"]],
        # report / import / demo
        "report missing profile": ["report", "--profile", f["dir"] + "/nope", "--out",
                                   out + ".html"],
        "report missing run": ["report", "--profile", P128, "--run", f["dir"] + "/nope",
                               "--out", out + ".html"],
        "import yaml missing": ["import", "proxyless-yaml", f["dir"] + "/nope.yaml",
                                "--out", out],
        "import yaml not yaml": ["import", "proxyless-yaml", f["not_utf8"], "--out", out],
        "import csv missing": ["import", "latency-csv", f["dir"] + "/nope.csv", "--device",
                               "raspi4", "--out", out],
        "import csv space": ["import", "latency-csv", f["arch"], "--device", "raspi4",
                             "--space", "darts", "--out", out],
        "demo resolution 0": ["demo", "--resolution", "0", "--out", out],
    }


CASE_NAMES = list(cases({k: "" for k in ("arch", "dir", "not_utf8", "deep", "list", "huge",
                                          "empty_onnx", "garbage_onnx", "a_file", "out")}))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_invalid_option_is_one_error_line(case: str, files, capsys, monkeypatch,
                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args = cases({**files, "out": str(out)})[case]
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    assert info.value.code == 2, (captured.out, captured.err)
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert not out.exists() and not Path(str(out) + ".html").exists(), \
        "nothing is written for a refused input"
