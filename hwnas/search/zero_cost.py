"""Zero-cost proxies: scores of an untrained network that rank architectures without training.

The proxies of Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021), as their
official code computes them (SamsungLabs/zero-cost-nas, `foresight/pruners/measures/*.py` and
`predictive.py`), plus NASWOT (Mellor et al., ICML 2021, BayesWatch/nas-without-training, the v2
"hook_logdet" score) and three counting baselines:

- every per-weight score is taken from the **weights** of `nn.Conv2d` and `nn.Linear` layers only,
  in `net.modules()` order (`p_utils.get_layer_metric_array`); a layer the loss does not reach
  (no gradient) scores zeros. The architecture's score is the sum over all layers
  (`find_measures: sum_arr`);
- `grad_norm`: sum over layers of the Frobenius norm of dL/dW_l (one norm per layer, not one global
  norm). BatchNorm on, train mode;
- `snip`: sum |dL/dm * m| at m = 1, which is |W * dL/dW| (Lee et al., 2019, Eq. 6);
- `grasp`: g = dL/dW (first pass, no graph); second pass z = sum g * dL/dW with the graph kept, then
  dz/dW = H g; score = sum -W * (H g) (Wang et al., 2020, Eq. 8; the minus sign is the official
  code's: "accuracy seems to be negatively correlated with this metric");
- `fisher`: per output channel of each conv/linear, (activation * gradient) summed over the spatial
  positions, squared, averaged over the batch, times 0.5 (Theis et al., 2018, Eq. 4); the
  activation is the layer's output (before BatchNorm). The channel value is broadcast to the
  channel's weights, so a layer's sum is sum_k fisher_k * (weights per channel);
- `jacob_cov`: J = d(sum of outputs)/dx per sample; C = corrcoef(J) (batch x batch);
  score = -sum_i [log(lambda_i + 1e-5) + 1/(lambda_i + 1e-5)] over C's eigenvalues (NASWOT v1).
  C is symmetric, so the eigenvalues come from `numpy.linalg.eigvalsh` (the official code calls
  `eig`; the values are the same, real here). A Jacobian with a constant row (C undefined) is NaN,
  as the official code returns;
- `synflow` (Tanaka et al., 2020, Eq. 2, data-free): BatchNorm off (its forward replaced by the
  identity, `predictive.copynet(bn=False)`), every parameter and buffer replaced by its absolute
  value, the network cast to float64, input = ones of the input shape with batch 1,
  R = sum of the output; score = sum |theta * dR/dtheta| over conv/linear weights.
  Note: the official NAS-Bench-201 model of zero-cost-nas (`nasbench2.get_prunable_copy`) keeps the
  BatchNorm of its two reduction blocks (they are built without its `use_bn` switch) and runs them
  in train mode; the generic rule above switches every BatchNorm off. `synflow_bn_reductions`
  names the NB201 quirk for the benchmark that compares the two;
- `naswot` (Mellor et al., v2 `hook_logdet`): for every ReLU reached by a backward pass, the binary
  code c = 1[input > 0] per sample; K = sum over ReLUs of c c^T + (1 - c)(1 - c)^T, so
  K[i, j] = N_A - Hamming(c_i, c_j); score = log|det K| (`slogdet`). Two identical inputs make K
  singular: the score is then -inf (the worst score), not an error;
- baselines: `params` (all parameters), `macs` (multiply-accumulates of one image, torch's flop
  counter / 2), `conv_count` (convolutions that run on a forward pass).

Layer-wise scores (what ParZC consumes, `hwnas.search.parzc`): for the per-weight proxies each
conv/linear layer's sum and mean (`ProxyScore.layer_sums` / `layer_means`), in module order. For an
NB201 cell the network is built with its dead edges (`NB201Space.build(dead_edges=True)`, like
the official TinyNetwork), so a conv of a dead edge is a layer scoring 0 and every cell lists its
layers at the same positions: 98 layers when all six edges are convolutions, 8 when none is.

Every proxy runs on a copy of the network (the official `copy_net=True`), in train mode, on one
minibatch (`proxy_batch`: the official NB201 setting is 64 images, "random" data loading, one
batch, seed 42); the data-free ones need only the input shape. A network is initialised by
PyTorch's default initialisation after `torch.manual_seed(seed)`, so a score is a function of
(arch, seed, batch): the same on every run and in every order, which `hwnas proxies` relies on to
resume.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError

DATA_FREE = ("synflow", "params", "macs", "conv_count")
DATA_DEPENDENT = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "naswot")
PROXIES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "naswot",
           "params", "macs", "conv_count")
LAYERWISE = ("grad_norm", "snip", "grasp", "fisher", "synflow", "params")
# published Spearman rho on all 15,625 NB201 cells (zero-cost-nas notebook, Table 1)
PUBLISHED_NB201_SPEARMAN = {
    "cifar10": {"grad_norm": 0.594, "snip": 0.596, "grasp": 0.514, "fisher": 0.360,
                "synflow": 0.737, "jacob_cov": 0.731},
    "cifar100": {"grad_norm": 0.637, "snip": 0.637, "grasp": 0.547, "fisher": 0.385,
                 "synflow": 0.763, "jacob_cov": 0.704},
    "imagenet16-120": {"grad_norm": 0.578, "snip": 0.578, "grasp": 0.549, "fisher": 0.327,
                       "synflow": 0.751, "jacob_cov": 0.701},
}
JACOB_EPS = 1e-5


@dataclass
class ProxyScore:
    """One proxy's score of one network: the total, and per conv/linear layer (module order)
    the sum and the mean of the per-weight scores (None for network-level proxies)."""

    name: str
    score: float
    layer_sums: np.ndarray | None = None
    layer_means: np.ndarray | None = None


def check_proxies(names: Iterable[str]) -> tuple[str, ...]:
    """The proxy names, checked (one `HwnasError` naming the unknown ones)."""
    out = tuple(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    bad = [n for n in out if n not in PROXIES]
    if bad or not out:
        raise HwnasError(f"unknown proxy {', '.join(bad) or '(none given)'}; available: "
                         f"{', '.join(PROXIES)}")
    return out


def prunable_layers(net: nn.Module) -> list[nn.Module]:
    """The conv and linear layers, in `net.modules()` order (`get_layer_metric_array`)."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _layerwise(name: str, arrays: Sequence[torch.Tensor]) -> ProxyScore:
    """Sum over layers of per-weight arrays (`sum_arr`), with each layer's sum and mean."""
    sums = np.array([float(a.detach().double().sum()) for a in arrays], dtype=np.float64)
    means = np.array([float(a.detach().double().mean()) if a.numel() else 0.0 for a in arrays],
                     dtype=np.float64)
    return ProxyScore(name, float(sums.sum()), sums, means)


