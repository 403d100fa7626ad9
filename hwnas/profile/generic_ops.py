"""Generic ops for any-model latency prediction: sampled single-op configurations of real CNNs.

Follows nn-Meter's kernel builder (Zhang et al., MobiSys 2021, Sec. 4.2 and its
`prior_distribution_sampler`): most configurations come from the ranges that published model zoos
use, the rest add the frequent settings (HW 28/56/112, kernels 5/7, strides 2), one sampler per
kernel type. Here the channel count is drawn around a width typical of the spatial size (wide
tensors are small, as in every classic CNN), log-uniform within a factor of about 5 either way,
then, as in model zoos, mostly snapped to a power of two or another common width (24, 40, 96,
...; the runtimes' vector blocks favour them) and otherwise to a multiple of 8; a conv's output
width is often its input width or a small ratio of it (x1/4 ... x6, as in bottlenecks; a 3x3 or
larger dense conv's mostly its input width, x2 or x1/2, as in VGG / ResNet stages). Fully connected
layers span 0.1-64 MB of weights, so that they also show where the cache ends (the memory model
of `hwnas.latency.op_predictor`). Each op's MACs and tensor sizes are capped so that one op runs
in well under ~50 ms on one CPU core. Conv-heavy mix: dense / 1x1 / stem / grouped / depthwise conv,
fully connected, max / average / global pooling, residual add, elementwise mul, activations.

`sample_generic_ops(n, seed)` is deterministic, keys are distinct, batch 1, and the first n ops
of a larger sample are the same n ops (so `hwnas profile --generic` can grow on `--resume`).
"""

from __future__ import annotations

import numpy as np

from hwnas.space import OpSpec

CLASSIC_HW = (7, 14, 28, 56, 112, 224)  # ImageNet networks at 224
SMALL_HW = (3, 4, 5, 6)  # the last stage at 96-192 inputs: wide, weight-bound layers
OTHER_HW = (8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160)  # other inputs
STEM_HW = (96, 112, 128, 160, 192, 224)
MAX_MACS = 6.0e8  # ~5-10 ms for one conv on one core
MAX_ELEMS = 3_000_000  # elements of any one tensor (12 MB in float32)
MAX_FC_WEIGHTS = 16_000_000  # fully connected weights (64 MB: twice a large L3)
COMMON_WIDTHS = (16, 24, 32, 40, 48, 64, 72, 80, 96, 112, 120, 128, 144, 160, 192, 240, 256, 288,
                 320, 384, 448, 480, 512, 576, 640, 672, 768, 960, 1024, 1152, 1280, 1536, 2048)
POW2_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)
RATIOS = (0.25, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0, 4.0, 6.0)  # cout / cin: plain, bottleneck, expansion
# cout / cin of dense k x k convs (k > 1) in classic CNNs: mostly equal (the body of every
# VGG / ResNet / plain stage), doubled where a stage starts, sometimes halved
SPATIAL_RATIOS = (0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0)

# the mix, in slots per 40 ops (conv-heavy); kept as a fixed cycle so that it is exact per 40
MIX = (("conv", 12), ("conv1x1", 5), ("stem", 2), ("gconv", 1), ("dwconv", 7), ("linear", 3),
       ("pool", 2), ("gap", 1), ("add", 2), ("mul", 1), ("act", 4))


def _schedule() -> list[str]:
    """One cycle of sampler names, spread evenly (smooth weighted round robin)."""
    total = sum(w for _, w in MIX)
    credit = dict.fromkeys((name for name, _ in MIX), 0)
    out = []
    for _ in range(total):
        for name, w in MIX:
            credit[name] += w
        best = max(credit, key=credit.get)
        credit[best] -= total
        out.append(best)
    return out


def _hw(rng: np.random.Generator) -> int:
    """A spatial size: 55% the classic ImageNet sizes, 15% the last stage of smaller inputs
    (3-6), 30% the other sizes of other input resolutions."""
    u = rng.random()
    pool = CLASSIC_HW if u < 0.55 else SMALL_HW if u < 0.7 else OTHER_HW
    return int(rng.choice(pool))


def _snap(rng: np.random.Generator, c: float, common: float = 0.7) -> int:
    """A width near c: the nearest power of two (35%), common width (35%) or multiple of 8
    (30%), in [8, 2048]."""
    u = rng.random()
    if u < common / 2:
        return int(min(POW2_WIDTHS, key=lambda w: abs(np.log(w / c))))
    if u < common:
        return int(min(COMMON_WIDTHS, key=lambda w: abs(np.log(w / c))))
    return int(min(2048, max(8, round(c / 8) * 8)))


