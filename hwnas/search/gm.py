"""GM-NAS and exhaustive few-shot NAS, pure parts: gradient matching, partitions, splits, schedule.

GM-NAS: Hu, Wang, Hong, Li, Hsieh, Feng, "Generalizing Few-Shot NAS with Gradient Matching",
ICLR 2022; official code github skhu101/GM-NAS (`WS-GM/nasbench201/train_search.py`,
`WS-GM/nasbench201/utils.py`, `Proxylessnas-GM/.../super_proxyless.py`). Few-shot NAS: Zhao et al.,
"Few-shot Neural Architecture Search", ICML 2021. Labels follow the project notes
(`shared/research/gm_parzc_help.md`, section 1): [read: code] = as the official code does it,
[infer] = our reconstruction where the code is silent, buggy or specific to one space.

A supernet is split along one layer (an "edge" in cell spaces): the layer's allowed choices are
divided into groups, and each group becomes a child sub-supernet whose mask `enc` keeps only that
group on that row. GM-NAS picks the groups (and the layer) by how well the candidates' gradients on
the *shared* weights agree; few-shot NAS gives every choice its own child.

Pipeline (one split of one supernet):

1. `gradient_distance(net, layer, batches, generator)` for every candidate layer: the |O| x |O|
   cosine-distance matrix of the shared-weight gradients, averaged over minibatches (Sec. 1.3).
2. `choose_edge(distances, k, sizes, rule)`: the best k-way partition of each layer's ops
   (`best_partition`, brute force over `partitions`) and the layer to split (Sec. 1.4).
3. `split_enc(enc, layer, groups)` (or `fewshot_split(enc, layer)`): the children's masks.
4. `SplitSchedule`: when splits happen, when alpha is frozen, when children are re-initialised.

Conventions: a *choice index* is a column of `enc` (the op's index in the layer's candidate list);
a *position* is a row/column of a distance matrix, i.e. an index into `ops` (the allowed choice
indices in increasing order). `partitions`, `best_partition`, `within_cost` and `cut_cost` work on
positions; `EdgeScore.groups`, `split_enc` and `fewshot_split` work on choice indices.

Nothing here trains a network; the supernet classes implement `SplittableNet`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import HwnasError

__all__ = [
    "EdgeScore", "GradientDistance", "SplitSchedule", "SplittableNet", "best_partition",
    "choose_edge", "cosine_distance_matrix", "coverage", "cut_cost", "fewshot_split",
    "flat_gradient", "gradient_distance", "membership", "n_archs", "partitions", "split_enc",
    "within_cost",
]

#: The denominator's epsilon of `utils.py::match_loss` (dis_metric "cos"): 0.000001.
COS_EPS = 1e-6
#: Largest number of partitions `partitions` will enumerate (brute force is meant for |O| <= ~10).
MAX_PARTITIONS = 1_000_000


@runtime_checkable
class SplittableNet(Protocol):
    """What gm.py needs from a supernet (`hwnas.search.supernet.WeightSharingNet` implements it).

    - `enc`: torch bool tensor (layers x max_choices), True where a choice is allowed in this
      (sub-)supernet; a buffer, read with `.cpu().numpy()`.
    - `set_paths(indices)`: activate one choice per layer (a list/array of ints); every following
      `net(x)` runs that single path.
    - `sample_uniform(generator)`: one uniformly drawn allowed choice per layer (respects `enc`),
      as an int array of length `layers`.
    - `split_parameters(layer)`: the gradient set for scoring `layer`: the shared weights whose
      gradients are compared. By construction it excludes every parameter of that layer's own
      candidates (GM-NAS `get_split_gradients(split_eid)`; on NB201 also stem and classifier).
    - `net(x)` -> logits; a standard `nn.Module` (`zero_grad`, `train`).
    """

    enc: torch.Tensor

    def set_paths(self, indices: Sequence[int] | np.ndarray) -> None: ...

    def sample_uniform(self, generator: torch.Generator) -> np.ndarray: ...

    def split_parameters(self, layer: int) -> list[torch.nn.Parameter]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def train(self, mode: bool = True) -> Any: ...


# --------------------------------------------------------------------------------------------
# 1.3 gradient-matching score
# --------------------------------------------------------------------------------------------


def cosine_distance_matrix(grads: Sequence[torch.Tensor]) -> np.ndarray:
    """D[i, j] = 1 - <g_i, g_j> / (||g_i|| ||g_j|| + 1e-6) for flattened gradient vectors (float64).

    `WS-GM/nasbench201/utils.py::match_loss` with `dis_metric='cos'` [read: code]: one cosine over
    the flattened concatenation of all collected gradients (not per filter). The diagonal is
    1 - ||g||^2 / (||g||^2 + 1e-6) (about 0), values lie in [0, 2] (rounding clipped), and the
    matrix is made exactly symmetric. The GM score (similarity) is 1 - D.
    """
    if len(grads) == 0:
        raise HwnasError("cosine_distance_matrix needs at least one gradient vector.")
    flat = [torch.as_tensor(g).detach().reshape(-1) for g in grads]
    if len({g.numel() for g in flat}) != 1:
        raise HwnasError("all gradient vectors must have the same length (the same gradient set).")
    device = flat[0].device
    G = torch.stack([g.to(device=device, dtype=torch.float64) for g in flat])
    dot = G @ G.T
    norms = torch.linalg.vector_norm(G, dim=1)
    D = 1.0 - dot / (norms[:, None] * norms[None, :] + COS_EPS)
    D = 0.5 * (D + D.T)
    return np.clip(D.cpu().numpy(), 0.0, 2.0)


def flat_gradient(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The concatenation of `p.grad.reshape(-1)` over `params`; zeros where `p.grad` is None.

    `train_search.py::split_supernet` collects `model.get_split_gradients(split_eid=eid)` after each
    op's backward and `match_loss` flattens and concatenates them [read: code]. A parameter the
    sampled path did not reach has no gradient; it contributes zeros, so the vector has the same
    length (the total numel of `params`) for every op and batch.
    """
    parts = []
    for p in params:
        if p.grad is None:
            parts.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device))
        else:
            parts.append(p.grad.detach().reshape(-1))
    if not parts:
        raise HwnasError("the gradient set is empty: split_parameters returned no parameters.")
    dtype = parts[0].dtype
    return torch.cat([t.to(dtype) for t in parts])


