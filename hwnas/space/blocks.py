"""Building blocks of the search spaces (plain torch modules, no search logic).

Each block is built from an `OpSpec` by `OpSpec.module()`, and networks are built from the same
calls, so a block measured alone is the very code that runs inside a network.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "none": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "hsigmoid": nn.Hardsigmoid,
}


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% (ProxylessNAS/MobileNet;
    Once-for-All's `make_divisible` with min_val = divisor)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
            act: str = "relu6", bn_eps: float = 1e-5) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=bn_eps),
    ]
    if act != "none":
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: [N, g, C/g, H, W] -> [N, C/g, g, H, W] -> [N, C, H, W]."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (MobileNetV3 form: reduce 4, ReLU, hard sigmoid).

    `mid`: the squeezed width; default max(8, channels // reduction). Once-for-All's `SEModule`
    uses make_divisible(channels // reduction, 8) (`InvertedResidual` style `mbv3`).
    """

    def __init__(self, channels: int, reduction: int = 4, mid: int | None = None) -> None:
        super().__init__()
        mid = max(8, channels // reduction) if mid is None else mid
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


class InvertedResidual(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity).

    `style="proxyless"` is ProxylessNAS's MBInvertedConvLayer: no expand conv when expand == 1,
    mid = round(cin * expand), ReLU6. `style="fbnet"` is HW-NAS-Bench's FBNet ConvBlock: the
    expand conv is always there, both 1x1 convs are grouped (`groups`) with a channel shuffle
    after the first when groups > 1, ReLU. `style="mbv3"` is Once-for-All's `MBConvLayer` (the
    MobileNetV3 block of `OFAMobileNetV3`): no expand conv when expand == 1,
    mid = make_divisible(round(cin * expand), 8), the activation given (relu or hswish), and
    with `se` a squeeze-excite after the depthwise conv's activation with
    make_divisible(mid // 4, 8) channels (`SEModule`). The residual is added when stride == 1
    and cin == cout.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 groups: int = 1, se: bool = False, act: str = "relu6",
                 style: str = "proxyless", bn_eps: float = 1e-5) -> None:
        super().__init__()
        mid = round(cin * expand)
        if style == "mbv3":
            mid = make_divisible(mid)
        layers: list[nn.Module] = []
        if style == "fbnet" or expand != 1:
            layers.append(conv_bn(cin, mid, 1, groups=groups, act=act, bn_eps=bn_eps))
            if groups > 1:
                layers.append(ChannelShuffle(groups))
        layers.append(conv_bn(mid, mid, kernel, stride, groups=mid, act=act, bn_eps=bn_eps))
        if se:
            layers.append(SqueezeExcite(mid, mid=make_divisible(mid // 4) if style == "mbv3"
                                        else None))
        layers.append(conv_bn(mid, cout, 1, groups=groups, act="none", bn_eps=bn_eps))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Classifier(nn.Module):
    """Global average pool -> flatten -> linear (ProxylessNAS's `Logits`)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class FeatureMix(nn.Module):
    """Global average pool -> 1x1 conv (no bias, no BN) -> activation, keeping N x C x 1 x 1: the
    `feature_mix_layer` of Once-for-All's MobileNetV3, which runs after the pool."""

    def __init__(self, cin: int, cout: int, act: str = "hswish") -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x.mean((2, 3), keepdim=True)))