def _grad_or_zeros(layer: nn.Module) -> torch.Tensor:
    g = layer.weight.grad
    return torch.zeros_like(layer.weight) if g is None else g


def _copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).train()


# --- data-dependent proxies (one minibatch) ------------------------------------------------------
def _grad_norm_and_snip(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                        loss_fn: Callable = F.cross_entropy) -> tuple[ProxyScore, ProxyScore]:
    """`grad_norm` and `snip` from one backward pass (both read dL/dW of the same loss)."""
    net = _copy(net)
    net.zero_grad()
    loss_fn(net(inputs), targets).backward()
    layers = prunable_layers(net)
    return (_layerwise("grad_norm", [_grad_or_zeros(m).norm().reshape(1) for m in layers]),
            _layerwise("snip", [(m.weight * _grad_or_zeros(m)).abs() for m in layers]))


def grad_norm(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
              loss_fn: Callable = F.cross_entropy) -> ProxyScore:
    """Sum over layers of ||dL/dW_l||_F (`measures/grad_norm.py`): one norm per layer."""
    return _grad_norm_and_snip(net, inputs, targets, loss_fn)[0]


def snip(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
         loss_fn: Callable = F.cross_entropy) -> ProxyScore:
    """|dL/dm * m| at the mask m = 1, i.e. |W * dL/dW| per weight (`measures/snip.py`)."""
    return _grad_norm_and_snip(net, inputs, targets, loss_fn)[1]


def grasp(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
          loss_fn: Callable = F.cross_entropy) -> ProxyScore:
    """-W * (H g) per weight with g = dL/dW (`measures/grasp.py`): pass 1 takes g without a graph;
    pass 2 builds dL/dW with its graph, z = sum g * dL/dW, and z.backward() leaves H g in .grad."""
    net = _copy(net)
    layers = prunable_layers(net)
    weights = [m.weight for m in layers]
    net.zero_grad()
    g = torch.autograd.grad(loss_fn(net(inputs), targets), weights, allow_unused=True)
    grad_f = torch.autograd.grad(loss_fn(net(inputs), targets), weights, create_graph=True,
                                 allow_unused=True)
    z = sum((gw.detach() * gf).sum() for gw, gf in zip(g, grad_f, strict=True)
            if gw is not None and gf is not None)
    if isinstance(z, torch.Tensor) and z.requires_grad:
        z.backward()
    return _layerwise("grasp", [-m.weight.detach() * _grad_or_zeros(m) for m in layers])


