"""`SearchSpace`: the layers of a space, the ops an arch runs, and the network it builds."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space.arch import MAX_CLASSES, MAX_RESOLUTION, MIN_RESOLUTION, Arch
from hwnas.space.blocks import Network, make_divisible
from hwnas.space.ops import OpSpec


@dataclass(frozen=True)
class Layer:
    """A searchable layer: its place in the network and the names of its choices."""

    name: str
    cin: int
    cout: int
    stride: int
    h: int
    w: int
    choices: tuple[str, ...]


class SearchSpace(ABC):
    """A chain-structured space: fixed stem ops, searchable layers, fixed head ops.

    Subclasses define `name`, `default_channels`, `_stem_ops`, `_layers`, `_head_ops` and
    `_choice_op`; everything else (ops of an arch, building, sampling, encoding) is shared.
    """

    name: str = ""
    description: str = ""
    default_resolution: int = 224
    default_num_classes: int = 1000
    default_channels: tuple[int, ...] = ()

    def __init__(self, resolution: int | None = None, width: float = 1.0,
                 num_classes: int | None = None, channels: tuple[int, ...] | None = None) -> None:
        self.resolution = int(self.default_resolution if resolution is None else resolution)
        self.width = float(width)
        self.num_classes = int(self.default_num_classes if num_classes is None else num_classes)
        self.channels = tuple(channels) if channels is not None else None
        if not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            raise HwnasError(f"resolution must be within {MIN_RESOLUTION}..{MAX_RESOLUTION}, "
                             f"got {self.resolution}")
        if not 0.1 <= self.width <= 4.0:  # also refuses nan
            raise HwnasError(f"width multiplier must be within 0.1..4.0, got {self.width}")
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise HwnasError(f"num_classes must be within 1..{MAX_CLASSES}, got "
                             f"{self.num_classes}")
        if self.channels is not None and len(self.channels) != len(self.default_channels):
            raise HwnasError(f"space {self.name!r} takes {len(self.default_channels)} stage "
                             f"widths, got {len(self.channels)}")
        self.layers: list[Layer] = self._layers()
        self._candidates = [[self._choice_op(layer, c) for c in layer.choices]
                            for layer in self.layers]

    # --- to be defined by a space -------------------------------------------------------------
    @abstractmethod
    def _layers(self) -> list[Layer]: ...

    @abstractmethod
    def _choice_op(self, layer: Layer, choice: str) -> OpSpec | None:
        """The op a choice runs at a layer; None when the layer is skipped (zero / identity)."""

    @abstractmethod
    def stem_ops(self) -> list[OpSpec]: ...

    @abstractmethod
    def head_ops(self) -> list[OpSpec]: ...

    # --- shared -------------------------------------------------------------------------------
    def stage_widths(self) -> tuple[int, ...]:
        base = self.channels if self.channels is not None else self.default_channels
        return tuple(make_divisible(c * self.width) for c in base)

    def settings(self) -> dict:
        return {"resolution": self.resolution, "width": self.width,
                "num_classes": self.num_classes, "channels": self.channels}

    @property
    def size(self) -> int:
        """Number of distinct archs."""
        return math.prod(len(layer.choices) for layer in self.layers)

    def candidates(self, i: int) -> list[OpSpec | None]:
        """One entry per choice of layer i (None where the choice skips the layer)."""
        return list(self._candidates[i])

    def fixed_ops(self) -> list[OpSpec]:
        """The ops every network of the space runs, whatever its choices (the fixed cost of a
        lookup table): the stem and the head of a chain space."""
        return self.stem_ops() + self.head_ops()

    def choice_ops(self, i: int, j: int) -> list[OpSpec]:
        """The ops that choice j of layer i adds to a network, with repeats: a lookup table prices
        the choice as their sum. One op (or none) in a chain space; a cell space, where a layer
        is an edge repeated in every cell, lists that edge's op once per cell."""
        op = self._candidates[i][j]
        return [] if op is None else [op]

    def arch(self, choices: list[str] | tuple[str, ...]) -> Arch:
        """An Arch of this space (with its settings) from choice names; validated."""
        arch = Arch(self.name, tuple(choices), self.resolution, self.width, self.num_classes,
                    self.channels)
        self.validate(arch)
        return arch

    def validate(self, arch: Arch) -> None:
        """Raise `HwnasError` naming exactly what does not fit this space."""
        if arch.space != self.name:
            raise HwnasError(f"arch is for space {arch.space!r}, not {self.name!r}")
        for key, mine in self.settings().items():
            theirs = getattr(arch, key)
            if theirs != mine:
                raise HwnasError(f"arch has {key}={theirs}, but this space was built with {mine}")
        if len(arch.choices) != len(self.layers):
            raise HwnasError(f"space {self.name!r} has {len(self.layers)} searchable layers, "
                             f"the arch gives {len(arch.choices)} choices")
        for i, (layer, choice) in enumerate(zip(self.layers, arch.choices, strict=True)):
            if choice not in layer.choices:
                raise HwnasError(f"layer {i} ({layer.name}): unknown choice {choice!r}; "
                                 f"valid: {', '.join(layer.choices)}")

    def indices(self, arch: Arch) -> list[int]:
        self.validate(arch)
        return [layer.choices.index(c) for layer, c in zip(self.layers, arch.choices, strict=True)]

    def from_indices(self, indices: list[int] | np.ndarray) -> Arch:
        if len(indices) != len(self.layers):
            raise HwnasError(f"space {self.name!r} has {len(self.layers)} layers, "
                             f"got {len(indices)} indices")
        choices = []
        for i, (layer, j) in enumerate(zip(self.layers, indices, strict=True)):
            if not 0 <= int(j) < len(layer.choices):
                raise HwnasError(f"layer {i}: index {j} out of range 0..{len(layer.choices) - 1}")
            choices.append(layer.choices[int(j)])
        return self.arch(choices)

    def canonical_indices(self, idx: np.ndarray) -> np.ndarray:
        """(N, layers) choice indices of the networks each row actually runs: choices whose
        result never reaches the output replaced by the choice that runs nothing. The identity
        in a chain space; a lookup table prices the canonical rows (`LookupTablePredictor`)."""
        return np.asarray(idx)

    def ops(self, arch: Arch) -> list[OpSpec]:
        """The ops the arch runs, in order: stem, the searchable layers that run, head."""
        idx = self.indices(arch)
        body = [self._candidates[i][j] for i, j in enumerate(idx)]
        return self.stem_ops() + [op for op in body if op is not None] + self.head_ops()

    def build(self, arch: Arch) -> nn.Module:
        """The network, block by block from `OpSpec.module()` (the measured code), eval mode."""
        self.check_memory(arch)
        return Network([op.module() for op in self.ops(arch)]).eval()

    def check_memory(self, arch: Arch | None = None, available: int | None = None) -> int:
        """Refuse (one `HwnasError`) a network that would not fit in the memory available, before
        anything is built (`hwnas.space.memory`): `arch`'s network, or with None the largest the
        space builds (every layer at its heaviest choice, the largest block anywhere). Returns
        the estimate in bytes."""
        from hwnas.space.memory import check_memory

        name = f"{self.name} {self.resolution}x{self.resolution}"
        if arch is not None:
            return check_memory(f"the {name} network", self.ops(arch), available=available)
        heaviest = list(self.fixed_ops())
        for i, layer in enumerate(self.layers):
            options = [self.choice_ops(i, j) for j in range(len(layer.choices))]
            heaviest += max(options, key=lambda ops: sum(op.params for op in ops))
        return check_memory(f"the largest {name} network", heaviest, self.distinct_ops(),
                            available=available)

    def priced_spaces(self) -> tuple[str, ...]:
        """The spaces whose archs a profile of this space prices (its lookup table holds every op
        they run): this space, and for a profiling space of several the others too (`fbnetv5`:
        one table for every task's head)."""
        return (self.name,)

    def distinct_ops(self) -> list[OpSpec]:
        """Every distinct op the space can run at its settings, sorted."""
        ops = set(self.fixed_ops())
        for i, layer in enumerate(self.layers):
            for j in range(len(layer.choices)):
                ops.update(self.choice_ops(i, j))
        return sorted(ops)

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """Uniform over the choices of each layer."""
        rng = np.random.default_rng(rng)
        return self.arch([layer.choices[rng.integers(len(layer.choices))]
                          for layer in self.layers])

    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot of each layer's choice, concatenated (float32)."""
        idx = self.indices(arch)
        parts = [np.eye(len(layer.choices), dtype=np.float32)[j]
                 for layer, j in zip(self.layers, idx, strict=True)]
        return np.concatenate(parts)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, 3, self.resolution, self.resolution)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(resolution={self.resolution}, width={self.width}, "
                f"num_classes={self.num_classes})")
