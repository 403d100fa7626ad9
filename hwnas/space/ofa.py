"""The Once-for-All MobileNetV3 space (Cai et al., "Once-for-All: Train One Network and Specialize it
for Efficient Deployment", ICLR 2020): `ofa_mbv3_d234_e346_k357_w1.0`.

Follows mit-han-lab/once-for-all (`elastic_nn/networks/ofa_mbv3.py` `OFAMobileNetV3`,
`networks/mobilenet_v3.py` `MobileNetV3`, `utils/layers.py` `MBConvLayer`, `SEModule`):

- stem: conv 3x3 s2 to 16 -> BN -> h-swish; a fixed first block MBConv(expand 1, k3, 16 -> 16,
  ReLU, no SE) with its identity shortcut;
- 5 units of widths 24, 40, 80, 112, 160, first strides 2, 2, 2, 1, 2, activations relu, relu,
  h-swish, h-swish, h-swish, squeeze-excite off, on, off, on, on; each unit runs its first 2, 3 or
  4 blocks (elastic depth), each block an MBConv (`OpSpec` kind `mbv3conv`) of kernel {3, 5, 7} x
  expand ratio {3, 4, 6}; the first block of a unit has the stride and no shortcut, the others
  an identity shortcut. mid = make_divisible(round(cin x e), 8); the SE block squeezes to
  make_divisible(mid // 4, 8) channels (ReLU) and gates with a hard sigmoid;
- head: 1x1 conv 160 -> 960 -> BN -> h-swish, global average pool, the feature-mix 1x1 conv
  960 -> 1280 (no bias, no BN) -> h-swish (kind `featuremix`), linear classifier (kind
  `linear`; OFA's dropout is a no-op at inference and left out).

Width multiplier as in OFA: every width, the stem, first block, 960 and 1280 included, is
make_divisible(c x w, 8).

Searchable layers: 20, unit u slot s named `unit{u+1}.{s}`, with choices `k{3,5,7}_e{3,4,6}` (9)
and, for slots 2 and 3, also `skip` (the unit's depth is 2 or 3). A depth is a prefix: slot 3 may
not run while slot 2 is skipped. `validate` (and so `arch`, `indices`) refuses such a gap;
`sample` draws each unit's depth uniformly from {2, 3, 4} and every block's kernel and expand
uniformly (OFA's `sample_active_subnet`), so it only makes valid archs. `from_indices` takes any
index row and reads a gap as OFA reads its settings: a unit's depth ends at its first skipped
slot, and the choice of a slot after it is ignored (set to `skip`), so `from_indices` is many to
one on rows with a gap; `canonical_indices` is the same map on (N, 20) rows (what a lookup table
prices). `size` counts the valid archs: (9^2 + 9^3 + 9^4)^5, about 2.2e19.

Resolution: OFA's resolution is elastic (one network serves 128..224 in steps of 4,
`RESOLUTIONS`). A space instance has one resolution (default 224): that of the archs it makes
(`arch`, `sample`, `from_indices`) and of its layer-level views (`layers`, `candidates`,
`choice_ops`, `fixed_ops`, `distinct_ops`: a lookup table is measured at one resolution).
`validate` also accepts an arch at any of OFA's resolutions, and `ops(arch)` / `build(arch)` use
the arch's own resolution. The choice indices (`indices`, `encode`) do not hold the resolution;
predictors keyed on them check it (`LookupTablePredictor` refuses an arch at another resolution
than its table's, `NetsTablePredictor` keys its nets by resolution and choices).

HELP's encoding (`ofa_mbv3_latency_help.csv`, Lee et al., NeurIPS 2021): `resolution`, the depth
of each unit `d0..d4`, and a kernel `ks00..ks19` and expand ratio `e00..e19` per block (unit u,
slot s is block 4u + s); the values of a block past its unit's depth are unused.
`from_help_row` / `to_help_row` convert one row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from hwnas.errors import HwnasError
from hwnas.space.arch import Arch
from hwnas.space.base import Layer, SearchSpace, make_divisible
from hwnas.space.ops import OpSpec

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
MAX_DEPTH = max(DEPTHS)
OFA_CHOICES = tuple(f"k{k}_e{e}" for k in KERNELS for e in EXPANDS)
SKIP = "skip"
SKIP_INDEX = len(OFA_CHOICES)  # the index of `skip` on the slots that have it
STRIDES = (2, 2, 2, 1, 2)
ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
SE = (False, True, False, True, True)
UNITS = len(STRIDES)
RESOLUTIONS = tuple(range(128, 225, 4))  # OFA's elastic resolution
# HELP's columns of one net: resolution, depths, kernels, expand ratios
HELP_COLUMNS = ("resolution", *(f"d{u}" for u in range(UNITS)),
                *(f"ks{i:02d}" for i in range(UNITS * MAX_DEPTH)),
                *(f"e{i:02d}" for i in range(UNITS * MAX_DEPTH)))


def parse_choice(choice: str) -> tuple[int, int]:
    """`k5_e4` -> (kernel 5, expand 4)."""
    k, e = choice.split("_")
    return int(k[1:]), int(e[1:])


def _help_int(row: Mapping[str, object], column: str) -> int:
    """An integer field of a HELP row (an int, an integral float or a numeric string)."""
    try:
        value = row[column]
    except KeyError:
        raise HwnasError(f"HELP ofa row: missing column {column!r}") from None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise HwnasError(f"HELP ofa row: {column} must be an integer, got {value!r}")
    return int(number)


class OFASpace(SearchSpace):
    """Once-for-All MobileNetV3, w1.0 by default (see the module docstring)."""

    name = "ofa"
    description = ("Once-for-All MobileNetV3: 5 units of depth {2,3,4}, MBConv k{3,5,7} x "
                   "e{3,4,6} (+SE, h-swish); resolution 128..224")
    default_channels = (24, 40, 80, 112, 160)

    def __init__(self, resolution: int | None = None, width: float = 1.0,
                 num_classes: int | None = None, channels: tuple[int, ...] | None = None) -> None:
        super().__init__(resolution, width, num_classes, channels)
        self._siblings: dict[int, OFASpace] = {self.resolution: self}

    # --- widths and shapes --------------------------------------------------------------------
    def _fixed_widths(self) -> tuple[int, int, int, int]:
        """(stem, first block, final expand, feature mix) widths."""
        stem, first, expand, mix = (make_divisible(c * self.width) for c in (16, 16, 960, 1280))
        return stem, first, expand, mix

    def _feature(self, h: int, stride: int = 2) -> int:
        return (h - 1) // stride + 1

    @staticmethod
    def unit_of(layer: Layer) -> tuple[int, int]:
        """(unit, slot) of a searchable layer, both from 0."""
        unit, slot = layer.name.removeprefix("unit").split(".")
        return int(unit) - 1, int(slot)

    def _layers(self) -> list[Layer]:
        layers = []
        cin = self._fixed_widths()[1]
        h = self._feature(self.resolution)
        for u, (cout, stride) in enumerate(zip(self.stage_widths(), STRIDES, strict=True)):
            for s in range(MAX_DEPTH):
                st = stride if s == 0 else 1
                choices = OFA_CHOICES if s < min(DEPTHS) else OFA_CHOICES + (SKIP,)
                layers.append(Layer(f"unit{u + 1}.{s}", cin, cout, st, h, h, choices))
                h = self._feature(h, st)
                cin = cout
        return layers

    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        if choice == SKIP:
            return None
        kernel, expand = parse_choice(choice)
        unit, _ = self.unit_of(layer)
        return OpSpec("mbv3conv", layer.cin, layer.cout, layer.h, layer.w, kernel=kernel,
                      stride=layer.stride, expand=expand, se=SE[unit], act=ACTS[unit])

    def stem_ops(self) -> list[OpSpec]:
        stem, first, _, _ = self._fixed_widths()
        r = self.resolution
        h = self._feature(r)
        return [OpSpec("conv", 3, stem, r, r, kernel=3, stride=2, act="hswish"),
                OpSpec("mbv3conv", stem, first, h, h, kernel=3, stride=1, expand=1, act="relu")]

    def head_ops(self) -> list[OpSpec]:
        last = self.layers[-1]
        h = self._feature(last.h, last.stride)
        _, _, expand, mix = self._fixed_widths()
        return [OpSpec("conv", last.cout, expand, h, h, kernel=1, act="hswish"),
                OpSpec("featuremix", expand, mix, h, h, act="hswish"),
                OpSpec("linear", mix, self.num_classes, 1, 1, act="none")]

    # --- resolution ---------------------------------------------------------------------------
    def at(self, resolution: int) -> OFASpace:
        """This space (same width, classes, channels) at another resolution."""
        if resolution not in self._siblings:
            self._siblings[resolution] = type(self)(resolution, self.width, self.num_classes,
                                                    self.channels)
        return self._siblings[resolution]

    def validate(self, arch: Arch) -> None:
        """As every space, except that the arch may also be at any of OFA's `RESOLUTIONS`; and a
        unit's depth is a prefix (no block runs after a skipped one)."""
        if arch.space == self.name and arch.resolution != self.resolution:
            if arch.resolution not in RESOLUTIONS:
                raise HwnasError(f"arch has resolution={arch.resolution}, but this space was built "
                                 f"with {self.resolution} (an ofa space also takes OFA's "
                                 f"resolutions {RESOLUTIONS[0]}..{RESOLUTIONS[-1]} in steps of "
                                 f"{RESOLUTIONS[1] - RESOLUTIONS[0]})")
            arch = dataclasses.replace(arch, resolution=self.resolution)
        super().validate(arch)
        for u in range(UNITS):
            slots = arch.choices[u * MAX_DEPTH:(u + 1) * MAX_DEPTH]
            for s in range(min(DEPTHS), MAX_DEPTH - 1):
                if slots[s] == SKIP and slots[s + 1] != SKIP:
                    raise HwnasError(f"unit {u + 1}: layer {u * MAX_DEPTH + s + 1} "
                                     f"(unit{u + 1}.{s + 1}) runs {slots[s + 1]!r} but layer "
                                     f"{u * MAX_DEPTH + s} (unit{u + 1}.{s}) is skipped; a unit's "
                                     f"depth is a prefix of its blocks")

    def ops(self, arch: Arch) -> list[OpSpec]:
        """The ops the arch runs at its own resolution: stem, its blocks, head."""
        self.validate(arch)
        return super(OFASpace, self.at(arch.resolution)).ops(arch)

    # --- depth as a prefix --------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of valid archs: per unit, 9^d blocks for each depth d."""
        per_unit = sum(len(OFA_CHOICES) ** d for d in DEPTHS)
        return per_unit ** UNITS

    def canonical_indices(self, idx: np.ndarray) -> np.ndarray:
        """(N, 20) rows with every slot after a skipped one set to `skip` (the net that runs)."""
        idx = np.array(idx, dtype=np.int64, copy=True)
        flat = idx.reshape(-1, len(self.layers))
        for u in range(UNITS):
            for s in range(min(DEPTHS), MAX_DEPTH - 1):
                i = u * MAX_DEPTH + s
                flat[flat[:, i] == SKIP_INDEX, i + 1] = SKIP_INDEX
        return idx

    def from_indices(self, indices: list[int] | np.ndarray) -> Arch:
        """The arch of an index row; a block after a skipped one is dropped (set to `skip`), as
        OFA ignores the settings of blocks past a unit's depth."""
        if len(indices) == len(self.layers) and all(
                0 <= int(j) < len(layer.choices) for layer, j in zip(self.layers, indices,
                                                                      strict=True)):
            indices = self.canonical_indices(np.asarray(indices, dtype=np.int64))
        return super().from_indices(indices)  # range and length errors as every space

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """Each unit's depth uniform over {2, 3, 4}, each block's kernel and expand uniform."""
        rng = np.random.default_rng(rng)
        choices = []
        for _ in range(UNITS):
            depth = DEPTHS[rng.integers(len(DEPTHS))]
            for s in range(MAX_DEPTH):
                choice = OFA_CHOICES[rng.integers(len(OFA_CHOICES))]
                choices.append(choice if s < depth else SKIP)
        return self.arch(choices)

    def depths(self, arch: Arch) -> list[int]:
        """The depth of each unit."""
        self.validate(arch)
        return [sum(c != SKIP for c in arch.choices[u * MAX_DEPTH:(u + 1) * MAX_DEPTH])
                for u in range(UNITS)]

    # --- HELP's encoding ----------------------------------------------------------------------
    def from_help_row(self, row: Mapping[str, object]) -> Arch:
        """The arch of one row of HELP's `ofa_mbv3_latency_help.csv` (a dict or pandas row with
        `resolution`, `d0..d4`, `ks00..ks19`, `e00..e19`), at the row's resolution and this
        space's width and classes. The kernel and expand of a block past its unit's depth are
        not read."""
        resolution = _help_int(row, "resolution")
        choices = []
        for u in range(UNITS):
            depth = _help_int(row, f"d{u}")
            if depth not in DEPTHS:
                raise HwnasError(f"HELP ofa row: d{u} = {depth}, but a unit's depth is one of "
                                 f"{', '.join(map(str, DEPTHS))}")
            for s in range(MAX_DEPTH):
                if s >= depth:
                    choices.append(SKIP)
                    continue
                i = u * MAX_DEPTH + s
                kernel, expand = _help_int(row, f"ks{i:02d}"), _help_int(row, f"e{i:02d}")
                if kernel not in KERNELS:
                    raise HwnasError(f"HELP ofa row: ks{i:02d} = {kernel}, not one of "
                                     f"{', '.join(map(str, KERNELS))}")
                if expand not in EXPANDS:
                    raise HwnasError(f"HELP ofa row: e{i:02d} = {expand}, not one of "
                                     f"{', '.join(map(str, EXPANDS))}")
                choices.append(f"k{kernel}_e{expand}")
        arch = Arch(self.name, tuple(choices), resolution, self.width, self.num_classes,
                    self.channels)
        self.validate(arch)
        return arch

    def to_help_row(self, arch: Arch) -> dict[str, int]:
        """HELP's columns (`HELP_COLUMNS`, in order) of an arch. A block past its unit's depth is
        written as kernel 3, expand 3 (HELP does not read it; `from_help_row` ignores it)."""
        depths = self.depths(arch)
        row = {"resolution": arch.resolution}
        row.update({f"d{u}": d for u, d in enumerate(depths)})
        kernels, expands = {}, {}
        for i, choice in enumerate(arch.choices):
            kernel, expand = (KERNELS[0], EXPANDS[0]) if choice == SKIP else parse_choice(choice)
            kernels[f"ks{i:02d}"], expands[f"e{i:02d}"] = kernel, expand
        return {**row, **kernels, **expands}
