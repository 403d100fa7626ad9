"""Torch -> `torch.export` program (`.pt2`), loaded back with `torch.export.load` (no pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwnas._io import atomic_path


def export_program(module: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    path = Path(path)
    program = torch.export.export(module.eval(), (torch.zeros(input_shape),))
    with atomic_path(path, suffix=".pt2") as tmp:
        torch.export.save(program, str(tmp))
    return path
