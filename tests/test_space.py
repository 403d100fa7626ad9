"""Acceptance tests of the search spaces: Arch JSON, validation messages, ops, built networks."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from hwnas.errors import HwnasError
from hwnas.space import SPACES, Arch, OpSpec, SearchSpace, get_space, space_of
from hwnas.space.fbnet import FBNET_CHOICES
from hwnas.space.proxyless import PROXYLESS_MOBILE_CHANNELS, PROXYLESS_MOBILE_CHOICES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Spaces at their default settings; constructing one only makes OpSpecs (no torch modules).
DEFAULT_SPACES = {name: get_space(name) for name in SPACES}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def covering_archs(space: SearchSpace) -> list[Arch]:
    """Archs that, together, use every choice of every layer (choice t mod n at each layer)."""
    most = max(len(layer.choices) for layer in space.layers)
    return [space.arch([layer.choices[t % len(layer.choices)] for layer in space.layers])
            for t in range(most)]


# --- Arch JSON round trip ---------------------------------------------------------------------

def _archs_with_channels_and_meta() -> list[Arch]:
    archs = []
    for name, cls in SPACES.items():
        default = cls.default_channels
        custom = tuple(c + 8 for c in default)
        for seed, (channels, width) in enumerate([(None, 1.0), (custom, 0.75)]):
            space = get_space(name, width=width, channels=channels)
            arch = space.sample(seed)
            archs.append(dataclasses.replace(arch, meta={"seed": seed, "note": "round trip",
                                                         "nested": {"a": [1, 2.5, None]}}))
    return archs


@pytest.mark.parametrize("arch", _archs_with_channels_and_meta(),
                         ids=lambda a: f"{a.space}-{a.width}-{'ch' if a.channels else 'def'}")
def test_arch_json_round_trip(arch: Arch, tmp_path: Path) -> None:
    for back in (Arch.from_json(arch.to_json()), Arch.from_json(arch.to_json(indent=None))):
        assert back == arch
        assert back.meta == arch.meta  # meta is not part of ==, so check it on its own
        assert back.channels == arch.channels
        assert isinstance(back.choices, tuple)
    path = tmp_path / "arch.json"
    arch.save(path)
    loaded = Arch.load(path)
    assert loaded == arch and loaded.meta == arch.meta and loaded.channels == arch.channels
    assert json.loads(path.read_text())["choices"] == list(arch.choices)
    # the loaded arch finds its space again, with the same settings
    space = space_of(loaded)
    assert space.name == arch.space and space.channels == arch.channels
    assert space.ops(loaded) == space_of(arch).ops(arch)


def test_arch_without_channels_or_meta_omits_them() -> None:
    d = json.loads(DEFAULT_SPACES["fbnet"].sample(0).to_json())
    assert "channels" not in d and "meta" not in d
    assert set(d) == {"space", "resolution", "width", "num_classes", "choices"}


# --- invalid Arch inputs: each its own clear HwnasError ---------------------------------------

def _proxyless_dict(**changes: object) -> dict:
    d = DEFAULT_SPACES["proxyless"].sample(0).to_dict()
    d.update(changes)
    return d


def _with_choice(i: int, choice: str) -> Arch:
    space = DEFAULT_SPACES["proxyless"]
    choices = list(space.sample(0).choices)
    choices[i] = choice
    return Arch("proxyless", tuple(choices))


def _missing_file(tmp_path: Path) -> None:
    Arch.load(tmp_path / "nope.json")


def _malformed_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"space": "proxyless",')
    Arch.load(tmp_path / "bad.json")


PROXYLESS_VALID = "valid: k3_e3, k3_e6, k5_e3, k5_e6, k7_e3, k7_e6"

INVALID_CASES = {
    "malformed json": (lambda _: Arch.from_json('{"space": "proxyless", choices: []}'),
                       "malformed arch JSON: Expecting property name"),
    "not an object": (lambda _: Arch.from_json("[1, 2, 3]"),
                      "an arch must be a JSON object, got list"),
    "missing choices": (lambda _: Arch.from_json('{"space": "proxyless"}'),
                        "arch is missing the field(s): choices"),
    "missing both": (lambda _: Arch.from_dict({}),
                     "arch is missing the field(s): space, choices"),
    "unknown field": (lambda _: Arch.from_dict(_proxyless_dict(colour="red", depth=3)),
                      "arch has unknown field(s): colour, depth"),
    "choices not strings": (lambda _: Arch.from_dict(_proxyless_dict(choices=[1, 2, 3])),
                            "arch 'choices' must be a list of choice names (strings)"),
    "choices not a list": (lambda _: Arch.from_dict(_proxyless_dict(choices="k3_e3")),
                           "arch 'choices' must be a list of choice names (strings)"),
    "resolution not int": (lambda _: Arch.from_dict(_proxyless_dict(resolution="224")),
                           "arch 'resolution' must be an integer, got '224'"),
    "channels not ints": (lambda _: Arch.from_dict(_proxyless_dict(channels=["a"])),
                          "arch 'channels' must be a list of integers"),
    "wrong choice name": (lambda _: space_of(_with_choice(5, "k9_e9")),
                          f"layer 5 (stage2.1): unknown choice 'k9_e9'; {PROXYLESS_VALID}, zero"),
    # the first layer of a stage has no `zero`: the message lists exactly its valid choices
    "zero where not allowed": (lambda _: space_of(_with_choice(4, "zero")),
                               f"layer 4 (stage2.0): unknown choice 'zero'; {PROXYLESS_VALID}"),
    "too few choices": (lambda _: space_of(Arch("proxyless", ("k3_e3",) * 20)),
                        "space 'proxyless' has 21 searchable layers, the arch gives 20 choices"),
    "too many choices": (lambda _: space_of(Arch("fbnet", ("skip",) * 23, 32, 1.0, 100)),
                         "space 'fbnet' has 22 searchable layers, the arch gives 23 choices"),
    "wrong space name": (lambda _: DEFAULT_SPACES["proxyless"].validate(
                             DEFAULT_SPACES["fbnet"].sample(0)),
                         "arch is for space 'fbnet', not 'proxyless'"),
    "unknown space": (lambda _: space_of(Arch("darts", ("x",))),
                      "unknown search space 'darts'; known: proxyless, fbnet, fbnet-imagenet"),
    "settings mismatch": (lambda _: get_space("proxyless", resolution=128).validate(
                              DEFAULT_SPACES["proxyless"].sample(0)),
                          "arch has resolution=224, but this space was built with 128"),
    "channels mismatch": (lambda _: get_space("proxyless",
                                              channels=PROXYLESS_MOBILE_CHANNELS).validate(
                              DEFAULT_SPACES["proxyless"].sample(0)),
                          "arch has channels=None, but this space was built with (32, 40"),
    "index out of range": (lambda _: DEFAULT_SPACES["proxyless"].from_indices([6] + [0] * 20),
                           "layer 0: index 6 out of range 0..5"),
    "negative index": (lambda _: DEFAULT_SPACES["fbnet"].from_indices([0] * 21 + [-1]),
                       "layer 21: index -1 out of range 0..8"),
    "wrong index count": (lambda _: DEFAULT_SPACES["fbnet"].from_indices([0] * 3),
                          "space 'fbnet' has 22 layers, got 3 indices"),
    "missing file": (_missing_file, "arch file not found: "),
    "malformed file": (_malformed_file, "bad.json: malformed arch JSON"),
}


@pytest.mark.parametrize("case", list(INVALID_CASES))
def test_invalid_arch_gives_clear_error(case: str, tmp_path: Path) -> None:
    call, expected = INVALID_CASES[case]
    with pytest.raises(HwnasError) as info:
        call(tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_arch_messages_are_all_different(tmp_path: Path) -> None:
    messages = []
    for call, _ in INVALID_CASES.values():
        with pytest.raises(HwnasError) as info:
            call(tmp_path)
        messages.append(str(info.value))
    # distinct mistakes give distinct messages (two cases share one on purpose: bad `choices`)
    assert len(set(messages)) == len({expected for _, expected in INVALID_CASES.values()})


def test_invalid_space_settings() -> None:
    with pytest.raises(HwnasError, match="width multiplier must be within 0.1..4.0, got 0.0"):
        get_space("proxyless", width=0.0)
    with pytest.raises(HwnasError, match="resolution must be within 8..4096, got 4"):
        get_space("fbnet", resolution=4)
    with pytest.raises(HwnasError, match="space 'fbnet' takes 7 stage widths, got 6"):
        get_space("fbnet", channels=PROXYLESS_MOBILE_CHANNELS)


# --- ops of an arch ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,resolution,width", [
    ("proxyless", 224, 1.0), ("proxyless", 96, 0.5), ("proxyless", 160, 1.3),
    ("fbnet", 32, 1.0), ("fbnet", 64, 1.3), ("fbnet-imagenet", 224, 0.5),
])
def test_ops_form_a_chain(name: str, resolution: int, width: float) -> None:
    space = get_space(name, resolution, width)
    for seed in range(3):
        ops = space.ops(space.sample(seed))
        assert ops[0].cin == 3 and ops[0].h == ops[0].w == resolution
        assert ops[-1].kind == "classifier" and ops[-1].cout == space.num_classes
        for prev, op in itertools.pairwise(ops):
            assert (op.cin, op.h, op.w) == (prev.cout, prev.out_h, prev.out_w), (prev.key, op.key)


def test_opspec_key_and_checks() -> None:
    op = OpSpec("mbconv", 24, 40, 56, 56, kernel=5, stride=2, expand=3)
    assert op.key == "mbconv-i56x56x24-o28x28x40-k5-s2-e3-g1-relu6-b1-float32"
    assert op.replace(se=True).key == "mbconv-i56x56x24-o28x28x40-k5-s2-e3-g1-se-relu6-b1-float32"
    assert not op.residual and op.replace(stride=1, cout=24).residual
    with pytest.raises(ValueError, match="unknown op kind"):
        OpSpec("lstm", 1, 1, 1, 1)
    with pytest.raises(ValueError, match="OpSpec.stride must be >= 1"):
        OpSpec("conv", 3, 8, 32, 32, stride=0)


# --- built networks: output shapes ------------------------------------------------------------

def _check_build(space: SearchSpace, arch: Arch, batch: int = 2, whole: bool = True) -> None:
    net = space.build(arch)
    ops = space.ops(arch)
    assert len(net.blocks) == len(ops)
    assert not net.training
    torch.manual_seed(0)
    x = torch.randn(batch, 3, space.resolution, space.resolution)
    with torch.inference_mode():
        y = x
        for block, op in zip(net.blocks, ops, strict=True):
            y = block(y)
            expected = ((batch, op.cout) if op.kind == "classifier"
                        else (batch, op.cout, op.out_h, op.out_w))
            assert tuple(y.shape) == expected, op.key
        assert tuple(y.shape) == (batch, space.num_classes)
        assert torch.isfinite(y).all()
        if whole:
            assert torch.equal(net(x), y)


@pytest.mark.parametrize("name,resolution,width,num_classes", [
    ("proxyless", 96, 1.0, None), ("proxyless", 128, 0.5, 10), ("proxyless", 160, 1.3, 37),
    ("fbnet", 32, 1.0, None), ("fbnet", 32, 0.5, 10), ("fbnet", 64, 1.3, 7),
    ("fbnet-imagenet", 224, 0.5, 200),
])
def test_build_output_shapes(name: str, resolution: int, width: float,
                             num_classes: int | None) -> None:
    space = get_space(name, resolution, width, num_classes)
    assert space.num_classes == (num_classes or SPACES[name].default_num_classes)
    _check_build(space, space.sample(resolution), whole=resolution <= 64)


def test_width_changes_the_widths() -> None:
    narrow, base, wide = (get_space("proxyless", 96, w) for w in (0.5, 1.0, 1.3))
    assert narrow.stage_widths() == (16, 24, 40, 48, 96, 160)
    assert base.stage_widths() == (24, 40, 80, 96, 192, 320)
    assert wide.stage_widths() == (32, 56, 104, 128, 248, 416)
    # the 1280-wide head only grows when width > 1 (as in the ProxylessNAS reference)
    assert [s.head_ops()[0].cout for s in (narrow, base, wide)] == [1280, 1280, 1664]


# --- the published ProxylessNAS-Mobile --------------------------------------------------------
# Sources: ProxylessNAS-Mobile (Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on
# Target Task and Hardware", ICLR 2019, Table 2: 320M multiply-adds at 224x224), the released
# config `proxyless_mobile.config` of mit-han-lab/proxylessnas, and pytorchcv's converted
# `proxylessnas_mobile`, whose test asserts 4,080,512 parameters.

@pytest.fixture(scope="module")
def proxyless_mobile() -> tuple[SearchSpace, Arch, torch.nn.Module]:
    space = get_space("proxyless", channels=PROXYLESS_MOBILE_CHANNELS)
    arch = space.arch(PROXYLESS_MOBILE_CHOICES)
    return space, arch, space.build(arch)


def test_proxyless_mobile_matches_published_counts(proxyless_mobile) -> None:
    space, arch, net = proxyless_mobile
    ops = space.ops(arch)
    assert sum(op.params for op in ops) == 4_080_512
    assert n_params(net) == sum(op.params for op in ops)
    macs = sum(op.macs for op in ops)
    assert abs(macs - 320e6) / 320e6 < 0.02, macs


def test_proxyless_mobile_forward_224(proxyless_mobile) -> None:
    space, _, net = proxyless_mobile
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        y = net(x)
    assert tuple(y.shape) == (2, 1000) and torch.isfinite(y).all()
    assert space.input_shape(2) == (2, 3, 224, 224)


# --- FBNet against HW-NAS-Bench's encoding ----------------------------------------------------

def _hwnasbench_rows(n: int) -> list[dict]:
    path = DATA / "latency" / "fbnet_latency_help.csv"
    if not path.is_file():
        pytest.skip(f"HW-NAS-Bench FBNet data not found at {path} (../shared/data is absent)")
    with path.open(newline="") as f:
        return list(itertools.islice(csv.DictReader(f), n))


def test_fbnet_op_order_is_hwnasbench() -> None:
    assert FBNET_CHOICES == ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2",
                             "k5_e3", "k5_e6", "skip")
    assert all(layer.choices == FBNET_CHOICES for layer in DEFAULT_SPACES["fbnet"].layers)


def test_fbnet_matches_hwnasbench_encoding() -> None:
    rows = _hwnasbench_rows(20)
    space = DEFAULT_SPACES["fbnet"]
    assert (space.resolution, space.num_classes) == (32, 100)
    for row in rows:
        idx = [int(row[f"L{i:02d}"]) for i in range(22)]
        arch = space.from_indices(idx)
        assert space.indices(arch) == idx
        assert "-".join(arch.choices) == row["ops_str"]
        assert list(arch.choices) == row["ops_str"].split("-")
        assert space.indices(Arch.from_json(arch.to_json())) == idx
        enc = space.encode(arch)
        assert [int(np.argmax(seg)) for seg in np.split(enc, 22)] == idx
    _check_build(space, space.from_indices([int(rows[0][f"L{i:02d}"]) for i in range(22)]))


# --- each distinct op is the block at its place in the network --------------------------------

@pytest.mark.parametrize("name,resolution,width,device", [
    ("proxyless", 224, 1.0, "meta"),  # meta: shapes and parameters without memory or compute
    ("proxyless", 96, 0.5, "cpu"),
    ("fbnet", 32, 1.0, "cpu"),
    ("fbnet-imagenet", 224, 1.0, "meta"),
])
def test_distinct_ops_are_the_blocks_of_built_networks(name: str, resolution: int, width: float,
                                                       device: str) -> None:
    space = get_space(name, resolution, width)
    distinct = space.distinct_ops()
    covered: set[OpSpec] = set()
    with torch.device(device), torch.no_grad():
        for arch in covering_archs(space):
            net = space.build(arch)
            ops = space.ops(arch)
            assert len(net.blocks) == len(ops)
            for k, op in enumerate(ops):  # block k of the network is op k of `ops(arch)`
                block, alone = net.blocks[k], op.module()
                assert repr(block) == repr(alone), op.key
                assert n_params(block) == n_params(alone) == op.params, op.key
                assert ({k: v.shape for k, v in block.state_dict().items()}
                        == {k: v.shape for k, v in alone.state_dict().items()}), op.key
                x = torch.randn(op.input_shape)
                y_block, y_alone = block(x), alone(x)
                assert y_block.shape == y_alone.shape, op.key
                expected = ((op.batch, op.cout) if op.kind == "classifier"
                            else (op.batch, op.cout, op.out_h, op.out_w))
                assert tuple(y_alone.shape) == expected, op.key
                covered.add(op)
    assert covered == set(distinct)


@pytest.mark.parametrize("name", list(SPACES))
def test_distinct_ops_unique_and_complete(name: str) -> None:
    space = DEFAULT_SPACES[name]
    ops = space.distinct_ops()
    assert len(ops) == len(set(ops))
    assert len({op.key for op in ops}) == len(ops)
    assert ops == sorted(ops)
    every = set(space.fixed_ops())
    every.update(getattr(space, "extra_ops", list)())
    for i, layer in enumerate(space.layers):
        for j in range(len(layer.choices)):
            every.update(space.choice_ops(i, j))
    assert set(ops) == every
    for seed in range(5):
        assert set(space.ops(space.sample(seed))) <= set(ops)


def _real_count(op: OpSpec) -> tuple[int, int]:
    module = op.module()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.randn(op.input_shape))
    return int(counter.get_total_flops()), n_params(module)


def _few_ops() -> list[OpSpec]:
    prox = get_space("proxyless", 96)
    fb = get_space("fbnet")
    fb_skip_conv = fb.candidates(1)[FBNET_CHOICES.index("skip")]  # 16 -> 24: a 1x1 conv
    return [*prox.stem_ops(), prox.candidates(0)[5], prox.candidates(8)[1], *prox.head_ops(),
            fb.candidates(2)[FBNET_CHOICES.index("k3_e1_g2")],
            fb.candidates(9)[FBNET_CHOICES.index("k5_e6")], fb_skip_conv]


@pytest.mark.parametrize("op", _few_ops(), ids=lambda op: op.key)
def test_macs_match_flop_counter_on_a_real_forward(op: OpSpec) -> None:
    flops, params = _real_count(op)
    assert op.flops == flops
    assert op.macs == flops // 2
    assert op.params == params


def test_macs_by_hand() -> None:
    stem = OpSpec("conv", 3, 32, 224, 224, kernel=3, stride=2)
    assert stem.macs == 112 * 112 * 32 * 3 * 9
    assert stem.params == 32 * 3 * 9 + 2 * 32  # conv (no bias) + BN affine
    head = OpSpec("classifier", 1280, 1000, 7, 7)
    assert head.macs == 1280 * 1000 and head.params == 1280 * 1000 + 1000
    mb = OpSpec("mbconv", 24, 24, 28, 28, kernel=5, stride=1, expand=3)
    assert mb.macs == 28 * 28 * (24 * 72 + 72 * 25 + 72 * 24)


# --- encode and sample ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SPACES))
def test_encode_is_one_hot(name: str) -> None:
    space = DEFAULT_SPACES[name]
    sizes = [len(layer.choices) for layer in space.layers]
    for seed in range(5):
        arch = space.sample(seed)
        enc = space.encode(arch)
        assert enc.dtype == np.float32 and enc.shape == (sum(sizes),)
        assert set(np.unique(enc)) <= {0.0, 1.0} and enc.sum() == len(space.layers)
        segments = np.split(enc, np.cumsum(sizes)[:-1])
        assert [int(np.argmax(s)) for s in segments] == space.indices(arch)
        assert all(s.sum() == 1 for s in segments)


@pytest.mark.parametrize("name", list(SPACES))
def test_sample_is_deterministic_and_valid(name: str) -> None:
    space = DEFAULT_SPACES[name]
    for seed in range(30):
        arch = space.sample(seed)
        assert arch == space.sample(seed) == space.sample(np.random.default_rng(seed))
        space.validate(arch)
        assert space_of(arch).name == name
    assert len({space.sample(seed) for seed in range(10)}) == 10
    # every choice of every layer shows up over enough samples
    seen = [set() for _ in space.layers]
    for seed in range(200):
        for s, c in zip(seen, space.sample(seed).choices, strict=True):
            s.add(c)
    assert all(s == set(layer.choices) for s, layer in zip(seen, space.layers, strict=True))


# --- property: indices -> JSON -> indices is the identity -------------------------------------

@pytest.mark.parametrize("name", list(SPACES))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_indices_json_round_trip_property(name: str, data: st.DataObject) -> None:
    space = DEFAULT_SPACES[name]
    idx = list(data.draw(st.tuples(*(st.integers(0, len(layer.choices) - 1)
                                     for layer in space.layers))))
    arch = Arch.from_json(space.from_indices(idx).to_json())
    if name == "ofa":  # a depth is a prefix: from_indices skips a block after a skipped one
        idx = space.canonical_indices(np.asarray(idx)).tolist()
    assert space_of(arch).indices(arch) == idx
