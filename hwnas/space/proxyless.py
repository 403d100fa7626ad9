"""The ProxylessNAS MobileNetV2-based search space (Cai et al., ICLR 2019).

Follows mit-han-lab/proxylessnas (`SuperProxylessNASNets`): stem conv 3x3 s2 to 32 -> BN ->
ReLU6; a fixed MBConv (expand 1, kernel 3) to 16; 21 searchable layers in stages of widths
24,40,80,96,192,320, depths 4,4,4,4,4,1, first strides 2,2,2,1,2,1, each choosing an MBConv with
kernel {3,5,7} x expand {3,6}, plus `zero` (the layer is skipped, leaving its identity shortcut)
on the 15 layers that are not first in their stage; head 1x1 conv to 1280 -> BN -> ReLU6, global
average pool, linear. Width multiplier as in the reference: every width `make_divisible(c * w, 8)`,
the 1280 head only when w > 1.
"""

from __future__ import annotations

from hwnas.space.base import Layer, SearchSpace, make_divisible
from hwnas.space.ops import OpSpec

MBCONV_CHOICES = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")
DEPTHS = (4, 4, 4, 4, 4, 1)
STRIDES = (2, 2, 2, 1, 2, 1)


def parse_choice(choice: str) -> tuple[int, int]:
    """`k5_e3` -> (kernel 5, expand 3)."""
    k, e = choice.split("_")
    return int(k[1:]), int(e[1:])


class ProxylessSpace(SearchSpace):
    name = "proxyless"
    description = "ProxylessNAS MobileNetV2 space: MBConv k{3,5,7} x e{3,6} + zero"
    default_channels = (24, 40, 80, 96, 192, 320)

    def _feature(self, h: int) -> int:
        return (h - 1) // 2 + 1

    def _first_widths(self) -> tuple[int, int]:
        return make_divisible(32 * self.width), make_divisible(16 * self.width)

    def stem_ops(self) -> list[OpSpec]:
        stem, first = self._first_widths()
        r = self.resolution
        h = self._feature(r)
        return [OpSpec("conv", 3, stem, r, r, kernel=3, stride=2, act="relu6"),
                OpSpec("mbconv", stem, first, h, h, kernel=3, stride=1, expand=1, act="relu6")]

    def _layers(self) -> list[Layer]:
        layers = []
        cin = self._first_widths()[1]
        h = self._feature(self.resolution)
        for s, (cout, depth, stride) in enumerate(zip(self.stage_widths(), DEPTHS, STRIDES,
                                                     strict=True)):
            for d in range(depth):
                st = stride if d == 0 else 1
                choices = MBCONV_CHOICES if d == 0 else MBCONV_CHOICES + ("zero",)
                layers.append(Layer(f"stage{s + 1}.{d}", cin, cout, st, h, h, choices))
                h = (h - 1) // st + 1
                cin = cout
        return layers

    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        if choice == "zero":
            return None
        kernel, expand = parse_choice(choice)
        return OpSpec("mbconv", layer.cin, layer.cout, layer.h, layer.w, kernel=kernel,
                      stride=layer.stride, expand=expand, act="relu6")

    def head_ops(self) -> list[OpSpec]:
        last = self.layers[-1]
        h = (last.h - 1) // last.stride + 1
        mix = make_divisible(1280 * self.width) if self.width > 1.0 else 1280
        return [OpSpec("conv", last.cout, mix, h, h, kernel=1, act="relu6"),
                OpSpec("classifier", mix, self.num_classes, h, h)]


# The released ProxylessNAS-Mobile (proxyless_mobile.config of mit-han-lab/proxylessnas): its first
# stage is 32 wide (the search used 24), the rest as the space.
PROXYLESS_MOBILE_CHANNELS = (32, 40, 80, 96, 192, 320)
PROXYLESS_MOBILE_CHOICES = (
    "k5_e3", "k3_e3", "zero", "zero",
    "k7_e3", "k3_e3", "k5_e3", "k5_e3",
    "k7_e6", "k5_e3", "k5_e3", "k5_e3",
    "k5_e6", "k5_e3", "k5_e3", "k5_e3",
    "k7_e6", "k7_e6", "k7_e3", "k7_e3",
    "k7_e6",
)
