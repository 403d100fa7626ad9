"""An FBNetV5-style multi-task space (Wu et al., "FBNetV5: Neural Architecture Search for Multiple
Tasks in One Run", arXiv 2111.10007): keep/skip bits over a grid of blocks on two parallel
resolution paths joined by fusion modules, with one head per task.

What the sources say (research notes `shared/research/fbnetv5_shiftnas.md` §1.2; no FBNetV5 code
is public and only the abstract was reachable):

- [read] the space is block-based, A = {0,1}^B: an architecture is one keep/skip bit per block
  (topology search); stages of blocks on parallel paths at decreasing resolutions (H/4 .. H/32
  in the paper's figure), fusion modules between stages (HRNet-like), and SEG, DET and CLS
  heads. The supernet extends FBNetV3-A; Meta's `MultiIONetBackbone` builds such a paths x
  stages grid joined by `fusions_s{i}` and downsamples 2x per path beyond path 0.
- [n/a] the block type at each position, the channel widths, the number of blocks per stage,
  and how the fusion modules are parameterised. EVERYTHING BELOW ON THOSE POINTS IS OUR
  RECONSTRUCTION, sized for a 2-core CPU and the 16x16..32x32 multi-task digits proxy
  (`hwnas.data.multitask`), not the paper's network.

The network here [reconstruction], at resolution R (default 32, a multiple of 4) and width
multiplier w (channels C0, C1 = `stage_widths()`, default 16 and 32 before w):

- stem: `conv` 3x3 stride 2, 3 -> C0, BN, ReLU: path 0 at R/2. Transition: `conv` 3x3 stride 2,
  C0 -> C1, BN, ReLU, from path 0: path 1 at R/4 (two paths, not the paper's four).
- 3 stages. In each stage each path runs 2 skippable blocks, the searchable layers
  `s{stage}.p{path}.b{block}` (stage from 1, path and block from 0; layer order: stage, then
  path, then block), 12 in all, choices `keep` / `skip`: `keep` runs an `mbv3conv` (MobileNetV3
  inverted residual, kernel 3, expand 3, stride 1, cin == cout, so with its identity shortcut;
  ReLU; no squeeze-excite), `skip` runs nothing (the identity). 2^12 = 4096 networks, bits
  independent (no constraint).
- after each stage a fusion (fixed ops), HRNet's exchange unit for two paths: from the stage's
  outputs p0, p1 (both read before either sum), up = `upconv` (1x1 conv C1 -> C0 + BN at R/4,
  then nearest 2x upsampling to R/2), down = `conv` 3x3 stride 2 C0 -> C1 + BN (act "none");
  then p0 <- relu(p0 + up) and p1 <- relu(p1 + down), two `add` ops (act "relu", HRNet's ReLU
  after the fuse sum). THE FUSION RUNS EVEN WHEN EVERY BLOCK OF A STAGE IS SKIPPED: it is fixed
  cost, in `fixed_ops`, so an all-skip network is stem, transition, 3 fusions and the head.
- heads, one per task (`TASKS`); the head width 128 scales with w like the channels:
  * `cls` on path 1: `featuremix` (global pool, 1x1 conv C1 -> 128, ReLU) + `linear`
    (128 -> num_classes): logits (N, num_classes); default 10 classes;
  * `seg` on path 0: `seghead` (1x1 conv C0 -> num_classes with bias, then bilinear 2x
    upsampling, align_corners=False): per-pixel logits (N, num_classes, R, R); default 11
    classes (background + 10 digits, `hwnas.data.multitask`);
  * `det` on path 1: `featuremix` (C1 -> 128, ReLU) + `linear` (128 -> 4): box LOGITS
    (N, 4); the box (x0, y0, x1, y1), normalised to [0, 1], is their sigmoid, which the loss or
    metric applies (the network does not). num_classes is always 4.

Spaces (`get_space` names): `fbnetv5-cls`, `fbnetv5-seg`, `fbnetv5-det`, one network per task,
and `fbnetv5`, the profiling space: the `cls` network, whose `distinct_ops` also lists the `seg`
and `det` heads' ops (at their default class counts, `extra_ops`), so that one profile
(`hwnas profile --space fbnetv5`) prices every task: `LookupTablePredictor.fit(
space.for_task("seg"), profile.lut)` finds every op. The same bits are an arch of each task
space: `space.for_task(t).arch(arch.choices)`.

Lookup table: `fixed_ops` = stem + transition + 3 x (up, down, 2 adds) + the task's head;
`choice_ops(i, keep)` = the block, `choice_ops(i, skip)` = nothing. Their sum is exactly the ops
the built network runs (`ops(arch)`, in run order). `candidates` is refused: this is not a chain,
a chain supernet (ProxylessNAS) cannot be built over it; the weight-sharing supernet is
`supernet()`.

Networks: `build(arch)` is a `MultiPathNetwork` made only of `OpSpec.module()` blocks (the
measured code), eval mode, without the skipped blocks; `supernet(tasks)` has every block and one
head per task (train mode), `forward(x, keep)` -> {task: output}; `extract(supernet, space,
arch)` copies a supernet's weights into `space.build(arch)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space.arch import Arch
from hwnas.space.base import Layer, SearchSpace, make_divisible
from hwnas.space.blocks import Elementwise
from hwnas.space.ops import OpSpec

TASKS = ("cls", "seg", "det")
#: the path each task's head reads (0: R/2, 1: R/4)
HEAD_PATH = {"cls": 1, "seg": 0, "det": 1}
#: default outputs of each task's head: digits, background + digits, a box
DEFAULT_CLASSES = {"cls": 10, "seg": 11, "det": 4}
BOX_OUTPUTS = 4
KEEP, SKIP = "keep", "skip"
CHOICES = (KEEP, SKIP)
STAGES = 3
PATHS = 2
BLOCKS = 2  # per path and stage
BLOCK_KERNEL, BLOCK_EXPAND, ACT = 3, 3, "relu"
HEAD_WIDTH = 128
FUSION_PARTS = ("up", "down", "add0", "add1")  # run order; op i of `fusion_ops`


class FBNetV5Space(SearchSpace):
    """The two-path keep/skip space of one task (see the module docstring). Use a registered
    subclass (`get_space("fbnetv5-seg")`, ...) or `for_task`."""

    task: str = "cls"
    #: tasks whose heads `distinct_ops` adds to this space's own (the profiling space's)
    profiled_heads: tuple[str, ...] = ()
    default_resolution = 32
    default_num_classes = DEFAULT_CLASSES["cls"]
    default_channels = (16, 32)

    def __init__(self, resolution: int | None = None, width: float = 1.0,
                 num_classes: int | None = None, channels: tuple[int, ...] | None = None) -> None:
        if not self.name or self.task not in TASKS:
            raise HwnasError("FBNetV5Space is the base of the fbnetv5 spaces: use get_space("
                             "'fbnetv5' | 'fbnetv5-cls' | 'fbnetv5-seg' | 'fbnetv5-det')")
        super().__init__(resolution, width, num_classes, channels)
        if self.resolution % 4:
            raise HwnasError(f"{self.name} needs a resolution divisible by 4 (two stride-2 "
                             f"convs, then 2x upsampling back), got {self.resolution}")
        if self.task == "det" and self.num_classes != BOX_OUTPUTS:
            raise HwnasError(f"{self.name} predicts the {BOX_OUTPUTS} box coordinates: "
                             f"num_classes must be {BOX_OUTPUTS}, got {self.num_classes}")

    # --- geometry -----------------------------------------------------------------------------
    def path_sizes(self) -> tuple[int, int]:
        """Feature size of path 0 (R/2) and path 1 (R/4)."""
        return self.resolution // 2, self.resolution // 4

    def head_width(self) -> int:
        return make_divisible(HEAD_WIDTH * self.width)

    @staticmethod
    def position(layer: Layer) -> tuple[int, int, int]:
        """(stage, path, block) of a searchable layer, all from 0."""
        s, p, b = layer.name.split(".")
        return int(s[1:]) - 1, int(p[1:]), int(b[1:])

    def _layers(self) -> list[Layer]:
        widths, sizes = self.stage_widths(), self.path_sizes()
        return [Layer(f"s{s + 1}.p{p}.b{b}", widths[p], widths[p], 1, sizes[p], sizes[p], CHOICES)
                for s in range(STAGES) for p in range(PATHS) for b in range(BLOCKS)]

    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        if choice == SKIP:
            return None
        return OpSpec("mbv3conv", layer.cin, layer.cout, layer.h, layer.w, kernel=BLOCK_KERNEL,
                      stride=1, expand=BLOCK_EXPAND, act=ACT)

    # --- fixed ops ----------------------------------------------------------------------------
    def stem_ops(self) -> list[OpSpec]:
        """The stem (path 0) and the transition (path 1 from path 0)."""
        r, (c0, c1), (h0, _) = self.resolution, self.stage_widths(), self.path_sizes()
        return [OpSpec("conv", 3, c0, r, r, kernel=3, stride=2, act=ACT),
                OpSpec("conv", c0, c1, h0, h0, kernel=3, stride=2, act=ACT)]

    def fusion_ops(self) -> list[OpSpec]:
        """One fusion, in run order (`FUSION_PARTS`): up (path 1 -> 0), down (path 0 -> 1), the
        add on path 0, the add on path 1. Every stage ends with one."""
        (c0, c1), (h0, h1) = self.stage_widths(), self.path_sizes()
        return [OpSpec("upconv", c1, c0, h1, h1, kernel=1, stride=2, act="none"),
                OpSpec("conv", c0, c1, h0, h0, kernel=3, stride=2, act="none"),
                OpSpec("add", c0, c0, h0, h0, act=ACT),
                OpSpec("add", c1, c1, h1, h1, act=ACT)]

    def task_head_ops(self, task: str, num_classes: int | None = None) -> list[OpSpec]:
        """The head of a task (num_classes: that task's default unless given)."""
        if task not in TASKS:
            raise HwnasError(f"unknown fbnetv5 task {task!r}; known: {', '.join(TASKS)}")
        n = DEFAULT_CLASSES[task] if num_classes is None else int(num_classes)
        (c0, c1), (h0, h1) = self.stage_widths(), self.path_sizes()
        if task == "seg":
            return [OpSpec("seghead", c0, n, h0, h0, kernel=1, stride=2, act="none")]
        hw = self.head_width()
        return [OpSpec("featuremix", c1, hw, h1, h1, act=ACT),
                OpSpec("linear", hw, n, 1, 1, act="none")]

    def head_ops(self) -> list[OpSpec]:
        return self.task_head_ops(self.task, self.num_classes)

    def fixed_ops(self) -> list[OpSpec]:
        """Stem, transition, the fusion of every stage (it runs even when a stage skips every
        block) and the task's head."""
        return self.stem_ops() + self.fusion_ops() * STAGES + self.head_ops()

    def extra_ops(self) -> list[OpSpec]:
        """Ops no network of this space runs but its profile measures: the heads of
        `profiled_heads` at their default classes (the profiling space `fbnetv5`: seg, det)."""
        return [op for t in self.profiled_heads for op in self.task_head_ops(t)]

    def distinct_ops(self) -> list[OpSpec]:
        """Every distinct op the space's networks run, plus `extra_ops`, sorted."""
        return sorted(set(super().distinct_ops()) | set(self.extra_ops()))

    def candidates(self, i: int) -> list[OpSpec | None]:
        raise HwnasError(f"{self.name} is a two-path space, not a chain: a chain supernet "
                         "(ProxylessNAS) cannot be built over it; use choice_ops(i, j) for costs "
                         "and FBNetV5Space.supernet() for a weight-sharing supernet")

    # --- an arch's ops and network ------------------------------------------------------------
    def keep_bits(self, arch: Arch) -> tuple[bool, ...]:
        """One bool per searchable layer: True where the block runs."""
        return tuple(j == CHOICES.index(KEEP) for j in self.indices(arch))

    def ops(self, arch: Arch) -> list[OpSpec]:
        """Every op the network runs, in run order: stem, transition, then per stage the kept
        blocks of path 0, of path 1, and the fusion (up, down, add, add); the head."""
        bits = self.keep_bits(arch)
        out = self.stem_ops()
        for s in range(STAGES):
            for i, layer in enumerate(self.layers):
                if self.position(layer)[0] == s and bits[i]:
                    out.append(self._candidates[i][CHOICES.index(KEEP)])
            out += self.fusion_ops()
        return out + self.head_ops()

    def _network(self, bits: Sequence[bool], heads: Mapping[str, int | None],
                 task: str | None) -> MultiPathNetwork:
        stem, transition = (op.module() for op in self.stem_ops())
        blocks = {layer.name: self._candidates[i][CHOICES.index(KEEP)].module()
                  for i, layer in enumerate(self.layers) if bits[i]}
        fusions = [{part: op.module() for part, op in zip(FUSION_PARTS, self.fusion_ops(),
                                                          strict=True)}
                   for _ in range(STAGES)]
        head_modules = {t: TaskHead(HEAD_PATH[t], [op.module() for op in self.task_head_ops(t, n)])
                        for t, n in heads.items()}
        return MultiPathNetwork(stem, transition, [self.position(la)[:2] for la in self.layers],
                                [la.name for la in self.layers], blocks, fusions, head_modules,
                                keep=tuple(bits), task=task)

    def build(self, arch: Arch) -> MultiPathNetwork:
        """The task's network from `OpSpec.module()` blocks, without the skipped blocks; eval
        mode. `forward(x)` -> the task's output."""
        self.check_memory(arch)
        bits = self.keep_bits(arch)
        return self._network(bits, {self.task: self.num_classes}, self.task).eval()

    def supernet(self, tasks: Sequence[str] = TASKS,
                 num_classes: Mapping[str, int] | None = None) -> MultiPathNetwork:
        """Every block and one head per task, train mode: `forward(x, keep)` -> {task: output};
        the search runs `heads[t](forward_features(x, keep))`. A head's outputs: `num_classes[t]`
        where given, else this space's num_classes for its own task and the default for the
        others. Copy a sub-network out with `extract`."""
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise HwnasError(f"supernet tasks must be distinct names among {', '.join(TASKS)}, "
                             f"got {tasks!r}")
        given = dict(num_classes or {})
        if given.get("det", BOX_OUTPUTS) != BOX_OUTPUTS:
            raise HwnasError(f"the det head predicts {BOX_OUTPUTS} box coordinates, got "
                             f"num_classes['det'] = {given['det']}")
        heads = {t: given.get(t, self.num_classes if t == self.task else None) for t in tasks}
        return self._network((True,) * len(self.layers), heads, None).train()

    def for_task(self, task: str, num_classes: int | None = None) -> FBNetV5Space:
        """The registered space of a task at this space's resolution, width and channels; with
        this space's num_classes when the task is its own, else the task's default (unless
        given)."""
        if task not in TASKS:
            raise HwnasError(f"unknown fbnetv5 task {task!r}; known: {', '.join(TASKS)}")
        if num_classes is None and task == self.task:
            num_classes = self.num_classes
        return TASK_SPACES[task](self.resolution, self.width, num_classes, self.channels)


class TaskHead(nn.Module):
    """A task's head: its op modules (`ops`, in order) on the path it reads (`path`).

    `forward` takes the (path 0, path 1) pair of `MultiPathNetwork.forward_features`, or the one
    tensor of its path."""

    def __init__(self, path: int, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.path = path
        self.ops = nn.Sequential(*ops)

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = features if isinstance(features, torch.Tensor) else features[self.path]
        return self.ops(x)


class MultiPathNetwork(nn.Module):
    """Stem and transition, skippable blocks on two paths, a fusion after each stage, heads.

    Every part is an `OpSpec.module()` (the measured code). `blocks` holds the built blocks by
    layer name (dots as underscores; a network from `build` holds only its kept blocks, a
    supernet all); `fusions[s]` the up, down, add0, add1 modules of stage s; `heads` one
    `TaskHead` per task (`heads[t](forward_features(x, keep))` is task t's output). `keep` is
    the default bits (those of the built arch), `task` the task whose output `forward` returns
    (None: a dict of every head's output).
    """

    def __init__(self, stem: nn.Module, transition: nn.Module,
                 layout: Sequence[tuple[int, int]], layer_names: Sequence[str],
                 blocks: Mapping[str, nn.Module], fusions: Sequence[Mapping[str, nn.Module]],
                 heads: Mapping[str, nn.Module], keep: Sequence[bool] | None = None,
                 task: str | None = None) -> None:
        super().__init__()
        self.stem = stem
        self.transition = transition
        self.layout = [tuple(p) for p in layout]  # (stage, path) of each layer
        self.layer_names = list(layer_names)
        self.keys = [n.replace(".", "_") for n in self.layer_names]
        self.blocks = nn.ModuleDict({n.replace(".", "_"): m for n, m in blocks.items()})
        self.fusions = nn.ModuleList([nn.ModuleDict(dict(f)) for f in fusions])
        self.heads = nn.ModuleDict(dict(heads))
        self.keep = None if keep is None else tuple(bool(b) for b in keep)
        self.task = task

    def _bits(self, keep: Sequence[bool] | torch.Tensor | None) -> tuple[bool, ...]:
        if keep is None:
            if self.keep is None:
                raise HwnasError("this network has no default keep bits: pass keep")
            return self.keep
        if isinstance(keep, torch.Tensor):
            keep = keep.detach().reshape(-1).tolist()
        bits = tuple(bool(b) for b in keep)
        if len(bits) != len(self.keys):
            raise HwnasError(f"keep needs {len(self.keys)} bits (one per block), got {len(bits)}")
        absent = [n for n, k, b in zip(self.layer_names, self.keys, bits, strict=True)
                  if b and k not in self.blocks]
        if absent:
            raise HwnasError(f"block(s) {', '.join(absent)} are kept but this network has not "
                             f"built them (a network from build() has only its arch's blocks)")
        return bits

    def forward_features(self, x: torch.Tensor,
                         keep: Sequence[bool] | torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(path 0, path 1) after the last fusion; skipped blocks are not computed at all."""
        bits = self._bits(keep)
        p0 = self.stem(x)
        p1 = self.transition(p0)
        for s, fusion in enumerate(self.fusions):
            for key, (stage, path), bit in zip(self.keys, self.layout, bits, strict=True):
                if stage != s or not bit:
                    continue
                if path == 0:
                    p0 = self.blocks[key](p0)
                else:
                    p1 = self.blocks[key](p1)
            up, down = fusion["up"](p1), fusion["down"](p0)  # both from the stage's outputs
            p0, p1 = fusion["add0"](p0, up), fusion["add1"](p1, down)
        return p0, p1

    def forward(self, x: torch.Tensor, keep: Sequence[bool] | torch.Tensor | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        paths = self.forward_features(x, keep)
        if self.task is not None:
            return self.heads[self.task](paths)
        return {t: head(paths) for t, head in self.heads.items()}

    def op_modules(self) -> list[nn.Module]:
        """Every module built from one `OpSpec`, in build order: stem, transition, blocks,
        fusions, head ops."""
        out = [self.stem, self.transition, *self.blocks.values()]
        for fusion in self.fusions:
            out += [fusion[p] for p in FUSION_PARTS]
        for head in self.heads.values():
            out += list(head.ops)
        return out


def extract(supernet: MultiPathNetwork, space: FBNetV5Space, arch: Arch) -> MultiPathNetwork:
    """`space.build(arch)` with the supernet's weights (stem, transition, the arch's blocks,
    fusions and the space's task head; parameters and BatchNorm statistics); eval mode.

    The weights do not depend on the resolution, so the space may be at another resolution than
    the supernet's (the add ops' constant operands, which a network never reads, are kept)."""
    net = space.build(arch)
    if space.task not in supernet.heads:
        raise HwnasError(f"the supernet has no {space.task!r} head (heads: "
                         f"{', '.join(supernet.heads)})")
    source = supernet.state_dict()
    skip = {f"{name}.other" for name, m in net.named_modules() if isinstance(m, Elementwise)}
    state = net.state_dict()
    for key, value in state.items():
        if key in skip:
            continue
        theirs = source.get(key)
        if theirs is None:
            raise HwnasError(f"the supernet lacks {key}: it was not built over this space")
        if theirs.shape != value.shape:
            raise HwnasError(f"{key}: the supernet has shape {tuple(theirs.shape)}, {space.name} "
                             f"needs {tuple(value.shape)} (other widths or classes?)")
        state[key] = theirs
    net.load_state_dict(state)
    return net.eval()


class FBNetV5ClsSpace(FBNetV5Space):
    name = "fbnetv5-cls"
    task = "cls"
    description = "FBNetV5-style 2-path grid of 12 keep/skip blocks, HRNet-like fusions; cls head"


class FBNetV5SegSpace(FBNetV5Space):
    name = "fbnetv5-seg"
    task = "seg"
    default_num_classes = DEFAULT_CLASSES["seg"]
    description = "FBNetV5-style 2-path grid of 12 keep/skip blocks; seg head (RxR logits)"


class FBNetV5DetSpace(FBNetV5Space):
    name = "fbnetv5-det"
    task = "det"
    default_num_classes = DEFAULT_CLASSES["det"]
    description = "FBNetV5-style 2-path grid of 12 keep/skip blocks; det head (4 box logits)"


class FBNetV5ProfileSpace(FBNetV5Space):
    """The profiling space `fbnetv5`: the cls network, whose `distinct_ops` also holds the seg and
    det heads, so that one profile prices every task's space (`for_task`)."""

    name = "fbnetv5"
    task = "cls"
    profiled_heads = ("seg", "det")
    description = ("FBNetV5-style profiling space: the cls network, its profile also prices the "
                   "seg and det heads")

    def priced_spaces(self) -> tuple[str, ...]:
        """This space and every task's space (`fbnetv5-cls`, `-seg`, `-det`)."""
        return (self.name, *(TASK_SPACES[t].name for t in TASKS))


TASK_SPACES: dict[str, type[FBNetV5Space]] = {
    "cls": FBNetV5ClsSpace, "seg": FBNetV5SegSpace, "det": FBNetV5DetSpace}
