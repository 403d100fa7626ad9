"""Accuracy metrics of latency predictions (the field's usual ones), on held-out networks."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau, spearmanr


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, lo: np.ndarray | None = None,
             hi: np.ndarray | None = None) -> dict[str, float]:
    """within 5% / 10% (share of |pred - true| / true), RMSE (ms), RMSPE, MAPE, Kendall tau,
    Spearman rho (the rank correlation HELP and BRP-NAS publish), mean relative bias, and the
    empirical coverage of [lo, hi] when given."""
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    rel = (p - y) / y
    out = {
        "n": int(y.size),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "rmspe": float(np.sqrt(np.mean(rel ** 2))),
        "mape": float(np.mean(np.abs(rel))),
        "bias": float(np.mean(rel)),
        "kendall_tau": float(kendalltau(y, p).statistic) if y.size > 1 else float("nan"),
        "spearman_rho": float(spearmanr(y, p).statistic) if y.size > 1 else float("nan"),
    }
    if lo is not None and hi is not None:
        out["coverage"] = float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))
    return out
