"""Torch -> `torch.export` program (`.pt2`), loaded back with `torch.export.load` (no pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export_program(module: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    path = Path(path)
    program = torch.export.export(module.eval(), (torch.zeros(input_shape),))
    tmp = path.with_name(path.name + ".tmp.pt2")
    torch.export.save(program, str(tmp))
    tmp.replace(path)
    return path