@dataclass(frozen=True)
class GradientDistance:
    """Result of `gradient_distance` for one layer.

    - `layer`: the scored layer; `ops`: its allowed choice indices (increasing), the order of the
      matrix's rows and columns.
    - `matrix`: (len(ops) x len(ops)) float64 cosine distance averaged over the batches.
    - `backward_passes`: how many backward passes were run (batches x len(ops)); the GM-NAS cost
      unit (notes 1.3: 100 x |O| per edge; GM7).
    - `batches`: how many minibatches were averaged.
    """

    layer: int
    ops: tuple[int, ...]
    matrix: np.ndarray
    backward_passes: int
    batches: int


def _net_enc(net: SplittableNet) -> np.ndarray:
    enc = np.asarray(net.enc.detach().cpu().numpy()).astype(bool)
    if enc.ndim != 2:
        raise HwnasError(f"net.enc must be a (layers x choices) mask, got shape {enc.shape}.")
    return enc


def gradient_distance(
    net: SplittableNet,
    layer: int,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> GradientDistance:
    """The gradient-matching distance matrix of `layer`'s allowed ops, averaged over `batches`.

    `WS-GM/nasbench201/train_search.py::split_supernet` (split_crit 'grad') with
    `utils.py::match_loss` (dis_metric 'cos') [read: code], in RSPS mode: for every minibatch
    (x, y), ONE path is drawn with `net.sample_uniform(generator)` (the code's `model.get_theta()`,
    a sampled single path for RSPS), and for every allowed op o of `layer` the path with
    path[layer] = o is run (hard one-hot, `--hard 1`): zero the gradients, forward, `loss_fn`,
    backward, collect `flat_gradient(net.split_parameters(layer))`. All ops of a batch see the same
    batch and the same path on the other layers. The per-batch matrices (`cosine_distance_matrix`)
    are averaged (the code: `repeat = 100` batches, 10 with `--fast`).

    Differences from the code [infer]: the code's DARTS mode weights the other edges by the masked
    softmax(alpha) instead of one sampled path; it also draws a fresh batch per repeat itself, here
    the caller passes the batches. The net is put in train mode (as the code does); at the end its
    gradients are cleared (`zero_grad(set_to_none=True)`) so that no scoring gradient leaks into
    the next weight step. The last scored path stays set; nothing else is restored.
    """
    enc = _net_enc(net)
    if not 0 <= layer < enc.shape[0]:
        raise HwnasError(f"layer {layer} is out of range for a supernet of {enc.shape[0]} layers.")
    ops = tuple(int(o) for o in np.flatnonzero(enc[layer]))
    if not ops:
        raise HwnasError(f"layer {layer} has no allowed choice in net.enc.")
    params = list(net.split_parameters(layer))
    if not params:
        raise HwnasError(f"split_parameters({layer}) returned no parameters to compare.")
    net.train()
    total = np.zeros((len(ops), len(ops)), dtype=np.float64)
    n_batches = 0
    passes = 0
    for x, y in batches:
        path = np.asarray(net.sample_uniform(generator), dtype=np.int64).reshape(-1).copy()
        if path.shape[0] != enc.shape[0]:
            raise HwnasError(
                f"sample_uniform returned {path.shape[0]} choices for {enc.shape[0]} layers.")
        grads = []
        for o in ops:
            path[layer] = o
            net.set_paths([int(i) for i in path])
            net.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            passes += 1
            grads.append(flat_gradient(params))
        total += cosine_distance_matrix(grads)
        n_batches += 1
    if n_batches == 0:
        raise HwnasError("gradient_distance needs at least one (x, y) minibatch.")
    net.zero_grad(set_to_none=True)
    return GradientDistance(layer=layer, ops=ops, matrix=total / n_batches,
                            backward_passes=passes, batches=n_batches)


# --------------------------------------------------------------------------------------------
# 1.4 partition and edge choice
# --------------------------------------------------------------------------------------------


def _stirling2(n: int, k: int) -> int:
    """Stirling number of the second kind S(n, k) (number of partitions into k non-empty groups)."""
    row = [1] + [0] * k  # S(0, j)
    for i in range(1, n + 1):
        new = [0] * (k + 1)
        for j in range(1, min(i, k) + 1):
            new[j] = j * row[j] + row[j - 1]
        row = new
    return row[k]


def partitions(
    n: int, k: int, sizes: Sequence[int] | None = None
) -> list[tuple[tuple[int, ...], ...]]:
    """Every partition of range(n) into k non-empty unordered groups, each exactly once.

    The brute-force candidate set of GM-NAS's partition step [infer, notes 1.4]: the code
    enumerates pairs for 2|3 (`mincut_split_201`), subsets of size 2..n//2 (`mincut_split_darts`)
    and permutations for 3 groups (`mincut_split_proxylessnas`); all of them are special cases.

    Canonical order: groups are tuples of increasing positions, sorted by their smallest element;
    partitions come in lexicographic order of their restricted-growth label strings (labels
    numbered by first appearance), e.g. partitions(3, 2) = [((0, 1), (2,)), ((0, 2), (1,)),
    ((0,), (1, 2))]. With `sizes`, only partitions whose sorted group sizes equal sorted(sizes).
    Counts: S(n, k) without sizes (S(7, 3) = 301, S(7, 2) = 63); partitions(5, 2, (2, 3)) has 10.
    """
    if n < 1 or k < 1 or k > n:
        raise HwnasError(f"cannot partition {n} items into {k} non-empty groups.")
    want = None
    if sizes is not None:
        want = sorted(int(s) for s in sizes)
        if len(want) != k or min(want) < 1 or sum(want) != n:
            raise HwnasError(
                f"sizes {tuple(sizes)} must be {k} positive group sizes that sum to {n}.")
    count = _stirling2(n, k)
    if count > MAX_PARTITIONS:
        raise HwnasError(
            f"{count} partitions of {n} items into {k} groups are too many to enumerate.")
    labels = [0] * n
    out: list[tuple[tuple[int, ...], ...]] = []

    def rec(i: int, used: int) -> None:
        if n - i < k - used:
            return
        if i == n:
            groups = tuple(tuple(j for j in range(n) if labels[j] == g) for g in range(k))
            if want is None or sorted(len(g) for g in groups) == want:
                out.append(groups)
            return
        for g in range(used):
            labels[i] = g
            rec(i + 1, used)
        if used < k:
            labels[i] = used
            rec(i + 1, used + 1)

    rec(0, 0)
    return out


def _square(D: np.ndarray) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] == 0:
        raise HwnasError(f"a distance matrix must be square and non-empty, got shape {D.shape}.")
    if not np.all(np.isfinite(D)):
        raise HwnasError("the distance matrix contains NaN or infinite values.")
    return D


