"""A held-out zoo of real-world CNNs: the test set of the out-of-space latency benchmark.

The latency predictor is fitted on randomly generated networks; these architectures are written
independently of that generator (plain `torch.nn`, nothing from `hwnas`), from the layer tables of
the papers cited in each `Spec`, in the spirit of nn-Meter's benchmark of real-world models.

    model, shape = build("resnet18", 160)          # eval mode, shape == (1, 3, 160, 160)
    export_onnx("resnet18", 160, "resnet18.onnx")  # opset 17, input "input", output "output"
    macs("resnet18", 224)                          # multiply-accumulates of Conv2d and Linear

`python benchmarks/zoo.py` prints every net's family, parameters, MACs at 224x224 (next to the
figure the paper publishes, where it gives one) and the seconds `torch.onnx.export` takes at 224.

Conventions shared by every net:
- Weights are random but deterministic: `build` seeds its own RNG (the global one is untouched),
  convolutions get He-normal weights, and BatchNorm running statistics are set from one
  training-mode batch of two random images at the build resolution, so activations stay near unit
  scale through deep nets in eval mode (no overflow, no denormals that would distort timing).
- Every net runs at 96, 128, 160 and 224 (checked up to 288). All but AlexNet and VGG
  end in global average pooling. AlexNet and VGG keep the paper's flatten + FC head; their pooling
  before it reduces the last feature map to the largest divisor of its side not above the paper's
  6x6 / 7x7: at 224 that is exactly the paper's head, at 96..160 the map is flattened as is (so the
  first FC layer's width depends on the resolution). A fixed-size adaptive pool would not export:
  the legacy ONNX exporter only handles adaptive pooling whose output divides its input.
- ONNX graphs have static shapes only (no Shape/Gather arithmetic): the ShuffleNets' channel
  shuffle reshapes with sizes fixed at build time, so, like AlexNet and VGG, a ShuffleNet is built
  for one resolution; LRN (AlexNet, GoogLeNet) exports as the single ONNX LRN node.
- Widths and heads that differ from the paper are stated in the Spec's `note`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

NUM_CLASSES = 1000
RESOLUTIONS = (96, 128, 160, 224)


class Spec(NamedTuple):
    family: str
    paper: str
    builder: Callable[[int], nn.Module]  # resolution -> untrained module
    note: str = ""  # every deviation from the paper's network
    paper_mmacs: float | None = None  # multiply-accumulates at 224x224 the paper reports, millions


# --------------------------------------------------------------------------- building blocks


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% down (MobileNet-v2)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation, 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU) -> None:
        pad = (k - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class ConvReLU(nn.Sequential):
    """Conv2d with bias + ReLU, for the pre-BatchNorm nets (AlexNet, VGG, GoogLeNet, SqueezeNet)."""

    def __init__(self, cin: int, cout: int, k: int, s: int = 1, p: int = 0,
                 groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, s, p, groups=groups), nn.ReLU())


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 conv reduce -> act -> 1x1 conv expand -> gate, times the input."""

    def __init__(self, c: int, reduced: int, act: type[nn.Module] = nn.ReLU,
                 gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, c, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear projection (+ skip).

    `exp` is the expanded width itself; no expansion conv when it equals `cin`. `se` is the SE
    block's reduced width (0: none)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, exp: int, act: type[nn.Module],
                 se: int = 0, se_act: type[nn.Module] = nn.ReLU,
                 se_gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, act=act))
        layers.append(ConvBNAct(exp, exp, k, s, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, se, se_act, se_gate))
        layers.append(ConvBNAct(exp, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def gap_head(cin: int, dropout: float = 0.0, hidden: int = 0,
             act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Global average pool -> [Linear hidden + act] -> [dropout] -> Linear to the classes."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if hidden:
        layers += [nn.Linear(cin, hidden), act()]
        cin = hidden
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(cin, NUM_CLASSES))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """Reshape to (groups, channels / groups), transpose, flatten back. The sizes are static (the
    net is built for its resolution), so the ONNX graph is Reshape-Transpose-Reshape with constant
    shapes instead of the Shape/Gather arithmetic that tracing `x.shape` records."""

    def __init__(self, groups: int, channels: int, side: int) -> None:
        super().__init__()
        self.groups, self.channels, self.side = groups, channels, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, c, s = self.groups, self.channels, self.side
        return x.reshape(-1, g, c // g, s, s).transpose(1, 2).reshape(-1, c, s, s)


def down(side: int) -> int:
    """Side after a stride-2 layer with 'same' padding (3x3 conv or pool, padding 1)."""
    return (side + 1) // 2


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float,
                k: float) -> torch.Tensor:
        with warnings.catch_warnings():  # while exporting, the symbolic below replaces this trace
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.Module):
    """Local response normalization across channels (AlexNet, GoogLeNet). Same arithmetic as
    nn.LocalResponseNorm, but exported as the one ONNX LRN node rather than the padded
    average-pool decomposition (with Shape/If nodes) the TorchScript exporter traces."""

    def __init__(self, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)


def fc_head(channels: int, side: int, paper_side: int, hidden: int,
            dropout: float = 0.5) -> nn.Sequential:
    """AlexNet/VGG head: pool the side x side map to the largest divisor of `side` not above
    `paper_side` (none at 224 and below), flatten, two hidden FC layers with dropout, classifier."""
    out = max(d for d in range(1, min(side, paper_side) + 1) if side % d == 0)
    pool: nn.Module = nn.Identity() if out == side else nn.AvgPool2d(side // out)
    return nn.Sequential(
        pool, nn.Flatten(),
        nn.Linear(channels * out * out, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, NUM_CLASSES))


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, s: int) -> None:
        super().__init__()
        cout = width
        self.body = nn.Sequential(ConvBNAct(cin, width, 3, s), ConvBNAct(width, cout, 3, act=None))
        self.shortcut = (nn.Identity() if s == 1 and cin == cout
                         else ConvBNAct(cin, cout, 1, s, act=None))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """The paper's bottleneck (v1): the stride sits on the first 1x1 convolution."""

    expansion = 4

    def __init__(self, cin: int, width: int, s: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(ConvBNAct(cin, width, 1, s), ConvBNAct(width, width, 3),
                                  ConvBNAct(width, cout, 1, act=None))
        self.shortcut = (nn.Identity() if s == 1 and cin == cout
                         else ConvBNAct(cin, cout, 1, s, act=None))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet(block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
        for j in range(n):
            layers.append(block(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width * block.expansion
    return nn.Sequential(*layers, gap_head(cin))


# --------------------------------------------------------------------------- VGG, AlexNet

VGG_CFG = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg(depth: int, resolution: int, width: float = 0.5, hidden: int = 1024) -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG_CFG[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            cout = int(v * width)
            layers.append(ConvReLU(cin, cout, 3, p=1))
            cin = cout
    return nn.Sequential(*layers, fc_head(cin, resolution // 32, 7, hidden))


def alexnet(resolution: int, hidden: int = 1024) -> nn.Module:
    """The paper's two-GPU layout as grouped convolutions (conv2, conv4, conv5: groups=2), LRN."""

    def lrn() -> nn.Module:
        return LRN(5, alpha=1e-4, beta=0.75, k=2.0)

    side = (resolution + 4 - 11) // 4 + 1
    for _ in range(3):
        side = (side - 3) // 2 + 1
    return nn.Sequential(
        ConvReLU(3, 96, 11, 4, 2), lrn(), nn.MaxPool2d(3, 2),
        ConvReLU(96, 256, 5, p=2, groups=2), lrn(), nn.MaxPool2d(3, 2),
        ConvReLU(256, 384, 3, p=1),
        ConvReLU(384, 384, 3, p=1, groups=2),
        ConvReLU(384, 256, 3, p=1, groups=2), nn.MaxPool2d(3, 2),
        fc_head(256, side, 6, hidden))


# ------------------------------------------------------------ MobileNet, MnasNet, EfficientNet


def mobilenet_v1(alpha: float) -> nn.Module:
    def c(v: int) -> int:
        return int(v * alpha)

    cfg = ([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5
           + [(1024, 2), (1024, 1)])
    layers: list[nn.Module] = [ConvBNAct(3, c(32), 3, 2)]
    cin = c(32)
    for cout, s in cfg:
        layers += [ConvBNAct(cin, cin, 3, s, groups=cin), ConvBNAct(cin, c(cout), 1)]
        cin = c(cout)
    return nn.Sequential(*layers, gap_head(cin))


def mobilenet_v2(alpha: float) -> nn.Module:
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]  # (expansion t, channels c, repeats n, stride s)
    cin = make_divisible(32 * alpha)
    layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
    for t, c, n, s in cfg:
        cout = make_divisible(c * alpha)
        for i in range(n):
            layers.append(MBConv(cin, cout, 3, s if i == 0 else 1, cin * t, nn.ReLU6))
            cin = cout
    last = make_divisible(1280 * alpha) if alpha > 1 else 1280  # the paper keeps 1280 below 1.0
    layers.append(ConvBNAct(cin, last, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, gap_head(last, dropout=0.2))


RE, HS = nn.ReLU, nn.Hardswish
# (kernel, expanded width, output width, SE, activation, stride): Tables 1 and 2 of the paper
V3_LARGE = [(3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1),
            (5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1),
            (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
            (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1),
            (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1)]
V3_SMALL = [(3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
            (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
            (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
            (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1)]


def mobilenet_v3(cfg: list, last: int, hidden: int) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
    cin = 16
    for k, exp, cout, se, act, s in cfg:
        layers.append(MBConv(cin, cout, k, s, exp, act, se=make_divisible(exp / 4) if se else 0,
                             se_gate=nn.Hardsigmoid))
        cin = cout
    layers.append(ConvBNAct(cin, last, 1, act=nn.Hardswish))
    return nn.Sequential(*layers, gap_head(last, dropout=0.2, hidden=hidden, act=nn.Hardswish))


def mbconv_net(cfg: list, act: type[nn.Module], dropout: float) -> nn.Module:
    """MnasNet / EfficientNet-B0 skeleton: 3x3 stem to 32, MBConv stages, 1x1 conv to 1280, head.
    cfg rows: (expansion, kernel, output width, repeats, first stride, SE ratio of the input)."""
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=act)]
    cin = 32
    for e, k, cout, n, s, se_ratio in cfg:
        for i in range(n):
            se = max(1, int(cin * se_ratio)) if se_ratio else 0
            layers.append(MBConv(cin, cout, k, s if i == 0 else 1, cin * e, act, se=se, se_act=act))
            cin = cout
    layers.append(ConvBNAct(cin, 1280, 1, act=act))
    return nn.Sequential(*layers, gap_head(1280, dropout=dropout))


MNASNET_A1 = [(1, 3, 16, 1, 1, 0), (6, 3, 24, 2, 2, 0), (3, 5, 40, 3, 2, 0.25), (6, 3, 80, 4, 2, 0),
              (6, 3, 112, 2, 1, 0.25), (6, 5, 160, 3, 2, 0.25), (6, 3, 320, 1, 1, 0)]
MNASNET_B1 = [(1, 3, 16, 1, 1, 0), (3, 3, 24, 3, 2, 0), (3, 5, 40, 3, 2, 0), (6, 5, 80, 3, 2, 0),
              (6, 3, 96, 2, 1, 0), (6, 5, 192, 4, 2, 0), (6, 3, 320, 1, 1, 0)]
EFFICIENTNET_B0 = [(1, 3, 16, 1, 1, 0.25), (6, 3, 24, 2, 2, 0.25), (6, 5, 40, 2, 2, 0.25),
                   (6, 3, 80, 3, 2, 0.25), (6, 5, 112, 3, 1, 0.25), (6, 5, 192, 4, 2, 0.25),
                   (6, 3, 320, 1, 1, 0.25)]


# --------------------------------------------------------------------------- ShuffleNets


class ShuffleV2Unit(nn.Module):
    """Stride 1: split channels in half, transform one half; stride 2: two downsampling branches.
    Concatenate, then shuffle the two groups."""

    def __init__(self, cin: int, cout: int, s: int, side_out: int) -> None:
        super().__init__()
        b = cout // 2
        self.half = b
        self.shuffle = ChannelShuffle(2, cout, side_out)
        self.branch1: nn.Module | None = None
        if s > 1:
            self.branch1 = nn.Sequential(ConvBNAct(cin, cin, 3, s, groups=cin, act=None),
                                         ConvBNAct(cin, b, 1))
        b_in = cin if s > 1 else b
        self.branch2 = nn.Sequential(ConvBNAct(b_in, b, 1),
                                     ConvBNAct(b, b, 3, s, groups=b, act=None),
                                     ConvBNAct(b, b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            a, b = torch.split(x, [self.half, self.half], dim=1)
            out = torch.cat([a, self.branch2(b)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return self.shuffle(out)


def shufflenet_v2(widths: tuple[int, int, int, int], resolution: int) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin, side = 24, down(down(resolution))
    for cout, n in zip(widths[:3], (4, 8, 4), strict=True):
        side = down(side)
        for i in range(n):
            layers.append(ShuffleV2Unit(cin, cout, 2 if i == 0 else 1, side))
            cin = cout
    layers.append(ConvBNAct(cin, widths[3], 1))
    return nn.Sequential(*layers, gap_head(widths[3]))


class ShuffleV1Unit(nn.Module):
    """1x1 group conv -> shuffle -> 3x3 depthwise -> 1x1 group conv; stride 1: add, stride 2: concat
    with a 3x3 average-pooled shortcut."""

    def __init__(self, cin: int, cout: int, s: int, g: int, side_in: int,
                 group_first: bool = True) -> None:
        super().__init__()
        mid = cout // 4
        self.shuffle = ChannelShuffle(g, mid, side_in)
        self.conv1 = ConvBNAct(cin, mid, 1, groups=g if group_first else 1)
        self.dw = ConvBNAct(mid, mid, 3, s, groups=mid, act=None)
        self.conv2 = ConvBNAct(mid, cout - cin if s > 1 else cout, 1, groups=g, act=None)
        self.pool = nn.AvgPool2d(3, 2, 1) if s > 1 else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dw(self.shuffle(self.conv1(x))))
        if self.pool is None:
            return self.relu(x + y)
        return self.relu(torch.cat([self.pool(x), y], 1))


def shufflenet_v1(g: int, widths: tuple[int, int, int], resolution: int) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin, side = 24, down(down(resolution))
    for stage, (cout, n) in enumerate(zip(widths, (4, 8, 4), strict=True)):
        for i in range(n):
            # "we do not apply group convolution on the first pointwise layer" (24 input channels)
            layers.append(ShuffleV1Unit(cin, cout, 2 if i == 0 else 1, g, side,
                                        group_first=not (stage == 0 and i == 0)))
            cin = cout
            side = down(side) if i == 0 else side
    return nn.Sequential(*layers, gap_head(cin))


# --------------------------------------------------------------------------- SqueezeNet


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = ConvReLU(cin, squeeze, 1)
        self.expand1 = ConvReLU(squeeze, e1, 1)
        self.expand3 = ConvReLU(squeeze, e3, 3, p=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


def squeezenet(version: str) -> nn.Module:
    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)  # Caffe pooling rounds up

    if version == "1.0":
        body = [ConvReLU(3, 96, 7, 2), pool(), Fire(96, 16, 64, 64), Fire(128, 16, 64, 64),
                Fire(128, 32, 128, 128), pool(), Fire(256, 32, 128, 128), Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), pool(), Fire(512, 64, 256, 256)]
    else:
        body = [ConvReLU(3, 64, 3, 2), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(), Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256)]
    head = [nn.Dropout(0.5), ConvReLU(512, NUM_CLASSES, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*body, *head)


# --------------------------------------------------------------------------- GhostNet


class GhostModule(nn.Module):
    """Primary 1x1 conv to half the outputs, a cheap 3x3 depthwise conv makes the other half."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        init = math.ceil(cout / 2)
        act = nn.ReLU if relu else None
        self.primary = ConvBNAct(cin, init, 1, act=act)
        self.cheap = ConvBNAct(init, init, 3, groups=init, act=act)
        self.cout = cout
        self.trim = 2 * init != cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        out = torch.cat([y, self.cheap(y)], 1)
        return out[:, : self.cout] if self.trim else out


class GhostBottleneck(nn.Module):
    def __init__(self, cin: int, exp: int, cout: int, k: int, s: int, se: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [GhostModule(cin, exp, relu=True)]
        if s > 1:
            layers.append(ConvBNAct(exp, exp, k, s, groups=exp, act=None))
        if se:
            layers.append(SqueezeExcite(exp, make_divisible(exp * 0.25, 4), gate=nn.Hardsigmoid))
        layers.append(GhostModule(exp, cout, relu=False))
        self.body = nn.Sequential(*layers)
        self.shortcut = (nn.Identity() if s == 1 and cin == cout else nn.Sequential(
            ConvBNAct(cin, cin, k, s, groups=cin, act=None), ConvBNAct(cin, cout, 1, act=None)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


# (kernel, expanded width, output width, SE, stride): Table 7 of the paper
GHOSTNET = [(3, 16, 16, False, 1),
            (3, 48, 24, False, 2), (3, 72, 24, False, 1),
            (5, 72, 40, True, 2), (5, 120, 40, True, 1),
            (3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
            (3, 184, 80, False, 1), (3, 480, 112, True, 1), (3, 672, 112, True, 1),
            (5, 672, 160, True, 2), (5, 960, 160, False, 1), (5, 960, 160, True, 1),
            (5, 960, 160, False, 1), (5, 960, 160, True, 1)]


def ghostnet() -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2)]
    cin = 16
    for k, exp, cout, se, s in GHOSTNET:
        layers.append(GhostBottleneck(cin, exp, cout, k, s, se))
        cin = cout
    layers.append(ConvBNAct(cin, 960, 1))
    head = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(960, 1280, 1), nn.ReLU(), nn.Flatten(),
            nn.Dropout(0.2), nn.Linear(1280, NUM_CLASSES)]
    return nn.Sequential(*layers, *head)


# --------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Sequential):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) on the concatenation of all earlier features."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        mid = bn_size * growth
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, mid, 1, bias=False),
                         nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, growth, 3, padding=1, bias=False))


class DenseBlock(nn.Module):
    def __init__(self, cin: int, n: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features[0] if len(features) == 1 else torch.cat(features, 1)))
        return torch.cat(features, 1)


def densenet(depths: tuple[int, ...], growth: int, stem: int) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, stem, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = stem
    for i, n in enumerate(depths):
        layers.append(DenseBlock(c, n, growth))
        c += n * growth
        if i < len(depths) - 1:  # transition: compression 0.5
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                       nn.AvgPool2d(2, 2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU()]
    return nn.Sequential(*layers, gap_head(c))


# --------------------------------------------------------------------------- GoogLeNet


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) -> None:
        super().__init__()
        self.b1 = ConvReLU(cin, c1, 1)
        self.b3 = nn.Sequential(ConvReLU(cin, c3r, 1), ConvReLU(c3r, c3, 3, p=1))
        self.b5 = nn.Sequential(ConvReLU(cin, c5r, 1), ConvReLU(c5r, c5, 5, p=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvReLU(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


def googlenet() -> nn.Module:
    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    def lrn() -> nn.Module:
        return LRN(5, alpha=1e-4, beta=0.75, k=1.0)

    # Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
    return nn.Sequential(
        ConvReLU(3, 64, 7, 2, 3), pool(), lrn(),
        ConvReLU(64, 64, 1), ConvReLU(64, 192, 3, p=1), lrn(), pool(),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64), pool(),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), pool(),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
        gap_head(1024, dropout=0.4))


# --------------------------------------------------------------------------- RegNet


def regnet_stages(w0: float, wa: float, wm: float, depth: int, group: int,
                  q: int = 8) -> list[tuple[int, int, int]]:
    """The paper's quantized linear width rule -> [(width, blocks, group width)] per stage
    (bottleneck ratio 1; group width capped at the width, widths rounded to a multiple of it)."""
    ks = [round(math.log((w0 + wa * i) / w0) / math.log(wm)) for i in range(depth)]
    ws = [int(round(w0 * wm ** k / q) * q) for k in ks]
    stages: list[tuple[int, int, int]] = []
    for w in ws:
        if stages and stages[-1][0] == w:
            stages[-1] = (w, stages[-1][1] + 1, 0)
        else:
            stages.append((w, 1, 0))
    out = []
    for w, n, _ in stages:
        g = min(group, w)
        out.append((int(round(w / g) * g), n, g))
    return out


class RegNetBlock(nn.Module):
    """X block: 1x1 -> 3x3 group conv (stride) -> 1x1, residual; Y adds SE after the 3x3."""

    def __init__(self, cin: int, cout: int, s: int, group_width: int, se_ratio: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(cin, cout, 1),
                                   ConvBNAct(cout, cout, 3, s, groups=cout // group_width)]
        if se_ratio:
            layers.append(SqueezeExcite(cout, int(round(cin * se_ratio))))
        layers.append(ConvBNAct(cout, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.shortcut = (nn.Identity() if s == 1 and cin == cout
                         else ConvBNAct(cin, cout, 1, s, act=None))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def regnet(w0: float, wa: float, wm: float, depth: int, group: int,
           se_ratio: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2)]
    cin = 32
    for w, n, g in regnet_stages(w0, wa, wm, depth, group):
        for i in range(n):
            layers.append(RegNetBlock(cin, w, 2 if i == 0 else 1, g, se_ratio))
            cin = w
    return nn.Sequential(*layers, gap_head(cin))


# --------------------------------------------------------------------------- the zoo

HE = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
VGG = "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015"
VGG_NOTE = ("half width (conv channels 32..256), FC hidden 1024 instead of 4096; "
            "no BatchNorm as in the paper")
MBV1 = "Howard et al., MobileNets, arXiv:1704.04861, 2017"
MBV2 = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"
MBV3 = "Howard et al., Searching for MobileNetV3, ICCV 2019"
MNAS = "Tan et al., MnasNet: Platform-Aware Neural Architecture Search for Mobile, CVPR 2019"
SHV2 = "Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN Design, ECCV 2018"
SQZ = "Iandola et al., SqueezeNet, arXiv:1602.07360, 2016"
REG = "Radosavovic et al., Designing Network Design Spaces, CVPR 2020"
ALEX = "Krizhevsky et al., ImageNet Classification with Deep CNNs, NeurIPS 2012"
GHOST = "Han et al., GhostNet: More Features from Cheap Operations, CVPR 2020"
DENSE = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"

ZOO: dict[str, Spec] = {
    "resnet18": Spec("resnet", HE, lambda r: resnet(BasicBlock, (2, 2, 2, 2)), paper_mmacs=1800),
    "resnet34": Spec("resnet", HE, lambda r: resnet(BasicBlock, (3, 4, 6, 3)), paper_mmacs=3600),
    "resnet50": Spec("resnet", HE, lambda r: resnet(Bottleneck, (3, 4, 6, 3)),
                     note="stride on the first 1x1 of the bottleneck, as in the paper",
                     paper_mmacs=3800),
    "vgg11_half": Spec("vgg", VGG, lambda r: vgg(11, r), note=VGG_NOTE),
    "vgg16_half": Spec("vgg", VGG, lambda r: vgg(16, r), note=VGG_NOTE),
    "alexnet": Spec("alexnet", ALEX, alexnet,
                    note="FC hidden 1024 instead of 4096; conv1 padding 2 (55x55 at 224)"),
    "mobilenet_v1_1.0": Spec("mobilenet", MBV1, lambda r: mobilenet_v1(1.0), paper_mmacs=569),
    "mobilenet_v1_0.5": Spec("mobilenet", MBV1, lambda r: mobilenet_v1(0.5), paper_mmacs=149),
    "mobilenet_v2_1.0": Spec("mobilenet", MBV2, lambda r: mobilenet_v2(1.0), paper_mmacs=300),
    "mobilenet_v2_0.75": Spec("mobilenet", MBV2, lambda r: mobilenet_v2(0.75), paper_mmacs=209),
    "mobilenet_v3_large": Spec("mobilenet", MBV3, lambda r: mobilenet_v3(V3_LARGE, 960, 1280),
                               note="the head's 1x1 convs on the pooled vector written as Linear",
                               paper_mmacs=219),
    "mobilenet_v3_small": Spec("mobilenet", MBV3, lambda r: mobilenet_v3(V3_SMALL, 576, 1024),
                               note="the head's 1x1 convs on the pooled vector written as Linear; "
                                    "no SE on the last 1x1 conv", paper_mmacs=56),
    "mnasnet_a1": Spec("mnasnet", MNAS, lambda r: mbconv_net(MNASNET_A1, nn.ReLU, 0.2),
                       paper_mmacs=312),
    "mnasnet_b1": Spec("mnasnet", MNAS, lambda r: mbconv_net(MNASNET_B1, nn.ReLU, 0.2)),
    "shufflenet_v2_0.5": Spec("shufflenet", SHV2, lambda r: shufflenet_v2((48, 96, 192, 1024), r),
                              paper_mmacs=41),
    "shufflenet_v2_1.0": Spec("shufflenet", SHV2, lambda r: shufflenet_v2((116, 232, 464, 1024), r),
                              paper_mmacs=146),
    "shufflenet_v1_g3": Spec("shufflenet", "Zhang et al., ShuffleNet, CVPR 2018",
                             lambda r: shufflenet_v1(3, (240, 480, 960), r), note="1.0x, g=3",
                             paper_mmacs=140),
    "squeezenet_1.0": Spec("squeezenet", SQZ, lambda r: squeezenet("1.0")),
    "squeezenet_1.1": Spec("squeezenet", SQZ, lambda r: squeezenet("1.1"),
                           note="v1.1 from the authors' SqueezeNet release"),
    "efficientnet_b0": Spec("efficientnet", "Tan & Le, EfficientNet, ICML 2019",
                            lambda r: mbconv_net(EFFICIENTNET_B0, nn.SiLU, 0.2), paper_mmacs=390),
    "ghostnet_1.0": Spec("ghostnet", GHOST, lambda r: ghostnet(), paper_mmacs=141),
    "densenet121": Spec("densenet", DENSE, lambda r: densenet((6, 12, 24, 16), 32, 64),
                        note="full growth rate 32"),
    "googlenet": Spec("googlenet", "Szegedy et al., Going Deeper with Convolutions, CVPR 2015",
                      lambda r: googlenet(),
                      note="inference graph: no auxiliary classifiers; LRN as in the paper",
                      paper_mmacs=1500),
    "regnetx_400mf": Spec("regnet", REG, lambda r: regnet(24, 24.48, 2.54, 22, 16),
                          paper_mmacs=400),
    "regnety_400mf": Spec("regnet", REG, lambda r: regnet(48, 27.89, 2.09, 16, 8, se_ratio=0.25),
                          paper_mmacs=400),
}


# --------------------------------------------------------------------------- API


def _init_weights(model: nn.Module) -> None:
    """He-normal convolutions; small random biases and BatchNorm affine parameters. No two
    tensors are equal, so the ONNX exporter has no identical initializers to merge behind
    Identity nodes."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.01)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.8, 1.2)
            nn.init.normal_(m.bias, std=0.01)


def _calibrate_batchnorm(model: nn.Module, resolution: int) -> None:
    """Set BatchNorm running statistics to those of one random batch (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, resolution, resolution))
    for bn in bns:
        bn.momentum = 0.1


def build(name: str, resolution: int = 224) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """The zoo net `name` for square `resolution` inputs, in eval mode, with its input shape."""
    spec = ZOO[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.builder(resolution)
        _init_weights(model)
        _calibrate_batchnorm(model, resolution)
    return model.eval(), (1, 3, resolution, resolution)


def _export(model: nn.Module, shape: tuple[int, ...], path: str | Path) -> Path:
    x = torch.zeros(shape)
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"])
    return Path(path)


def export_onnx(name: str, resolution: int, path: str | Path) -> Path:
    """Export the zoo net to ONNX (opset 17, legacy TorchScript exporter, static shapes)."""
    model, shape = build(name, resolution)
    return _export(model, shape, path)


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one input of `shape` (batch 1)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        for h in hooks:
            h.remove()
    return total


def macs(name: str, resolution: int = 224) -> int:
    """Multiply-accumulates of the zoo net's Conv2d and Linear layers at `resolution`."""
    model, shape = build(name, resolution)
    return count_macs(model, shape)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="zoo nets (default: all)")
    ap.add_argument("--resolution", type=int, default=224)
    args = ap.parse_args()
    names = args.names or list(ZOO)
    torch.set_num_threads(1)
    r = args.resolution
    header = ["name", "family", "params (M)", f"MACs@{r} (M)", "paper MACs@224 (M)",
              f"export@{r} (s)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model, shape = build(name, r)
            m = count_macs(model, shape)
            t0 = time.perf_counter()
            _export(model, shape, Path(tmp) / f"{name}.onnx")
            dt = time.perf_counter() - t0
            spec = ZOO[name]
            paper = f"{spec.paper_mmacs:.0f}" if spec.paper_mmacs else "-"
            print(f"| {name} | {spec.family} | {params(model) / 1e6:.2f} | {m / 1e6:.0f} | {paper} "
                  f"| {dt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