def fisher(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
           loss_fn: Callable = F.cross_entropy) -> ProxyScore:
    """Per output channel k: 0.5 * mean over the batch of (sum over positions of act * grad)^2,
    broadcast to the channel's weights (`measures/fisher.py`); act = the layer's output."""
    net = _copy(net)
    layers = prunable_layers(net)
    scores: dict[int, torch.Tensor] = {}
    handles = []

    def hook(layer_id: int) -> Callable:
        def forward_hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            if not out.requires_grad:
                return
            act = out.detach()

            def grad_hook(grad: torch.Tensor) -> None:
                g_nk = (act * grad).sum(tuple(range(2, act.dim()))) if act.dim() > 2 \
                    else act * grad
                del_k = g_nk.pow(2).mean(0).mul(0.5)
                scores[layer_id] = scores[layer_id] + del_k if layer_id in scores else del_k

            out.register_hook(grad_hook)
        return forward_hook

    for i, m in enumerate(layers):
        handles.append(m.register_forward_hook(hook(i)))
    try:
        net.zero_grad()
        loss_fn(net(inputs), targets).backward()
    finally:
        for h in handles:
            h.remove()
    arrays = []
    for i, m in enumerate(layers):
        ch = scores.get(i, torch.zeros(m.weight.shape[0])).abs()
        arrays.append(ch.reshape(-1, *[1] * (m.weight.dim() - 1)).expand_as(m.weight))
    return _layerwise("fisher", arrays)


