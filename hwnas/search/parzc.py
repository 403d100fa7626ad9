"""ParZC: parametric zero-cost proxies (Dong et al., "Parametric Zero-Cost Proxies for Efficient NAS",
AAAI 2025, arXiv 2402.02105), after the official code in pprp/PicoNAS.

ParZC learns to rank architectures from their *node-wise* zero-cost proxy scores (one value per
conv/linear layer) instead of summing a proxy over all layers with equal weights. This module has
its four parts, each after the official file named:

- `nodewise_features` -- the node-wise input (`exps/gen_bench/gen_nb201.py` and
  `piconas/datasets/predictor/nb201_dataset.py`): for each architecture and proxy, the mean of
  the proxy's per-weight array in every conv/linear layer (in module order), min-max scaled across
  the layers of that architecture, zero-padded at the end to a fixed length, NaN -> 0, the proxies
  concatenated. NB201 layout: grad_norm, snip, synflow, 98 layers each -> 294 inputs.
- `diff_kendall` / `pairwise_loss` -- the ranking losses (`piconas/core/losses/diffkd.py`,
  `pair_loss` in `exps/runner/runner_pinat_rank.py`). DiffKendall with
  t(z) = sigmoid(alpha z) - sigmoid(-alpha z) = tanh(alpha z / 2) is
  DK(x, y) = - sum_{i != j} t(x_i - x_j) t(y_i - y_j) / (N (N - 1) / 2), alpha = 0.5.
  The official code sums over *ordered* pairs but divides by the number of unordered pairs, so DK
  lies in [-2, 2] and tends to -2 tau as alpha -> inf; that normalisation ("code") is the default.
  `normalization="paper"` halves it (range [-1, 1], -> -tau, the paper's equation).
- `BayesianLinear` / `MABN` -- the Mixer Architecture with Bayesian Network (`BaysianMLPMixer`
  and `BayesianLinear` at the end of `piconas/predictor/pinat/pinat_model.py`; the same classes
  in `exps/*/parzc.py`; `FeedForward`/`PreNormResidual` as `piconas/predictor/pinat/mlpmixer.py`).
  Linear(n -> 256) -> 16 patches of 16 -> BayesianLinear(16 -> 512) -> `depth` pre-norm residual
  blocks, each FeedForward(expansion 4) then FeedForward(expansion 0.5), both on the channel
  dimension -> LayerNorm -> mean over patches -> BayesianLinear(512 -> 1). As in the official
  code there is NO token mixing: both feed-forwards of a "mixer" block act on the channels, so
  patches interact only through the input projection and the final mean (kept on purpose, to
  match the published model). The Bayesian weights are W = mu + softplus(rho) * eps with
  eps ~ N(0, I) drawn at every forward pass, in eval mode too, and the loss has NO KL/prior
  term (the official code has none: the Bayesian layers are trained by the ranking loss alone,
  a noise-injection regulariser whose spread gives the node-wise uncertainty of
  `ParZC.predict_dist`).
- `ParZC` -- the estimator: the training recipe of `exps/runner/runner_pinat_rank.py` and
  `scripts/run_nb201_parzc.sh` (Adam lr 1e-4, weight decay 1e-3, cosine schedule stepped per
  epoch, batch 10, DiffKendall loss). Only the MABN part is implemented: the official NB201
  "full" model (`ParZCBMM`) adds the PINAT graph transformer over the cell's DAG and feeds the
  MABN output into it as a per-node embedding; that part is not here (this is the space-agnostic
  "ParZC = Mixer + Bayesian" predictor that needs only the node-wise proxy scores).
- `depth_weights` / `training_free_score` -- the training-free ParZC-dagger (`find_measures` in
  `piconas/predictor/pruners/predictive.py`): score = sum_i w(i) S_i with S_i the proxy summed
  over layer i's weights; "sin" w(i) = (sin(0.1 i) + 1) / 2 (commit e9c2668; its comment says
  alpha = 0.5 but the code uses 0.1) and "quadratic" w(i) = ((L - i) / L)^2 (the repository HEAD).

Files: `ParZC.save` writes `parzc.safetensors` (the state dict) and `parzc.json` (format
"hwnas-parzc-1": hyper-parameters, the target standardisation, user metadata); `ParZC.load`
checks both and raises `HwnasError("<file>: <what is wrong>")`. No pickle is read or written.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hwnas._io import (
    read_checked_tensors,
    read_model_config,
    write_model_folder,
)
from hwnas.errors import HwnasError, NotFittedError

FORMAT = "hwnas-parzc-1"
WEIGHTS_FILE = "parzc.safetensors"
CONFIG_FILE = "parzc.json"
NB201_PROXIES = ("grad_norm", "snip", "synflow")
NB201_LENGTH = 98
LOSS_NAMES = ("diffkendall", "pairwise", "mse")
_LOSS_ALIASES = {"dk": "diffkendall", "pw": "pairwise"}
_PREDICT_CHUNK = 1024


# --------------------------------------------------------------------------- node-wise features


def nodewise_features(layer_means: Sequence[Sequence[np.ndarray]] | np.ndarray, length: int) -> np.ndarray:
    """The ParZC input matrix from per-layer proxy means.

    `layer_means[a][p]` is the 1-D vector of proxy p's per-layer means for architecture a (one value
    per conv/linear layer, in module order; any length <= `length`). For each (a, p), as
    `gen_nb201.py` then `Nb201DatasetPINAT.preprocess_lw_zcp`:

        v' = (v - min v) / (max v - min v)     (across the layers of that architecture)
        v' padded with zeros at the end to `length`;  NaN -> 0

    and the proxies are concatenated in the given order: row a is [v'_a0 | v'_a1 | ...].
    As in the official code a constant vector gives 0/0 = NaN, hence zeros, and a vector holding a
    NaN (np.min/np.max propagate it) becomes all zeros. Returns (n_archs, n_proxies * length) float32.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise HwnasError(f"length must be a positive integer, not {length!r}")
    length = int(length)
    n_archs = len(layer_means)
    if n_archs == 0:
        raise HwnasError("nodewise_features: no architectures given")
    n_proxies = len(layer_means[0])
    if n_proxies == 0:
        raise HwnasError("nodewise_features: architecture 0 has no proxies")
    out = np.zeros((n_archs, n_proxies * length), dtype=np.float64)
    for a, proxies in enumerate(layer_means):
        if len(proxies) != n_proxies:
            raise HwnasError(f"nodewise_features: architecture {a} has {len(proxies)} proxies, "
                             f"architecture 0 has {n_proxies}")
        for p, values in enumerate(proxies):
            try:
                v = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise HwnasError(f"nodewise_features: architecture {a}, proxy {p}: not numbers ({e})") \
                    from None
            if v.ndim != 1:
                raise HwnasError(f"nodewise_features: architecture {a}, proxy {p}: expected a 1-D "
                                 f"vector of per-layer means, got shape {v.shape}")
            if v.size > length:
                raise HwnasError(f"nodewise_features: architecture {a}, proxy {p} has {v.size} layers, "
                                 f"more than length={length}")
            if v.size == 0:
                continue
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                scaled = (v - np.min(v)) / (np.max(v) - np.min(v))
            out[a, p * length:p * length + v.size] = np.nan_to_num(scaled, nan=0.0)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- losses


