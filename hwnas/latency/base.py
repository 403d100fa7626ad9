"""The latency predictor interface: what search, validation, the CLI and export ask of a predictor.

Small and abstract, after Optuna's `BaseSampler`: a predictor maps archs to milliseconds
(`predict`), or an (N, layers) choice-index matrix to milliseconds (`predict_indices`, vectorised
where the predictor can be), may give prediction intervals (`interval`, None when it has none)
and has a display `name` ("lut", "learned (rf)", "table:raspi4"). Search receives one the way
once-for-all's `EvolutionFinder` receives its efficiency predictor; nothing probes a predictor
with `hasattr`/`isinstance` any more.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwnas.space import Arch


class LatencyPredictor(abc.ABC):
    """Predicted latency (ms) of architectures.

    Subclasses implement `predict_indices` and set `name`; `predict` defaults to encoding the archs
    with `indices` and calling `predict_indices`, and `interval` defaults to None (no intervals).
    A predictor that looks archs up by something other than their choice indices (a table of
    measured nets, a benchmark column) overrides `predict` (and `predict_indices` as its data
    allows).
    """

    #: Display name: "lut", "learned (rf)", "table:raspi4", ... A subclass sets it as a class
    #: attribute, an instance attribute or a property.
    name: str = "predictor"
    #: Nominal coverage of `interval` (e.g. 0.9), None when there are no intervals (optional).
    coverage: float | None = None

    @abc.abstractmethod
    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        """Latency (ms) of each row of an (N, layers) choice-index matrix."""

    def indices(self, archs: Sequence[Arch]) -> np.ndarray:
        """The (N, layers) choice-index matrix of archs (what `predict_indices` takes)."""
        raise NotImplementedError(f"{type(self).__name__} does not encode archs as indices")

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each arch."""
        return self.predict_indices(self.indices(list(archs)))

    def interval(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) ms of each arch, or None when this predictor gives no intervals."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@dataclass(frozen=True)
class Prediction:
    """One arch's predicted latency, as `hwnas predict` and `hwnas export` report it.

    `ms`: the prediction; `interval`: (low, high) ms or None; `predictor`: the predictor's name;
    `breakdown`: per op {"key", "kind", "ms", "source"} where the profile has a lookup table (else
    None); `note`: how anything outside the profile was priced (e.g. another classifier head);
    `coverage`: the interval's nominal coverage (e.g. 0.9) when the predictor states one.
    """

    ms: float
    interval: tuple[float, float] | None
    predictor: str
    breakdown: list[dict] | None = None
    note: str = ""
    coverage: float | None = None
