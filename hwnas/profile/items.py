"""Things to measure: an op (a lookup-table row) or a whole net, built on demand, and loading one
on a backend. Shared by the profiler, the drift reference and the benchmarks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hwnas.profile.sampling import net_id
from hwnas.space import Arch, OpSpec, SearchSpace, space_of


def build_op(op: OpSpec) -> tuple[nn.Module, tuple[int, ...]]:
    return op.module(), op.input_shape


def build_net(arch_json: str) -> tuple[nn.Module, tuple[int, ...]]:
    arch = Arch.from_json(arch_json)
    space = space_of(arch)
    return space.build(arch), space.input_shape()


@dataclass
class Item:
    """One thing to measure: an op (lookup-table row) or a whole net."""

    key: str
    build: Callable[[], tuple[nn.Module, tuple[int, ...]]]
    shape: tuple[int, ...]
    row: dict = field(default_factory=dict)


def net_item(arch: Arch, key: str | None = None) -> Item:
    """An item for a whole network (key: its `net_id` unless given)."""
    return Item(key or net_id(arch), functools.partial(build_net, arch.to_json(indent=None)),
                space_of(arch).input_shape())


def net_items(space: SearchSpace, archs: list[Arch]) -> list[Item]:
    """Items for whole networks (the same builder the profiler uses)."""
    return [Item(net_id(a), functools.partial(build_net, a.to_json(indent=None)),
                 space.input_shape()) for a in archs]


def load_item(backend, item: Item, workdir: Path, converted: dict[str, Path] | None = None):
    """Convert (unless `converted` has the item's file) and load an item on a backend."""
    path = (converted or {}).get(item.key)
    if path is None:
        torch.manual_seed(0)
        module, shape = item.build()
        path = backend.convert(module, shape, Path(workdir) / f"{item.key}.{backend.artifact}")
    return backend.load(path, item.shape)