def jacob_cov_score(jacobians: np.ndarray) -> float:
    """-sum_i [log(lambda_i + k) + 1/(lambda_i + k)], k = 1e-5, over the eigenvalues of the
    correlation matrix of the per-sample Jacobians (rows); NaN when it is undefined."""
    j = np.asarray(jacobians, dtype=np.float64).reshape(len(jacobians), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.corrcoef(j)
    if not np.isfinite(c).all():
        return math.nan
    v = np.linalg.eigvalsh(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.sum(np.log(v + JACOB_EPS) + 1.0 / (v + JACOB_EPS)))


def jacob_cov(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
              loss_fn: Callable | None = None) -> ProxyScore:
    """`jacob_cov_score` of J = d(sum of outputs)/dx (`measures/jacob_cov.py`)."""
    net = _copy(net)
    x = inputs.detach().clone().requires_grad_(True)
    y = net(x)
    y.backward(torch.ones_like(y))
    return ProxyScore("jacob_cov", jacob_cov_score(x.grad.detach().numpy()))


def naswot_kernel(codes: Sequence[torch.Tensor]) -> np.ndarray:
    """K = sum over ReLUs of c c^T + (1 - c)(1 - c)^T for binary codes c (batch x units)."""
    k = None
    for c in codes:
        c = c.double()
        term = c @ c.T + (1.0 - c) @ (1.0 - c).T
        k = term if k is None else k + term
    if k is None:
        raise HwnasError("naswot: the network has no ReLU reached by the loss")
    return k.numpy()


def naswot_score(k: np.ndarray) -> float:
    """log|det K| (`slogdet`); -inf when K is singular (e.g. two identical inputs)."""
    sign, logdet = np.linalg.slogdet(np.asarray(k, dtype=np.float64))
    return float(logdet) if sign != 0 and np.isfinite(logdet) else -math.inf


def naswot(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
           loss_fn: Callable | None = None) -> ProxyScore:
    """NASWOT v2 (`hook_logdet`): a backward pass marks the ReLUs it reaches
    (`visited_backwards`), then a forward pass records each such ReLU's binary input code."""
    net = _copy(net)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    visited: set[int] = set()
    codes: list[torch.Tensor] = []
    handles = []
    for i, m in enumerate(relus):
        handles.append(m.register_full_backward_hook(
            lambda _m, _gi, _go, i=i: visited.add(i)))
    try:
        x = inputs.detach().clone().requires_grad_(True)
        y = net(x)
        y.backward(torch.ones_like(y))
    finally:
        for h in handles:
            h.remove()
    handles = []
    for i, m in enumerate(relus):
        if i in visited:
            handles.append(m.register_forward_pre_hook(
                lambda _m, inp: codes.append(inp[0].detach().reshape(len(inp[0]), -1) > 0)))
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for h in handles:
            h.remove()
    return ProxyScore("naswot", naswot_score(naswot_kernel(codes)))


# --- data-free proxies ----------------------------------------------------------------------------
def _bn_off(net: nn.Module, keep: Callable[[str], bool] | None = None) -> None:
    """Replace each BatchNorm's forward by the identity (`predictive.copynet(bn=False)`), except
    those whose module name `keep` accepts."""
    for name, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (keep and keep(name)):
            m.forward = types.MethodType(lambda self, x: x, m)


def synflow(net: nn.Module, input_shape: Sequence[int],
            keep_bn: Callable[[str], bool] | None = None) -> ProxyScore:
    """sum |theta * dR/dtheta| over conv/linear weights, R = sum of the output for an input of
    ones, with |theta| everywhere, BatchNorm off and float64 (`measures/synflow.py`).
    `keep_bn(module_name)` keeps some BatchNorms on (see the module docstring)."""
    net = _copy(net)
    _bn_off(net, keep_bn)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.zero_grad()
    net.double()
    x = torch.ones([1, *list(input_shape)[1:]], dtype=torch.float64)
    net(x).sum().backward()
    return _layerwise("synflow", [(m.weight * _grad_or_zeros(m)).abs()
                                  for m in prunable_layers(net)])


def params(net: nn.Module) -> ProxyScore:
    """Parameter count (all parameters); per layer: the conv/linear weight counts."""
    per = np.array([m.weight.numel() for m in prunable_layers(net)], dtype=np.float64)
    total = float(sum(p.numel() for p in net.parameters()))
    return ProxyScore("params", total, per, per.copy())


def macs(net: nn.Module, input_shape: Sequence[int]) -> ProxyScore:
    """Multiply-accumulates of one image (torch's flop counter / 2, on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(net).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty([1, *list(input_shape)[1:]], device="meta"))
    return ProxyScore("macs", float(counter.get_total_flops()) / 2.0)


def conv_count(net: nn.Module, input_shape: Sequence[int]) -> ProxyScore:
    """Convolutions that run on a forward pass (dead edges do not)."""
    ran: set[int] = set()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(lambda _m, _i, _o, i=i: ran.add(i))
               for i, m in enumerate(convs)]
    try:
        with torch.no_grad():
            net(torch.zeros([1, *list(input_shape)[1:]]))
    finally:
        for h in handles:
            h.remove()
    return ProxyScore("conv_count", float(len(ran)))


# --- all of them -----------------------------------------------------------------------------------
_DATA_FNS = {"grad_norm": grad_norm, "snip": snip, "grasp": grasp, "fisher": fisher,
             "jacob_cov": jacob_cov, "naswot": naswot}


def compute_proxies(net: nn.Module, names: Iterable[str], input_shape: Sequence[int],
                    inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                    loss_fn: Callable = F.cross_entropy,
                    keep_bn: Callable[[str], bool] | None = None) -> dict[str, ProxyScore]:
    """Each named proxy of `net` (module docstring). `input_shape` (N, C, H, W) is what the
    data-free proxies feed; the data-dependent ones need `inputs` and `targets` (one minibatch)."""
    names = check_proxies(names)
    need = [n for n in names if n in DATA_DEPENDENT]
    if need and (inputs is None or targets is None):
        raise HwnasError(f"proxies {', '.join(need)} need a minibatch of data; only "
                         f"{', '.join(DATA_FREE)} are data-free")
    out: dict[str, ProxyScore] = {}
    if "grad_norm" in names and "snip" in names:  # one backward pass serves both
        out["grad_norm"], out["snip"] = _grad_norm_and_snip(net, inputs, targets, loss_fn)
    for n in names:
        if n in out:
            continue
        if n in _DATA_FNS:
            out[n] = _DATA_FNS[n](net, inputs, targets, loss_fn)
        elif n == "synflow":
            out[n] = synflow(net, input_shape, keep_bn)
        elif n == "params":
            out[n] = params(net)
        elif n == "macs":
            out[n] = macs(net, input_shape)
        else:
            out[n] = conv_count(net, input_shape)
    return out


# --- networks and data of a space ------------------------------------------------------------------
def proxy_network(space: object, arch: object, seed: int = 0) -> nn.Module:
    """The arch's network, initialised by PyTorch's defaults after `torch.manual_seed(seed)`, in
    train mode; an NB201 cell keeps its dead edges (module docstring)."""
    from hwnas.space.nb201 import NB201Space

    torch.manual_seed(int(seed))
    net = space.build(arch, dead_edges=True) if isinstance(space, NB201Space) \
        else space.build(arch)
    return net.train()


def proxy_batch(spec: str, resolution: int, batch_size: int = 64, seed: int = 42
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One minibatch of a data spec (`hwnas.data`: digits, a folder, CIFAR-10 batches) at the
    resolution: the first shuffled training batch for `seed` (the official "random" loading of one
    batch); returns (images, labels, number of classes)."""
    from hwnas.data import load_data

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise HwnasError(f"the proxy batch needs at least 2 images, got {batch_size!r}")
    data = load_data(spec, resolution=resolution, seed=0)
    x, y = next(data.batches("train", batch_size, shuffle=True, seed=seed))
    if len(y) < 2:
        raise HwnasError(f"{data.name}: too few training images for a proxy batch")
    return x, y, data.num_classes
