"""The NAS-Bench-201 cell space (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible
Neural Architecture Search", ICLR 2020), the topology space of NATS-Bench.

Follows the official model definition in D-X-Y/AutoDL-Projects (`xautodl/models/cell_operations.py`,
`cell_infers/cells.py` `InferCell`, `cell_infers/tiny_network.py` `TinyNetwork`):

- stem: Conv 3x3 (3 -> C, no bias) + BN (no activation);
- 3 stages of N = 5 cells of widths C, 2C, 4C (C = 16), with a ResNet basic block of stride 2
  (`ResNetBasicblock`: ReLU-Conv3x3(s2)-BN, ReLU-Conv3x3-BN, shortcut AvgPool 2x2 + Conv1x1)
  between stages;
- head: BN -> ReLU -> global average pool -> linear;
- a cell is a DAG of 4 nodes: node 0 its input, node j = sum over i < j of op_{i->j}(node i), the
  output node 3; each of the 6 edges takes one of `none` (zero), `skip_connect` (identity),
  `nor_conv_1x1` / `nor_conv_3x3` (ReLU-Conv-BN), `avg_pool_3x3` (stride 1, pad 1,
  count_include_pad=False). All 15 cells share one genotype: 5^6 = 15,625 networks.

Searchable layers are the 6 edges, in the order of the arch string
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3), with the choices in
the official op order (HW-NAS-Bench's `e1_from0 .. e3_from2` columns use the same).

The official index (the row of the benchmark files) is the order of `exps/NAS-Bench-201/main.py`
`generate_meta_info`: all cells enumerated edge by edge (`CellStructure.gen_all`, the first edge
most significant, ops in the order above), then `random.seed(88); random.shuffle(archs)`.
Python's shuffle is deterministic for a seed, so the order is recomputed here (checked against the
published 15,625 rows in tests/test_nb201.py, and against the indices 0, 9 and 123 that the
official script asserts).

Dead edges: an edge whose result never reaches the cell output (edges into node 2 when edge 2->3
is `none`; edge 0->1 when node 1 reaches node 3 by no path) changes nothing. The official network
computes it anyway (and counts its parameters); runtimes drop it (ONNX Runtime removes nodes
whose output nothing reads; a first measurement here: a cell with dead convolutions ran at a third
of the table sum that counted them). `build` therefore builds only the live edges: the same
function as the official network (checked output for output against `TinyNetwork`), the ops
every backend runs. `canonical_indices` maps an arch to that network (dead edges set to `none`);
`official_ops` lists the ops of the official network, dead ones included, whose parameters are
the counts NAS-Bench-201 publishes.

Latency by lookup table (`choice_ops`, `fixed_ops`, priced on `canonical_indices`): stem + the two
reduction blocks + head, plus, for each live edge, its op at each stage's shape times 5 cells. The
sum ignores the node additions (elementwise adds of the cell, which runtimes usually fuse into the
conv before them) and the `x * 0` of a node without input.
"""

from __future__ import annotations

import functools
import random
import re

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space.arch import Arch
from hwnas.space.base import Layer, SearchSpace
from hwnas.space.blocks import Cell, Network
from hwnas.space.ops import OpSpec

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to node, from node) of each searchable edge, in arch-string order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
CELLS_PER_STAGE = 5
N_ARCHS = len(NB201_OPS) ** len(EDGES)  # 15,625
SHUFFLE_SEED = 88  # exps/NAS-Bench-201/main.py: "please do not change this line"
_RADIX = np.array([len(NB201_OPS) ** (len(EDGES) - 1 - e) for e in range(len(EDGES))],
                  dtype=np.int64)
_NODE = re.compile(r"^\|(?:[^|]*\|)+$")


@functools.lru_cache(maxsize=1)
def _official_order() -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): order[official index] = enumeration code; rank[code] = official index."""
    codes = list(range(N_ARCHS))
    random.Random(SHUFFLE_SEED).shuffle(codes)
    order = np.asarray(codes, dtype=np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(N_ARCHS, dtype=np.int64)
    order.setflags(write=False)
    rank.setflags(write=False)
    return order, rank


def codes_of(idx: np.ndarray) -> np.ndarray:
    """Enumeration code (base-5 number, edge 0->1 most significant) of each row of an (N, 6)
    choice-index matrix."""
    return np.asarray(idx, dtype=np.int64).reshape(-1, len(EDGES)) @ _RADIX


def official_index(idx: np.ndarray) -> np.ndarray:
    """NAS-Bench-201 index of each row of an (N, 6) choice-index matrix (vectorised)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1, len(EDGES))
    if idx.size and (idx.min() < 0 or idx.max() >= len(NB201_OPS)):
        raise HwnasError(f"nb201 choice indices must be within 0..{len(NB201_OPS) - 1}")
    return _official_order()[1][codes_of(idx)]


