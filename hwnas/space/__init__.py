"""Search spaces and their building blocks."""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.space.arch import Arch
from hwnas.space.base import Layer, SearchSpace
from hwnas.space.fbnet import FBNetImageNetSpace, FBNetSpace
from hwnas.space.fbnetv5 import (
    FBNetV5ClsSpace,
    FBNetV5DetSpace,
    FBNetV5ProfileSpace,
    FBNetV5SegSpace,
    FBNetV5Space,
)
from hwnas.space.nb201 import NB201Space
from hwnas.space.ofa import OFASpace
from hwnas.space.ops import OpSpec
from hwnas.space.proxyless import ProxylessSpace

SPACES: dict[str, type[SearchSpace]] = {
    cls.name: cls for cls in (ProxylessSpace, FBNetSpace, FBNetImageNetSpace, NB201Space,
                              OFASpace, FBNetV5ProfileSpace, FBNetV5ClsSpace, FBNetV5SegSpace,
                              FBNetV5DetSpace)
}


def get_space(name: str, resolution: int | None = None, width: float = 1.0,
              num_classes: int | None = None,
              channels: tuple[int, ...] | None = None) -> SearchSpace:
    """A space by name with its settings (None: the space's default)."""
    if name not in SPACES:
        raise HwnasError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name](resolution=resolution, width=width, num_classes=num_classes,
                        channels=channels)


def space_of(arch: Arch) -> SearchSpace:
    """The space (with the arch's settings) that an arch belongs to; validates the arch."""
    space = get_space(arch.space, arch.resolution, arch.width, arch.num_classes, arch.channels)
    space.validate(arch)
    return space


__all__ = ["Arch", "Layer", "OpSpec", "SearchSpace", "SPACES", "get_space", "space_of",
           "ProxylessSpace", "FBNetSpace", "FBNetImageNetSpace", "NB201Space", "OFASpace",
           "FBNetV5Space", "FBNetV5ProfileSpace", "FBNetV5ClsSpace", "FBNetV5SegSpace",
           "FBNetV5DetSpace"]
