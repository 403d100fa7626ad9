"""`torch-cpu`: PyTorch eager in inference mode, on the module itself (artifact: a .pt2 program)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwnas.devices.base import Backend, Runner, example_input


class TorchCpuBackend(Backend):
    """PyTorch eager on the CPU, `torch.inference_mode()`, `torch.set_num_threads(threads)`.

    The artifact is the `torch.export` program that `hwnas export --target torch` ships; it is
    loaded back with `torch.export.load` (no pickle) and its module is timed.
    """

    name = "torch-cpu"
    description = "PyTorch eager, inference mode, CPU"
    artifact = "pt2"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @classmethod
    def runtime_version(cls) -> str:
        return f"torch {torch.__version__}"

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        from hwnas.convert.torch_program import export_program

        return export_program(module, input_shape, path)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        program = torch.export.load(str(path))
        return self.runner(program.module(), input_shape)

    def runner(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        torch.set_num_threads(self.threads)
        x = example_input(input_shape)

        def run() -> object:
            with torch.inference_mode():
                return module(x)

        return Runner(run)