class UpConv(nn.Module):
    """`upconv`: kxk conv (no bias, 'same' padding) -> BN -> activation at the input size, then
    nearest upsampling by `scale` (HRNet's fusion from a low- to a high-resolution path: conv
    first, where it is cheaper). One Conv (BN folded) + Resize node on export."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, scale: int = 2,
                 act: str = "none") -> None:
        super().__init__()
        self.conv = conv_bn(cin, cout, kernel, 1, act=act)
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


class SegHead(nn.Module):
    """`seghead`: kxk conv with bias ('same' padding) to per-pixel class logits, then bilinear
    upsampling by `scale` (align_corners=False). One Conv + Resize node on export."""

    def __init__(self, cin: int, num_classes: int, kernel: int = 1, scale: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, num_classes, kernel, 1, kernel // 2, bias=True)
        self.up = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


# --- single ops of arbitrary CNNs (the `generic` kinds of OpSpec) ----------------------------

def pool_padding(kernel: int) -> int:
    """Padding of the generic pooling ops: 'same'-like for odd kernels (k3 s2 p1, ResNet's stem
    pool), none for even ones (k2 s2, VGG's pools)."""
    return kernel // 2 if kernel % 2 else 0


def pool(kind: str, kernel: int, stride: int) -> nn.Module:
    """`maxpool` / `avgpool`: one MaxPool / AveragePool node on export."""
    cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
    return cls(kernel, stride, pool_padding(kernel))


def global_pool() -> nn.Module:
    """`gap`: global average pool, keeping N x C x 1 x 1 (a GlobalAveragePool node)."""
    return nn.AdaptiveAvgPool2d(1)


def linear(cin: int, cout: int, act: str = "none") -> nn.Sequential:
    """`linear`: flatten N x C x 1 x 1 -> fully connected (a Gemm node) -> activation."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(cin, cout)]
    if act != "none":
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


class Elementwise(nn.Module):
    """`add` / `mul`: x (op) a second tensor of the same shape, then an activation.

    The second operand is a constant buffer (a graph initializer on export), so the block has
    one input like every other block yet reads two full tensors, as a residual add or an
    elementwise product in a network does. Inside a network the second operand is a tensor of
    the network (`forward(x, other)`, e.g. the fusion adds of `hwnas.space.fbnetv5`): the same
    Add / Mul node, with a second input instead of an initializer.
    """

    def __init__(self, op: str, channels: int, h: int, w: int, act: str = "none") -> None:
        super().__init__()
        if op not in ("add", "mul"):
            raise ValueError(f"elementwise op must be add or mul, got {op!r}")
        self.op = op
        self.register_buffer("other", torch.full((1, channels, h, w), 0.5))
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        other = self.other if other is None else other
        y = x + other if self.op == "add" else x * other
        return self.act(y)


class Network(nn.Module):
    """A chain of blocks (stem, searchable layers, head, classifier), as `SearchSpace.build` makes."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# --- NAS-Bench-201 blocks (Dong & Yang, ICLR 2020; D-X-Y/AutoDL-Projects `cell_operations.py`) --

def relu_conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, act: str = "relu"
                 ) -> nn.Sequential:
    """`reluconvbn`: activation -> Conv (no bias, 'same' padding) -> BatchNorm, the pre-activation
    order of NAS-Bench-201's `ReLUConvBN` (nor_conv_1x1 / nor_conv_3x3, and the convs of its
    ResNet block)."""
    return nn.Sequential(ACTIVATIONS[act](),
                         nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))


def avg_pool_excluding_pad(kernel: int, stride: int) -> nn.AvgPool2d:
    """`avgpool_excl`: average pool, 'same' padding, whose mean ignores the padded zeros
    (`count_include_pad=False`, as NAS-Bench-201's `POOLING` avg_pool_3x3)."""
    return nn.AvgPool2d(kernel, stride, kernel // 2, count_include_pad=False)


class ResNetBasicBlock(nn.Module):
    """`resblock`: NAS-Bench-201's `ResNetBasicblock`, the reduction between its stages.

    conv_a = ReLU-Conv3x3(stride)-BN, conv_b = ReLU-Conv3x3-BN, plus a shortcut: AvgPool 2x2 s2 ->
    Conv1x1 (no bias, no BN) when stride 2; ReLU-Conv1x1-BN when the width changes at stride 1;
    else the identity. Stride 2 needs an even input size (the pool halves it exactly).
    """

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3, act: str = "relu"
                 ) -> None:
        super().__init__()
        self.conv_a = relu_conv_bn(cin, cout, kernel, stride, act)
        self.conv_b = relu_conv_bn(cout, cout, kernel, 1, act)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(2, 2, 0), nn.Conv2d(cin, cout, 1, bias=False))
        elif cin != cout:
            self.downsample = relu_conv_bn(cin, cout, 1, 1, act)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_b(self.conv_a(x))
        return (x if self.downsample is None else self.downsample(x)) + y


class BNClassifier(nn.Module):
    """`bn_classifier`: BatchNorm -> activation -> global average pool -> linear (NAS-Bench-201's
    `lastact` + `global_pooling` + `classifier`)."""

    def __init__(self, cin: int, num_classes: int, act: str = "relu") -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.act = ACTIVATIONS[act]()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(x)).mean((2, 3)))


class Cell(nn.Module):
    """A NAS-Bench-201 cell: a DAG of `nodes` nodes, node 0 the input, node j the sum over i < j of
    edge op_{i->j}(node i), the output the last node (`InferCell`).

    `edges` lists (i, j, module) for every edge whose op is not `none` (a `none` edge adds
    zeros: it is left out). A node without such an input edge is zero (`x * 0`, as the
    official `Zero` op gives); ops reading it still run, exactly as in the official network.
    A node whose value cannot reach the output (no path of edges to it) is not computed, nor
    are the edges into it.
    """

    def __init__(self, edges: list[tuple[int, int, nn.Module]], nodes: int = 4) -> None:
        super().__init__()
        self.nodes = nodes
        self.ops = nn.ModuleList([m for _, _, m in edges])
        self.wiring = [(i, j) for i, j, _ in edges]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        read = {self.nodes - 1}  # the nodes with a path to the output
        for j in range(self.nodes - 1, 0, -1):
            if j in read:
                read |= {i for i, jj in self.wiring if jj == j}
        for j in range(1, self.nodes):
            if j not in read:
                values.append(x)  # a placeholder nothing reads
                continue
            terms = [op(values[i]) for op, (i, jj) in zip(self.ops, self.wiring, strict=True)
                     if jj == j]
            if not terms:
                values.append(x.mul(0.0))
                continue
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            values.append(total)
        return values[-1]
