"""The Once-for-All MobileNetV3 space (`ofa`): layers, depth as a prefix, elastic resolution, the
built network against OFA's layer definitions, ONNX export, and HELP's OFA latency file (inline
rows here; the full file in ../shared/data, skipped without it)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hwnas.errors import HwnasError
from hwnas.latency import best_predictor
from hwnas.latency.importers import import_latency_csv
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.op_predictor import op_from_row
from hwnas.profile.reader import Profile
from hwnas.profile.store import read_parquet, write_parquet
from hwnas.space import SPACES, Arch, OFASpace, OpSpec, get_space, space_of
from hwnas.space.base import make_divisible
from hwnas.space.ofa import HELP_COLUMNS, OFA_CHOICES, RESOLUTIONS

# The header and first three data rows of HELP's ofa_mbv3_latency_help.csv, verbatim.
HELP_OFA_CSV = """\
sample_idx,resolution,d0,d1,d2,d3,d4,ks00,ks01,ks02,ks03,ks04,ks05,ks06,ks07,ks08,ks09,ks10,ks11,\
ks12,ks13,ks14,ks15,ks16,ks17,ks18,ks19,e00,e01,e02,e03,e04,e05,e06,e07,e08,e09,e10,e11,e12,e13,\
e14,e15,e16,e17,e18,e19,2080ti_1_ms,2080ti_32_ms,2080ti_64_ms,titan_rtx_1_ms,titan_rtx_32_ms,\
titan_rtx_64_ms,titan_xp_1_ms,titan_xp_32_ms,titan_xp_64_ms,v100_1_ms,v100_32_ms,v100_64_ms
0,204,2,2,2,2,3,7,5,5,5,7,7,5,7,5,7,3,7,5,3,7,3,5,3,5,3,6,4,4,6,6,3,4,3,3,6,3,3,3,6,3,4,6,4,3,6,\
12.081937789916992,15.117921829223633,28.88720989227295,4.373445510864258,14.198465347290039,\
27.681560516357422,9.20095443725586,28.963050842285156,55.50851345062256,7.820444107055664,\
11.635308265686035,21.807122230529785
1,136,2,3,4,3,4,7,3,5,3,3,7,3,7,3,7,3,7,3,7,7,3,5,5,7,3,4,6,3,4,4,4,4,6,3,6,6,4,4,6,6,4,3,6,6,4,\
12.665386199951172,13.586902618408203,20.206689834594727,6.096014976501465,8.75126838684082,\
16.872658729553223,12.598366737365723,16.01250648498535,29.348907470703125,10.850539207458496,\
11.14898681640625,14.928536415100098
2,132,4,4,2,2,4,3,5,5,7,3,3,5,3,3,3,5,5,3,5,3,3,5,7,7,3,6,3,3,3,4,3,3,4,4,4,4,4,6,6,4,4,6,4,3,6,\
13.079676628112793,12.649078369140625,16.484293937683105,5.903034210205078,8.139538764953613,\
15.660991668701174,12.732405662536621,14.62503433227539,26.837058067321777,11.18213176727295,\
10.73638916015625,13.815317153930664
"""
# Row 0 in the space's choices (unit u, slot s is layer 4u + s; depths 2, 2, 2, 2, 3).
ROW0_CHOICES = ("k7_e6", "k5_e4", "skip", "skip", "k7_e6", "k7_e3", "skip", "skip",
                "k5_e3", "k7_e6", "skip", "skip", "k5_e3", "k3_e6", "skip", "skip",
                "k5_e6", "k3_e4", "k5_e3", "skip")
GPU_COLUMNS = [c for c in HELP_OFA_CSV.splitlines()[0].split(",") if c.endswith("_ms")]

SPACE = get_space("ofa")
LARGEST = ("k7_e6",) * 20
SMALLEST = ("k3_e3", "k3_e3", "skip", "skip") * 5


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _rows() -> list[dict]:
    return pd.read_csv(io.StringIO(HELP_OFA_CSV)).to_dict("records")


# --- layers, choices, depth ---------------------------------------------------------------------

def test_layers_and_choices() -> None:
    assert SPACES["ofa"] is OFASpace and isinstance(SPACE, OFASpace)
    assert len(SPACE.layers) == 20 and len(OFA_CHOICES) == 9
    widths, strides = (24, 40, 80, 112, 160), (2, 2, 2, 1, 2)
    cin = 16
    for i, layer in enumerate(SPACE.layers):
        u, s = divmod(i, 4)
        assert layer.name == f"unit{u + 1}.{s}"
        assert layer.choices == (OFA_CHOICES if s < 2 else OFA_CHOICES + ("skip",))
        assert (layer.cin, layer.cout) == (cin, widths[u])
        assert layer.stride == (strides[u] if s == 0 else 1)
        cin = widths[u]
    assert SPACE.size == (9 ** 2 + 9 ** 3 + 9 ** 4) ** 5  # OFA: ~2e19 subnets
    op = SPACE.candidates(5)[OFA_CHOICES.index("k5_e4")]  # unit 2: relu, SE
    assert (op.kind, op.kernel, op.expand, op.act, op.se, op.residual) == \
        ("mbv3conv", 5, 4, "relu", True, True)
    assert SPACE.candidates(8)[0].act == "hswish" and not SPACE.candidates(8)[0].se
    assert SPACE.candidates(2)[-1] is None  # skip


def test_sample_keeps_depth_a_prefix() -> None:
    seen_depths = [set() for _ in range(5)]
    for seed in range(200):
        arch = SPACE.sample(seed)
        SPACE.validate(arch)
        for u in range(5):
            active = [c != "skip" for c in arch.choices[4 * u:4 * u + 4]]
            depth = sum(active)
            assert active == [True] * depth + [False] * (4 - depth)
            seen_depths[u].add(depth)
        assert SPACE.depths(arch) == [sum(c != "skip" for c in arch.choices[4 * u:4 * u + 4])
                                      for u in range(5)]
    assert all(s == {2, 3, 4} for s in seen_depths)


def test_validate_refuses_a_gap_and_from_indices_closes_it() -> None:
    gap = list(SMALLEST)
    gap[4 * 2 + 3] = "k5_e4"  # unit 3: slot 3 runs, slot 2 is skipped
    with pytest.raises(HwnasError, match=r"unit 3: layer 11 \(unit3.3\) runs 'k5_e4' but layer "
                                         r"10 \(unit3.2\) is skipped"):
        SPACE.arch(gap)
    with pytest.raises(HwnasError, match="unit 3"):
        SPACE.validate(Arch("ofa", tuple(gap)))
    idx = [layer.choices.index(c) if c in layer.choices else 0
           for layer, c in zip(SPACE.layers, gap, strict=True)]
    arch = SPACE.from_indices(idx)  # OFA reads a block past the depth as unused
    assert arch.choices == SMALLEST
    canon = SPACE.canonical_indices(np.array([idx, idx]))
    assert canon.shape == (2, 20) and canon[0].tolist() == SPACE.indices(arch)
    with pytest.raises(HwnasError, match="index 10 out of range 0..9"):
        SPACE.from_indices(idx[:10] + [10] + idx[11:])


# --- resolution ---------------------------------------------------------------------------------

def test_ops_and_build_use_the_arch_resolution() -> None:
    small = SPACE.arch(SMALLEST)
    for r, last in ((160, 5), (128, 4)):
        arch = dataclasses.replace(small, resolution=r)
        SPACE.validate(arch)  # OFA's elastic resolution: a 224 space takes it
        ops = SPACE.ops(arch)
        assert ops[0].h == r and ops[1].h == (r - 1) // 2 + 1
        assert ops[-3].kind == "conv" and ops[-3].h == last
        assert ops == space_of(arch).ops(arch) and space_of(arch).resolution == r
        net = SPACE.build(arch)
        x = torch.randn(2, 3, r, r)
        with torch.no_grad():
            assert tuple(net(x).shape) == (2, 1000)
            assert tuple(net.blocks[:-3](x).shape) == (2, 160, last, last)
    assert SPACE.ops(small)[0].h == 224
    with pytest.raises(HwnasError, match="resolution=150, but this space was built with 224"):
        SPACE.validate(dataclasses.replace(small, resolution=150))
    assert get_space("ofa", 150).ops(dataclasses.replace(small, resolution=150))[0].h == 150
    assert get_space("ofa", 160).sample(0).resolution == 160


def test_lookup_table_refuses_another_resolution() -> None:
    space = get_space("ofa", 128)
    lut = LookupTablePredictor().fit(space, {op.key: 1.0 for op in space.distinct_ops()})
    arch = space.arch(SMALLEST)
    assert lut.predict([arch])[0] == len(space.ops(arch))
    with pytest.raises(HwnasError, match="measured at 128x128, the arch runs at 160x160"):
        lut.predict([dataclasses.replace(arch, resolution=160)])


# --- the network against OFA's layer definitions -------------------------------------------------

def ofa_params(choices: tuple[str, ...], num_classes: int = 1000) -> int:
    """Parameters of an OFA MobileNetV3 subnet, counted from once-for-all's layer definitions
    (ConvLayer, MBConvLayer, SEModule, LinearLayer; BN has 2 per channel, convs no bias)."""
    def bn(c: int) -> int:
        return 2 * c

    total = 3 * 16 * 9 + bn(16)  # first conv
    total += 16 * 9 + bn(16) + 16 * 16 + bn(16)  # first block: expand 1, dw 3x3, project
    cin = 16
    for i, choice in enumerate(choices):
        u = i // 4
        cout, se = (24, 40, 80, 112, 160)[u], (False, True, False, True, True)[u]
        if choice == "skip":
            continue
        k, e = (int(v[1:]) for v in choice.split("_"))
        mid = make_divisible(round(cin * e), 8)
        total += cin * mid + bn(mid) + mid * k * k + bn(mid) + mid * cout + bn(cout)
        if se:
            sq = make_divisible(mid // 4, 8)
            total += mid * sq + sq + sq * mid + mid  # reduce and expand convs with bias
        cin = cout
    total += 160 * 960 + bn(960)  # final expand layer
    total += 960 * 1280  # feature mix layer (no bias, no BN)
    return total + 1280 * num_classes + num_classes  # classifier


def test_parameter_counts_and_macs() -> None:
    counts = {}
    for choices in (LARGEST, SMALLEST):
        arch = SPACE.arch(choices)
        with torch.device("meta"):
            net = SPACE.build(arch)
        ops = SPACE.ops(arch)
        counts[choices] = (n_params(net), sum(op.macs for op in ops))
        assert n_params(net) == sum(op.params for op in ops) == ofa_params(choices)
    (big, big_macs), (small, small_macs) = counts[LARGEST], counts[SMALLEST]
    assert big == 7_664_760  # OFA's mbv3 w1.0 supernet (its largest subnet): ~7.7M
    assert small == 3_410_792
    assert big > small and big_macs > small_macs
    small_128 = sum(op.macs for op in SPACE.ops(dataclasses.replace(SPACE.arch(SMALLEST),
                                                                    resolution=128)))
    assert small_128 < small_macs


def test_se_width_follows_ofa() -> None:
    op = OpSpec("mbv3conv", 24, 40, 56, 56, kernel=3, stride=2, expand=3, se=True, act="relu")
    se = op.module().body[2]
    assert (se.reduce.in_channels, se.reduce.out_channels) == (72, 24)  # make_divisible(18, 8)
    assert op.key == "mbv3conv-i56x56x24-o28x28x40-k3-s2-e3-g1-se-relu-b1-float32"
    assert not op.residual and op.replace(stride=1, cout=24).residual


def test_mbv3_op_module_is_the_block_in_the_network() -> None:
    space = get_space("ofa", 128)
    covered: set[OpSpec] = set()
    with torch.device("meta"), torch.no_grad():
        for t in range(10):  # choice t mod n at every layer: together every choice of every layer
            arch = space.arch([layer.choices[t % len(layer.choices)] for layer in space.layers])
            net, ops = space.build(arch), space.ops(arch)
            assert len(net.blocks) == len(ops)
            for block, op in zip(net.blocks, ops, strict=True):
                alone = op.module()
                assert repr(block) == repr(alone), op.key
                assert n_params(block) == n_params(alone) == op.params, op.key
                assert ({k: v.shape for k, v in block.state_dict().items()}
                        == {k: v.shape for k, v in alone.state_dict().items()}), op.key
                y = alone(torch.empty(op.input_shape))
                expected = ((op.batch, op.cout) if op.kind == "linear"
                            else (op.batch, op.cout, op.out_h, op.out_w))
                assert tuple(y.shape) == expected, op.key
                covered.add(op)
    assert covered == set(space.distinct_ops())


def test_opspec_round_trips_through_a_profile_table(tmp_path: Path) -> None:
    ops = [*SPACE.stem_ops(), SPACE.candidates(4)[8], *SPACE.head_ops()]
    df = pd.DataFrame([{"key": op.key, **op.to_dict(), "median_ms": 1.0} for op in ops])
    write_parquet(tmp_path / "ops.parquet", df)
    back = [op_from_row(row) for row in read_parquet(tmp_path / "ops.parquet").to_dict("records")]
    assert back == ops and back[2].se and back[2].act == "relu"


def test_onnx_export_matches_torch_at_128() -> None:
    ort = pytest.importorskip("onnxruntime")
    from hwnas.convert.onnx import to_onnx_bytes

    arch = dataclasses.replace(SPACE.sample(3), resolution=128)
    torch.manual_seed(0)
    net = SPACE.build(arch)
    with torch.no_grad():  # non-trivial BN statistics, so that folding them is checked too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = net(x).numpy()
    sess = ort.InferenceSession(to_onnx_bytes(net, (1, 3, 128, 128)),
                                providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert out.shape == (1, 1000)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


# --- HELP's encoding ----------------------------------------------------------------------------

def test_help_rows_round_trip() -> None:
    rows = _rows()
    archs = [SPACE.from_help_row(row) for row in rows]
    assert archs[0].choices == ROW0_CHOICES and archs[0].resolution == 204
    assert [a.resolution for a in archs] == [204, 136, 132]
    assert [SPACE.depths(a) for a in archs] == [[2, 2, 2, 2, 3], [2, 3, 4, 3, 4], [4, 4, 2, 2, 4]]
    for row, arch in zip(rows, archs, strict=True):
        back = SPACE.to_help_row(arch)
        assert tuple(back) == HELP_COLUMNS
        assert SPACE.from_help_row(back) == arch
        for u in range(5):
            assert back[f"d{u}"] == row[f"d{u}"]
            for i in range(4 * u, 4 * u + row[f"d{u}"]):  # the used slots
                assert (back[f"ks{i:02d}"], back[f"e{i:02d}"]) == (row[f"ks{i:02d}"],
                                                                  row[f"e{i:02d}"])


@pytest.mark.parametrize("change, message", [
    ({"d0": 5}, "d0 = 5, but a unit's depth is one of 2, 3, 4"),
    ({"ks01": 4}, "ks01 = 4, not one of 3, 5, 7"),
    ({"e17": 2}, "e17 = 2, not one of 3, 4, 6"),
    ({"d2": 2.5}, "d2 must be an integer"),
    ({"resolution": 150}, "resolution=150"),
])
def test_help_row_errors(change: dict, message: str) -> None:
    with pytest.raises(HwnasError, match=message):
        SPACE.from_help_row({**_rows()[0], **change})
    row = _rows()[0]
    del row["e19"]  # unit 5 has depth 3: block 19 is not read
    assert SPACE.from_help_row({**row, "ks19": 99}).choices == ROW0_CHOICES
    del row["e00"]
    with pytest.raises(HwnasError, match="missing column 'e00'"):
        SPACE.from_help_row(row)


def _help_csv(tmp_path: Path, text: str = HELP_OFA_CSV) -> Path:
    p = tmp_path / "ofa_mbv3_latency_help.csv"
    p.write_text(text)
    return p


def test_import_help_ofa_csv(tmp_path: Path) -> None:
    src = _help_csv(tmp_path)
    prof = Profile.load(import_latency_csv(src, "v100_1_ms", tmp_path / "v100"))
    raw = pd.read_csv(src)
    assert prof.record.nets_only is True and len(prof.ops) == 0 and len(prof.nets) == 3
    assert prof.record.space == "ofa" and prof.space.resolution == 224
    assert prof.record.fingerprint["column"] == "v100_1_ms"
    assert prof.record.extra["resolutions"] == [132, 136, 204]
    np.testing.assert_allclose(prof.net_latency(), raw["v100_1_ms"].to_numpy())
    for r, arch in enumerate(prof.archs()):
        assert arch == SPACE.from_help_row(raw.iloc[r].to_dict())
        ops = space_of(arch).ops(arch)
        assert ops[0].h == raw.loc[r, "resolution"]
        assert prof.nets["macs"].iloc[r] == sum(op.macs for op in ops)
        assert prof.nets["params"].iloc[r] == sum(op.params for op in ops)
    model = best_predictor(prof)
    np.testing.assert_allclose(model.predict(prof.archs()), raw["v100_1_ms"].to_numpy())
    with pytest.raises(HwnasError, match="is not in the table of 3 measured networks"):
        model.predict([dataclasses.replace(prof.archs()[0], resolution=224)])


def test_import_help_ofa_csv_cli_and_errors(tmp_path: Path) -> None:
    from hwnas.cli import app

    src = _help_csv(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["import", "latency-csv", str(src), "--device", "titan_rtx_32",
                                 "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    prof = Profile.load(tmp_path / "cli")
    assert prof.record.fingerprint["column"] == "titan_rtx_32_ms" and len(prof.nets) == 3
    assert set(GPU_COLUMNS) == {f"{g}_{b}_ms" for g in ("2080ti", "titan_rtx", "titan_xp", "v100")
                                for b in (1, 32, 64)}
    with pytest.raises(HwnasError, match="missing: L00"):
        import_latency_csv(src, "v100_1", tmp_path / "fb", space="fbnet")
    bad = HELP_OFA_CSV.replace("\n1,136,2,3,4,", "\n1,136,2,3,5,")
    with pytest.raises(HwnasError, match="row 1: d2 = 5, but a unit's depth"):
        import_latency_csv(_help_csv(tmp_path, bad), "v100_1", tmp_path / "bad")


def test_spaces_cli_lists_ofa() -> None:
    from hwnas.cli import app

    result = CliRunner().invoke(app, ["spaces"])
    assert result.exit_code == 0 and "ofa" in result.stdout and "k7_e6" in result.stdout


# --- the full file (../shared/data; skipped without it) -----------------------------------------

def test_full_help_ofa_file(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "latency" / "ofa_mbv3_latency_help.csv"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    raw = pd.read_csv(src)
    assert len(raw) == 5000 and set(GPU_COLUMNS) <= set(raw.columns)
    rows = raw[list(HELP_COLUMNS)].to_dict("records")
    archs = [SPACE.from_help_row(row) for row in rows]
    assert sorted({a.resolution for a in archs}) == list(RESOLUTIONS)
    assert len(set(archs)) == len(archs)
    assert archs[0].choices == ROW0_CHOICES
    for row, arch in zip(rows, archs, strict=True):
        back = SPACE.to_help_row(arch)
        used = [f"{p}{4 * u + s:02d}" for u in range(5) for s in range(row[f"d{u}"])
                for p in ("ks", "e")]
        assert all(back[c] == row[c] for c in ["resolution", *(f"d{u}" for u in range(5)), *used])
    # the importer on the nets of two resolutions (pricing every resolution's ops takes ~10 s)
    part = raw[raw["resolution"].isin([128, 224])]
    part.to_csv(tmp_path / "part.csv", index=False)
    prof = Profile.load(import_latency_csv(tmp_path / "part.csv", "2080ti_64", tmp_path / "p"))
    assert len(prof.nets) == len(part) == 438
    np.testing.assert_allclose(prof.net_latency(), part["2080ti_64_ms"].to_numpy())
    assert [a.resolution for a in prof.archs()] == part["resolution"].tolist()
