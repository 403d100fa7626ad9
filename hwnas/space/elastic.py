"""Weight-entangled (elastic) inverted-residual blocks: one set of weights for every kernel and
expand choice of a layer.

Once-for-All (Cai et al., ICLR 2020, Sec. 3.2 "elastic kernel size" / "elastic width"), following
mit-han-lab/once-for-all `ofa/utils/layers.py` and `ofa/imagenet_classification/elastic_nn/
modules/dynamic_op.py` (`DynamicSeparableConv2d`, `DynamicConv2d`, `DynamicBatchNorm2d`,
`DynamicMBConvLayer`):

- the layer holds the largest block: the 1x1 expand conv to mid_max = round(cin x e_max), the
  depthwise conv of the largest kernel K, the 1x1 project conv;
- expand e takes the first round(cin x e) channels of the expand conv's output, of the depthwise
  conv and of the project conv's input (`DynamicConv2d.get_active_filter`: the prefix; the
  released OFA sorts channels by importance before shrinking, not done here);
- kernel k is the centre k x k crop of the K x K depthwise kernel (`get_active_filter` with
  `start, end = sub_filter_start_end(K, k)`). Simplification: OFA also learns a k^2 x k^2
  "kernel transform matrix" per size; it is off here (OFA's `KERNEL_TRANSFORM_MODE = None`);
- the last BatchNorm of a residual block starts with gamma = 0, so the block starts as the identity
  (OFA's `zero_last_gamma`, Goyal et al. 2017): measured here, uniform single-path training of
  the proxyless space at 16x16 on digits reaches 0.85 training accuracy after 6 epochs with it and
  0.36 without;
- BatchNorm: the first c entries of the running statistics and affine parameters
  (`DynamicBatchNorm2d.bn_forward`, the `SET_RUNNING_STATISTICS` path not used: re-calibrate
  the statistics of a chosen path before evaluating it, `hwnas.search.trainer.recalibrate_bn`).

A choice (k, e) of a `SharedInvertedResidual` computes the same function as
`blocks.InvertedResidual(cin, cout, k, stride, e, style=...)` whose weights are those slices
(checked in tests/test_supernet_rank.py), so a path of an entangled supernet is a network of the
space that the profile measured. Only ungrouped blocks without squeeze-excite are entangled;
others keep their own weights (`hwnas.search.supernet.SuperNet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.blocks import ACTIVATIONS


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> torch.Tensor:
    """BatchNorm over the first c channels (`DynamicBatchNorm2d.bn_forward`)."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked += 1
        factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None  # cumulative
                  else bn.momentum)
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training or not bn.track_running_stats, factor, bn.eps)


def _kaiming(shape: tuple[int, ...]) -> nn.Parameter:
    w = torch.empty(shape)
    nn.init.kaiming_normal_(w, mode="fan_out")
    return nn.Parameter(w)