def indices_of(official: np.ndarray | int) -> np.ndarray:
    """(N, 6) choice indices of NAS-Bench-201 indices (vectorised)."""
    k = np.atleast_1d(np.asarray(official, dtype=np.int64))
    if k.size and (k.min() < 0 or k.max() >= N_ARCHS):
        raise HwnasError(f"NAS-Bench-201 index out of range 0..{N_ARCHS - 1}: "
                         f"{int(k[(k < 0) | (k >= N_ARCHS)][0])}")
    codes = _official_order()[0][k]
    return (codes[:, None] // _RADIX[None, :]) % len(NB201_OPS)


def all_indices() -> np.ndarray:
    """(15625, 6) choice indices of every cell, row i = NAS-Bench-201 index i."""
    return indices_of(np.arange(N_ARCHS))


def canonical(idx: np.ndarray) -> np.ndarray:
    """(N, 6) choice indices with every dead edge (its result never reaches node 3) set to
    `none` (vectorised; idempotent)."""
    idx = np.array(idx, dtype=np.int64, copy=True).reshape(-1, len(EDGES))
    e12, e13, e23 = idx[:, 2] != 0, idx[:, 4] != 0, idx[:, 5] != 0
    reach2 = e23  # node 2 feeds node 3 only through edge 2->3
    reach1 = e13 | (e12 & reach2)
    idx[~reach1, 0] = 0  # edge 0->1
    idx[~reach2, 1] = 0  # edge 0->2
    idx[~reach2, 2] = 0  # edge 1->2
    return idx


def arch_string(choices: tuple[str, ...] | list[str]) -> str:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` of 6 edge choices (arch-string order)."""
    c = list(choices)
    return f"|{c[0]}~0|+|{c[1]}~0|{c[2]}~1|+|{c[3]}~0|{c[4]}~1|{c[5]}~2|"


def parse_arch_string(text: str) -> tuple[str, ...]:
    """The 6 edge choices of an arch string, strictly checked (a clear HwnasError otherwise)."""
    s = str(text).strip()
    nodes = s.split("+")
    if len(nodes) != 3:
        raise HwnasError(f"not a NAS-Bench-201 arch string (3 nodes separated by '+'): {s!r}")
    choices: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not _NODE.match(node):
            raise HwnasError(f"node {j} of arch string {s!r} must look like |op~0|...|")
        edges = node.strip("|").split("|")
        if len(edges) != j:
            raise HwnasError(f"node {j} of arch string {s!r} needs {j} input edge(s), "
                             f"got {len(edges)}")
        for i, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep or src != str(i):
                raise HwnasError(f"node {j} of arch string {s!r}: edge {edge!r} must read "
                                 f"'op~{i}'")
            if op not in NB201_OPS:
                raise HwnasError(f"arch string {s!r}: unknown op {op!r}; valid: "
                                 f"{', '.join(NB201_OPS)}")
            choices.append(op)
    return tuple(choices)


class NB201Space(SearchSpace):
    """NAS-Bench-201 (see the module docstring). Default: 32x32, 10 classes (CIFAR-10)."""

    name = "nb201"
    description = "NAS-Bench-201 cell: 6 edges x 5 ops, 3 stages of 5 cells (15,625 nets)"
    default_resolution = 32
    default_num_classes = 10
    default_channels = (16, 32, 64)
    cells_per_stage = CELLS_PER_STAGE

    def __init__(self, resolution: int | None = None, width: float = 1.0,
                 num_classes: int | None = None, channels: tuple[int, ...] | None = None) -> None:
        super().__init__(resolution, width, num_classes, channels)
        if self.resolution % 4:
            raise HwnasError(f"nb201 needs a resolution divisible by 4 (two stride-2 ResNet "
                             f"blocks halve it exactly), got {self.resolution}")

    # --- shapes -------------------------------------------------------------------------------
    def _stage_shapes(self) -> list[tuple[int, int]]:
        """(width, feature size) of each stage."""
        return [(c, self.resolution // 2 ** s) for s, c in enumerate(self.stage_widths())]

    def _layers(self) -> list[Layer]:
        c, h = self.stage_widths()[0], self.resolution
        return [Layer(f"edge {i}->{j}", c, c, 1, h, h, NB201_OPS) for j, i in EDGES]

    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        return None  # unused: an edge runs one op per cell, see `choice_ops`

    def edge_op(self, choice: str, stage: int) -> OpSpec | None:
        """The op of one edge of a cell of `stage` (None: `none` or `skip_connect`, which run no
        op of their own)."""
        c, h = self._stage_shapes()[stage]
        if choice == "nor_conv_1x1":
            return OpSpec("reluconvbn", c, c, h, h, kernel=1, act="relu")
        if choice == "nor_conv_3x3":
            return OpSpec("reluconvbn", c, c, h, h, kernel=3, act="relu")
        if choice == "avg_pool_3x3":
            return OpSpec("avgpool_excl", c, c, h, h, kernel=3)
        if choice in ("none", "skip_connect"):
            return None
        raise HwnasError(f"unknown nb201 op {choice!r}; valid: {', '.join(NB201_OPS)}")

    def stem_ops(self) -> list[OpSpec]:
        r, c = self.resolution, self.stage_widths()[0]
        return [OpSpec("conv", 3, c, r, r, kernel=3, stride=1, act="none")]

    def reduction_ops(self) -> list[OpSpec]:
        """The ResNet basic blocks (stride 2) between stages."""
        shapes = self._stage_shapes()
        return [OpSpec("resblock", c0, c1, h0, h0, kernel=3, stride=2, act="relu")
                for (c0, h0), (c1, _) in zip(shapes[:-1], shapes[1:], strict=True)]

    def head_ops(self) -> list[OpSpec]:
        c, h = self._stage_shapes()[-1]
        return [OpSpec("bn_classifier", c, self.num_classes, h, h, act="relu")]

    def fixed_ops(self) -> list[OpSpec]:
        return self.stem_ops() + self.reduction_ops() + self.head_ops()

    def choice_ops(self, i: int, j: int) -> list[OpSpec]:
        choice = self.layers[i].choices[j]
        out: list[OpSpec] = []
        for stage in range(len(self.stage_widths())):
            op = self.edge_op(choice, stage)
            if op is not None:
                out += [op] * self.cells_per_stage
        return out

    def candidates(self, i: int) -> list[OpSpec | None]:
        raise HwnasError("nb201 is a cell space: an edge choice runs one op in each of the 15 "
                         "cells (use choice_ops(i, j)); a chain supernet (ProxylessNAS) cannot "
                         "be built over it")

    # --- an arch's ops and network ------------------------------------------------------------
    def canonical_indices(self, idx: np.ndarray) -> np.ndarray:
        return canonical(idx)

    def live_choices(self, arch: Arch) -> tuple[str, ...]:
        """The arch's choices with its dead edges set to `none` (the network `build` makes)."""
        return tuple(NB201_OPS[k] for k in canonical(np.asarray([self.indices(arch)]))[0])

    def ops(self, arch: Arch) -> list[OpSpec]:
        """Every op the network runs, in order: stem, the cells' live edge ops (edge order) stage
        by stage with the reduction blocks between, head. Their table sum is the LUT latency."""
        return self._ops(self.live_choices(arch))

    def official_ops(self, arch: Arch) -> list[OpSpec]:
        """The ops of the official `TinyNetwork`, dead edges included (its parameter count is the
        one NAS-Bench-201 publishes)."""
        self.validate(arch)
        return self._ops(arch.choices)

    def _ops(self, choices: tuple[str, ...]) -> list[OpSpec]:
        out = self.stem_ops()
        reductions = self.reduction_ops()
        for stage in range(len(self.stage_widths())):
            if stage:
                out.append(reductions[stage - 1])
            cell = [self.edge_op(c, stage) for c in choices]
            out += [op for op in cell if op is not None] * self.cells_per_stage
        return out + self.head_ops()

    def _cell(self, choices: tuple[str, ...], stage: int) -> Cell:
        edges = []
        for (j, i), choice in zip(EDGES, choices, strict=True):
            if choice == "none":
                continue
            op = self.edge_op(choice, stage)
            edges.append((i, j, nn.Identity() if op is None else op.module()))
        return Cell(edges)

    def build(self, arch: Arch, dead_edges: bool = False) -> nn.Module:
        """The network from `OpSpec.module()` blocks (stem, cells of live edge ops, reduction
        blocks, head): the official TinyNetwork's function and layers, without its dead edges
        (see the module docstring); eval mode.

        `dead_edges=True` keeps the dead edges' modules, as the official TinyNetwork does (same
        function: their outputs are never read, so they never run): the layer list zero-cost
        proxies walk (`hwnas.search.zero_cost`), where a dead conv is a layer with score 0 and
        every arch lists its layers in the same cell positions.

        `blocks` holds stem, 5 cells, reduction, 5 cells, reduction, 5 cells, head (19 blocks)."""
        self.check_memory(arch)
        if dead_edges:
            self.validate(arch)
            choices = arch.choices
        else:
            choices = self.live_choices(arch)
        blocks: list[nn.Module] = [op.module() for op in self.stem_ops()]
        reductions = self.reduction_ops()
        for stage in range(len(self.stage_widths())):
            if stage:
                blocks.append(reductions[stage - 1].module())
            blocks += [self._cell(choices, stage) for _ in range(self.cells_per_stage)]
        blocks += [op.module() for op in self.head_ops()]
        return Network(blocks).eval()

    # --- the official index and arch string ---------------------------------------------------
    def arch_str(self, arch: Arch) -> str:
        self.validate(arch)
        return arch_string(arch.choices)

    def from_arch_str(self, text: str) -> Arch:
        return self.arch(parse_arch_string(text))

    def index(self, arch: Arch) -> int:
        """The NAS-Bench-201 index of an arch."""
        return int(official_index(np.asarray([self.indices(arch)]))[0])

    def from_index(self, k: int) -> Arch:
        """The arch at NAS-Bench-201 index k."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise HwnasError(f"a NAS-Bench-201 index must be an integer, got {k!r}")
        return self.from_indices(indices_of(int(k))[0])
