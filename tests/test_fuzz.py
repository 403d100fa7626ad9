"""Malformed inputs of every kind through the command line, generated with hypothesis.

The rule for each one (the README's promise for a user mistake): `hwnas.cli.main` exits with code
2 and prints exactly one line, starting with `error:`, that names the file at fault; no
traceback; and nothing is written (the case's folder and the shared valid inputs are the same
before and after). Kinds: arch JSON, profile folders (device.json, the parquet tables, a
fingerprint of another machine on --resume), ONNX models, latency and accuracy tables, image
folders, weights files, manifests, a profile's saved predictor. `benchmarks/bad_input.py` runs a
fixed list of the same kinds through `python -m hwnas` and counts the failures.

Every input here is invalid by construction (the strategies draw only broken values), and the
examples are few and derandomized: the same inputs on every run.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_rules import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.space import get_space

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
P128 = ROOT / "profiles" / "ort-cpu-1t-proxyless-128"
FUZZ = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FEW = settings(FUZZ, max_examples=6)


# --- running the CLI and checking the rule ----------------------------------------------------


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots` (lock files aside) with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots
            for p in Path(root).rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def assert_refused(argv: list, names: tuple[str, ...], watch: tuple[Path, ...]) -> str:
    """The rule: exit 2, one `error:` line naming one of `names`, no traceback, nothing
    written under `watch`. Returns the line."""
    before = snapshot(*watch)
    code, out, err = run_cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out[-2000:], err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert any(n in lines[0] for n in names), lines[0]
    assert snapshot(*watch) == before, f"a refused input wrote a file: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """The valid inputs every bad one is made from."""
    import torch
    from onnx import TensorProto, helper, save
    from PIL import Image
    from safetensors.torch import save_file

    from hwnas.export.manifest import MANIFEST_VERSION
    from hwnas.space.nb201 import N_ARCHS

    d = tmp_path_factory.mktemp("fuzz")
    (d / "profile").mkdir()
    for name in ("device.json", "ops.parquet", "nets.parquet"):
        shutil.copy(P128 / name, d / "profile" / name)
    get_space("proxyless", 128).sample(0).save(d / "arch.json")
    small_space = get_space("proxyless", 32, 0.35, 10)
    small = small_space.sample(0)
    small.save(d / "small.json")
    torch.manual_seed(0)
    state = small_space.build(small).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "small.safetensors"),
              metadata={"arch": small.to_json(indent=None)})
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                              "tiny", [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 4, 16, 16])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, d / "tiny.onnx")
    rng = np.random.default_rng(0)
    fb = pd.DataFrame(rng.integers(0, 9, (6, 22)), columns=[f"L{i:02d}" for i in range(22)])
    fb["raspi4_ms"] = rng.uniform(5, 9, 6)
    fb.to_csv(d / "fbnet.csv", index=False)
    idx = np.arange(N_ARCHS)
    pd.DataFrame({"arch_idx": idx, "acc": rng.uniform(50, 95, N_ARCHS)}).to_csv(
        d / "acc.csv", index=False)
    pd.DataFrame({"arch_idx": idx, "raspi4_ms": rng.uniform(1, 9, N_ARCHS)}).to_csv(
        d / "lat.csv", index=False)
    for c in ("a", "b"):
        (d / "images" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                d / "images" / c / f"{k}.png")
    manifest = {
        "manifest_version": MANIFEST_VERSION, "hwnas": "0", "created": "2026-11-29",
        "target": "onnx", "precision": "fp32",
        "arch": {"space": "proxyless", "choices": ["k3_e3"] * 21, "resolution": 128},
        "weights": None, "input": {"name": "input", "shape": [1, 3, 128, 128], "layout": "NCHW",
                                   "dtype": "float32"},
        "output": {"shape": [1, 1000]},
        "artifact": {"file": "model.onnx", "bytes": 1000, "sha256": "0" * 64},
        "runtimes": {"onnxruntime": "1"},
        "parity": {"inputs": 8, "max_abs": 1e-6, "max_rel": 1e-5, "tolerance_abs": 1e-4,
                   "criterion": "max_abs <= 1e-4", "passed": True, "top1_agreement": 1.0},
        "predicted": None, "verified": None}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _vi(name: str, shape: list):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def case_dir(root: Path) -> Path:
    """A fresh folder for one example (hypothesis runs many in one test)."""
    return Path(tempfile.mkdtemp(dir=root))


def test_the_valid_inputs_pass(fx: Path, tmp_path: Path) -> None:
    """The control: what the bad inputs are made from is accepted."""
    code, _, err = run_cli(["predict", fx / "arch.json", "--profile", fx / "profile"])
    assert code == 0, err
    code, _, err = run_cli(["predict", fx / "tiny.onnx", "--profile", fx / "profile"])
    assert code == 0, err
    (tmp_path / "e" / "onnx").mkdir(parents=True)
    shutil.copy(fx / "manifest.json", tmp_path / "e" / "onnx" / "manifest.json")
    from hwnas.export.manifest import load_manifest

    load_manifest(tmp_path / "e" / "onnx" / "manifest.json")


# --- strategies: only broken values ------------------------------------------------------------
NOT_UTF8 = st.binary(min_size=1, max_size=40).map(lambda b: b"\xff\xfe" + b)
DEEP = st.integers(2_000, 120_000).map(lambda n: "[" * n + "]" * n)
WRONG_TYPE = st.one_of(st.none(), st.booleans(), st.text(max_size=8),
                       st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NOT_JSON_OBJECT = st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(),
                            st.none(), st.booleans()).map(json.dumps)
# a file that does not parse as the JSON object it should be, by kind
UNPARSED = {"bytes": NOT_UTF8, "deep": DEEP, "top": NOT_JSON_OBJECT}


def write_unparsed(path: Path, kind: str, data) -> bool:
    """Write an `UNPARSED[kind]` document to `path`; False (nothing written) for another kind."""
    if kind not in UNPARSED:
        return False
    content = data.draw(UNPARSED[kind])
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return True


def _arch_doc(fx: Path) -> dict:
    return json.loads((fx / "arch.json").read_text())


@st.composite
def bad_arch(draw, valid: dict) -> str | bytes:
    """Arch JSON that is wrong in one drawn way."""
    kind = draw(st.sampled_from(["bytes", "deep", "top", "resolution", "width", "num_classes",
                                 "choices", "choice", "length", "space", "field", "missing"]))
    if kind in UNPARSED:
        return draw(UNPARSED[kind])
    doc = json.loads(json.dumps(valid))
    if kind == "resolution":
        doc["resolution"] = draw(st.one_of(st.integers(max_value=7),
                                           st.integers(min_value=4097), WRONG_TYPE,
                                           st.floats(allow_nan=True)))
    elif kind == "width":
        doc["width"] = draw(st.one_of(st.floats(max_value=0.0), st.floats(min_value=4.001),
                                      st.just(math.nan), st.text(max_size=4), st.none()))
    elif kind == "num_classes":
        doc["num_classes"] = draw(st.one_of(st.integers(max_value=0),
                                            st.integers(min_value=1_000_001), WRONG_TYPE))
    elif kind == "choices":
        doc["choices"] = draw(st.one_of(st.text(), st.integers(), st.none(),
                                        st.lists(st.integers(), min_size=1, max_size=3)))
    elif kind == "choice":
        names = set(get_space("proxyless").layers[3].choices)
        i = draw(st.integers(0, len(doc["choices"]) - 1))
        doc["choices"][i] = draw(st.text(max_size=10).filter(lambda t: t not in names))
    elif kind == "length":
        n = draw(st.integers(0, 60).filter(lambda k: k != len(doc["choices"])))
        doc["choices"] = (doc["choices"] * 3)[:n]
    elif kind == "space":
        doc["space"] = draw(st.text(max_size=12).filter(
            lambda t: t not in ("proxyless",) and t.strip() == t and t))
    elif kind == "field":
        key = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in (
            "space", "choices", "resolution", "width", "num_classes", "channels", "meta")))
        doc[key] = draw(WRONG_TYPE)
    else:
        del doc[draw(st.sampled_from(["space", "choices"]))]
    return json.dumps(doc)


@pytest.fixture(scope="module")
def valid_arch(fx: Path) -> dict:
    return _arch_doc(fx)


@FUZZ
@given(data=st.data())
def test_bad_arch_json(data, fx: Path, valid_arch: dict, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    text = data.draw(bad_arch(valid_arch))
    path = d / "arch.json"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    command = data.draw(st.sampled_from(["info", "predict", "export"]))
    argv = {"info": ["arch", "info", path],
            "predict": ["predict", path, "--profile", fx / "profile"],
            "export": ["export", path, "--target", "onnx", "--out", d / "exp"]}[command]
    assert_refused(argv, ("arch.json",), (d, fx))


# --- profile folders ---------------------------------------------------------------------------
RECORD_FIELDS = ["space", "space_settings", "fingerprint", "created", "status", "backend",
                 "backend_options", "nets_requested", "seed", "wall_s", "imported", "nets_only"]


@st.composite
def broken_profile(draw) -> tuple[str, object]:
    """(file, how) of one drawn defect of a profile folder."""
    target = draw(st.sampled_from(["device.json", "ops.parquet", "nets.parquet"]))
    if target == "device.json":
        how = draw(st.sampled_from(["bytes", "deep", "top", "missing", "type", "version",
                                    "resolution"]))
        if how == "bytes":
            return target, ("bytes", draw(NOT_UTF8))
        if how == "deep":
            return target, ("text", draw(DEEP))
        if how == "top":
            return target, ("text", draw(NOT_JSON_OBJECT))
        if how == "missing":
            return target, ("missing", draw(st.sampled_from(["space", "space_settings",
                                                              "fingerprint",
                                                              "schema_version"])))
        if how == "version":
            return target, ("set", "schema_version", draw(st.one_of(
                st.integers().filter(lambda v: v != 1), st.text(max_size=3), st.none())))
        if how == "resolution":
            return target, ("setting", "resolution", draw(st.one_of(
                st.integers(max_value=7), st.integers(min_value=4097), st.text(max_size=4),
                st.floats())))
        key = draw(st.sampled_from(RECORD_FIELDS))
        # a value of a type the field never takes (booleans are not numbers there)
        wrong = {"space": st.one_of(st.integers(), st.none()),
                 "space_settings": st.one_of(st.text(), st.lists(st.integers(), max_size=2)),
                 "fingerprint": st.one_of(st.text(), st.integers()),
                 "backend_options": st.one_of(st.text(), st.integers()),
                 "imported": st.one_of(st.text(), st.integers()),
                 "nets_only": st.one_of(st.text(), st.integers())}.get(
            key, st.one_of(st.booleans(), st.lists(st.integers(), max_size=2)))
        return target, ("set", key, draw(wrong))
    how = draw(st.sampled_from(["truncate", "bytes", "time", "column", "type"]))
    if how == "truncate":
        return target, ("truncate", draw(st.floats(0.0, 0.95)))
    if how == "bytes":
        return target, ("bytes", draw(st.binary(max_size=300)))
    if how == "time":
        return target, ("time", draw(st.integers(0, 69)), draw(st.sampled_from(
            [math.nan, -1.0, 0.0, math.inf, -math.inf])))
    if how == "column":
        return target, ("drop", "median_ms" if target == "nets.parquet" else draw(
            st.sampled_from(["key", "cin", "median_ms"])))
    return target, ("text column", "median_ms" if target == "nets.parquet" else draw(
        st.sampled_from(["cin", "kernel", "median_ms"])))


def apply_defect(root: Path, target: str, defect: tuple) -> None:
    path = root / target
    what = defect[0]
    if what == "bytes":
        path.write_bytes(defect[1])
    elif what == "text":
        path.write_text(defect[1])
    elif what == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * defect[1])])
    elif target == "device.json":
        doc = json.loads(path.read_text())
        if what == "missing":
            del doc[defect[1]]
        elif what == "set":
            doc[defect[1]] = defect[2]
        else:
            doc["space_settings"][defect[1]] = defect[2]
        path.write_text(json.dumps(doc))
    else:
        df = pd.read_parquet(path)
        if what == "time":
            col = df["median_ms"].astype(float).copy()
            col.iloc[defect[1] % len(df)] = defect[2]
            df["median_ms"] = col
        elif what == "drop":
            df = df.drop(columns=[defect[1]])
        else:
            df[defect[1]] = df[defect[1]].astype(str)
        df.to_parquet(path, index=False)


@FUZZ
@given(defect=broken_profile())
def test_bad_profile_folder(defect, fx: Path, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    prof = d / "prof"
    shutil.copytree(fx / "profile", prof)
    target, how = defect
    apply_defect(prof, target, how)
    assert_refused(["predict", fx / "arch.json", "--profile", prof], (target, "prof"), (d, fx))


@FEW
@given(key=st.sampled_from(["cpu_model", "cores", "runtime_version", "threads", "backend"]),
       value=st.one_of(st.text(min_size=1, max_size=12), st.integers(100, 10**6)))
def test_resume_refuses_a_fingerprint_of_another_machine(key, value, fx: Path,
                                                         tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    prof = d / "prof"
    shutil.copytree(fx / "profile", prof)
    doc = json.loads((prof / "device.json").read_text())
    doc["fingerprint"][key] = value
    doc["status"] = "incomplete"
    (prof / "device.json").write_text(json.dumps(doc))
    line = assert_refused(["profile", "--resolution", "128", "--nets", "200", "--quick",
                           "--out", prof, "--resume"], ("prof",), (d, fx))
    assert "another device" in line and key in line


# --- ONNX models -------------------------------------------------------------------------------
@st.composite
def bad_onnx(draw) -> bytes | tuple[str, float]:
    """An ONNX file that cannot be priced or run as it stands."""
    import onnx
    from onnx import helper

    kind = draw(st.sampled_from(["bytes", "truncated", "empty graph", "unknown op", "dims",
                                 "dynamic", "opset", "undefined input", "no input"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":  # the test cuts its valid model at this fraction
        return ("truncated", draw(st.floats(0.0, 0.9)))
    shape, nodes, inputs, opset = [1, 3, 8, 8], None, None, 17
    if kind == "dims":
        shape[draw(st.integers(0, 3))] = draw(st.one_of(st.integers(-10**6, 0),
                                                        st.just(10**9),
                                                        st.integers(10**5, 10**6)))
        if all(v > 0 for v in shape) and math.prod(shape) <= 1 << 28:
            shape[2] = shape[3] = 10**5
    elif kind == "dynamic":
        shape[draw(st.integers(1, 3))] = draw(st.text("HWCN_", min_size=1, max_size=4))
    elif kind == "opset":
        opset = draw(st.integers(onnx.defs.onnx_opset_version() + 1, 10**6))
    if kind == "empty graph":
        nodes = []
    elif kind == "unknown op":
        nodes = [helper.make_node(draw(st.from_regex(r"\AZz[A-Za-z]{2,10}Op\Z")), ["x"], ["y"])]
    elif kind == "undefined input":
        nodes = [helper.make_node("Add", ["x", draw(st.from_regex(r"\Aundef_[a-z]{1,6}\Z"))],
                                  ["y"])]
    elif kind == "no input":
        nodes = [helper.make_node("Constant", [], ["y"], value=helper.make_tensor(
            "c", onnx.TensorProto.FLOAT, [1], [1.0]))]
        inputs = []
    if nodes is None:
        nodes = [helper.make_node("Relu", ["x"], ["y"])]
    g = helper.make_graph(nodes, "bad", [_vi("x", shape)] if inputs is None else inputs,
                          [_vi("y", shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


@FUZZ
@given(model=bad_onnx(), command=st.sampled_from(["predict", "measure"]))
def test_bad_onnx_model(model, command, fx: Path, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    if isinstance(model, tuple):  # a valid model cut short
        data = (fx / "tiny.onnx").read_bytes()
        model = data[: int(len(data) * model[1])]
    (d / "m.onnx").write_bytes(model)
    argv = ["predict", d / "m.onnx", "--profile", fx / "profile"] if command == "predict" \
        else ["measure", d / "m.onnx", "--quick"]
    assert_refused(argv, ("m.onnx",), (d, fx))


def test_measure_refuses_an_absurd_input_shape(fx: Path, tmp_path: Path) -> None:
    line = assert_refused(["measure", fx / "tiny.onnx", "--input-shape", "1,3,100000,100000"],
                          ("tiny.onnx",), (tmp_path, fx))
    assert "more than hwnas allocates" in line


# --- latency and accuracy tables --------------------------------------------------------------
@st.composite
def bad_latency_csv(draw, valid: pd.DataFrame) -> str | bytes:
    kind = draw(st.sampled_from(["bytes", "not utf-8", "header", "value", "index", "drop",
                                 "repeat"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300).filter(lambda b: b"," not in b))
    if kind == "not utf-8":
        return b"L00,raspi4_ms\n" + draw(NOT_UTF8)
    if kind == "header":
        return ",".join(valid.columns) + "\n"
    df = valid.copy().astype(object)
    r = draw(st.integers(0, len(df) - 1))
    if kind == "value":
        df.loc[r, "raspi4_ms"] = draw(st.one_of(st.sampled_from(
            [math.nan, math.inf, -math.inf, 0.0]), st.floats(max_value=0.0),
            st.text("abcxyz", min_size=1, max_size=5)))
    elif kind == "index":
        col = f"L{draw(st.integers(0, 21)):02d}"
        df.loc[r, col] = draw(st.one_of(st.integers(9, 10**6), st.integers(max_value=-1),
                                        st.floats(0.1, 8.9).filter(lambda v: v != int(v)),
                                        st.text("abc", min_size=1, max_size=3)))
    elif kind == "drop":
        df = df.drop(columns=[draw(st.sampled_from([*(f"L{i:02d}" for i in range(22)),
                                                    "raspi4_ms"]))])
    else:
        df = pd.concat([df, df.iloc[[r]]])
    return df.to_csv(index=False)


@pytest.fixture(scope="module")
def fbnet_csv(fx: Path) -> pd.DataFrame:
    return pd.read_csv(fx / "fbnet.csv")


@FUZZ
@given(data=st.data())
def test_bad_latency_csv(data, fx: Path, fbnet_csv: pd.DataFrame, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    text = data.draw(bad_latency_csv(fbnet_csv))
    path = d / "lat.csv"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    assert_refused(["import", "latency-csv", path, "--device", "raspi4", "--out", d / "prof"],
                   ("lat.csv",), (d, fx))
    assert not (d / "prof").exists()


@pytest.mark.parametrize("columns,says", [(20_000, "20000 columns"),
                                          (10 ** 6, "header line is longer than 4 MiB")])
@pytest.mark.parametrize("command", ["import", "search"])
def test_an_absurdly_wide_table_is_refused_before_parsing(columns, says, command, fx: Path,
                                                         tmp_path: Path) -> None:
    """pandas builds a frame of 10^6 header-only columns in minutes: the header is read first."""
    import time

    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(columns)) + "\n")
    argv = ["import", "latency-csv", path, "--device", "raspi4", "--out", tmp_path / "prof"] \
        if command == "import" else \
        ["search", "--method", "random", "--accuracy-table", path, "--evaluations", "5",
         "--out", tmp_path / "run"]
    t0 = time.monotonic()
    line = assert_refused(argv, ("wide.csv",), (tmp_path, fx))
    assert says in line and time.monotonic() - t0 < 30, line


@pytest.fixture(scope="module")
def accuracy(fx: Path) -> pd.DataFrame:
    return pd.read_csv(fx / "acc.csv")


@FEW
@given(kind=st.sampled_from(["value", "index", "duplicate", "rows", "no key", "bytes"]),
       row=st.integers(0, 15_624), draw_value=st.data())
def test_bad_accuracy_table(kind, row, draw_value, fx: Path, accuracy: pd.DataFrame,
                            tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    df = accuracy.copy()
    if kind == "value":
        df["acc"] = df["acc"].astype(object)
        df.loc[row, "acc"] = draw_value.draw(st.one_of(
            st.sampled_from([math.nan, math.inf]), st.text("abc", min_size=1, max_size=4)))
    elif kind == "index":
        df.loc[row, "arch_idx"] = draw_value.draw(st.one_of(st.integers(15_625, 10**9),
                                                             st.integers(max_value=-1)))
    elif kind == "duplicate":
        df.loc[row, "arch_idx"] = (row + 1) % len(df)
    elif kind == "rows":
        df = df.iloc[: draw_value.draw(st.integers(0, len(df) - 1))]
    elif kind == "no key":
        df = df.rename(columns={"arch_idx": "id"})
    path = d / "acc.csv"
    if kind == "bytes":
        path.write_bytes(draw_value.draw(st.binary(max_size=200)))
    else:
        df.to_csv(path, index=False)
    assert_refused(["search", "--method", "random", "--accuracy-table", path,
                    "--latency-table", fx / "lat.csv", "--device", "raspi4", "--budget-ms",
                    "5", "--evaluations", "5", "--out", d / "run"], ("acc.csv",), (d, fx))
    assert not (d / "run").exists() or not any((d / "run").iterdir())


# --- image folders -----------------------------------------------------------------------------
def _opens(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - anything PIL cannot decode counts as broken
        return False


@FEW
@given(kind=st.sampled_from(["corrupt", "empty", "truncated", "one class", "no images",
                             "bomb"]),
       junk=st.binary(max_size=200).filter(lambda b: not _opens(b)),
       cut=st.integers(8, 60))
def test_bad_image_folder(kind, junk, cut, fx: Path, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    root = d / "imgs"
    shutil.copytree(fx / "images", root)
    png = (fx / "images" / "a" / "0.png").read_bytes()
    names: tuple[str, ...] = ("x.png",)
    if kind == "corrupt":
        (root / "b" / "x.png").write_bytes(junk)
    elif kind == "empty":
        (root / "b" / "x.png").write_bytes(b"")
    elif kind == "truncated":
        (root / "b" / "x.png").write_bytes(png[:cut])
    elif kind == "bomb":  # a header that claims 200,000 x 200,000 pixels
        bomb = bytearray(png)
        bomb[16:24] = struct.pack(">II", 200_000, 200_000)
        (root / "b" / "x.png").write_bytes(bytes(bomb))
    elif kind == "one class":
        shutil.rmtree(root / "b")
        names = ("imgs",)
    else:
        for p in (root / "b").iterdir():
            p.rename(p.with_suffix(".txt"))
        names = ("imgs",)
    assert_refused(["train", fx / "small.json", "--data", f"folder:{root}", "--epochs", "1",
                    "--out", d / "train"], names, (d, fx))


# --- weights files -----------------------------------------------------------------------------
@FUZZ
@given(kind=st.sampled_from(["drop", "extra", "shape", "dtype", "nan", "meta", "truncate",
                             "bytes"]),
       pick=st.integers(0, 10**6), frac=st.floats(0.0, 0.95),
       junk=st.binary(max_size=100), meta=st.text(max_size=20))
def test_weights_that_do_not_match_their_arch(kind, pick, frac, junk, meta, fx: Path,
                                              tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    d = case_dir(tmp_path)
    path = d / "w.safetensors"
    state = load_file(str(fx / "small.safetensors"))
    keys = sorted(k for k, v in state.items() if v.is_floating_point())
    key = keys[pick % len(keys)]
    metadata = {"arch": (fx / "small.json").read_text()}
    if kind in ("truncate", "bytes"):
        data = (fx / "small.safetensors").read_bytes()
        path.write_bytes(data[: int(len(data) * frac)] if kind == "truncate" else junk)
    else:
        if kind == "drop":
            del state[key]
        elif kind == "extra":
            state[key + ".extra"] = torch.zeros(2)
        elif kind == "shape":
            state[key] = torch.zeros(state[key].numel() + 1)
        elif kind == "dtype":
            state[key] = state[key].double()
        elif kind == "nan":
            t = state[key].clone().reshape(-1)
            t[pick % t.numel()] = math.nan
            state[key] = t.reshape(state[key].shape)
        else:
            metadata["arch"] = meta if meta.strip() else "{"
            try:  # a text that happens to be the valid arch does not count
                json.loads(metadata["arch"])["choices"]
                metadata["arch"] = "{" + metadata["arch"]
            except (ValueError, TypeError, KeyError, IndexError):
                pass
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    assert_refused(["export", fx / "small.json", "--weights", path, "--target", "onnx",
                    "--out", d / "exp"], ("w.safetensors",), (d, fx))
    assert not (d / "exp").exists() or not any((d / "exp").rglob("*.onnx"))


# --- manifests and a profile's saved predictor --------------------------------------------------
@FUZZ
@given(kind=st.sampled_from(["bytes", "deep", "top", "missing", "type", "nan", "path"]),
       data=st.data())
def test_bad_manifest(kind, data, fx: Path, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    path = d / "export" / "onnx" / "manifest.json"
    path.parent.mkdir(parents=True)
    doc = json.loads((fx / "manifest.json").read_text())
    if not write_unparsed(path, kind, data):
        if kind == "missing":
            del doc[data.draw(st.sampled_from(["target", "artifact", "parity", "input"]))]
        elif kind == "type":
            doc[data.draw(st.sampled_from(["artifact", "parity", "input", "arch"]))] = \
                data.draw(st.one_of(st.text(max_size=5), st.integers()))
        elif kind == "nan":
            doc["parity"][data.draw(st.sampled_from(["max_abs", "max_rel"]))] = \
                data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        else:
            doc["artifact"]["file"] = data.draw(st.sampled_from(
                ["../../x.onnx", "/tmp/x.onnx", "a/b.onnx", "..", ".", "..\\x"]))
        path.write_text(json.dumps(doc))
    assert_refused(["report", "--profile", fx / "profile", "--export", d / "export", "--out",
                    d / "r.html"], ("manifest.json",), (d, fx))


@FEW
@given(kind=st.sampled_from(["bytes", "deep", "top", "missing", "type"]), data=st.data())
def test_bad_saved_predictor(kind, data, fx: Path, tmp_path: Path) -> None:
    d = case_dir(tmp_path)
    prof = d / "prof"
    shutil.copytree(fx / "profile", prof)
    (prof / "predictor.skops").write_bytes(b"")
    doc = {"family": "rf", "alpha": 0.1, "q": 0.05, "format": "skops"}
    path = prof / "predictor.json"
    if not write_unparsed(path, kind, data):
        key = data.draw(st.sampled_from(["family", "alpha", "q"]))
        if kind == "missing":
            del doc[key]
        else:
            doc[key] = data.draw(st.one_of(st.none(), st.lists(st.integers(), max_size=2),
                                           st.just(math.nan)) if key == "family" else
                                 st.one_of(st.text(max_size=4), st.none(), st.just(math.nan),
                                           st.booleans()))
        path.write_text(json.dumps(doc))
    assert_refused(["predict", fx / "arch.json", "--profile", prof], ("predictor.json",),
                   (d, fx))
