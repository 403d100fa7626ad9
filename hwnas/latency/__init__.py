"""Latency models: the predictor interface, lookup tables, learned predictors, metrics, the loss.

The public names are re-exported here; the modules behind them are internals:

- `LatencyPredictor` (the interface: `predict`, `predict_indices`, `interval`, `name`) and its
  implementations `LookupTablePredictor` (the table sum), `NetworkPredictor` (the learned
  correction with intervals) and `NetsTablePredictor` (measured whole networks, nets-only
  profiles);
- `best_predictor(profile)` and `predict(profile, arch) -> Prediction` (one arch, with interval,
  per-op breakdown and the predictor's name).
"""

from __future__ import annotations

from hwnas.latency.base import LatencyPredictor, Prediction
from hwnas.latency.learned import NetworkPredictor
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.nets_table import NetsTablePredictor
from hwnas.latency.prediction import best_predictor, predict

__all__ = ["LatencyPredictor", "LookupTablePredictor", "NetsTablePredictor", "NetworkPredictor",
           "Prediction", "best_predictor", "predict"]
