"""Random CNN graphs: the training networks of the kernel-level latency predictor.

`hwnas predict MODEL.onnx` must price networks that no search space contains. Its kernel
predictor (`hwnas.latency.kernels`) is fitted on the kernels of networks drawn here, never on the
networks it is evaluated on (the benchmark's classic CNNs are a held-out test set). The
generator draws plausible CNNs from the building blocks that classic and mobile CNNs are made of,
with random widths, depths, kernel sizes, activations and input resolutions:

- plain conv (k 1/3/5/7, dense or grouped), stride-2 conv or max/avg pooling to downsample;
- basic and bottleneck residual blocks (optionally grouped 3x3), projection shortcuts;
- inverted residuals (expansion 1-6, depthwise k 3/5/7, optional squeeze-excitation with a
  sigmoid or hard-sigmoid gate), residual add when shapes match;
- channel split + branch + concat + channel shuffle (reshape, transpose, reshape), and the
  two-branch downsampling unit;
- squeeze + parallel 1x1 / 3x3 expand + concat; dense concatenation with a transition;
- multi-branch units (1x1, 3x3, 5x5 or stacked 3x3, pool + 1x1) joined by concat;
- ghost modules (a primary conv plus a cheap depthwise conv on its output, concatenated);
- heads: global average pooling + linear, or pooling to a small grid + two linear layers.

This is nn-Meter's idea of covering the kernel configurations real models use (Zhang et al.,
MobiSys 2021, Sec. 4: kernel detection, adaptive data sampling), reconstructed as whole random
networks: every kernel is then timed inside a network, by the runtime's own per-node profile,
with its real neighbours (layouts, fusions and caches as in a real model). Weights are random:
latency does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

RESOLUTIONS = (64, 96, 112, 128, 160, 192, 224, 256)
ACTS = ("relu", "relu6", "hswish", "silu", "sigmoid", "leaky")
BLOCKS = ("conv", "basic", "bottleneck", "mbconv", "shuffle", "fire", "dense", "branches",
          "ghost")


def act(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "silu": nn.SiLU,
            "sigmoid": nn.Sigmoid, "leaky": lambda: nn.LeakyReLU(0.1),
            "none": nn.Identity}[name]()


def cba(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, a: str = "relu",
        bn: bool = True) -> nn.Sequential:
    """Conv (same padding) -> BatchNorm -> activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if a != "none":
        layers.append(act(a))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduce: int, gate: str) -> None:
        super().__init__()
        mid = max(4, c // reduce)
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.act = nn.ReLU()
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(w))))


class Residual(nn.Module):
    def __init__(self, body: nn.Module, short: nn.Module | None, a: str = "none") -> None:
        super().__init__()
        self.body, self.short, self.act = body, short or nn.Identity(), act(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


class Concat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class DenseLayer(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Channel split (stride 1) or two branches (stride 2), concat, channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int, k: int, a: str) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        bin_ = cin // 2 if stride == 1 else cin
        self.branch = nn.Sequential(cba(bin_, half, 1, a=a), cba(half, half, k, stride, half,
                                                                 a="none"),
                                    cba(half, half, 1, a=a))
        self.short = (nn.Sequential(cba(cin, cin, k, stride, cin, a="none"),
                                    cba(cin, half, 1, a=a)) if stride == 2 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch(b)], 1)
        else:
            out = torch.cat([self.short(x), self.branch(x)], 1)
        return shuffle(out, 2)


@dataclass
class RandomNet:
    """A drawn network: the module (eval mode), its input shape, what was drawn, and its
    multiply-accumulates (`macs`, counted once when it was drawn)."""

    module: nn.Module
    input_shape: tuple[int, int, int, int]
    spec: dict = field(default_factory=dict)
    macs: int = 0


class _Draw:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, values, p=None):
        return values[int(self.rng.choice(len(values), p=p))]

    def channels(self, c: float) -> int:
        """Round to a multiple of 8 mostly, else of 4, else any integer >= 4."""
        r = self.rng.random()
        q = 8 if r < 0.7 else 4 if r < 0.9 else 1
        return max(4 if q > 1 else 3, int(round(c / q)) * q)

    def groups(self, c: int) -> int:
        options = [g for g in (2, 4, 8, 16, 32) if c % g == 0]
        return self.pick(options) if options else 1


