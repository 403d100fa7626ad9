"""The FBNetV5-style two-path space (`hwnas.space.fbnetv5`, issue 18): the new op kinds, every task's
network (shapes, the ops it runs against the lookup-table sum, skipped blocks not run), the
profiling space `fbnetv5` pricing every task, the supernet and `extract`, ONNX export under
onnxruntime, and a tiny real ort-cpu profile.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.latency.lut import LookupTablePredictor
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.reader import Profile
from hwnas.space import SPACES, Arch, OpSpec, get_space, space_of
from hwnas.space.fbnetv5 import (
    CHOICES,
    DEFAULT_CLASSES,
    TASKS,
    FBNetV5ProfileSpace,
    FBNetV5SegSpace,
    FBNetV5Space,
    MultiPathNetwork,
    extract,
)
from hwnas.space.ops import ALL_KINDS, KINDS, MULTIPATH_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

NAMES = ("fbnetv5", "fbnetv5-cls", "fbnetv5-seg", "fbnetv5-det")
TASK_NAME = {"cls": "fbnetv5-cls", "seg": "fbnetv5-seg", "det": "fbnetv5-det"}


def _out_shape(space: FBNetV5Space, batch: int) -> tuple[int, ...]:
    if space.task == "seg":
        return (batch, space.num_classes, space.resolution, space.resolution)
    return (batch, space.num_classes)


def _archs(space: FBNetV5Space) -> list[Arch]:
    """All keep, all skip, alternating, and a few samples."""
    n = len(space.layers)
    return [space.arch(["keep"] * n), space.arch(["skip"] * n),
            space.arch([CHOICES[i % 2] for i in range(n)]), *(space.sample(s) for s in range(3))]


# --- registry, layers, archs ------------------------------------------------------------------

def test_registry_layers_and_json_round_trip() -> None:
    from hwnas.data.multitask import TASKS as DATA_TASKS

    assert TASKS == DATA_TASKS
    for name in NAMES:
        space = get_space(name)
        assert SPACES[name] is type(space) and isinstance(space, FBNetV5Space)
        assert space.size == 2 ** 12 and len(space.layers) == 12
        assert [la.name for la in space.layers[:4]] == ["s1.p0.b0", "s1.p0.b1", "s1.p1.b0",
                                                        "s1.p1.b1"]
        assert space.layers[-1].name == "s3.p1.b1"
        assert all(la.choices == ("keep", "skip") for la in space.layers)
        assert space.num_classes == DEFAULT_CLASSES[space.task]
        for seed in range(3):
            arch = space.sample(seed)
            back = Arch.from_json(arch.to_json())
            assert back == arch and space_of(back).name == name
            assert space_of(back).ops(back) == space.ops(arch)
            assert space.from_indices(space.indices(arch)) == arch
            assert space.encode(arch).shape == (24,)
    # settings travel with the arch (width, channels, classes)
    custom = get_space("fbnetv5-seg", 64, 0.75, 5, (24, 40))
    arch = Arch.from_json(custom.sample(1).to_json())
    assert space_of(arch).settings() == custom.settings()
    assert get_space("fbnetv5").task == "cls" and get_space("fbnetv5-det").task == "det"


def test_mistakes_are_refused_clearly() -> None:
    with pytest.raises(HwnasError, match="divisible by 4"):
        get_space("fbnetv5-cls", resolution=30)
    with pytest.raises(HwnasError, match="num_classes must be 4"):
        get_space("fbnetv5-det", num_classes=10)
    with pytest.raises(HwnasError, match="base of the fbnetv5 spaces"):
        FBNetV5Space()
    with pytest.raises(HwnasError, match="not a chain"):
        get_space("fbnetv5").candidates(0)
    with pytest.raises(HwnasError, match="unknown fbnetv5 task 'pose'"):
        get_space("fbnetv5").for_task("pose")
    with pytest.raises(HwnasError, match="supernet tasks"):
        get_space("fbnetv5").supernet(("cls", "cls"))
    with pytest.raises(HwnasError, match="4 box coordinates"):
        get_space("fbnetv5").supernet(num_classes={"det": 5})
    space = get_space("fbnetv5-cls")
    net = space.build(space.arch(["skip"] * 12))
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(HwnasError, match="keep needs 12 bits"):
        net(x, [True] * 3)
    with pytest.raises(HwnasError, match=r"s1\.p0\.b0 are kept but this network has not built"):
        net(x, [True] + [False] * 11)
    with pytest.raises(HwnasError, match="no 'seg' head"):
        extract(space.supernet(("cls",)), get_space("fbnetv5-seg"), get_space("fbnetv5-seg")
                .sample(0))
    with pytest.raises(HwnasError, match="shape"):  # other widths
        extract(get_space("fbnetv5", width=0.5).supernet(), space, space.sample(0))


# --- the new op kinds -------------------------------------------------------------------------

def _real_count(op: OpSpec) -> tuple[int, int]:
    module = op.module()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        y = module(torch.randn(op.input_shape))
    assert tuple(y.shape) == (op.batch, op.cout, op.out_h, op.out_w), op.key
    return int(counter.get_total_flops()), sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("op", [
    OpSpec("upconv", 32, 16, 8, 8, kernel=1, stride=2, act="none"),
    OpSpec("upconv", 16, 8, 5, 7, kernel=3, stride=4, act="relu"),
    OpSpec("seghead", 16, 11, 16, 16, kernel=1, stride=2),
    OpSpec("seghead", 8, 3, 6, 6, kernel=3, stride=4),
], ids=lambda op: op.key)
def test_new_kinds_build_and_count(op: OpSpec) -> None:
    assert op.kind in ALL_KINDS and op.kind not in KINDS  # KINDS stays as shipped predictors read it
    assert (op.out_h, op.out_w) == (op.h * op.stride, op.w * op.stride)
    flops, params = _real_count(op)
    assert op.flops == flops and op.macs == flops // 2 and op.params == params  # meta count
    k2 = op.kernel ** 2
    assert op.macs == op.h * op.w * op.cin * op.cout * k2  # the conv at the input size
    if op.kind == "seghead":
        assert op.act == "none" and op.params == op.cin * op.cout * k2 + op.cout  # conv + bias
    else:
        assert op.params == op.cin * op.cout * k2 + 2 * op.cout  # conv + BN affine


def test_new_kinds_checks_and_the_two_input_add() -> None:
    assert MULTIPATH_KINDS == ("upconv", "seghead")
    assert OpSpec("seghead", 8, 3, 4, 4, stride=2, act="relu").act == "none"  # canonical
    with pytest.raises(ValueError, match="odd kernel"):
        OpSpec("upconv", 8, 8, 4, 4, kernel=2, stride=2)
    with pytest.raises(ValueError, match="groups 1"):
        OpSpec("seghead", 8, 4, 4, 4, groups=2, stride=2)
    add = OpSpec("add", 8, 8, 4, 4, act="relu").module()
    x, y = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    assert torch.equal(add(x, y), torch.relu(x + y))
    assert torch.equal(add(x), torch.relu(x + 0.5))  # alone (as measured): a constant operand


# --- networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("resolution,width", [(32, 1.0), (64, 0.5)])
def test_output_shapes(task: str, resolution: int, width: float) -> None:
    space = get_space(TASK_NAME[task], resolution, width)
    c0, c1 = space.stage_widths()
    assert (c0, c1) == ((16, 32) if width == 1.0 else (8, 16))
    x = torch.randn(2, 3, resolution, resolution)
    for arch in _archs(space)[:4]:
        net = space.build(arch)
        assert isinstance(net, MultiPathNetwork) and not net.training
        assert list(net.heads) == [task]
        with torch.no_grad():
            y = net(x)
            p0, p1 = net.forward_features(x)
        assert tuple(y.shape) == _out_shape(space, 2) and torch.isfinite(y).all()
        assert tuple(p0.shape) == (2, c0, resolution // 2, resolution // 2)
        assert tuple(p1.shape) == (2, c1, resolution // 4, resolution // 4)


def _called_ops(net: MultiPathNetwork, x: torch.Tensor, keep=None) -> list[tuple[str, tuple]]:
    """(repr, input shape) of every op module the forward calls, in call order."""
    called: list[tuple[str, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: called.append(
        (repr(mod), tuple(args[0].shape)))) for m in net.op_modules()]
    with torch.no_grad():
        net(x, keep)
    for h in hooks:
        h.remove()
    return called


@pytest.mark.parametrize("name", NAMES)
def test_lut_sum_is_the_ops_the_network_runs(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(0)
    lut = {op.key: float(rng.uniform(0.1, 1.0)) for op in space.distinct_ops()}
    lut_pred = LookupTablePredictor().fit(space, lut)
    x = torch.randn(1, 3, 32, 32)
    for arch in _archs(space):
        ops = space.ops(arch)
        # the table sum (fixed + choices) is the sum over the ops the arch runs
        assert lut_pred.predict([arch])[0] == pytest.approx(sum(lut[op.key] for op in ops))
        idx = space.indices(arch)
        priced = space.fixed_ops() + [o for i, j in enumerate(idx) for o in space.choice_ops(i, j)]
        assert collections.Counter(priced) == collections.Counter(ops)
        # every op module the network calls, in order, is the op of ops(arch) at that place
        net = space.build(arch)
        assert _called_ops(net, x) == [(repr(op.module()), op.input_shape) for op in ops]
        assert len(net.op_modules()) == len(ops)
        # and its multiply-accumulates are the ops' sum
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x)
        assert counter.get_total_flops() == sum(op.flops for op in ops)
        assert sum(p.numel() for p in net.parameters()) == sum(op.params for op in ops)
    # the fusion runs when a stage skips every block
    none = space.ops(space.arch(["skip"] * 12))
    assert [op.kind for op in none].count("upconv") == 3 and [op.kind for op in none].count("add") == 6


def test_profiling_space_prices_every_task() -> None:
    prof = get_space("fbnetv5", 16, 0.5)
    assert isinstance(prof, FBNetV5ProfileSpace) and prof.task == "cls"
    distinct = set(prof.distinct_ops())
    kinds = {op.kind for op in distinct}
    assert {"seghead", "upconv", "featuremix", "mbv3conv", "add"} <= kinds
    seg_head = OpSpec("seghead", 8, 11, 8, 8, kernel=1, stride=2, act="none")
    det_head = OpSpec("linear", 64, 4, 1, 1, act="none")
    assert seg_head in distinct and det_head in distinct
    assert set(prof.extra_ops()) == {seg_head, OpSpec("featuremix", 16, 64, 4, 4, act="relu"),
                                     det_head}
    # the network of `fbnetv5` is the cls network, which runs neither of the other heads
    arch = prof.sample(0)
    assert seg_head not in prof.ops(arch) and det_head not in prof.ops(arch)
    lut = {op.key: 1.0 for op in distinct}
    for task in TASKS:
        space = prof.for_task(task)
        assert space.name == TASK_NAME[task] and space.task == task
        assert (space.resolution, space.width, space.channels) == (16, 0.5, None)
        assert set(space.distinct_ops()) <= distinct
        LookupTablePredictor().fit(space, lut)  # finds every op key
    assert prof.for_task("cls").num_classes == 10 and prof.for_task("seg").num_classes == 11
    assert get_space("fbnetv5", num_classes=7).for_task("cls").num_classes == 7
    assert get_space("fbnetv5-seg").for_task("seg", num_classes=3).num_classes == 3
    assert isinstance(prof.for_task("seg"), FBNetV5SegSpace)


def test_skipped_blocks_are_not_run() -> None:
    space = get_space("fbnetv5")
    sup = space.supernet().eval()
    counts = collections.Counter()
    for key, block in sup.blocks.items():
        block.register_forward_hook(lambda m, a, o, key=key: counts.update([key]))
    bits = [i % 3 == 0 for i in range(12)]
    with torch.no_grad():
        out = sup(torch.randn(1, 3, 32, 32), torch.tensor(bits, dtype=torch.float32))
    assert set(out) == set(TASKS)
    assert dict(counts) == {k: 1 for k, b in zip(sup.keys, bits, strict=True) if b}
    # the built network holds only its kept blocks, and runs each once
    arch = space.arch(["keep" if b else "skip" for b in bits])
    net = space.build(arch)
    assert list(net.blocks) == [k for k, b in zip(sup.keys, bits, strict=True) if b]
    assert net.keep == tuple(bits)


@pytest.mark.parametrize("resolution,width", [(32, 1.0), (64, 0.5)])
def test_forward_features_with_every_block_skipped(resolution: int, width: float) -> None:
    space = get_space("fbnetv5", resolution, width)
    sup = space.supernet()
    c0, c1 = space.stage_widths()
    x = torch.randn(2, 3, resolution, resolution)
    for keep in ([False] * 12, torch.zeros(12), torch.ones(12, dtype=torch.bool)):
        p0, p1 = sup.forward_features(x, keep)
        assert tuple(p0.shape) == (2, c0, resolution // 2, resolution // 2)
        assert tuple(p1.shape) == (2, c1, resolution // 4, resolution // 4)
    out = sup(x, [False] * 12)
    assert tuple(out["seg"].shape) == (2, 11, resolution, resolution)
    assert tuple(out["cls"].shape) == (2, 10) and tuple(out["det"].shape) == (2, 4)


def test_supernet_extract_equals_the_supernet_per_task() -> None:
    torch.manual_seed(0)
    space = get_space("fbnetv5", 32, 0.5)
    sup = space.supernet()
    assert sup.training and len(sup.blocks) == 12 and list(sup.heads) == list(TASKS)
    rng = np.random.default_rng(0)
    with torch.no_grad():  # move the BN statistics off their initial values
        for _ in range(3):
            sup(torch.randn(4, 3, 32, 32), rng.integers(0, 2, 12).tolist())
    sup.eval()
    x = torch.randn(2, 3, 32, 32)
    for task, seed in itertools.product(TASKS, range(2)):
        tspace = space.for_task(task)
        arch = tspace.sample(seed + 10 * TASKS.index(task))
        net = extract(sup, tspace, arch)
        assert not net.training and net.task == task
        with torch.no_grad():
            want = sup(x, tspace.keep_bits(arch))[task]
            got = net(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        with torch.no_grad():  # the search's call: a head on the pair of paths
            feats = sup.forward_features(x, tspace.keep_bits(arch))
            torch.testing.assert_close(sup.heads[task](feats), want, atol=0, rtol=0)
    # other class counts (a user's data set)
    sup3 = space.supernet(("seg", "cls"), num_classes={"seg": 3, "cls": 4, "det": 4}).eval()
    assert list(sup3.heads) == ["seg", "cls"]
    seg3 = get_space("fbnetv5-seg", 32, 0.5, num_classes=3)
    arch = seg3.sample(0)
    with torch.no_grad():
        torch.testing.assert_close(extract(sup3, seg3, arch)(x), sup3(x, seg3.keep_bits(arch))["seg"],
                                   atol=1e-5, rtol=0)
    # the weights do not depend on the resolution: extract into the same space at 64x64
    big = space.for_task("seg").__class__(64, 0.5)
    arch = big.sample(3)
    with torch.no_grad():
        want = sup(torch.ones(1, 3, 64, 64), big.keep_bits(arch))["seg"]
        torch.testing.assert_close(extract(sup, big, arch)(torch.ones(1, 3, 64, 64)), want,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", TASKS)
def test_onnx_export_runs_under_onnxruntime(task: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from hwnas.convert.onnx import INPUT_NAME, export_onnx

    space = get_space(TASK_NAME[task])
    arch = space.sample(5)
    torch.manual_seed(0)
    net = space.build(arch)
    path = export_onnx(net, space.input_shape(), tmp_path / f"{task}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(space.input_shape())
    (y_ort,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        y = net(x).numpy()
    assert y_ort.shape == y.shape == _out_shape(space, 1)
    np.testing.assert_allclose(y_ort, y, atol=1e-4, rtol=0)


# --- a real profile ---------------------------------------------------------------------------

def test_one_quick_profile_prices_every_task(tmp_path: Path) -> None:
    out = tmp_path / "ort-cpu-1t-fbnetv5-16"
    Profiler(ProfileConfig(device="ort-cpu", space="fbnetv5", resolution=16, width=0.5, nets=2,
                           out=out, protocol=Protocol.quick())).run()
    profile = Profile.load(out)
    assert profile.space.name == "fbnetv5" and len(profile.nets) == 2
    lut = profile.lut
    assert set(lut) == {op.key for op in profile.space.distinct_ops()}
    for task in TASKS:
        space = profile.space.for_task(task)
        pred = LookupTablePredictor().fit(space, lut)
        arch = space.sample(0)
        ms = pred.predict([arch])[0]
        assert ms == pytest.approx(sum(lut[op.key] for op in space.ops(arch))) and ms > 0