def _pairs_input(pred: torch.Tensor, target: torch.Tensor, who: str
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """1-D predictions and targets (in the predictions' dtype) of one length N >= 2."""
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    n = pred.shape[0]
    if target.shape[0] != n:
        raise HwnasError(f"{who}: pred has {n} values, target {target.shape[0]}")
    if n < 2:
        raise HwnasError(f"{who} needs at least 2 values")
    return pred, target, n


def diff_kendall(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.5,
                 normalization: str = "code") -> torch.Tensor:
    """DiffKendall, the differentiable Kendall loss of `piconas/core/losses/diffkd.py`.

    With t(z) = sigmoid(alpha z) - sigmoid(-alpha z) = tanh(alpha z / 2):

        "code":  DK = - sum_{i != j} t(x_i - x_j) t(y_i - y_j) / (N (N - 1) / 2)     in [-2, 2]
        "paper": DK / 2                                                               in [-1, 1]

    The sum runs over ordered pairs (the official code), so with "code" DK -> -2 tau-a as
    alpha -> inf; "paper" tends to -tau-a. Lower is better (a loss). `pred`, `target`: 1-D, N >= 2.
    """
    if normalization not in ("code", "paper"):
        raise HwnasError(f"normalization must be 'code' or 'paper', not {normalization!r}")
    pred, target, n = _pairs_input(pred, target, "diff_kendall")
    tx = torch.tanh(0.5 * alpha * (pred[:, None] - pred[None, :]))
    ty = torch.tanh(0.5 * alpha * (target[:, None] - target[None, :]))
    # the diagonal is t(0) t(0) = 0, so summing all N^2 terms is the sum over i != j
    dk = -(tx * ty).sum() / (n * (n - 1) / 2)
    return dk / 2 if normalization == "paper" else dk


def pairwise_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The pairwise logistic ranking loss (`pair_loss` of the official runner):

        L = sum_{i != j} log(1 + exp(-(p_i - p_j) sign(y_i - y_j))) / (N (N - 1))

    Pairs with equal targets (sign 0) add the constant log 2, as in the official code.
    """
    pred, target, n = _pairs_input(pred, target, "pairwise_loss")
    z = (pred[:, None] - pred[None, :]) * torch.sign(target[:, None] - target[None, :])
    terms = F.softplus(-z)  # log(1 + exp(-z)), without overflow
    off = ~torch.eye(n, dtype=torch.bool, device=pred.device)
    return terms[off].sum() / (n * (n - 1))


def parse_loss(loss: str) -> tuple[str, ...]:
    """'diffkendall', 'pairwise', 'mse' or a '+'-joined sum of them ('pairwise+diffkendall'; the
    official short names 'dk' and 'pw' are accepted too) -> the tuple of canonical names."""
    if not isinstance(loss, str) or not loss.strip():
        raise HwnasError(f"loss must be a non-empty string, not {loss!r}")
    parts = []
    for raw in loss.split("+"):
        name = _LOSS_ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if name not in LOSS_NAMES:
            raise HwnasError(f"unknown loss {raw.strip()!r} in {loss!r} (choose from "
                             f"{', '.join(LOSS_NAMES)}, or a sum such as 'pairwise+diffkendall')")
        if name in parts:
            raise HwnasError(f"loss {name!r} appears twice in {loss!r}")
        parts.append(name)
    return tuple(parts)


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, loss: str | Sequence[str] = "diffkendall",
                 alpha: float = 0.5) -> torch.Tensor:
    """The training loss: the sum of the named terms (`parse_loss`), each as the official runner
    computes it ("mse" = mean squared error on the standardised targets)."""
    names = parse_loss(loss) if isinstance(loss, str) else tuple(loss)
    total = pred.new_zeros(())
    for name in names:
        if name == "diffkendall":
            total = total + diff_kendall(pred, target, alpha=alpha)
        elif name == "pairwise":
            total = total + pairwise_loss(pred, target)
        else:
            total = total + F.mse_loss(pred.reshape(-1), target.reshape(-1).to(pred.dtype))
    return total


# --------------------------------------------------------------------------- the network


class BayesianLinear(nn.Module):
    """y = x W^T (+ b) with W = mu + softplus(rho) * eps, eps ~ N(0, I) drawn at every forward
    pass (training and eval alike, as the official layer), the reparameterisation trick.

    Initialisation as the official layer: mu Kaiming-uniform (a = sqrt(5), nn.Linear's rule),
    rho = -5 (sigma = softplus(-5) = 0.0067153). The official layer has no bias, so `bias=False` is
    the default; `bias=True` adds a Bayesian bias (bias_mu uniform(+-1/sqrt(fan_in)), bias_rho = -5).
    No KL/prior term is defined: the official training uses the ranking loss alone.

    `deterministic = True` uses mu only (W = mu, b = bias_mu).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, rho_init: float = -5.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rho_init = rho_init
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_rho = nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias_mu = nn.Parameter(torch.empty(out_features))
            self.bias_rho = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_rho", None)
        self.deterministic = False
        self._eps: tuple[torch.Tensor, torch.Tensor | None] | None = None  # frozen noise (see MABN)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))
        nn.init.constant_(self.weight_rho, self.rho_init)
        if self.bias_mu is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias_mu, -bound, bound)
            nn.init.constant_(self.bias_rho, self.rho_init)

    def sample_eps(self, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One draw of eps ~ N(0, I) for the weight (and bias)."""
        w = torch.randn(self.weight_mu.shape, generator=generator, dtype=self.weight_mu.dtype)
        b = None
        if self.bias_mu is not None:
            b = torch.randn(self.bias_mu.shape, generator=generator, dtype=self.bias_mu.dtype)
        dev = self.weight_mu.device
        return w.to(dev), (b.to(dev) if b is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deterministic:
            return F.linear(x, self.weight_mu, self.bias_mu)
        eps_w, eps_b = self._eps if self._eps is not None else self.sample_eps()
        weight = self.weight_mu + F.softplus(self.weight_rho) * eps_w
        bias = None
        if self.bias_mu is not None:
            bias = self.bias_mu + F.softplus(self.bias_rho) * eps_b
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias_mu is not None}, deterministic={self.deterministic}")


class _PreNormResidual(nn.Module):
    """x + fn(LayerNorm(x)) (`PreNormResidual` of the official mlpmixer.py)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


def _feed_forward(dim: int, expansion: float, dropout: float) -> nn.Sequential:
    """Linear(dim -> int(dim * expansion)) -> GELU -> Dropout -> Linear(-> dim) -> Dropout
    (`FeedForward` of the official mlpmixer.py)."""
    inner = int(dim * expansion)
    return nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim),
                         nn.Dropout(dropout))