def _channels(rng: np.random.Generator, hw: int, spread: float = 5.0) -> int:
    """Channels typical of a tensor of spatial size `hw` (24 at 112, 512 at 7 ...), log-uniform
    within `spread` either way, then snapped (`_snap`)."""
    center = 32.0 * (112.0 / hw) ** 0.85
    lo, hi = max(8.0, center / spread), min(2048.0, center * spread)
    return _snap(rng, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def _cout(rng: np.random.Generator, hw: int, cin: int, spread: float = 5.0,
          ratios: tuple[float, ...] = RATIOS, p_ratio: float = 0.6) -> int:
    """Output channels: with probability `p_ratio` a ratio of cin (often equal), else drawn
    like cin."""
    if rng.random() < p_ratio:
        return _snap(rng, cin * float(rng.choice(ratios)))
    return _channels(rng, hw, spread)


def _pick(rng: np.random.Generator, values: tuple, weights: tuple) -> object:
    p = np.asarray(weights, float)
    return values[int(rng.choice(len(values), p=p / p.sum()))]


def _act(rng: np.random.Generator) -> str:
    return str(_pick(rng, ("relu", "relu6", "none", "hswish"), (0.4, 0.25, 0.25, 0.1)))


def _conv(rng: np.random.Generator) -> OpSpec:
    hw = _hw(rng)
    k = int(_pick(rng, (1, 3, 5, 7), (0.25, 0.55, 0.1, 0.1)))
    s = int(_pick(rng, (1, 2), (0.75, 0.25)))
    cin = _channels(rng, hw)
    cout = _cout(rng, hw, cin) if k == 1 else _cout(rng, hw, cin, ratios=SPATIAL_RATIOS,
                                                     p_ratio=0.75)
    return OpSpec("conv", cin, cout, hw, hw, kernel=k, stride=s, act=_act(rng))


def _conv1x1(rng: np.random.Generator) -> OpSpec:
    """A pointwise conv; 20% on a 1x1 map (the reduce / expand convs of squeeze-excitation)."""
    if rng.random() < 0.2:
        cin = _channels(rng, 14)
        cout = _snap(rng, cin * float(rng.choice((0.25, 4.0))))
        act = str(_pick(rng, ("relu", "hsigmoid", "sigmoid"), (0.5, 0.3, 0.2)))
        return OpSpec("conv", cin, cout, 1, 1, kernel=1, act=act)
    hw = _hw(rng)
    cin = _channels(rng, hw, 8.0)
    return OpSpec("conv", cin, _cout(rng, hw, cin, 8.0), hw, hw, kernel=1, act=_act(rng))


def _stem(rng: np.random.Generator) -> OpSpec:
    hw = int(rng.choice(STEM_HW))
    k = int(_pick(rng, (3, 5, 7), (0.6, 0.1, 0.3)))
    cout = int(_pick(rng, (16, 24, 32, 48, 64), (0.25, 0.1, 0.3, 0.1, 0.25)))
    s = int(_pick(rng, (1, 2), (0.25, 0.75)))
    return OpSpec("conv", 3, cout, hw, hw, kernel=k, stride=s, act=_act(rng))


def _gconv(rng: np.random.Generator) -> OpSpec:
    hw = _hw(rng)
    g = int(_pick(rng, (2, 4, 8, 16, 32), (0.3, 0.25, 0.2, 0.1, 0.15)))
    step = 8 * g // np.gcd(8, g)
    cin = max(step, round(_channels(rng, hw) / step) * step)
    cout = max(step, round(_channels(rng, hw) / step) * step)
    k = int(_pick(rng, (1, 3), (0.5, 0.5)))
    s = int(_pick(rng, (1, 2), (0.8, 0.2)))
    return OpSpec("conv", cin, cout, hw, hw, kernel=k, stride=s, groups=g, act=_act(rng))


def _dwconv(rng: np.random.Generator) -> OpSpec:
    hw = _hw(rng)
    c = _channels(rng, hw, 6.0)
    k = int(_pick(rng, (3, 5, 7), (0.6, 0.25, 0.15)))
    s = int(_pick(rng, (1, 2), (0.7, 0.3)))
    return OpSpec("conv", c, c, hw, hw, kernel=k, stride=s, groups=c, act=_act(rng))


def _linear(rng: np.random.Generator, stratum: int = 0) -> OpSpec:
    """Weights in 0.1-64 MB, log-uniform within one of 8 strata (taken in turn, so that any
    profile spans the range); cout 1000 (a classifier) or a hidden width."""
    lo, hi = np.log(25_000), np.log(MAX_FC_WEIGHTS)
    k = (stratum * 3) % 8  # 0, 3, 6, 1, 4, 7, 2, 5: a spread already after a few ops
    weights = np.exp(rng.uniform(lo + (hi - lo) * k / 8, lo + (hi - lo) * (k + 1) / 8))
    cout = int(_pick(rng, (10, 100, 1000, 0), (0.05, 0.1, 0.45, 0.4)))
    if cout == 0:
        cout = _snap(rng, float(np.exp(rng.uniform(np.log(128), np.log(4096)))))
    cin = int(min(32768, max(16, round(weights / cout / 8) * 8)))
    act = "none" if rng.random() < 0.7 else "relu"
    return OpSpec("linear", cin, cout, 1, 1, act=act)


def _pool(rng: np.random.Generator) -> OpSpec:
    hw = _hw(rng)
    kind = "maxpool" if rng.random() < 0.7 else "avgpool"
    k = int(_pick(rng, (2, 3, 5), (0.4, 0.5, 0.1)))
    s = int(_pick(rng, (1, 2), (0.15, 0.85)))
    c = _channels(rng, hw)
    return OpSpec(kind, c, c, max(hw, k), max(hw, k), kernel=k, stride=s)


def _gap(rng: np.random.Generator) -> OpSpec:
    hw = int(rng.choice(CLASSIC_HW[:4] + SMALL_HW + OTHER_HW[:8]))
    c = _channels(rng, hw)
    return OpSpec("gap", c, c, hw, hw)


def _eltwise(kind: str, rng: np.random.Generator) -> OpSpec:
    hw = _hw(rng)
    c = _channels(rng, hw)
    if kind == "add":
        act = "relu" if rng.random() < 0.5 else "none"
    elif kind == "mul":
        act = "none"
    else:
        act = str(_pick(rng, ("relu", "relu6", "hswish", "sigmoid", "hsigmoid"),
                        (0.5, 0.15, 0.15, 0.1, 0.1)))  # ReLU also prices layout reorders
    return OpSpec(kind, c, c, hw, hw, act=act)


SAMPLERS = {
    "conv": _conv, "conv1x1": _conv1x1, "stem": _stem, "gconv": _gconv, "dwconv": _dwconv,
    "linear": _linear, "pool": _pool, "gap": _gap,
    "add": lambda rng: _eltwise("add", rng), "mul": lambda rng: _eltwise("mul", rng),
    "act": lambda rng: _eltwise("act", rng),
}


def within_limits(op: OpSpec) -> bool:
    """True when one op is cheap enough to measure (MACs, tensor sizes, FC weights capped)."""
    elems = max(op.cin * op.h * op.w, op.cout * op.out_h * op.out_w)
    if elems > MAX_ELEMS:
        return False
    if op.kind == "linear":
        return op.cin * op.cout <= MAX_FC_WEIGHTS
    if op.kind == "conv":
        macs = op.out_h * op.out_w * op.cout * (op.cin // op.groups) * op.kernel ** 2
        return macs <= MAX_MACS
    return True


def sample_generic_ops(n: int, seed: int = 0, max_tries: int = 200) -> list[OpSpec]:
    """`n` distinct generic ops (batch 1, float32), deterministic per seed, prefix-stable."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E6E]))
    schedule = _schedule()
    ops: list[OpSpec] = []
    seen: set[str] = set()
    n_linear = 0
    while len(ops) < n:
        name = schedule[len(ops) % len(schedule)]
        sampler = SAMPLERS[name]
        for _ in range(max_tries):
            op = _linear(rng, n_linear) if name == "linear" else sampler(rng)
            if op.key not in seen and within_limits(op):
                break
        else:
            raise RuntimeError(f"could not sample a new {schedule[len(ops) % len(schedule)]} "
                               f"op in {max_tries} tries")
        seen.add(op.key)
        ops.append(op)
        n_linear += name == "linear"
    return ops
