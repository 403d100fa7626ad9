"""`OpSpec`: one block instance of a network, the unit of a latency lookup table."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hwnas.space import blocks

KINDS = ("conv", "mbconv", "fbconv", "identity", "classifier",
         # single ops of arbitrary CNNs (`hwnas.profile.generic_ops`, `hwnas.latency.onnx_graph`)
         "linear", "maxpool", "avgpool", "gap", "add", "mul", "act")
# The blocks of NAS-Bench-201 (`hwnas.space.nb201`). Kept out of KINDS on purpose: the saved op
# predictors one-hot KINDS by position (`hwnas.latency.op_predictor.features`), so appending to it
# would shift the features of every predictor already shipped in a profile.
CELL_KINDS = ("reluconvbn", "avgpool_excl", "resblock", "bn_classifier")
# The blocks of Once-for-All's MobileNetV3 space (`hwnas.space.ofa`), out of KINDS likewise.
MBV3_KINDS = ("mbv3conv", "featuremix")
# The multi-path blocks of the FBNetV5-style space (`hwnas.space.fbnetv5`), out of KINDS likewise.
MULTIPATH_KINDS = ("upconv", "seghead")
UPSAMPLING = MULTIPATH_KINDS  # `stride` is the upsampling factor: out = in x stride
ALL_KINDS = KINDS + CELL_KINDS + MBV3_KINDS + MULTIPATH_KINDS
SHAPE_KEEPING = ("maxpool", "avgpool", "gap", "add", "mul", "act", "avgpool_excl")  # cout == cin
NO_ACTIVATION = ("maxpool", "avgpool", "gap", "avgpool_excl", "seghead")  # act always "none"


@dataclass(frozen=True, order=True)
class OpSpec:
    """A block with its input shape: what a lookup table row measures.

    kind: `conv` (conv-BN-act; BN folds into the conv on export, so a plain, grouped or
    depthwise (groups == cin == cout) Conv node + activation), `mbconv` (ProxylessNAS inverted
    residual), `fbconv` (HW-NAS-Bench FBNet block), `identity`, `classifier` (global pool +
    linear). Single ops of arbitrary CNNs: `linear` (fully connected + act, h == w == 1),
    `maxpool` / `avgpool` (kernel, stride), `gap` (global average pool), `add` / `mul`
    (elementwise with a second tensor of the same shape, then act), `act` (an activation alone).
    NAS-Bench-201 blocks: `reluconvbn` (act -> conv -> BN, pre-activation), `avgpool_excl`
    ('same' average pool, count_include_pad=False), `resblock` (its ResNet basic block, the
    reduction between stages), `bn_classifier` (BN -> act -> global pool -> linear).
    Once-for-All MobileNetV3 blocks: `mbv3conv` (its MBConvLayer: 1x1 expand conv-BN-act, omitted
    when expand == 1, kxk depthwise conv-BN-act, squeeze-excite when `se`, 1x1 project conv-BN,
    residual when stride 1 and cin == cout), `featuremix` (global pool -> 1x1 conv without bias or
    BN -> act; output 1x1).
    Multi-path blocks (`hwnas.space.fbnetv5`), whose `stride` is an UPSAMPLING factor (output
    size = input size x stride): `upconv` (kxk conv-BN-act at the input size, then nearest
    upsampling: HRNet's fusion from a low- to a high-resolution path), `seghead` (kxk conv with
    bias, then bilinear upsampling, align_corners=False: per-pixel class logits; act always
    "none").
    h, w: input spatial size; cout of a classifier is the number of classes; the shape-keeping
    kinds have cout == cin; pooling kinds always have act "none".
    """

    kind: str
    cin: int
    cout: int
    h: int
    w: int
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    groups: int = 1
    se: bool = False
    act: str = "relu6"
    batch: int = 1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ALL_KINDS:
            raise ValueError(f"unknown op kind {self.kind!r}; known: {', '.join(ALL_KINDS)}")
        if self.act not in blocks.ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}")
        for name in ("cin", "cout", "h", "w", "kernel", "stride", "expand", "groups", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"OpSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.kind in NO_ACTIVATION and self.act != "none":
            object.__setattr__(self, "act", "none")  # canonical: one key per pooling op
        _check_generic(self)

    @property
    def key(self) -> str:
        """Canonical string, e.g. `mbconv-i56x56x24-o28x28x40-k5-s2-e3-g1-relu6-b1-float32`."""
        se = "-se" if self.se else ""
        return (f"{self.kind}-i{self.h}x{self.w}x{self.cin}-o{self.out_h}x{self.out_w}x{self.cout}"
                f"-k{self.kernel}-s{self.stride}-e{self.expand}-g{self.groups}{se}-{self.act}"
                f"-b{self.batch}-{self.dtype}")

    @property
    def out_h(self) -> int:
        return _out_size(self, self.h)

    @property
    def out_w(self) -> int:
        return _out_size(self, self.w)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.cin, self.h, self.w)

    @property
    def residual(self) -> bool:
        return (self.kind in ("mbconv", "fbconv", "mbv3conv") and self.stride == 1
                and self.cin == self.cout)

    def module(self) -> nn.Module:
        """Build the torch block (eval mode), the same code `SearchSpace.build` uses."""
        return _build(self).eval()

    @property
    def macs(self) -> int:
        """Multiply-accumulates of conv and linear layers (`torch.utils.flop_counter` / 2)."""
        return _count(self)[0] // 2

    @property
    def flops(self) -> int:
        """FLOPs as `torch.utils.flop_counter` counts them (2 per multiply-accumulate)."""
        return _count(self)[0]

    @property
    def params(self) -> int:
        return _count(self)[1]

    def replace(self, **changes: object) -> OpSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _check_generic(op: OpSpec) -> None:
    """Shape rules of the single-op kinds (the space kinds are checked by their spaces)."""
    if op.kind in SHAPE_KEEPING and op.cout != op.cin:
        raise ValueError(f"OpSpec kind {op.kind!r} keeps the channels: cout ({op.cout}) must "
                         f"equal cin ({op.cin})")
    if op.kind in ("add", "mul", "act", "gap", "linear", "featuremix") and op.stride != 1:
        raise ValueError(f"OpSpec kind {op.kind!r} takes stride 1, got {op.stride}")
    if op.kind == "linear" and (op.h, op.w) != (1, 1):
        raise ValueError(f"OpSpec kind 'linear' takes a flattened input (h == w == 1), "
                         f"got {op.h}x{op.w}")
    if op.kind == "act" and op.act == "none":
        raise ValueError("OpSpec kind 'act' needs an activation, got act='none'")
    if op.kind in ("maxpool", "avgpool") and op.kernel % 2 == 0 and min(op.h, op.w) < op.kernel:
        raise ValueError(f"{op.kind} kernel {op.kernel} is larger than the input {op.h}x{op.w}")
    if op.kind in ("avgpool_excl", "reluconvbn") and op.kernel % 2 == 0:
        raise ValueError(f"{op.kind} needs an odd kernel ('same' padding), got {op.kernel}")
    if op.kind == "resblock" and op.stride == 2 and (op.h % 2 or op.w % 2):
        raise ValueError(f"resblock with stride 2 needs an even input size, got {op.h}x{op.w}")
    if op.kind == "resblock" and op.stride > 2:
        raise ValueError(f"resblock takes stride 1 or 2, got {op.stride}")
    if op.kind in UPSAMPLING and (op.groups != 1 or op.kernel % 2 == 0):
        raise ValueError(f"{op.kind} takes groups 1 and an odd kernel ('same' padding), got "
                         f"groups {op.groups}, kernel {op.kernel}")
    if op.kind == "conv" and (op.cin % op.groups or op.cout % op.groups):
        raise ValueError(f"conv groups ({op.groups}) must divide cin ({op.cin}) and cout "
                         f"({op.cout})")


def _out_size(op: OpSpec, size: int) -> int:
    """Output height/width: 'same' padding for convs and blocks; 1 for global ops."""
    if op.kind in ("classifier", "gap", "linear", "bn_classifier", "featuremix"):
        return 1
    if op.kind in UPSAMPLING:
        return size * op.stride
    if op.kind in ("maxpool", "avgpool"):
        return (size + 2 * blocks.pool_padding(op.kernel) - op.kernel) // op.stride + 1
    return (size - 1) // op.stride + 1


def _build(op: OpSpec) -> nn.Module:
    if op.kind == "conv":
        return blocks.conv_bn(op.cin, op.cout, op.kernel, op.stride, op.groups, op.act)
    if op.kind in ("mbconv", "fbconv", "mbv3conv"):
        style = {"mbconv": "proxyless", "fbconv": "fbnet", "mbv3conv": "mbv3"}[op.kind]
        return blocks.InvertedResidual(op.cin, op.cout, op.kernel, op.stride, op.expand,
                                       op.groups, op.se, op.act, style)
    if op.kind == "identity":
        return nn.Identity()
    if op.kind == "classifier":
        return blocks.Classifier(op.cin, op.cout)
    return _build_generic(op)


def _build_generic(op: OpSpec) -> nn.Module:
    if op.kind in CELL_KINDS:
        return _build_cell_kind(op)
    if op.kind == "featuremix":
        return blocks.FeatureMix(op.cin, op.cout, op.act)
    if op.kind == "upconv":
        return blocks.UpConv(op.cin, op.cout, op.kernel, op.stride, op.act)
    if op.kind == "seghead":
        return blocks.SegHead(op.cin, op.cout, op.kernel, op.stride)
    if op.kind == "linear":
        return blocks.linear(op.cin, op.cout, op.act)
    if op.kind in ("maxpool", "avgpool"):
        return blocks.pool(op.kind, op.kernel, op.stride)
    if op.kind == "gap":
        return blocks.global_pool()
    if op.kind in ("add", "mul"):
        return blocks.Elementwise(op.kind, op.cin, op.h, op.w, op.act)
    return blocks.ACTIVATIONS[op.act]()  # "act"


def _build_cell_kind(op: OpSpec) -> nn.Module:
    if op.kind == "reluconvbn":
        return blocks.relu_conv_bn(op.cin, op.cout, op.kernel, op.stride, op.act)
    if op.kind == "avgpool_excl":
        return blocks.avg_pool_excluding_pad(op.kernel, op.stride)
    if op.kind == "resblock":
        return blocks.ResNetBasicBlock(op.cin, op.cout, op.stride, op.kernel, op.act)
    return blocks.BNClassifier(op.cin, op.cout, op.act)  # bn_classifier


@functools.lru_cache(maxsize=65536)
def _count(op: OpSpec) -> tuple[int, int]:
    """(flops, params) of one op, counted on the meta device (no memory, no real compute)."""
    with torch.device("meta"):
        module = _build(op).eval()
        x = torch.empty(op.input_shape)
    params = sum(p.numel() for p in module.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops()), int(params)