def _block(d: _Draw, kind: str, cin: int, cout: int, stride: int, a: str) -> tuple[nn.Module, int]:
    """One block; returns it and its output channels."""
    rng = d.rng
    if kind == "conv":
        k = d.pick((1, 3, 3, 3, 5, 7))
        g = d.groups(cin) if rng.random() < 0.2 and cout % 32 == 0 else 1
        g = g if cout % g == 0 else 1
        return cba(cin, cout, k, stride, g, a), cout
    if kind == "basic":
        body = nn.Sequential(cba(cin, cout, 3, stride, a=a), cba(cout, cout, 3, a="none"))
        short = cba(cin, cout, 1, stride, a="none") if stride > 1 or cin != cout else None
        return Residual(body, short, a), cout
    if kind == "bottleneck":
        mid = d.channels(cout / d.pick((2, 4, 4)))
        g = d.groups(mid) if rng.random() < 0.3 else 1
        body = nn.Sequential(cba(cin, mid, 1, a=a), cba(mid, mid, 3, stride, g, a=a),
                             cba(mid, cout, 1, a="none"))
        short = cba(cin, cout, 1, stride, a="none") if stride > 1 or cin != cout else None
        return Residual(body, short, a), cout
    if kind == "mbconv":
        e = d.pick((1, 3, 4, 6, 6))
        k = d.pick((3, 3, 5, 7))
        mid = d.channels(cin * e) if e > 1 else cin
        layers: list[nn.Module] = [cba(cin, mid, 1, a=a)] if e > 1 else []
        layers.append(cba(mid, mid, k, stride, mid, a=a))
        if rng.random() < 0.4:
            layers.append(SqueezeExcite(mid, d.pick((4, 4, 8, 16)),
                                        d.pick(("sigmoid", "hsigmoid"))))
        layers.append(cba(mid, cout, 1, a="none"))
        body = nn.Sequential(*layers)
        return (Residual(body, None) if stride == 1 and cin == cout else body), cout
    if kind == "shuffle":
        cout = max(8, cout // 2 * 2)
        if stride == 1 and (cin != cout or cin % 2):
            return cba(cin, cout, 1, a=a), cout
        k = d.pick((3, 3, 5))
        return ShuffleUnit(cin, cout, stride, k, a), cout
    if kind == "fire":
        sq = d.channels(cout / d.pick((4, 8)))
        e1 = max(4, cout // 2)
        pre = [nn.MaxPool2d(3, 2, 1)] if stride > 1 else []
        return nn.Sequential(*pre, cba(cin, sq, 1, a=a),
                             Concat(cba(sq, e1, 1, a=a), cba(sq, cout - e1, 3, a=a))), cout
    if kind == "dense":
        growth = d.pick((8, 12, 16, 24, 32))
        layers, c = [], cin
        for _ in range(int(rng.integers(2, 6))):
            bott = 4 * growth if rng.random() < 0.7 else None
            body = (nn.Sequential(nn.BatchNorm2d(c), act(a), nn.Conv2d(c, bott, 1, bias=False),
                                  nn.BatchNorm2d(bott), act(a),
                                  nn.Conv2d(bott, growth, 3, 1, 1, bias=False))
                    if bott else nn.Sequential(nn.BatchNorm2d(c), act(a),
                                               nn.Conv2d(c, growth, 3, 1, 1, bias=False)))
            layers.append(DenseLayer(body))
            c += growth
        layers.append(cba(c, cout, 1, a=a))
        if stride > 1:
            layers.append(nn.AvgPool2d(2, 2))
        return nn.Sequential(*layers), cout
    if kind == "branches":
        q = max(4, cout // 4)
        rest = max(4, cout - 3 * q)
        cout = 3 * q + rest
        mid = d.channels(q * d.pick((0.5, 0.75, 1.0)))
        pre = [nn.MaxPool2d(3, 2, 1)] if stride > 1 else []
        b3 = (nn.Sequential(cba(cin, mid, 1, a=a), cba(mid, q, 5, a=a)) if rng.random() < 0.5
              else nn.Sequential(cba(cin, mid, 1, a=a), cba(mid, q, 3, a=a), cba(q, q, 3, a=a)))
        return nn.Sequential(*pre, Concat(
            cba(cin, q, 1, a=a), nn.Sequential(cba(cin, mid, 1, a=a), cba(mid, q, 3, a=a)), b3,
            nn.Sequential(nn.MaxPool2d(3, 1, 1), cba(cin, rest, 1, a=a)))), cout
    if kind == "ghost":
        cout = max(8, cout // 2 * 2)
        half = cout // 2
        prim = cba(cin, half, 1, a=a)
        ghost = Concat(nn.Identity(), cba(half, half, 3, 1, half, a=a))
        layers = [prim, ghost]
        if stride > 1:
            layers.append(cba(cout, cout, 3, 2, cout, a="none"))
        if rng.random() < 0.3:
            layers.append(SqueezeExcite(cout, 4, "hsigmoid"))
        body = nn.Sequential(*layers)
        return (Residual(body, None) if stride == 1 and cin == cout else body), cout
    raise ValueError(kind)


MAX_MACS = 2.5e9  # draws above this are redrawn: profiling cost stays bounded


def random_cnn(seed: int, resolution: int | None = None) -> RandomNet:
    """A random plausible CNN (eval mode, batch 1) of at most `MAX_MACS` multiply-adds; the
    same seed gives the same network."""
    for attempt in range(100):
        net = _draw(np.random.default_rng([seed, attempt]), resolution)
        net.macs = macs(net.module, net.input_shape)
        if net.macs <= MAX_MACS:
            return net
    return net


def macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers (a forward pass with hooks)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(torch.zeros(shape))
    finally:
        for h in hs:
            h.remove()
    return int(total)


def _draw(rng: np.random.Generator, resolution: int | None) -> RandomNet:
    d = _Draw(rng)
    res = resolution or int(d.pick(RESOLUTIONS, p=[.08, .12, .1, .16, .14, .12, .2, .08]))
    a = d.pick(ACTS, p=[.35, .15, .2, .15, .05, .1])
    c = d.channels(rng.uniform(8, 64))
    stem_stride = d.pick((1, 2, 2, 2))
    layers: list[nn.Module] = [cba(3, c, d.pick((3, 3, 5, 7)), stem_stride, a=a)]
    spec = {"resolution": res, "act": a, "stem": c, "blocks": []}
    if rng.random() < 0.3:
        layers.append(d.pick((nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2, 2), nn.AvgPool2d(2, 2))))
    hw = res // stem_stride // (2 if len(layers) > 1 else 1)
    family = d.pick(BLOCKS)  # most networks keep one block type, some mix them
    mixed = rng.random() < 0.35
    for _ in range(int(rng.integers(3, 7))):
        if hw < 4:
            break
        cout = d.channels(c * rng.uniform(1.2, 2.5))
        for r in range(int(rng.integers(1, 5))):
            kind = d.pick(BLOCKS) if mixed else family
            stride = 2 if r == 0 and hw >= 8 else 1
            block, cout_ = _block(d, kind, c, cout, stride, a)
            layers.append(block)
            spec["blocks"].append(f"{kind}:{c}->{cout_}/s{stride}")
            c, hw = cout_, hw // stride
        if c > 1024:
            break
    classes = int(d.pick((10, 100, 1000, 1000)))
    if rng.random() < 0.8:
        if rng.random() < 0.4:
            last = d.channels(c * rng.uniform(1.5, 4))
            layers.append(cba(c, last, 1, a=a))
            c = last
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    else:
        g = int(d.pick([v for v in (1, 2, 4) if hw % v == 0]))  # ONNX: an exact pooling grid
        hidden = int(d.pick((256, 512, 1024)))
        layers += [nn.AdaptiveAvgPool2d(g), nn.Flatten(), nn.Linear(c * g * g, hidden), act(a),
                   nn.Linear(hidden, classes)]
    spec["classes"] = classes
    return RandomNet(nn.Sequential(*layers).eval(), (1, 3, res, res), spec)
