"""`OpSpec`: one block instance of a network, the unit of a latency lookup table."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hwnas.space import blocks

KINDS = ("conv", "mbconv", "fbconv", "identity", "classifier")


@dataclass(frozen=True, order=True)
class OpSpec:
    """A block with its input shape: what a lookup table row measures.

    kind: `conv` (conv-BN-act), `mbconv` (ProxylessNAS inverted residual), `fbconv`
    (HW-NAS-Bench FBNet block), `identity`, `classifier` (global pool + linear).
    h, w: input spatial size; cout of a classifier is the number of classes.
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
        if self.kind not in KINDS:
            raise ValueError(f"unknown op kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.act not in blocks.ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}")
        for name in ("cin", "cout", "h", "w", "kernel", "stride", "expand", "groups", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"OpSpec.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def key(self) -> str:
        """Canonical string, e.g. `mbconv-i56x56x24-o28x28x40-k5-s2-e3-g1-relu6-b1-float32`."""
        se = "-se" if self.se else ""
        return (f"{self.kind}-i{self.h}x{self.w}x{self.cin}-o{self.out_h}x{self.out_w}x{self.cout}"
                f"-k{self.kernel}-s{self.stride}-e{self.expand}-g{self.groups}{se}-{self.act}"
                f"-b{self.batch}-{self.dtype}")

    @property
    def out_h(self) -> int:
        return 1 if self.kind == "classifier" else (self.h - 1) // self.stride + 1

    @property
    def out_w(self) -> int:
        return 1 if self.kind == "classifier" else (self.w - 1) // self.stride + 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.cin, self.h, self.w)

    @property
    def residual(self) -> bool:
        return self.kind in ("mbconv", "fbconv") and self.stride == 1 and self.cin == self.cout

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


def _build(op: OpSpec) -> nn.Module:
    if op.kind == "conv":
        return blocks.conv_bn(op.cin, op.cout, op.kernel, op.stride, op.groups, op.act)
    if op.kind in ("mbconv", "fbconv"):
        style = "proxyless" if op.kind == "mbconv" else "fbnet"
        return blocks.InvertedResidual(op.cin, op.cout, op.kernel, op.stride, op.expand,
                                       op.groups, op.se, op.act, style)
    if op.kind == "identity":
        return nn.Identity()
    return blocks.Classifier(op.cin, op.cout)


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
