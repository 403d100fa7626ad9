"""Differentiable latency: expected latency of an architecture distribution and the ProxylessNAS losses.

ProxylessNAS (Cai, Zhu, Han, ICLR 2019), Sec. 3.3, Eq. (3)-(4):
    E[LAT_l] = sum_j p_lj * F(o_lj),      E[LAT] = fixed + sum_l E[LAT_l]
with p_l = softmax(alpha_l) over the candidates of layer l and F the lookup table; its gradient
w.r.t. the architecture parameters is dE/dalpha_li = p_li * (F_li - E[LAT_l]).
Loss forms as in the reference code (mit-han-lab/proxylessnas, `nas_manager.py`):
    mul#log:    CE * alpha * (log E[LAT] / log ref) ** beta        (alpha 0.2, beta 0.3)
    add#linear: CE + lambda * (E[LAT] - ref) / ref                (lambda 0.1)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class ExpectedLatency(nn.Module):
    """E[LAT] of per-layer choice distributions, from a (layers x choices) table.

    NaN entries of the table mark choices a layer does not have (they get probability 0).
    `scale`/`offset` apply a linear learned correction (latency ~ scale * table sum + offset),
    which keeps E[LAT] exact: E[scale * S + offset] = scale * E[S] + offset.
    """

    def __init__(self, table: np.ndarray, fixed_ms: float = 0.0, scale: float = 1.0,
                 offset: float = 0.0) -> None:
        super().__init__()
        t = torch.as_tensor(np.asarray(table, dtype=np.float64), dtype=torch.float32)
        self.register_buffer("mask", ~torch.isnan(t))
        self.register_buffer("table", torch.nan_to_num(t, nan=0.0))
        self.fixed_ms = float(fixed_ms)
        self.scale = float(scale)
        self.offset = float(offset)

    @classmethod
    def from_predictor(cls, lut_predictor, scale: float = 1.0, offset: float = 0.0
                       ) -> ExpectedLatency:
        """From a fitted `LookupTablePredictor` (its `table_` and `fixed_ms_`)."""
        return cls(lut_predictor.table_, lut_predictor.fixed_ms_, scale, offset)

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        """softmax over each layer's valid choices; alpha is (layers, choices)."""
        return torch.softmax(alpha.masked_fill(~self.mask, float("-inf")), dim=-1)

    def per_layer(self, probs: torch.Tensor) -> torch.Tensor:
        """E[LAT_l] for each layer."""
        return (probs * self.table).sum(-1)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """E[LAT] in ms (a scalar tensor, differentiable in alpha)."""
        lat = self.fixed_ms + self.per_layer(self.probs(alpha)).sum()
        return self.scale * lat + self.offset

    def closed_form_grad(self, alpha: torch.Tensor) -> torch.Tensor:
        """dE/dalpha_li = scale * p_li * (F_li - E[LAT_l]) (Eq. 4's gradient), for checking."""
        with torch.no_grad():
            p = self.probs(alpha)
            return self.scale * p * (self.table - self.per_layer(p)[:, None])


class LatencyLoss(nn.Module):
    """The ProxylessNAS objective combining cross-entropy and E[LAT] against a reference.

    `ref_ms` is the target latency (in hwnas: the budget). `weight` multiplies the latency term
    and may be changed during search (hwnas' budget controller grows it while E[LAT] > budget).
    """

    def __init__(self, mode: str = "mul#log", ref_ms: float = 1.0, alpha: float = 0.2,
                 beta: float = 0.3, lam: float = 0.1) -> None:
        super().__init__()
        if mode not in ("mul#log", "add#linear"):
            raise ValueError(f"unknown latency loss {mode!r}; use mul#log or add#linear")
        if ref_ms <= 1.0 and mode == "mul#log":
            # log(ref) would be <= 0: the mul#log form needs a reference above 1 (in its unit)
            raise ValueError("mul#log needs ref > 1 ms (log ref must be positive); "
                             "use add#linear for sub-millisecond budgets")
        self.mode, self.ref_ms = mode, float(ref_ms)
        self.alpha, self.beta, self.lam = alpha, beta, lam
        self.weight = 1.0

    def forward(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        if self.mode == "mul#log":
            reg = (torch.log(expected_ms) / math.log(self.ref_ms)) ** (self.beta * self.weight)
            return self.alpha * ce * reg
        return ce + self.weight * self.lam * (expected_ms - self.ref_ms) / self.ref_ms
