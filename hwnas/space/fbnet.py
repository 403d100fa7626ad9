"""The FBNet search space exactly as HW-NAS-Bench defines it (`FBNet_Infer`, Li et al., ICLR 2021).

22 searchable layers in stages [1,4,4,4,4,4,1] of widths [16,24,32,64,112,184,352] after a 3x3
stem to 16; each layer picks one of 9 ops, in HW-NAS-Bench's order (its index encoding
`L00..L21`): k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip. An op is a
1x1 (grouped) conv -> [channel shuffle if g2] -> kxk depthwise -> 1x1 (grouped) conv, with
BN + ReLU after the first two, mid = cin * e, residual when stride 1 and cin == cout. `skip` is
the identity, or a 1x1 conv-BN-ReLU where the stride or width changes. CIFAR setting: stem stride
1, stage strides [1,1,2,2,1,2,1], head 1x1 conv to 1504. ImageNet setting: stem stride 2, strides
[1,2,2,2,1,2,1], head to 1984.
"""

from __future__ import annotations

from hwnas.space.base import Layer, SearchSpace, make_divisible
from hwnas.space.ops import OpSpec

FBNET_CHOICES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6",
                 "skip")
DEPTHS = (1, 4, 4, 4, 4, 4, 1)


class FBNetSpace(SearchSpace):
    """HW-NAS-Bench's FBNet space, CIFAR setting (its latency tables use 32x32, 100 classes)."""

    name = "fbnet"
    description = "FBNet / HW-NAS-Bench space (CIFAR setting): 22 layers x 9 ops"
    default_resolution = 32
    default_num_classes = 100
    default_channels = (16, 24, 32, 64, 112, 184, 352)
    stem_stride = 1
    strides = (1, 1, 2, 2, 1, 2, 1)
    header = 1504

    def _stem_width(self) -> int:
        return make_divisible(16 * self.width)

    def _after_stem(self) -> int:
        return (self.resolution - 1) // self.stem_stride + 1

    def stem_ops(self) -> list[OpSpec]:
        r = self.resolution
        return [OpSpec("conv", 3, self._stem_width(), r, r, kernel=3, stride=self.stem_stride,
                       act="relu")]

    def _layers(self) -> list[Layer]:
        layers = []
        cin, h = self._stem_width(), self._after_stem()
        for s, (cout, depth, stride) in enumerate(zip(self.stage_widths(), DEPTHS, self.strides,
                                                     strict=True)):
            for d in range(depth):
                st = stride if d == 0 else 1
                layers.append(Layer(f"stage{s}.{d}", cin, cout, st, h, h, FBNET_CHOICES))
                h = (h - 1) // st + 1
                cin = cout
        return layers

    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        if choice == "skip":
            if layer.stride == 1 and layer.cin == layer.cout:
                return None
            return OpSpec("conv", layer.cin, layer.cout, layer.h, layer.w, kernel=1,
                          stride=layer.stride, act="relu")
        parts = choice.split("_")
        kernel, expand = int(parts[0][1:]), int(parts[1][1:])
        groups = int(parts[2][1:]) if len(parts) == 3 else 1
        return OpSpec("fbconv", layer.cin, layer.cout, layer.h, layer.w, kernel=kernel,
                      stride=layer.stride, expand=expand, groups=groups, act="relu")

    def head_ops(self) -> list[OpSpec]:
        last = self.layers[-1]
        h = (last.h - 1) // last.stride + 1
        return [OpSpec("conv", last.cout, self.header, h, h, kernel=1, act="relu"),
                OpSpec("classifier", self.header, self.num_classes, h, h)]


class FBNetImageNetSpace(FBNetSpace):
    """HW-NAS-Bench's FBNet space, ImageNet setting."""

    name = "fbnet-imagenet"
    description = "FBNet / HW-NAS-Bench space (ImageNet setting): 22 layers x 9 ops"
    default_resolution = 224
    default_num_classes = 1000
    stem_stride = 2
    strides = (1, 2, 2, 2, 1, 2, 1)
    header = 1984
