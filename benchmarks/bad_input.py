"""Bad input: a fixed, seeded list of malformed inputs of every kind, each run through the real
entry point (`python -m hwnas ...` in a subprocess), and how many broke the rule.

The rule for every bad input: exit code 2, exactly one line on stderr that starts with `error:`
and names the file (or the option) and the problem, no traceback, and no file written (nothing
new or changed in the case's folder or in the shared valid inputs; lock files aside). A bad input
that exits 0 is a silent wrong answer. Each kind also runs one valid control first (exit 0), so
that a bad input fails for its defect, not because the command could never work.

Kinds: arch JSON, profile folders, ONNX models, latency tables, accuracy tables, data folders,
weights files, manifests, saved models (predictors, ParZC models, proxies files inside or beside
a profile), CLI options, run folders.

    nice -n 10 flock /tmp/hwnas_cpu.lock python benchmarks/bad_input.py [--kinds arch,onnx ...]

Writes benchmarks/results/bad_input.md and .json (and, with --keep DIR, leaves the cases there).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import PROFILES, ROOT, Results

SEED = 21
P128 = PROFILES / "ort-cpu-1t-proxyless-128"
MEMORY_LIMIT = 16 << 30  # address space of one case: an absurd allocation fails, not the host
TIMEOUT_S = 300
RULES = ("exit code", "not one error line", "file not named", "traceback", "file written",
         "silent wrong answer", "code from a file ran", "timeout")


@dataclass
class Case:
    """One bad input: `make(d)` writes it into the case folder `d` and returns the argv (strings,
    `{d}` and `{fx}` expanded to the case folder and the shared valid inputs); the error line must
    contain one of `names` (the file or option at fault)."""

    kind: str
    name: str
    make: Callable[[Path], list[str]]
    names: tuple[str, ...]
    control: bool = False  # a valid input: must exit 0
    # a cache the command may refuse and rebuild (a profile's saved op predictor): exit 0 is
    # right when a warning names it
    recovers: bool = False


# --- the shared valid inputs -----------------------------------------------------------------
def build_fixtures(fx: Path) -> None:
    """A profile, an arch, an ONNX model, tables, a data folder, weights, a manifest: all valid."""
    import onnx
    import pandas as pd
    import torch
    from onnx import TensorProto, helper
    from PIL import Image
    from safetensors.torch import save_file

    from hwnas.space import get_space
    from hwnas.space.nb201 import N_ARCHS

    fx.mkdir(parents=True, exist_ok=True)
    prof = fx / "profile"
    prof.mkdir()
    for name in ("device.json", "ops.parquet", "nets.parquet", "plan.json"):
        shutil.copy(P128 / name, prof / name)
    space = get_space("proxyless", 128)
    arch = space.sample(0)
    arch.save(fx / "arch.json")
    small = get_space("proxyless", 32, 0.35, 10).sample(0)
    small.save(fx / "small.json")
    torch.manual_seed(0)
    net = get_space("proxyless", 32, 0.35, 10).build(small)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(fx / "small.safetensors"), metadata={"arch": small.to_json(indent=None)})
    # a tiny ONNX model: conv + relu, 1x3x16x16
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                           np.random.default_rng(0).normal(size=108).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, fx / "tiny.onnx")
    # tables: an HW-NAS-Bench fbnet CSV, nb201 accuracy and latency tables
    rng = np.random.default_rng(0)
    fb = pd.DataFrame(rng.integers(0, 9, (6, 22)), columns=[f"L{i:02d}" for i in range(22)])
    fb["raspi4_ms"] = rng.uniform(5, 9, 6)
    fb.to_csv(fx / "fbnet.csv", index=False)
    idx = np.arange(N_ARCHS)
    pd.DataFrame({"arch_idx": idx, "acc": rng.uniform(50, 95, N_ARCHS)}).to_csv(
        fx / "acc.csv", index=False)
    pd.DataFrame({"arch_idx": idx, "raspi4_ms": rng.uniform(1, 9, N_ARCHS)}).to_csv(
        fx / "lat.csv", index=False)
    # an image folder of two classes
    for c in ("a", "b"):
        (fx / "images" / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                fx / "images" / c / f"{k}.png")
    # an export folder with one manifest
    (fx / "export" / "onnx").mkdir(parents=True)
    (fx / "export" / "onnx" / "manifest.json").write_text(json.dumps(_manifest(), indent=1))


def _manifest() -> dict:
    """A manifest.json that fits `hwnas.export.manifest.SCHEMA` (as `hwnas export` writes)."""
    from hwnas.export.manifest import MANIFEST_VERSION, validate_manifest

    doc = {"manifest_version": MANIFEST_VERSION, "hwnas": "0.1.0",
           "created": "2026-11-29T00:00:00+00:00", "target": "onnx", "precision": "fp32",
           "arch": {"space": "proxyless", "choices": ["k3_e3"] * 21, "resolution": 128},
           "weights": None,
           "input": {"name": "input", "shape": [1, 3, 128, 128], "layout": "NCHW",
                     "dtype": "float32"},
           "output": {"shape": [1, 1000]},
           "artifact": {"file": "model.onnx", "bytes": 1000, "sha256": "0" * 64},
           "runtimes": {"onnxruntime": "1"},
           "parity": {"inputs": 8, "max_abs": 1e-6, "max_rel": 1e-5, "tolerance_abs": 1e-4,
                      "criterion": "max_abs <= 1e-4", "passed": True, "top1_agreement": 1.0},
           "predicted": None, "verified": None}
    validate_manifest(doc)
    return doc


# --- writers of bad files ----------------------------------------------------------------------
def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _copy_profile(fx: Path, d: Path) -> Path:
    dst = d / "prof"
    shutil.copytree(fx / "profile", dst)
    return dst


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Rewrite a JSON file after `change` edits its document in place."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _edit_parquet(path: Path, change: Callable) -> None:
    import pandas as pd

    df = pd.read_parquet(path)
    out = change(df)
    (df if out is None else out).to_parquet(path, index=False)


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _onnx(d: Path, name: str, nodes, inputs, outputs, inits=(), opset: int = 17) -> Path:
    import onnx
    from onnx import helper

    g = helper.make_graph(nodes, "bad", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = d / name
    onnx.save(m, path)
    return path


def _vi(name: str, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# --- the cases ---------------------------------------------------------------------------------
def arch_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    good = json.loads((fx / "arch.json").read_text())

    def variant(change: Callable[[dict], object]) -> str:
        doc = json.loads(json.dumps(good))
        change(doc)  # edits in place
        return json.dumps(doc)

    n = len(good["choices"])
    bad: list[tuple[str, bytes | str]] = [
        ("not UTF-8", b"\xff\xfe{\x00\"space\"" + rng.bytes(32)),
        ("deep nesting (list)", "[" * 100_000 + "]" * 100_000),
        ("deep nesting (object)", '{"a":' * 50_000 + "1" + "}" * 50_000),
        ("empty file", ""),
        ("a JSON list", "[1, 2, 3]"),
        ("resolution 10^9", variant(lambda a: a.update(resolution=10**9))),
        ("resolution 10^400", variant(lambda a: a.update(resolution=10**400))),
        ("resolution a string", variant(lambda a: a.update(resolution="128"))),
        ("resolution a float", variant(lambda a: a.update(resolution=128.5))),
        ("width NaN", variant(lambda a: a.update(width=float("nan")))),
        ("width 1e308", variant(lambda a: a.update(width=1e308))),
        ("num_classes 0", variant(lambda a: a.update(num_classes=0))),
        ("choices a string", variant(lambda a: a.update(choices="k3_e3"))),
        ("unknown choice", variant(lambda a: a["choices"].__setitem__(3, "k9_e9"))),
        ("too few choices", variant(lambda a: a.update(choices=a["choices"][: n - 1]))),
        ("too many choices", variant(lambda a: a.update(choices=a["choices"] * 2))),
        ("unknown space", variant(lambda a: a.update(space="darts"))),
        ("channels 10^9", variant(lambda a: a.update(channels=[10**9] * 7))),
        ("meta a list", variant(lambda a: a.update(meta=[1, 2]))),
        ("unknown field", variant(lambda a: a.update(flops=1))),
    ]
    commands = [
        lambda p, d: ["arch", "info", str(p)],
        lambda p, d: ["predict", str(p), "--profile", str(fx / "profile"), "--json"],
        lambda p, d: ["export", str(p), "--target", "onnx", "--out", str(d / "exp")],
        lambda p, d: ["train", str(p), "--epochs", "1", "--out", str(d / "train")],
    ]
    cases = [Case("arch JSON", "control: predict", lambda d: ["predict", str(fx / "arch.json"),
                                                               "--profile", str(fx / "profile")],
                  (), control=True)]
    for k, (name, data) in enumerate(bad):
        cmd = commands[k % len(commands)]

        def make(d: Path, data=data, cmd=cmd) -> list[str]:
            return cmd(_write(d / "arch.json", data), d)

        cases.append(Case("arch JSON", f"{name} ({cmd(Path('a'), Path('d'))[0]})", make,
                          ("arch.json",)))
    return cases


def profile_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    def case(name: str, change: Callable[[Path], None], names: tuple[str, ...],
             cmd: str = "predict") -> Case:
        def make(d: Path) -> list[str]:
            prof = _copy_profile(fx, d)
            change(prof)
            if cmd == "predict":
                return ["predict", str(fx / "arch.json"), "--profile", str(prof)]
            if cmd == "smallest":
                return ["predict", "--smallest", "--profile", str(prof)]
            if cmd == "validate":
                return ["validate", "--profile", str(prof), "--no-save"]
            if cmd == "report":
                return ["report", "--profile", str(prof), "--out", str(d / "r.html")]
            if cmd == "resume":
                return ["profile", "--resolution", "128", "--out", str(prof), "--resume",
                        "--nets", "200", "--quick"]
            raise ValueError(cmd)
        return Case("profile folder", f"{name} ({cmd})", make, (*names, "prof"))

    dev, ops, nets = "device.json", "ops.parquet", "nets.parquet"

    def truncate(name: str) -> Callable[[Path], None]:
        def f(p: Path) -> None:
            data = (p / name).read_bytes()
            (p / name).write_bytes(data[: len(data) // 2])
        return f

    def column(name: str, col: str, values) -> Callable[[Path], None]:
        def f(p: Path) -> None:
            def g(df):
                df[col] = values(df) if callable(values) else values
            _edit_parquet(p / name, g)
        return f

    def field_(change: Callable[[dict], object]) -> Callable[[Path], None]:
        return lambda p: _edit_json(p / dev, change)

    def other_machine(p: Path) -> None:
        def g(doc):
            doc["fingerprint"]["cpu_model"] = "Some Other CPU 9000"
            doc["status"] = "incomplete"
        _edit_json(p / dev, g)

    def nan_row(df):
        s = df["median_ms"].astype(float).copy()
        s.iloc[int(rng.integers(len(s)))] = float("nan")
        return s

    return [
        Case("profile folder", "control: predict", lambda d: [
            "predict", str(fx / "arch.json"), "--profile", str(_copy_profile(fx, d))], (),
             control=True),
        case("device.json missing", lambda p: (p / dev).unlink(), (dev,)),
        case("device.json not UTF-8", lambda p: (p / dev).write_bytes(b"\xff\xfe" + rng.bytes(40)),
             (dev,)),
        case("device.json deeply nested", lambda p: (p / dev).write_text("[" * 100_000),
             (dev,)),
        case("device.json a list", lambda p: (p / dev).write_text("[]"), (dev,), "smallest"),
        case("device.json no fingerprint", field_(lambda doc: doc.pop("fingerprint")), (dev,)),
        case("device.json no space_settings", field_(lambda doc: doc.pop("space_settings")),
             (dev,), "report"),
        case("device.json resolution a string",
             field_(lambda doc: doc["space_settings"].update(resolution="128")), (dev,)),
        case("device.json resolution 10^9",
             field_(lambda doc: doc["space_settings"].update(resolution=10**9)), (dev,)),
        case("device.json fingerprint a string", field_(lambda doc: doc.update(fingerprint="x")),
             (dev,), "smallest"),
        case("device.json wall_s a string", field_(lambda doc: doc.update(wall_s="1 s")), (dev,)),
        case("device.json schema_version 2", field_(lambda doc: doc.update(schema_version=2)),
             (dev,)),
        case("device.json reference.arch broken",
             field_(lambda doc: doc.update(reference={"arch": {"space": 1}})), (dev,)),
        case("fingerprint of another machine (--resume)", other_machine, ("prof",), "resume"),
        case("ops.parquet missing", lambda p: (p / ops).unlink(), (ops,)),
        case("ops.parquet truncated", truncate(ops), (ops,)),
        case("ops.parquet is text", lambda p: (p / ops).write_text("key,median_ms\na,1\n"),
             (ops,), "smallest"),
        case("ops.parquet empty file", lambda p: (p / ops).write_bytes(b""), (ops,)),
        case("ops.parquet NaN time", column(ops, "median_ms", nan_row), (ops,)),
        case("ops.parquet negative time", column(ops, "median_ms", lambda df: -df["median_ms"]),
             (ops,)),
        case("ops.parquet infinite time", column(ops, "median_ms", float("inf")), (ops,)),
        case("ops.parquet times as text",
             column(ops, "median_ms", lambda df: df["median_ms"].astype(str)), (ops,)),
        case("ops.parquet cin as text", column(ops, "cin", lambda df: df["cin"].astype(str)),
             (ops,), "smallest"),
        case("ops.parquet no key column", lambda p: _edit_parquet(
            p / ops, lambda df: df.drop(columns=["key"])), (ops,)),
        case("ops.parquet no rows", lambda p: _edit_parquet(p / ops, lambda df: df.iloc[:0]),
             (ops,)),
        case("nets.parquet truncated", truncate(nets), (nets,), "validate"),
        case("nets.parquet arch not JSON", column(nets, "arch", "{not json"), (nets,),
             "validate"),
        case("nets.parquet arch of another space", column(
            nets, "arch", json.dumps({"space": "nb201", "choices": ["none"] * 6})), (nets,),
             "validate"),
        case("nets.parquet negative time", column(nets, "median_ms", -1.0), (nets,), "validate"),
        case("nets.parquet one row", lambda p: _edit_parquet(p / nets, lambda df: df.iloc[:1]),
             (nets,), "validate"),
        case("a file instead of a folder", lambda p: (shutil.rmtree(p), p.write_text("x")),
             ("prof",)),
        case("an empty folder", lambda p: [f.unlink() for f in p.iterdir()], ("prof",)),
        case("ops.parquet of another profile", lambda p: shutil.copy(
            PROFILES / "ort-cpu-1t-nb201-32" / ops, p / ops), (ops,)),
        case("device.json null space", field_(lambda doc: doc.update(space=None)), (dev,)),
        case("plan.json broken (--resume)", lambda p: (
            _edit_json(p / dev, lambda doc: doc.update(status="incomplete")),
            (p / "plan.json").write_text('{"archs": [{"space": "proxyless", "choices": '
                                         '["../../x"]}]}')), ("plan.json",), "resume"),
        Case("profile folder", "device.json random bytes", lambda d: [
            "predict", str(fx / "arch.json"), "--profile",
            str(_bytes_in(_copy_profile(fx, d), dev, rng.bytes(200)))], (dev,)),
    ]


def _bytes_in(root: Path, name: str, data: bytes) -> Path:
    (root / name).write_bytes(data)
    return root


def onnx_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    from onnx import TensorProto, helper

    def conv_w(shape):
        return helper.make_tensor("w", TensorProto.FLOAT, shape,
                                  np.zeros(int(np.prod(shape)), np.float32))

    def graph(name: str, build: Callable[[Path], Path]) -> list[tuple[str, Callable]]:
        return [(name, build)]

    models: list[tuple[str, Callable[[Path], Path]]] = []
    models += graph("empty file", lambda d: _write(d / "m.onnx", b""))
    models += graph("random bytes", lambda d: _write(d / "m.onnx", rng.bytes(512)))
    models += graph("text file", lambda d: _write(d / "m.onnx", "this is not a model\n"))
    models += graph("truncated model", lambda d: _write(
        d / "m.onnx", (fx / "tiny.onnx").read_bytes()[:300]))
    models += graph("empty graph", lambda d: _onnx(d, "m.onnx", [], [_vi("x", [1, 3, 8, 8])],
                                                   [_vi("x", [1, 3, 8, 8])]))
    models += graph("unknown op", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")],
        [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 8, 8])]))
    models += graph("dynamic shapes", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_vi("x", ["N", 3, "H", "W"])], [_vi("y", ["N", 4, "H2", "W2"])], [conv_w([4, 3, 3, 3])]))
    models += graph("absurd input 10^5 x 10^5", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [1, 3, 100_000, 100_000])], [_vi("y", [1, 3, 100_000, 100_000])]))
    models += graph("absurd batch 10^9", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_vi("x", [10**9, 3, 16, 16])], [_vi("y", [10**9, 4, 14, 14])], [conv_w([4, 3, 3, 3])]))
    models += graph("absurd channels 10^7", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [1, 10**7, 64, 64])], [_vi("y", [1, 10**7, 64, 64])]))
    models += graph("negative dimension", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [1, 3, -5, 8])], [_vi("y", [1, 3, -5, 8])]))
    models += graph("zero dimension", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [1, 3, 0, 0])], [_vi("y", [1, 3, 0, 0])]))
    models += graph("no input", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Constant", [], ["y"], value=helper.make_tensor(
            "c", TensorProto.FLOAT, [1], [1.0]))], [], [_vi("y", [1])]))
    models += graph("undefined tensor", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Add", ["x", "nowhere"], ["y"])],
        [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 8, 8])]))
    models += graph("weight shape mismatch", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 6, 6])], [conv_w([4, 7, 3, 3])]))
    models += graph("opset 9999", lambda d: _onnx(
        d, "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 8, 8])], opset=9999))
    models += graph("a folder named .onnx", lambda d: (d / "m.onnx").mkdir() or d / "m.onnx")
    cases = [Case("ONNX model", "control: predict", lambda d: [
        "predict", str(fx / "tiny.onnx"), "--profile", str(fx / "profile")], (), control=True)]
    for name, build in models:
        for cmd in ("predict", "measure"):
            def make(d: Path, build=build, cmd=cmd) -> list[str]:
                path = build(d)
                if cmd == "predict":
                    return ["predict", str(path), "--profile", str(fx / "profile")]
                return ["measure", str(path), "--quick"]
            cases.append(Case("ONNX model", f"{name} ({cmd})", make, ("m.onnx",)))
    return cases


def latency_table_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    import pandas as pd

    fb = pd.read_csv(fx / "fbnet.csv")
    lat = pd.read_csv(fx / "lat.csv")

    def csv(change: Callable) -> Callable[[Path], bytes | str]:
        def f(_d: Path) -> str:
            df = fb.copy()
            out = change(df)
            return (df if out is None else out).to_csv(index=False)
        return f

    def set_(col, r, v):
        def g(df):
            df[col] = df[col].astype(object)
            df.loc[r, col] = v
        return g

    imports = [
        ("empty file", lambda d: ""),
        ("header only", lambda d: ",".join(fb.columns) + "\n"),
        ("random bytes", lambda d: rng.bytes(300)),
        ("not UTF-8", lambda d: b"L00,\xff\xfe\n1,2\n"),
        ("no device column", csv(lambda df: df.drop(columns=["raspi4_ms"]))),
        ("NaN latency", csv(set_("raspi4_ms", 2, float("nan")))),
        ("negative latency", csv(set_("raspi4_ms", 1, -3.0))),
        ("infinite latency", csv(set_("raspi4_ms", 0, float("inf")))),
        ("latency as text", csv(set_("raspi4_ms", 3, "fast"))),
        ("op index out of range", csv(set_("L05", 0, 9))),
        ("op index 1.5", csv(set_("L07", 2, 1.5))),
        ("missing layer column", csv(lambda df: df.drop(columns=["L21"]))),
        ("repeated net", csv(lambda df: pd.concat([df, df.iloc[:1]]))),
        ("10^6 columns of junk", lambda d: ",".join(f"c{i}" for i in range(10**6)) + "\n"),
    ]
    cases = [Case("latency table", "control: import latency-csv", lambda d: [
        "import", "latency-csv", str(fx / "fbnet.csv"), "--device", "raspi4", "--out",
        str(d / "prof")], (), control=True)]
    for name, data in imports:
        def make(d: Path, data=data) -> list[str]:
            path = _write(d / "lat.csv", data(d))
            return ["import", "latency-csv", str(path), "--device", "raspi4", "--out",
                    str(d / "prof")]
        cases.append(Case("latency table", f"{name} (import latency-csv)", make, ("lat.csv",)))

    def search(name: str, data: Callable[[], str | bytes]) -> Case:
        def make(d: Path) -> list[str]:
            path = _write(d / "lat.csv", data())
            return ["search", "--method", "random", "--accuracy-table", str(fx / "acc.csv"),
                    "--latency-table", str(path), "--device", "raspi4", "--budget-ms", "5",
                    "--evaluations", "5", "--out", str(d / "run")]
        return Case("latency table", f"{name} (search --latency-table)", make, ("lat.csv",))

    def lat_edit(change):
        def f():
            df = lat.copy()
            out = change(df)
            return (df if out is None else out).to_csv(index=False)
        return f

    cases += [
        search("ten rows", lat_edit(lambda df: df.iloc[:10])),
        search("NaN latency", lat_edit(lambda df: df.__setitem__(
            "raspi4_ms", df["raspi4_ms"].where(df.index != 7)))),
        search("zero latency", lat_edit(lambda df: df.__setitem__(
            "raspi4_ms", df["raspi4_ms"].where(df.index != 3, 0.0)))),
        search("no raspi4 column", lat_edit(lambda df: df.rename(columns={"raspi4_ms": "x"}))),
        search("binary", lambda: rng.bytes(1000)),
    ]
    for name, text in (("fbnet-json deep nesting", "[" * 100_000),
                       ("fbnet-json not UTF-8", b"[\xff\xfe]"),
                       ("fbnet-json wrong layers", json.dumps([[1.0, 2.0]] * 3))):
        def make(d: Path, text=text) -> list[str]:
            return ["import", "fbnet-json", str(_write(d / "lat.json", text))]
        cases.append(Case("latency table", name, make, ("lat.json",)))
    for name, text in (("proxyless-yaml a list", "- 1\n- 2\n"),
                       ("proxyless-yaml deep nesting", "[" * 100_000),
                       ("proxyless-yaml python tag", "!!python/object/apply:os.getcwd []\n")):
        def make(d: Path, text=text) -> list[str]:
            return ["import", "proxyless-yaml", str(_write(d / "lat.yaml", text)), "--out",
                    str(d / "prof")]
        cases.append(Case("latency table", name, make, ("lat.yaml",)))
    return cases


def accuracy_table_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    import pandas as pd

    acc = pd.read_csv(fx / "acc.csv")

    def edit(change):
        def f(_d: Path) -> str:
            df = acc.copy()
            out = change(df)
            return (df if out is None else out).to_csv(index=False)
        return f

    def setval(r, v):
        def g(df):
            df["acc"] = df["acc"].astype(object)
            df.loc[r, "acc"] = v
        return g

    bad = [
        ("empty file", "acc.csv", lambda d: ""),
        ("header only", "acc.csv", lambda d: "arch_idx,acc\n"),
        ("random bytes", "acc.csv", lambda d: rng.bytes(400)),
        ("not UTF-8", "acc.csv", lambda d: b"arch_idx,acc\n0,\xff\xfe\n"),
        ("no arch column", "acc.csv", edit(lambda df: df.rename(columns={"arch_idx": "id"}))),
        ("index out of range", "acc.csv", edit(lambda df: df.__setitem__(
            "arch_idx", df["arch_idx"].where(df.index != 5, 99_999)))),
        ("NaN accuracy", "acc.csv", edit(setval(11, float("nan")))),
        ("accuracy as text", "acc.csv", edit(setval(4, "good"))),
        ("duplicate index", "acc.csv", edit(lambda df: df.__setitem__(
            "arch_idx", df["arch_idx"].where(df.index != 1, 0)))),
        ("half the archs", "acc.csv", edit(lambda df: df.iloc[: len(df) // 2])),
        ("two numeric columns", "acc.csv", edit(lambda df: df.__setitem__("acc2", df["acc"]))),
        ("malformed arch string", "acc.csv", lambda d: "arch_str,acc\n|bogus~0|,1.0\n"),
        ("a .xlsx name", "acc.xlsx", lambda d: "arch_idx,acc\n0,1\n"),
        ("parquet of garbage", "acc.parquet", lambda d: rng.bytes(300)),
        ("infinite accuracy", "acc.csv", edit(setval(0, float("inf")))),
    ]
    cases = [Case("accuracy table", "control: search", lambda d: [
        "search", "--method", "random", "--accuracy-table", str(fx / "acc.csv"), "--latency-table",
        str(fx / "lat.csv"), "--device", "raspi4", "--budget-ms", "5", "--evaluations", "5",
        "--out", str(d / "run")], (), control=True)]
    for k, (name, fname, data) in enumerate(bad):
        def make(d: Path, fname=fname, data=data, k=k) -> list[str]:
            path = _write(d / fname, data(d))
            if k % 3 == 2:
                return ["parzc", "fit", "--proxies-table", str(_proxies(fx)), "--accuracy-table",
                        str(path), "--epochs", "1", "--out", str(d / "model")]
            return ["search", "--method", "random", "--accuracy-table", str(path),
                    "--latency-table", str(fx / "lat.csv"), "--device", "raspi4",
                    "--budget-ms", "5", "--evaluations", "5", "--out", str(d / "run")]
        cmd = "parzc fit" if k % 3 == 2 else "search"
        cases.append(Case("accuracy table", f"{name} ({cmd})", make, (fname,)))
    return cases


def _proxies(fx: Path) -> Path:
    """A small valid proxies file (made once, by `hwnas proxies`)."""
    path = fx / "proxies.parquet"
    if not path.exists():
        proc = _run(["proxies", "--archs", "3", "--proxies", "grad_norm,snip,synflow",
                     "--resolution", "8", "--batch-size", "8", "--out", str(path)], fx)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot make the proxies fixture: {proc.stderr[-2000:]}")
    return path


def data_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    from PIL import Image

    def folder(d: Path, classes: dict[str, list[tuple[str, bytes | None]]]) -> Path:
        root = d / "imgs"
        root.mkdir()
        for c, files in classes.items():
            (root / c).mkdir()
            for name, data in files:
                if data is None:
                    Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
                        root / c / name)
                else:
                    (root / c / name).write_bytes(data)
        return root

    good = [(f"{k}.png", None) for k in range(3)]
    png = (fx / "images" / "a" / "0.png").read_bytes()
    bomb = bytearray(png)
    bomb[16:24] = struct.pack(">II", 200_000, 200_000)  # the IHDR width and height
    bad: list[tuple[str, Callable[[Path], str], tuple[str, ...]]] = [
        ("missing folder", lambda d: f"folder:{d / 'nope'}", ("nope",)),
        ("empty folder", lambda d: f"folder:{folder(d, {})}", ("imgs",)),
        ("one class", lambda d: f"folder:{folder(d, {'a': good})}", ("imgs",)),
        ("a class without images", lambda d: f"folder:{folder(d, {'a': good, 'b': []})}",
         ("imgs",)),
        ("corrupt image", lambda d: f"folder:{folder(d, {'a': good, 'b': [*good, ('x.png', rng.bytes(200))]})}",  # noqa: E501
         ("x.png",)),
        ("empty image file", lambda d: f"folder:{folder(d, {'a': good, 'b': [*good, ('x.jpg', b'')]})}",  # noqa: E501
         ("x.jpg",)),
        ("truncated image", lambda d: f"folder:{folder(d, {'a': good, 'b': [*good, ('x.png', png[:60])]})}",  # noqa: E501
         ("x.png",)),
        ("decompression bomb header", lambda d: f"folder:{folder(d, {'a': good, 'b': [*good, ('x.png', bytes(bomb))]})}",  # noqa: E501
         ("x.png",)),
        ("only text files", lambda d: f"folder:{folder(d, {'a': [('r.txt', b'x')], 'b': [('r.txt', b'y')]})}",  # noqa: E501
         ("imgs",)),
        ("a file instead of a folder", lambda d: f"folder:{_write(d / 'imgs', 'x')}", ("imgs",)),
        ("cifar10 folder empty", lambda d: f"cifar10:{(d / 'cifar').mkdir() or d / 'cifar'}",
         ("cifar",)),
        ("cifar10 batches of random bytes", lambda d: f"cifar10:{_cifar(d, lambda i: rng.bytes(500))}",  # noqa: E501
         ("data_batch", "test_batch", "batches.meta", "cifar")),
        ("cifar10 batch with a code payload", lambda d: f"cifar10:{_cifar(d, lambda i: pickle.dumps(_Payload(d / 'marker')))}",  # noqa: E501
         ("data_batch", "test_batch", "batches.meta", "cifar")),
        ("cifar10 batch of the wrong shape", lambda d: f"cifar10:{_cifar(d, lambda i: pickle.dumps({b'data': np.zeros((4, 7), np.uint8), b'labels': [0] * 4}))}",  # noqa: E501
         ("data_batch", "test_batch", "cifar")),
    ]
    cases = [Case("data folder", "control: proxies", lambda d: [
        "proxies", "--archs", "1", "--proxies", "grad_norm", "--resolution", "8", "--batch-size",
        "4", "--data", f"folder:{fx / 'images'}", "--out", str(d / "p.parquet")], (),
        control=True)]
    for k, (name, spec, names) in enumerate(bad):
        def make(d: Path, spec=spec, k=k) -> list[str]:
            s = spec(d)
            if k % 2:
                return ["train", str(fx / "small.json"), "--data", s, "--epochs", "1",
                        "--out", str(d / "train")]
            return ["proxies", "--archs", "1", "--proxies", "grad_norm", "--resolution", "8",
                    "--batch-size", "4", "--data", s, "--out", str(d / "p.parquet")]
        cmd = "train" if k % 2 else "proxies"
        cases.append(Case("data folder", f"{name} ({cmd})", make, names))
    return cases


def _cifar(d: Path, data: Callable[[int], bytes]) -> Path:
    root = d / "cifar"
    root.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    for i, name in enumerate(names):
        (root / name).write_bytes(data(i))
    return root


def weights_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    import torch
    from safetensors.torch import save_file

    from hwnas.space import Arch, get_space

    state = {k: v for k, v in _load_state(fx / "small.safetensors").items()}
    meta = {"arch": (fx / "small.json").read_text()}
    arch = Arch.load(fx / "small.json")

    def st(change: Callable[[dict, dict], object]) -> Callable[[Path], Path]:
        def f(d: Path) -> Path:
            s, m = dict(state), dict(meta)
            change(s, m)
            path = d / "w.safetensors"
            save_file({k: v.contiguous() for k, v in s.items()}, str(path), metadata=m)
            return path
        return f

    def first(s: dict) -> str:
        return next(k for k in s if s[k].ndim == 4)

    other = get_space("proxyless", 32, 0.35, 10).sample(7)
    torch.manual_seed(1)
    other_state = get_space("proxyless", 32, 0.35, 10).build(other).state_dict()
    wide = Arch(arch.space, arch.choices, arch.resolution, 1.0, arch.num_classes)
    good = (fx / "small.safetensors").read_bytes()
    bad: list[tuple[str, Callable[[Path], Path]]] = [
        ("empty file", lambda d: _write(d / "w.safetensors", b"")),
        ("random bytes", lambda d: _write(d / "w.safetensors", rng.bytes(1000))),
        ("truncated", lambda d: _write(d / "w.safetensors", good[: len(good) // 2])),
        ("header length 2^63", lambda d: _write(d / "w.safetensors",
                                                struct.pack("<Q", 2**63) + b"{}")),
        ("a torch pickle", lambda d: _torch_save({"x": torch.zeros(2)}, d / "w.safetensors")),
        ("a pickle with a code payload", lambda d: _write(d / "w.safetensors", pickle.dumps(
            _Payload(d / "marker")))),
        ("another arch's weights", st(lambda s, m: (s.clear(), s.update(other_state),
                                                    m.update(arch=other.to_json(indent=None))))),
        ("another arch, no metadata", st(lambda s, m: (s.clear(), s.update(other_state),
                                                       m.clear()))),
        ("a tensor missing", st(lambda s, m: s.pop(first(s)))),
        ("an extra tensor", st(lambda s, m: s.update(extra=torch.zeros(3)))),
        ("a tensor of the wrong shape", st(lambda s, m: s.update(
            {first(s): torch.zeros(1, 1, 1, 1)}))),
        ("NaN weights", st(lambda s, m: s.update({first(s): torch.full_like(s[first(s)],
                                                                            float("nan"))}))),
        ("int64 tensors", st(lambda s, m: s.update({first(s): s[first(s)].long()}))),
        ("metadata arch not JSON", st(lambda s, m: m.update(arch="{nope"))),
        ("metadata arch of another width", st(lambda s, m: m.update(
            arch=wide.to_json(indent=None)))),
    ]
    cases = [Case("weights file", "control: export", lambda d: [
        "export", str(fx / "small.json"), "--weights", str(fx / "small.safetensors"),
        "--target", "onnx", "--out", str(d / "exp")], (), control=True)]
    for name, build in bad:
        def make(d: Path, build=build) -> list[str]:
            return ["export", str(fx / "small.json"), "--weights", str(build(d)), "--target",
                    "onnx", "--out", str(d / "exp")]
        cases.append(Case("weights file", name, make, ("w.safetensors",)))
    return cases


def _load_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _torch_save(obj: object, path: Path) -> Path:
    import torch

    torch.save(obj, path)
    return path


def manifest_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    good = _manifest()

    def variant(change: Callable[[dict], object]) -> str:
        doc = json.loads(json.dumps(good))
        change(doc)  # edits in place
        return json.dumps(doc)

    bad = [
        ("empty file", ""),
        ("not JSON", "{manifest"),
        ("not UTF-8", b"{\"target\": \"\xff\xfe\"}"),
        ("deep nesting", "[" * 100_000 + "]" * 100_000),
        ("a JSON list", "[]"),
        ("no parity", variant(lambda m: m.pop("parity"))),
        ("artifact bytes a string", variant(lambda m: m["artifact"].update(bytes="big"))),
        ("parity NaN", variant(lambda m: m["parity"].update(max_abs=float("nan")))),
        ("artifact file ../../x", variant(lambda m: m["artifact"].update(file="../../x"))),
        ("target unknown", variant(lambda m: m.update(target="coreml"))),
        ("random bytes", rng.bytes(300)),
    ]
    cases = [Case("manifest", "control: report", lambda d: [
        "report", "--profile", str(fx / "profile"), "--export", str(fx / "export"), "--out",
        str(d / "r.html")], (), control=True)]
    for name, data in bad:
        def make(d: Path, data=data) -> list[str]:
            _write(d / "export" / "onnx" / "manifest.json", data)
            return ["report", "--profile", str(fx / "profile"), "--export", str(d / "export"),
                    "--out", str(d / "r.html")]
        cases.append(Case("manifest", name, make, ("manifest.json",)))
    return cases


def saved_model_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    import skops.io as sio

    def in_profile(name: str, files: dict[str, Callable[[Path], bytes | str]],
                   names: tuple[str, ...], onnx: bool = False) -> Case:
        """A file inside a profile; the op predictor (`onnx`) is a cache `predict` may refuse
        and refit, saying so."""
        def make(d: Path) -> list[str]:
            prof = _copy_profile(fx, d)
            for fname, data in files.items():
                _write(prof / fname, data(d))
            target = fx / "tiny.onnx" if onnx else fx / "arch.json"
            return ["predict", str(target), "--profile", str(prof)]
        return Case("saved model", name, make, names, recovers=onnx)

    meta = json.dumps({"family": "rf", "alpha": 0.1, "q": 0.05, "format": "skops"})
    sk = ("predictor.skops", "predictor.json")
    op = ("op_predictor.npz", "op_predictor.json", "op predictor")

    def npz_object(d: Path) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, value=np.array([_Payload(d / "marker")], dtype=object))
        return buf.getvalue()

    def parzc(name: str, files: dict[str, Callable[[Path], bytes | str]]) -> Case:
        def make(d: Path) -> list[str]:
            for fname, data in files.items():
                _write(d / "model" / fname, data(d))
            return ["parzc", "predict", str(d / "model"), "--proxies-table",
                    str(_proxies(fx))]
        return Case("saved model", f"ParZC model: {name}", make, ("parzc", "model"))

    return [
        in_profile("predictor.skops random bytes", {"predictor.json": lambda d: meta,
                                                    "predictor.skops": lambda d: rng.bytes(300)},
                   sk),
        in_profile("predictor.skops with a pickle payload", {
            "predictor.json": lambda d: meta,
            "predictor.skops": lambda d: pickle.dumps(_Payload(d / "marker"))}, sk),
        in_profile("predictor.skops with an untrusted type", {
            "predictor.json": lambda d: meta,
            "predictor.skops": lambda d: sio.dumps({"x": _SkopsHolder()})}, sk),
        in_profile("predictor.json not JSON", {"predictor.json": lambda d: "{",
                                               "predictor.skops": lambda d: b""}, sk),
        in_profile("predictor.json missing fields", {"predictor.json": lambda d: "{}",
                                                     "predictor.skops": lambda d: b""}, sk),
        in_profile("predictor.json not UTF-8", {"predictor.json": lambda d: b"\xff\xfe{",
                                                "predictor.skops": lambda d: b""}, sk),
        in_profile("predictor.json alpha a string", {
            "predictor.json": lambda d: meta.replace("0.1", '"x"'),
            "predictor.skops": lambda d: b""}, sk),
        in_profile("op_predictor.npz with an object array", {
            "op_predictor.npz": npz_object,
            "op_predictor.json": lambda d: json.dumps({"format": "hwnas-op-predictor-1"})},
                   op, onnx=True),
        in_profile("op_predictor.npz random bytes", {
            "op_predictor.npz": lambda d: rng.bytes(300),
            "op_predictor.json": lambda d: "{}"}, op, onnx=True),
        in_profile("op_predictor.json deep nesting", {
            "op_predictor.npz": lambda d: rng.bytes(30),
            "op_predictor.json": lambda d: "[" * 100_000}, op, onnx=True),
        parzc("weights a pickle", {"parzc.json": lambda d: json.dumps({"format": "hwnas-parzc-1"}),
                                   "parzc.safetensors": lambda d: pickle.dumps(
                                       _Payload(d / "marker"))}),
        parzc("config not JSON", {"parzc.json": lambda d: "{",
                                  "parzc.safetensors": lambda d: b""}),
        parzc("config deep nesting", {"parzc.json": lambda d: "[" * 100_000,
                                      "parzc.safetensors": lambda d: b""}),
        parzc("config not UTF-8", {"parzc.json": lambda d: b"\xff\xfe",
                                   "parzc.safetensors": lambda d: b""}),
        Case("saved model", "proxies table of random bytes", lambda d: [
            "parzc", "predict", str(d / "model"), "--proxies-table",
            str(_write(d / "p.parquet", rng.bytes(300)))], ("p.parquet", "model")),
    ]


class _SkopsHolder:
    """A type outside scikit-learn/numpy: skops must report it as untrusted."""


def option_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    p, a, o = str(fx / "profile"), str(fx / "arch.json"), str(fx / "tiny.onnx")
    bad: list[tuple[str, list[str], tuple[str, ...]]] = [
        ("profile --threads 0", ["profile", "--threads", "0", "--out", "{d}/p"], ("threads",)),
        ("measure --threads 0", ["measure", o, "--threads", "0"], ("threads",)),
        ("export --threads -1", ["export", a, "--verify", "--threads", "-1", "--out", "{d}/e"],
         ("threads",)),
        ("adapt --threads 0", ["adapt", "--from", p, "--threads", "0", "--out", "{d}/a"],
         ("threads",)),
        ("proxies --threads 0", ["proxies", "--threads", "0", "--archs", "1", "--out",
                                 "{d}/p.parquet"], ("threads",)),
        ("measure --input-shape 10^5 x 10^5", ["measure", o, "--input-shape",
                                               "1,3,100000,100000", "--quick"],
         ("input-shape", "input shape", "tiny.onnx")),
        ("proxies --resolution 10^9", ["proxies", "--resolution", "1000000000", "--archs", "1",
                                       "--out", "{d}/p.parquet"], ("resolution",)),
        ("train --train-resolution 10^9", ["train", a, "--train-resolution", "1000000000",
                                           "--epochs", "1", "--out", "{d}/t"], ("resolution",)),
        ("supernet-rank --resolution 10^9", ["supernet-rank", "--resolution", "1000000000",
                                             "--archs", "2", "--out", "{d}/r.json"],
         ("resolution",)),
        ("search --budget-ms inf", ["search", "--profile", p, "--budget-ms", "inf", "--out",
                                    "{d}/s"], ("budget",)),
        ("search --evaluations 0", ["search", "--method", "random", "--accuracy-table",
                                    str(fx / "acc.csv"), "--latency-table", str(fx / "lat.csv"),
                                    "--device", "raspi4", "--evaluations", "0", "--out",
                                    "{d}/s"], ("evaluations",)),
        ("search --seed -1", ["search", "--method", "random", "--accuracy-table",
                              str(fx / "acc.csv"), "--latency-table", str(fx / "lat.csv"),
                              "--device", "raspi4", "--seed", "-1", "--evaluations", "5",
                              "--out", "{d}/s"], ("seed",)),
        ("arch sample --seed -1", ["arch", "sample", "--seed", "-1"], ("seed",)),
        ("arch sample --width 1e9", ["arch", "sample", "--width", "1e9"], ("width",)),
        ("profile --width nan", ["profile", "--width", "nan", "--out", "{d}/p"], ("width",)),
        ("proxies --batch-size 0", ["proxies", "--batch-size", "0", "--archs", "1",
                                    "--proxies", "snip", "--out", "{d}/p.parquet"],
         ("batch",)),
        ("parzc fit --epochs 0", ["parzc", "fit", "--proxies-table", "{fx}/proxies.parquet",
                                  "--accuracy-table", str(fx / "acc.csv"), "--epochs", "0",
                                  "--out", "{d}/m"], ("epochs",)),
        ("validate --profile a file", ["validate", "--profile", a], ("arch.json",)),
        ("demo --resolution 10^9", ["demo", "--resolution", "1000000000", "--out", "{d}/demo"],
         ("resolution",)),
    ]
    cases = [Case("CLI option", "control: arch sample", lambda d: ["arch", "sample"], (),
                  control=True)]
    for name, argv, names in bad:
        def make(d: Path, argv=argv) -> list[str]:
            if "{fx}/proxies.parquet" in argv:
                _proxies(fx)
            return [x.replace("{d}", str(d)).replace("{fx}", str(fx)) for x in argv]
        cases.append(Case("CLI option", name, make, names))
    return cases


def run_folder_cases(fx: Path, rng: np.random.Generator) -> list[Case]:
    def strategy(name: str, files: dict[str, bytes | str], names: tuple[str, ...]) -> Case:
        def make(d: Path) -> list[str]:
            for fname, data in files.items():
                _write(d / "run" / fname, data)
            return ["search", "--method", "random", "--accuracy-table", str(fx / "acc.csv"),
                    "--latency-table", str(fx / "lat.csv"), "--device", "raspi4", "--budget-ms",
                    "5", "--evaluations", "5", "--out", str(d / "run")]
        return Case("run folder", f"{name} (search resume)", make, names)

    def report(name: str, files: dict[str, bytes | str], names: tuple[str, ...]) -> Case:
        def make(d: Path) -> list[str]:
            for fname, data in files.items():
                _write(d / "run" / fname, data)
            return ["report", "--profile", str(fx / "profile"), "--run", str(d / "run"),
                    "--out", str(d / "r.html")]
        return Case("run folder", f"{name} (report --run)", make, names)

    def generate(name: str, files: dict[str, bytes | str], names: tuple[str, ...]) -> Case:
        def make(d: Path) -> list[str]:
            for fname, data in files.items():
                _write(d / "run" / fname, data)
            return ["generate", str(d / "run"), "--budget-ms", "2"]
        return Case("run folder", f"{name} (generate)", make, names)

    return [
        strategy("trajectory.csv random bytes", {"trajectory.csv": rng.bytes(300)},
                 ("trajectory.csv", "run")),
        strategy("trajectory.csv wrong columns", {"trajectory.csv": "a,b\n1,2\n"},
                 ("trajectory.csv", "run")),
        strategy("run.json not JSON", {"run.json": "{", "trajectory.csv": ""},
                 ("run.json", "run")),
        report("summary.json not JSON", {"summary.json": "{"}, ("summary.json",)),
        report("summary.json deep nesting", {"summary.json": "[" * 100_000},
               ("summary.json",)),
        report("summary.json a list", {"summary.json": "[]"}, ("summary.json",)),
        report("summary.json not UTF-8", {"summary.json": b"\xff\xfe"}, ("summary.json",)),
        report("summary.json without fields", {"summary.json": "{}", "arch.json": "{"},
               ("arch.json", "summary.json", "run")),
        report("cloud.csv garbage", {"summary.json": "{}", "cloud.csv": rng.bytes(200)},
               ("cloud.csv", "summary.json", "run")),
        generate("empty folder", {}, ("run",)),
        generate("checkpoint of random bytes", {"shiftnas.json": "{", "checkpoint.pt":
                                                rng.bytes(300)}, ("run", "shiftnas.json")),
    ]


KINDS: dict[str, Callable[[Path, np.random.Generator], list[Case]]] = {
    "arch": arch_cases, "profile": profile_cases, "onnx": onnx_cases,
    "latency": latency_table_cases, "accuracy": accuracy_table_cases, "data": data_cases,
    "weights": weights_cases, "manifest": manifest_cases, "saved": saved_model_cases,
    "options": option_cases, "run": run_folder_cases,
}


# --- running and judging ------------------------------------------------------------------------
def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "hwnas", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S,
                          preexec_fn=_limit_memory)


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and not p.name.endswith(".lock"):
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def judge(case: Case, fx: Path, work: Path) -> dict:
    d = work / f"{len(list(work.iterdir())):03d}"
    d.mkdir()
    argv = case.make(d)
    before = _snapshot(d, fx)
    t0 = time.monotonic()
    try:
        proc = _run(argv, d)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", "(timed out)"
    wall = time.monotonic() - t0
    after = _snapshot(d, fx)
    written = sorted(p for p, s in after.items() if before.get(p) != s)
    lines = [line for line in err.splitlines() if line.strip()]
    failed = []
    if case.control:
        if code != 0:
            failed.append("control failed")
    else:
        recovered = code == 0 and case.recovers and "warning" in out + err and any(
            n in out + err for n in case.names)
        if code is None:
            failed.append("timeout")
        elif code == 0:
            if not recovered:
                failed.append("silent wrong answer")
        elif code != 2:
            failed.append("exit code")
        if "Traceback (most recent call last)" in out + err:
            failed.append("traceback")
        if code not in (0, None) and not (len(lines) == 1 and lines[0].startswith("error:")):
            failed.append("not one error line")
        elif lines and lines[0].startswith("error:") and not any(n in lines[0]
                                                                  for n in case.names):
            failed.append("file not named")
        if written and not recovered:
            failed.append("file written")
        if (d / "marker").exists():
            failed.append("code from a file ran")
    base = str(work.parent)  # the temporary folder, shown as <tmp> in the results
    return {"kind": case.kind, "case": case.name, "argv": [a.replace(base, "<tmp>") for a in argv],
            "exit": code, "wall_s": round(wall, 2), "failed": failed,
            "stderr": (err.strip().splitlines()[-1][:400] if err.strip() else "").replace(
                base, "<tmp>"),
            "written": [str(Path(p).relative_to(work.parent)) for p in written][:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated, of {', '.join(KINDS)} (default: all)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="build the cases in this folder and leave them there")
    ap.add_argument("--label", default="",
                    help="a note for the results (e.g. 'before the fixes')")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(unknown)}; use {', '.join(KINDS)}")
    res = Results("bad_input", "Bad input: malformed files and options through the real "
                  "entry point", seed=SEED, argv=sys.argv[1:])
    base = Path(tempfile.mkdtemp(prefix="hwnas-bad-input-")) if args.keep is None \
        else args.keep.resolve()
    base.mkdir(parents=True, exist_ok=True)
    fx, work = base / "fixtures", base / "cases"
    try:
        if fx.exists():
            shutil.rmtree(fx)
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        build_fixtures(fx)
        rng = np.random.default_rng(SEED)
        results = []
        for kind in kinds:
            for case in KINDS[kind](fx, rng):
                r = judge(case, fx, work)
                results.append(r)
                mark = "ok" if not r["failed"] else ", ".join(r["failed"])
                print(f"[{r['kind']}] {r['case']}: exit {r['exit']}, {r['wall_s']:.1f} s: "
                      f"{mark}", flush=True)
                if r["failed"]:
                    print(f"    {r['stderr']}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    rows = summary_rows(results)
    controls = [r for r in results if r["case"].startswith("control:")]
    res.text(
        "Every bad input runs through `python -m hwnas` in a subprocess (address space capped "
        f"at {MEMORY_LIMIT >> 30} GiB, {TIMEOUT_S} s timeout). The rule: exit code 2, exactly "
        "one stderr line starting with `error:` that names the file or option at fault, no "
        "traceback, and nothing written (the case's folder and the shared valid inputs are "
        "compared before and after; lock files aside). Exit 0 on a bad input counts as a "
        "silent wrong answer. Each kind first runs one valid control input, which must exit 0 "
        f"({sum(not r['failed'] for r in controls)} of {len(controls)} did)."
        + (f" {args.label}." if args.label else ""))
    res.table(rows, "Bad inputs per kind: tried, and how many broke the rule (which rule)")
    broken = [{"kind": r["kind"], "case": r["case"], "broke": ", ".join(r["failed"]),
               "stderr (last line)": r["stderr"][:160].replace("|", "/")}
              for r in results if r["failed"]]
    if broken:
        res.table(broken, "The inputs that broke the rule")
    if not args.no_write:
        res.write(data={"cases": results, "label": args.label})


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        bad = [r for r in results if r["kind"] == kind and not r["case"].startswith("control:")]
        row = {"kind": kind, "tried": len(bad), "failed": sum(bool(r["failed"]) for r in bad)}
        for rule in RULES:
            row[rule] = sum(rule in r["failed"] for r in bad)
        rows.append(row)
    total = {"kind": "all", "tried": sum(r["tried"] for r in rows),
             "failed": sum(r["failed"] for r in rows)}
    for rule in RULES:
        total[rule] = sum(r[rule] for r in rows)
    return [*rows, total]


if __name__ == "__main__":
    main()