class SharedInvertedResidual(nn.Module):
    """The largest inverted-residual block of a layer; `choice(kernel, expand)` runs a slice.

    `style` as `blocks.InvertedResidual`: `proxyless` (no expand conv when e == 1, ReLU6 by
    default) or `fbnet` (always an expand conv). `max_kernel`, `max_expand` are the largest choices
    of the layer. `forward` runs the active choice (`set_active`); the identity shortcut is added
    when stride == 1 and cin == cout, as in the plain block.
    """

    def __init__(self, cin: int, cout: int, stride: int, max_kernel: int, max_expand: float,
                 act: str = "relu6", style: str = "proxyless") -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.style = cin, cout, stride, style
        self.max_kernel = max_kernel
        self.mid_max = max(round(cin * max_expand), cin)
        self.act = ACTIVATIONS[act]()
        self.expand_w = _kaiming((self.mid_max, cin, 1, 1))
        self.expand_bn = nn.BatchNorm2d(self.mid_max)
        self.dw_w = _kaiming((self.mid_max, 1, max_kernel, max_kernel))
        self.dw_bn = nn.BatchNorm2d(self.mid_max)
        self.project_w = _kaiming((cout, self.mid_max, 1, 1))
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout
        if self.residual:  # OFA `zero_last_gamma`: a residual block starts as the identity
            nn.init.zeros_(self.project_bn.weight)
        self.kernel, self.expand = max_kernel, max_expand

    def set_active(self, kernel: int, expand: float) -> None:
        if kernel > self.max_kernel or kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} is not a centre crop of {self.max_kernel}")
        if round(self.cin * expand) > self.mid_max:
            raise ValueError(f"expand {expand} exceeds the shared block's width")
        self.kernel, self.expand = kernel, expand

    def run(self, x: torch.Tensor, kernel: int, expand: float) -> torch.Tensor:
        """The block of choice (kernel, expand) on x."""
        mid = round(self.cin * expand)
        if self.style == "fbnet" or expand != 1:
            y = self.act(_bn(F.conv2d(x, self.expand_w[:mid]), self.expand_bn, mid))
        else:
            y = x
        start = (self.max_kernel - kernel) // 2
        dw = self.dw_w[:mid, :, start:start + kernel, start:start + kernel]
        y = self.act(_bn(F.conv2d(y, dw, stride=self.stride, padding=kernel // 2, groups=mid),
                         self.dw_bn, mid))
        y = _bn(F.conv2d(y, self.project_w[:, :mid]), self.project_bn, self.cout)
        return x + y if self.residual else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.kernel, self.expand)


class ElasticChoice(nn.Module):
    """One (kernel, expand) choice of a `SharedInvertedResidual`, usable as a candidate module.

    It does not register the shared block as a submodule (the shared weights belong to whoever
    owns the `SharedInvertedResidual`, once): parameters are not duplicated in `state_dict`.
    """

    def __init__(self, shared: SharedInvertedResidual, kernel: int, expand: float) -> None:
        super().__init__()
        object.__setattr__(self, "_shared", shared)
        self.kernel, self.expand = kernel, expand

    @property
    def shared(self) -> SharedInvertedResidual:
        return self._shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared.run(x, self.kernel, self.expand)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, expand={self.expand}"


def load_choice_into(block: nn.Module, shared: SharedInvertedResidual, kernel: int,
                     expand: float) -> None:
    """Copy the slice (kernel, expand) of `shared` into a plain `blocks.InvertedResidual`
    (`DynamicMBConvLayer.get_active_subnet`): the extracted block computes what the choice did."""
    mid = round(shared.cin * expand)
    start = (shared.max_kernel - kernel) // 2
    convs = [m for m in block.body.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in block.body.modules() if isinstance(m, nn.BatchNorm2d)]
    pairs = []
    if len(convs) == 3:
        pairs.append((convs[0], bns[0], shared.expand_w[:mid], shared.expand_bn, mid))
        convs, bns = convs[1:], bns[1:]
    pairs.append((convs[0], bns[0], shared.dw_w[:mid, :, start:start + kernel,
                                                start:start + kernel], shared.dw_bn, mid))
    pairs.append((convs[1], bns[1], shared.project_w[:, :mid], shared.project_bn, shared.cout))
    with torch.no_grad():
        for conv, bn, w, sbn, c in pairs:
            if conv.weight.shape != w.shape:
                raise ValueError(f"block shape {tuple(conv.weight.shape)} != slice "
                                 f"{tuple(w.shape)}")
            conv.weight.copy_(w)
            bn.weight.copy_(sbn.weight[:c])
            bn.bias.copy_(sbn.bias[:c])
            bn.running_mean.copy_(sbn.running_mean[:c])
            bn.running_var.copy_(sbn.running_var[:c])


def max_choice(ops: list) -> tuple[int, float]:
    """(largest kernel, largest expand) over OpSpecs."""
    return max(op.kernel for op in ops), max(float(op.expand) for op in ops)


def entangleable(op) -> bool:
    """An OpSpec whose weights can live in a `SharedInvertedResidual`: an ungrouped mbconv /
    fbconv block without squeeze-excite."""
    return op is not None and op.kind in ("mbconv", "fbconv") and op.groups == 1 and not op.se