def _labels(groups: Sequence[Sequence[int]], n: int) -> np.ndarray:
    labels = np.full(n, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        for i in group:
            if not 0 <= int(i) < n or labels[int(i)] != -1:
                raise HwnasError(f"groups {groups} do not partition the positions 0..{n - 1}.")
            labels[int(i)] = g
    if np.any(labels < 0):
        raise HwnasError(f"groups {groups} do not partition the positions 0..{n - 1}.")
    return labels


def within_cost(D: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Sum over groups of sum over pairs i < j inside the group of D[i, j] (positions).

    The cost `mincut_split_201` / `mincut_split_darts` minimise [read: code] (they read the upper
    triangle of D, as here).
    """
    D = _square(D)
    labels = _labels(groups, D.shape[0])
    iu, ju = np.triu_indices(D.shape[0], 1)
    return float(D[iu, ju][labels[iu] == labels[ju]].sum())


def cut_cost(D: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Sum over pairs i < j in different groups of S[i, j], with S = 1 - D (the similarity graph).

    The paper's framing [infer, notes 1.4 from a third-party summary]: a graph over the ops with
    edge weights = gradient cosine similarity, cut between the groups. Similarities can be negative
    (opposed gradients), so the cut can be negative.
    """
    D = _square(D)
    labels = _labels(groups, D.shape[0])
    iu, ju = np.triu_indices(D.shape[0], 1)
    return float((1.0 - D[iu, ju])[labels[iu] != labels[ju]].sum())


def best_partition(
    D: np.ndarray, k: int, sizes: Sequence[int] | None = None
) -> tuple[tuple[int, ...], ...]:
    """The k-way partition of D's positions with the lowest `within_cost` (brute force).

    `mincut_split_201` (5 ops, 2|3) and `mincut_split_darts` (2 groups of any sizes) [read: code],
    generalised to any k by enumerating all set partitions [infer, notes 1.4]. Ties: the first in
    `partitions`' canonical order (the code keeps the first strict improvement in its own order).
    With `sizes` fixed, minimising the within cost is the same as minimising `cut_cost` in
    S = 1 - D (the number of cross pairs and the total distance are then constant).

    Deliberately NOT reproduced: `mincut_split_proxylessnas`'s 3-group loop never resets its `cut`
    accumulator between candidates, so its 3-way choice is effectively arbitrary (notes 1.4, GM4b);
    here every partition is scored independently.
    """
    D = _square(D)
    parts = partitions(D.shape[0], k, sizes)
    n = D.shape[0]
    iu, ju = np.triu_indices(n, 1)
    lab = np.empty((len(parts), n), dtype=np.int64)
    for p, groups in enumerate(parts):
        for g, group in enumerate(groups):
            lab[p, list(group)] = g
    same = (lab[:, iu] == lab[:, ju]).astype(np.float64)  # (P, pairs)
    costs = same @ D[iu, ju]
    return parts[int(np.argmin(costs))]


@dataclass(frozen=True)
class EdgeScore:
    """One candidate layer's best partition and its scores (see `choose_edge`).

    `ops`: the layer's allowed choice indices (positions of the matrix); `groups`: the best
    partition as tuples of CHOICE indices (not positions), ready for `split_enc`; `within`: its
    within-group distance; `cut`: its cut in S = 1 - D (rule "mincut", lower is better);
    `cross`: total upper-triangle distance - within (rule "nb201", higher is better).
    """

    layer: int
    ops: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    within: float
    cut: float
    cross: float


def _unpack(value: GradientDistance | tuple[Sequence[int], np.ndarray]) -> tuple[tuple[int, ...],
                                                                                   np.ndarray]:
    if isinstance(value, GradientDistance):
        ops, D = value.ops, value.matrix
    else:
        ops, D = value
    ops = tuple(int(o) for o in ops)
    D = _square(D)
    if D.shape[0] != len(ops):
        raise HwnasError(f"a {D.shape[0]}x{D.shape[0]} distance matrix cannot fit {len(ops)} ops.")
    return ops, D


def choose_edge(
    distances: Mapping[int, GradientDistance | tuple[Sequence[int], np.ndarray]],
    k: int = 2,
    sizes: Sequence[int] | None = None,
    rule: str = "mincut",
) -> tuple[EdgeScore, list[EdgeScore]]:
    """The layer to split and its groups, from each candidate layer's distance matrix.

    `distances` maps layer -> `GradientDistance` (or a pair (ops, D)). For every layer, the best
    k-partition of its ops (`best_partition`, with `sizes` if given) is scored, then:

    - rule "mincut" [infer, notes 1.4, paper framing]: the layer whose best partition has the
      lowest `cut_cost` in the similarity graph S = 1 - D (weight sharing most detrimental);
    - rule "nb201" [read: code `mincut_split_201` + `split_supernet`]: the layer with the highest
      cross-group distance = total upper-triangle distance - within cost.

    For layers with equal op counts and fixed `sizes` the two rules pick the same layer
    (cut = #cross pairs - cross distance, and #cross pairs is then the same for every layer).
    Ties go to the smallest layer index (the code keeps the first strict improvement over edges in
    increasing order). Layers with fewer than k allowed ops, or whose op count differs from
    sum(sizes), are not candidates (the code scores only fully unsplit edges); if no layer is a
    candidate, HwnasError. Returns (the chosen score, the scores of all candidates by layer).
    """
    if rule not in ("mincut", "nb201"):
        raise HwnasError(f"unknown edge rule {rule!r}; use 'mincut' or 'nb201'.")
    if k < 2:
        raise HwnasError(f"a split needs at least 2 groups, got k={k}.")
    scores: list[EdgeScore] = []
    for layer in sorted(distances):
        ops, D = _unpack(distances[layer])
        if len(ops) < k or (sizes is not None and sum(int(s) for s in sizes) != len(ops)):
            continue
        part = best_partition(D, k, sizes)
        within = within_cost(D, part)
        total = float(D[np.triu_indices(len(ops), 1)].sum())
        scores.append(EdgeScore(
            layer=int(layer), ops=ops, groups=tuple(tuple(ops[i] for i in g) for g in part),
            within=within, cut=cut_cost(D, part), cross=total - within))
    if not scores:
        raise HwnasError(f"no layer can be split into {k} groups"
                         + (f" of sizes {tuple(sizes)}." if sizes is not None else "."))
    if rule == "mincut":
        best = int(np.argmin([s.cut for s in scores]))
    else:
        best = int(np.argmax([s.cross for s in scores]))
    return scores[best], scores


# --------------------------------------------------------------------------------------------
# 1.2 children masks, few-shot, coverage
# --------------------------------------------------------------------------------------------


def _enc(enc: np.ndarray) -> np.ndarray:
    enc = np.asarray(enc)
    if enc.ndim != 2:
        raise HwnasError(f"an enc mask must be 2-D (layers x choices), got shape {enc.shape}.")
    return enc.astype(bool)


def split_enc(enc: np.ndarray, layer: int, groups: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """One child mask per group: a copy of `enc` whose row `layer` keeps only that group's choices.

    `train_search.py::split_supernet`, "generate encodings" [read: code]: `enc[split_eid]` becomes
    the group's one-hot set, every other row is copied. `groups` are choice indices (columns of
    `enc`) and must partition exactly the allowed choices of that row, into at least 2 groups.
    """
    enc = _enc(enc)
    if not 0 <= layer < enc.shape[0]:
        raise HwnasError(f"layer {layer} is out of range for a mask with {enc.shape[0]} layers.")
    allowed = sorted(int(c) for c in np.flatnonzero(enc[layer]))
    flat = [int(c) for g in groups for c in g]
    if len(groups) < 2 or any(len(g) == 0 for g in groups) or sorted(flat) != allowed:
        raise HwnasError(f"groups {[tuple(g) for g in groups]} must split the allowed choices "
                         f"{allowed} of layer {layer} into at least 2 non-empty disjoint groups.")
    children = []
    for g in groups:
        child = enc.copy()
        child[layer] = False
        child[layer, [int(c) for c in g]] = True
        children.append(child)
    return children


def fewshot_split(enc: np.ndarray, layer: int) -> list[np.ndarray]:
    """Exhaustive few-shot split (Zhao et al. 2021): one child per allowed choice of `layer`.

    GM-NAS's own baseline `--split_crit fewshot --split_num |O|` (`utils.py::random_split_201`
    with split_num == num_ops gives one op per group) [read: code].
    """
    enc = _enc(enc)
    if not 0 <= layer < enc.shape[0]:
        raise HwnasError(f"layer {layer} is out of range for a mask with {enc.shape[0]} layers.")
    allowed = [int(c) for c in np.flatnonzero(enc[layer])]
    if len(allowed) < 2:
        raise HwnasError(f"layer {layer} has fewer than 2 allowed choices; it cannot be split.")
    return split_enc(enc, layer, [(c,) for c in allowed])


def plan_split(net: SplittableNet, valid: np.ndarray, groups: int,
               batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
               generator: torch.Generator | None = None,
               fewshot_layer: int | None = None) -> tuple[list[np.ndarray], dict]:
    """The children's masks of one split of `net` and a record of it (`split_supernet`).

    `valid`: the (layers x choices) mask of choices that exist. With `fewshot_layer`, one child per
    allowed op of that layer (`fewshot_split`). Otherwise gradient matching: every layer not split
    yet (all its valid choices still allowed) with at least `groups` choices is scored on
    `batches` (`gradient_distance`), `choose_edge` picks the layer and partition, `split_enc`
    makes the masks.
    """
    valid = np.asarray(valid, dtype=bool)
    enc = _net_enc(net) & valid
    if fewshot_layer is not None:
        return fewshot_split(enc, fewshot_layer), {"layer": fewshot_layer, "rule": "fewshot"}
    layers = [i for i in range(len(valid))
              if (enc[i] == valid[i]).all() and int(enc[i].sum()) >= groups]
    if not layers:
        raise HwnasError("no layer is left to split")
    if not batches or generator is None:
        raise HwnasError("a gradient-matching split needs minibatches and a generator")
    distances = {i: gradient_distance(net, i, batches, generator) for i in layers}
    chosen, _ = choose_edge(distances, groups)
    return split_enc(enc, chosen.layer, chosen.groups), {
        "layer": chosen.layer, "groups": [list(g) for g in chosen.groups], "cut": chosen.cut,
        "rule": "gm"}


def n_archs(enc: np.ndarray) -> int:
    """Number of architectures a mask allows: the product over layers of allowed choices."""
    return math.prod(int(c) for c in _enc(enc).sum(axis=1))


def membership(encs: Sequence[np.ndarray], archs: np.ndarray) -> np.ndarray:
    """For each row of an (N, layers) choice-index matrix, in how many of `encs` it lies."""
    archs = np.atleast_2d(np.asarray(archs, dtype=np.int64))
    counts = np.zeros(archs.shape[0], dtype=np.int64)
    for enc in encs:
        enc = _enc(enc)
        if archs.shape[1] != enc.shape[0]:
            raise HwnasError(
                f"architectures have {archs.shape[1]} layers but the mask has {enc.shape[0]}.")
        counts += enc[np.arange(enc.shape[0])[None, :], archs].all(axis=1)
    return counts


def coverage(encs: Sequence[np.ndarray], parent: np.ndarray) -> bool:
    """True when the children `encs` partition the architectures of `parent` exactly.

    Proved on the masks, without enumerating (notes GM5 [infer]): every child is a subset of the
    parent row by row, two children are disjoint when some row has no common choice, and the
    children's counts (`n_archs`) sum to the parent's count.
    """
    parent = _enc(parent)
    children = [_enc(e) for e in encs]
    if any(c.shape != parent.shape for c in children):
        return False
    if any(np.any(c & ~parent) for c in children):
        return False
    for a, b in itertools.combinations(children, 2):
        if np.all(np.any(a & b, axis=1)):
            return False
    return sum(n_archs(c) for c in children) == n_archs(parent)


# --------------------------------------------------------------------------------------------
# 1.5 schedules
# --------------------------------------------------------------------------------------------

RESTARTS = ("final", "all", "none")


@dataclass
class SplitSchedule:
    """When a (GM / few-shot) supernet is split, alpha frozen, and children re-initialised.

    Fields: `epochs` (total); `split_epochs` (strictly increasing epochs in [0, epochs); a split
    happens at the START of that epoch, after training epochs 0..e-1, as the code's `split_ckpts`);
    `groups` (groups per split, same length; 0 means "one group per allowed op", the exhaustive
    few-shot split); `restart` ("final": children of the last split are re-initialised, the
    released setting; "all": at every split; "none": children always inherit weights, alpha,
    optimiser and scheduler states); `alpha_warmup` (alpha frozen for epochs < alpha_warmup; None =
    the code's rule `warmup_epoch = split_ckpts[-1]` when restart != 'none', else 0).

    Reference [read: code `exp_scripts/ws-so-darts-201.sh`, `train_search.py`]: NB201 + DARTS,
    `--split_ckpts 15,30 --projection_warmup_epoch 30 --restart final`: warm-up 15 epochs, splits
    at 15 and 30 into 2 groups each (4 children), alpha frozen until 30, children re-initialised at
    30 and trained 30 more epochs: 60 in total. `SplitSchedule.gm(epochs)` scales that schedule
    (splits evenly spaced in the first half, the last at epochs // 2); other released schedules
    (RSPS 20, 40 of 90; DARTS space 2, 4, 6 of 21) are built with the constructor.
    """

    epochs: int
    split_epochs: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    restart: str = "final"
    alpha_warmup: int | None = None

    def __post_init__(self) -> None:
        self.split_epochs = [int(e) for e in self.split_epochs]
        self.groups = [int(g) for g in self.groups]
        if int(self.epochs) < 1:
            raise HwnasError(f"a schedule needs at least 1 epoch, got {self.epochs}.")
        self.epochs = int(self.epochs)
        if len(self.split_epochs) != len(self.groups):
            raise HwnasError(f"{len(self.split_epochs)} split epochs but {len(self.groups)} group "
                             "counts; give one group count per split.")
        if any(not 0 <= e < self.epochs for e in self.split_epochs):
            raise HwnasError(f"split epochs {self.split_epochs} must lie in [0, {self.epochs}).")
        if any(b <= a for a, b in itertools.pairwise(self.split_epochs)):
            raise HwnasError(f"split epochs {self.split_epochs} must be strictly increasing.")
        if any(g != 0 and g < 2 for g in self.groups):
            raise HwnasError(f"groups {self.groups} must be >= 2 per split (or 0 for one per op).")
        if self.restart not in RESTARTS:
            raise HwnasError(f"restart must be one of {RESTARTS}, got {self.restart!r}.")
        if self.alpha_warmup is not None and not 0 <= int(self.alpha_warmup) <= self.epochs:
            raise HwnasError(f"alpha_warmup {self.alpha_warmup} must lie in [0, {self.epochs}].")

    @classmethod
    def gm(cls, epochs: int, splits: int = 2, groups: Sequence[int] | None = None,
           restart: str = "final") -> SplitSchedule:
        """GM-NAS preset: `splits` splits at (i + 1) * epochs // (2 * splits), 2 groups each.

        For splits=2: [epochs // 4, epochs // 2], i.e. the released NB201 schedule [15, 30] of 60
        [read: code], scaled.
        """
        if splits < 1:
            raise HwnasError(f"a GM schedule needs at least 1 split, got {splits}.")
        at = [(i + 1) * int(epochs) // (2 * splits) for i in range(splits)]
        return cls(epochs, at, list(groups) if groups is not None else [2] * splits, restart)

    @classmethod
    def fewshot(cls, epochs: int) -> SplitSchedule:
        """Few-shot preset (GM-NAS's baseline): one exhaustive split at epoch 0, restart final."""
        return cls(epochs, [0], [0], "final")

    @classmethod
    def none(cls, epochs: int) -> SplitSchedule:
        """One-shot: no split."""
        return cls(epochs, [], [], "none")

    @property
    def alpha_warmup_epochs(self) -> int:
        """Alpha is frozen for epochs < this (`train`: `if epoch >= args.warmup_epoch`)."""
        if self.alpha_warmup is not None:
            return int(self.alpha_warmup)
        if self.restart != "none" and self.split_epochs:
            return self.split_epochs[-1]
        return 0

    def splits_at(self, epoch: int) -> int | None:
        """Groups of the split at the start of `epoch` (0 = one per op, falsy!), else None."""
        if epoch in self.split_epochs:
            return self.groups[self.split_epochs.index(epoch)]
        return None

    def alpha_frozen(self, epoch: int) -> bool:
        """True while alpha is not trained (before the last split under restart final/all)."""
        return epoch < self.alpha_warmup_epochs

    def reinit_at(self, epoch: int) -> bool:
        """True when the children created at the start of `epoch` are re-initialised."""
        if epoch not in self.split_epochs:
            return False
        if self.restart == "all":
            return True
        return self.restart == "final" and epoch == self.split_epochs[-1]

    def children_after(self, epoch: int, n_ops: int | None = None) -> int:
        """Number of sub-supernets per original supernet after the splits done at or before `epoch`.

        A few-shot split (groups 0) counts `n_ops` children; without `n_ops` that is an HwnasError.
        """
        total = 1
        for e, g in zip(self.split_epochs, self.groups, strict=True):
            if e > epoch:
                break
            if g == 0:
                if n_ops is None:
                    raise HwnasError("a few-shot split (groups 0) needs n_ops to count children.")
                g = int(n_ops)
            total *= g
        return total