class MABN(nn.Module):
    """The Mixer Architecture with Bayesian Network (the official `BaysianMLPMixer`), one score per row:

        x (B, n_features) -> Linear(n_features -> hidden) -> view (B, patches, hidden / patches)
          -> BayesianLinear(hidden / patches -> dim)
          -> depth x [ x + FF_4(LN(x));  x + FF_0.5(LN(x)) ]     (both on the channel dim; no token mixing)
          -> LayerNorm -> mean over patches -> BayesianLinear(dim -> 1) -> (B,)

    FF_e = Linear(dim -> e dim) -> GELU -> Dropout -> Linear(-> dim) -> Dropout. Defaults are the
    official NB201 ones (hidden = sequence_length 256, 16 patches of 16, dim 512, depth 4). The
    dropout default 0.1 is the official class default (`ParZCBMM` passes 0.0 for the mixer it embeds).

    `deterministic` (property) switches every Bayesian layer to its mean weights.
    """

    def __init__(self, n_features: int, hidden: int = 256, patches: int = 16, dim: int = 512, depth: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        if hidden % patches != 0:
            raise HwnasError(f"hidden ({hidden}) must be divisible by patches ({patches})")
        self.n_features, self.hidden, self.patches = n_features, hidden, patches
        self.dim, self.depth, self.dropout = dim, depth, dropout
        self.project = nn.Linear(n_features, hidden)
        self.patch_to_embedding = BayesianLinear(hidden // patches, dim)
        self.mixer_blocks = nn.ModuleList(
            nn.Sequential(_PreNormResidual(dim, _feed_forward(dim, 4, dropout)),
                          _PreNormResidual(dim, _feed_forward(dim, 0.5, dropout)))
            for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim)
        self.head = BayesianLinear(dim, 1)

    def bayesian_layers(self) -> list[BayesianLinear]:
        return [m for m in self.modules() if isinstance(m, BayesianLinear)]

    @property
    def deterministic(self) -> bool:
        return all(layer.deterministic for layer in self.bayesian_layers())

    @deterministic.setter
    def deterministic(self, value: bool) -> None:
        for layer in self.bayesian_layers():
            layer.deterministic = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        x = x.reshape(x.shape[0], self.patches, self.hidden // self.patches)
        x = self.patch_to_embedding(x)
        for block in self.mixer_blocks:
            x = block(x)
        x = self.layer_norm(x)
        x = x.mean(dim=1)
        return self.head(x).reshape(-1)


@contextlib.contextmanager
def deterministic(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Within the block every `BayesianLinear` of `model` uses its mean weights (`on=True`) or samples
    (`on=False`); the previous settings are restored afterwards."""
    layers = [m for m in model.modules() if isinstance(m, BayesianLinear)]
    before = [layer.deterministic for layer in layers]
    try:
        for layer in layers:
            layer.deterministic = on
        yield model
    finally:
        for layer, old in zip(layers, before, strict=True):
            layer.deterministic = old


@contextlib.contextmanager
def frozen_noise(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Within the block every `BayesianLinear` of `model` uses one fixed draw of eps (from `generator`),
    so a weight sample stays the same across forward passes (e.g. the chunks of a large input)."""
    layers = [m for m in model.modules() if isinstance(m, BayesianLinear)]
    try:
        for layer in layers:
            layer._eps = layer.sample_eps(generator)
        yield model
    finally:
        for layer in layers:
            layer._eps = None


# --------------------------------------------------------------------------- the estimator

# name -> (type, check, what it must be); ints reject bools
_PARAMS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "epochs": (int, lambda v: v >= 1, "an integer >= 1"),
    "lr": (float, lambda v: math.isfinite(v) and v > 0, "a positive number"),
    "weight_decay": (float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "batch_size": (int, lambda v: v >= 2, "an integer >= 2"),
    "loss": (str, lambda v: True, "a string"),
    "alpha": (float, lambda v: math.isfinite(v) and v > 0, "a positive number"),
    "hidden": (int, lambda v: v >= 1, "an integer >= 1"),
    "dim": (int, lambda v: v >= 1, "an integer >= 1"),
    "depth": (int, lambda v: v >= 0, "an integer >= 0"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "patches": (int, lambda v: v >= 1, "an integer >= 1"),
    "dropout": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "samples": (int, lambda v: v >= 1, "an integer >= 1"),
}


def _check_value(name: str, value: Any) -> Any:
    kind, ok, what = _PARAMS[name]
    if kind is int:
        good = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        value = int(value) if good else value
    elif kind is float:
        good = (isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, (bool, np.bool_)))
        value = float(value) if good else value
    else:
        good = isinstance(value, str)
    if not good or not ok(value):
        raise HwnasError(f"{name} must be {what}, not {value!r}")
    return value


class ParZC:
    """The ParZC predictor (MABN trained with a ranking loss), scikit-learn style.

    Defaults are the official NB201 recipe (`runner_pinat_rank.py`, `run_nb201_parzc.sh`): Adam,
    lr 1e-4, weight decay 1e-3, cosine annealing over `epochs` (stepped per epoch), batch 10,
    DiffKendall (alpha 0.5, "code" normalisation), MABN 256 / 16 patches / 512 / depth 4.
    Targets are standardised with the mean/std of the training targets (the official dataset
    standardises with fixed benchmark-wide constants instead).

    `fit` is seeded: the weight init, the shuffling, dropout and the weight noise come from a
    forked torch RNG seeded with `seed` (the global RNG is left as it was), so two fits with the
    same seed give the same model. A last batch of a single row is skipped for rank losses (a
    ranking needs two rows).

    `predict` returns the mean over `samples` (default 16) weight draws, de-standardised; the draws
    come from a generator seeded with `seed`, so repeated calls give the same array. With the rank
    losses the outputs' order is what is learned, not their scale. `predict(X, deterministic=True)`
    uses the mean weights. `predict_dist` gives the mean and std over weight draws.

    Fitted attributes: model_, n_features_in_, y_mean_, y_std_, loss_curve_ (mean loss per epoch),
    meta_ (user metadata; set by `save(meta=...)` and `load`).
    """

    def __init__(self, epochs: int = 200, lr: float = 1e-4, weight_decay: float = 1e-3, batch_size: int = 10,
                 loss: str = "diffkendall", alpha: float = 0.5, hidden: int = 256, dim: int = 512,
                 depth: int = 4, seed: int = 0, patches: int = 16, dropout: float = 0.1, samples: int = 16):
        self.epochs, self.lr, self.weight_decay, self.batch_size = epochs, lr, weight_decay, batch_size
        self.loss, self.alpha, self.hidden, self.dim, self.depth = loss, alpha, hidden, dim, depth
        self.seed, self.patches, self.dropout, self.samples = seed, patches, dropout, samples
        self.meta_: dict = {}

    # -- parameters

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _PARAMS}

    def _checked_params(self) -> dict[str, Any]:
        params = {name: _check_value(name, value) for name, value in self.get_params().items()}
        parse_loss(params["loss"])
        if params["hidden"] % params["patches"] != 0:
            raise HwnasError(f"hidden ({params['hidden']}) must be divisible by "
                             f"patches ({params['patches']})")
        return params

    def _build(self, n_features: int) -> MABN:
        return MABN(n_features, hidden=self.hidden, patches=self.patches, dim=self.dim, depth=self.depth,
                    dropout=self.dropout)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"ParZC({args})"

    # -- data checks

    @staticmethod
    def _as_matrix(X: Any, what: str = "X") -> np.ndarray:
        try:
            X = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise HwnasError(f"{what} must be a numeric matrix ({e})") from None
        if X.ndim != 2:
            raise HwnasError(f"{what} must be 2-D (rows = architectures), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise HwnasError(f"{what} has non-finite values (nodewise_features maps NaN to 0)")
        return X

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError("ParZC is not fitted: call fit() or ParZC.load() first")

    # -- training

    def fit(self, X: np.ndarray, y: np.ndarray) -> ParZC:
        """Train MABN on rows X (n, n_features) with targets y (n,) (higher = better).

        y is standardised, z = (y - mean) / std; every epoch the rows are shuffled into batches of
        `batch_size`, the loss (`ranking_loss`) is minimised with Adam(lr, weight_decay), and the
        cosine schedule lr_e = lr (1 + cos(pi e / epochs)) / 2 steps once per epoch.
        """
        params = self._checked_params()
        names = parse_loss(params["loss"])
        X = self._as_matrix(X)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise HwnasError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        if X.shape[0] < 2:
            raise HwnasError("fit needs at least 2 rows")
        if not np.isfinite(y).all():
            raise HwnasError("y has non-finite values")
        y_mean, y_std = float(y.mean()), float(y.std())
        if not y_std > 0:
            y_std = 1.0
        z = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32))
        xt = torch.from_numpy(X)
        rank = any(n != "mse" for n in names)
        n, bs = X.shape[0], params["batch_size"]

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params["seed"])
            model = self._build(X.shape[1])
            opt = torch.optim.Adam(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"])
            curve = []
            model.train()
            for _ in range(params["epochs"]):
                order = torch.randperm(n)
                total, count = 0.0, 0
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    if rank and idx.numel() < 2:
                        continue
                    loss = ranking_loss(model(xt[idx]), z[idx], names, alpha=params["alpha"])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * idx.numel()
                    count += idx.numel()
                sched.step()
                curve.append(total / max(count, 1))
        model.eval()
        self.model_, self.n_features_in_ = model, X.shape[1]
        self.y_mean_, self.y_std_, self.loss_curve_ = y_mean, y_std, curve
        return self

    # -- prediction

    def _draws(self, X: np.ndarray, samples: int, det: bool) -> np.ndarray:
        """(samples, n) standardised outputs, each row one weight draw (the same draw for all chunks)."""
        self._check_fitted()
        X = self._as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise HwnasError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        model = self.model_
        model.eval()
        xt = torch.from_numpy(X)
        gen = torch.Generator().manual_seed(int(self.seed))
        out = np.empty((samples, X.shape[0]), dtype=np.float64)
        with torch.no_grad(), deterministic(model, det):
            for s in range(samples):
                ctx = contextlib.nullcontext() if det else frozen_noise(model, gen)
                with ctx:
                    for start in range(0, X.shape[0], _PREDICT_CHUNK):
                        chunk = xt[start:start + _PREDICT_CHUNK]
                        out[s, start:start + chunk.shape[0]] = model(chunk).double().numpy()
        return out

    def predict(self, X: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The predicted score of every row: mean over `self.samples` weight draws of
        y_mean + y_std * MABN_W(x) (one draw with the mean weights if `deterministic`)."""
        if deterministic:
            draws = self._draws(X, 1, True)
        else:
            draws = self._draws(X, _check_value("samples", self.samples), False)
        return draws.mean(axis=0) * self.y_std_ + self.y_mean_

    def predict_dist(self, X: np.ndarray, samples: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (ddof 0) over `samples` weight draws W ~ N(mu, softplus(rho)^2)
        of y_mean + y_std * MABN_W(x): the MABN's uncertainty for every row."""
        draws = self._draws(X, _check_value("samples", samples), False) * self.y_std_ + self.y_mean_
        return draws.mean(axis=0), draws.std(axis=0)

    # -- files

    def save(self, folder: str | Path, meta: dict | None = None) -> None:
        """Write folder/parzc.safetensors (the MABN state dict) and folder/parzc.json (format,
        hyper-parameters, n_features_in_, y_mean_, y_std_, loss_curve_, `meta`), each atomically.
        `meta` (JSON-serialisable; e.g. proxies, length, space) replaces `meta_` when given."""

        self._check_fitted()
        if meta is not None and not isinstance(meta, dict):
            raise HwnasError(f"meta must be a dict, not {type(meta).__name__}")
        meta = dict(self.meta_ if meta is None else meta)
        doc = {
            "format": FORMAT,
            "params": self._checked_params(),
            "n_features_in": int(self.n_features_in_),
            "y_mean": float(self.y_mean_),
            "y_std": float(self.y_std_),
            "loss_curve": [float(v) for v in getattr(self, "loss_curve_", [])],
            "meta": meta,
        }
        write_model_folder(folder, CONFIG_FILE, WEIGHTS_FILE, FORMAT, doc,
                           {k: v.detach().cpu() for k, v in self.model_.state_dict().items()})
        self.meta_ = meta

    @classmethod
    def load(cls, folder: str | Path) -> ParZC:
        """Read a folder written by `save`. Checks that both files exist, the JSON's format string,
        fields and types, and that the tensors' names, dtypes and shapes are those of the model the
        JSON describes, with finite values; any problem -> HwnasError("<file>: <what is wrong>").
        The weights are read with safetensors only (no pickle, no code runs)."""
        doc, cfg_path, w_path = read_model_config(
            folder, CONFIG_FILE, WEIGHTS_FILE, FORMAT,
            ("params", "n_features_in", "y_mean", "y_std", "meta"))

        def bad(what: str) -> HwnasError:
            return HwnasError(f"{cfg_path}: {what}")

        params = doc["params"]
        if not isinstance(params, dict):
            raise bad(f"params must be an object, got {type(params).__name__}")
        unknown = sorted(set(params) - set(_PARAMS))
        missing = sorted(set(_PARAMS) - set(params))
        if unknown or missing:
            raise bad(f"params: missing {missing}, unknown {unknown}")
        try:
            for name in _PARAMS:
                params[name] = _check_value(name, params[name])
            est = cls(**params)
            est._checked_params()
        except HwnasError as e:
            raise bad(f"params: {e}") from None
        n_feat = doc["n_features_in"]
        if isinstance(n_feat, bool) or not isinstance(n_feat, int) or n_feat < 1:
            raise bad(f"n_features_in must be a positive integer, not {n_feat!r}")
        for key in ("y_mean", "y_std"):
            v = doc[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{key} must be a finite number, not {v!r}")
        if not doc["y_std"] > 0:
            raise bad(f"y_std must be > 0, not {doc['y_std']!r}")
        if not isinstance(doc["meta"], dict):
            raise bad(f"meta must be an object, got {type(doc['meta']).__name__}")
        curve = doc.get("loss_curve", [])
        if not isinstance(curve, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in curve):
            raise bad("loss_curve must be a list of numbers")

        model = est._build(n_feat)
        state = read_checked_tensors(w_path, model.state_dict(), CONFIG_FILE)
        model.load_state_dict(state, strict=True)
        model.eval()
        est.model_, est.n_features_in_ = model, n_feat
        est.y_mean_, est.y_std_ = float(doc["y_mean"]), float(doc["y_std"])
        est.loss_curve_ = [float(v) for v in curve]
        est.meta_ = dict(doc["meta"])
        return est


# --------------------------------------------------------------------------- training-free ParZC-dagger

WEIGHTINGS = ("sin", "quadratic", "uniform")


def depth_weights(n_layers: int, weighting: str | Callable[[np.ndarray, int], Any] = "sin") -> np.ndarray:
    """The per-layer weights w(i), i = 0 .. L-1 (L = n_layers, i the 0-based conv/linear layer order):

        "sin":       w(i) = (sin(0.1 i) + 1) / 2      (predictive.py at commit e9c2668)
        "quadratic": w(i) = ((L - i) / L)^2            (predictive.py at HEAD)
        "uniform":   w(i) = 1                          (the plain sum, for comparison)
        callable:    w = weighting(np.arange(L), L), an array of L finite numbers
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 0:
        raise HwnasError(f"n_layers must be an integer >= 0, not {n_layers!r}")
    i = np.arange(int(n_layers), dtype=np.float64)
    L = int(n_layers)
    if callable(weighting):
        w = np.asarray(weighting(i, L), dtype=np.float64)
        if w.shape != (L,) or not np.isfinite(w).all():
            raise HwnasError(f"the weighting callable must return {L} finite numbers, got shape {w.shape}")
        return w
    if weighting == "sin":
        return (np.sin(0.1 * i) + 1) / 2
    if weighting == "quadratic":
        return ((L - i) / L) ** 2 if L else i
    if weighting == "uniform":
        return np.ones(L)
    raise HwnasError(f"unknown weighting {weighting!r} (choose from {', '.join(WEIGHTINGS)}, or a callable)")


def training_free_score(layer_sums: Sequence[np.ndarray],
                        weighting: str | Callable[[np.ndarray, int], Any] = "sin") -> np.ndarray:
    """ParZC-dagger, one score per architecture: score_a = sum_i w(i) S_a,i with S_a,i the proxy summed
    over the weights of architecture a's i-th conv/linear layer (`layer_sums[a]`, 1-D, any length)
    and w = `depth_weights(len(layer_sums[a]), weighting)`."""
    scores = np.empty(len(layer_sums), dtype=np.float64)
    for a, sums in enumerate(layer_sums):
        s = np.asarray(sums, dtype=np.float64)
        if s.ndim != 1:
            raise HwnasError(f"training_free_score: architecture {a}: expected a 1-D vector of per-layer "
                             f"sums, got shape {s.shape}")
        scores[a] = float(np.dot(depth_weights(s.size, weighting), s))
    return scores
