"""Will a network fit in memory? An estimate from its OpSpecs, made before anything is built.

Building a network (`SearchSpace.build`) and converting or running it allocates its weights and,
for one input, the activations of its blocks; a resolution far beyond what the machine holds
(`hwnas profile --resolution 100000`) would otherwise allocate until the machine swaps or the
kernel kills the process. `check_memory` refuses such a network with one `HwnasError` first.

The estimate, in bytes of the ops' dtype: every weight twice (the module, and the copy an export
serialises), plus the largest block's activations: its input and every intermediate tensor its
layers produce (the conv, BatchNorm and activation outputs, each counted once, as a trace or a
run without freeing would hold them). Blocks run one after another, so only the largest counts.
It overestimates a plain inference run by a small factor, which is the margin wanted here.

Available memory: the kernel's MemAvailable (Linux; what can be allocated without swapping),
capped by the limit of the process's cgroup (a container) and by its address-space limit
(`ulimit -v`, less what is mapped already); where none is readable, nothing is refused.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from hwnas.errors import HwnasError
from hwnas.space.ops import OpSpec, _build

__all__ = ["activation_values", "available_memory", "check_memory", "memory_bytes"]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@functools.lru_cache(maxsize=65536)
def activation_values(op: OpSpec) -> int:
    """Values of one op's input and of every tensor its layers output, for its batch (counted
    on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        module = _build(op).eval()
        x = torch.empty(op.input_shape)
    total = [x.numel()]

    def count(_module, _inputs, output) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total[0] += sum(t.numel() for t in outputs if isinstance(t, torch.Tensor))

    leaves = [m for m in module.modules() if not any(m.children())] or [module]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def memory_bytes(weight_ops: Iterable[OpSpec], activation_ops: Iterable[OpSpec] | None = None
                 ) -> tuple[int, int]:
    """(weight bytes, activation bytes) of a network: the weights of `weight_ops` (counted twice,
    see the module docstring) and the largest activations of `activation_ops` (default: the
    same ops)."""
    weight_ops = list(weight_ops)
    activation_ops = weight_ops if activation_ops is None else list(activation_ops)
    weights = sum(2 * op.params * DTYPE_BYTES.get(op.dtype, 4) for op in weight_ops)
    acts = max((activation_values(op) * DTYPE_BYTES.get(op.dtype, 4) for op in activation_ops),
               default=0)
    return weights, acts


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping (see the module docstring), or
    None when the system does not say."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if avail is None:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # cgroup v2: the container's own limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    try:  # the process's address-space limit (ulimit -v), less what it has mapped already
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            status = Path("/proc/self/status").read_text()
            mapped = int(status.split("VmSize:")[1].split()[0]) * 1024
            room = max(0, soft - mapped)
            avail = room if avail is None else min(avail, room)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return avail


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_memory(what: str, weight_ops: Sequence[OpSpec],
                 activation_ops: Sequence[OpSpec] | None = None,
                 available: int | None = None) -> int:
    """Raise `HwnasError` (one line naming `what`, the estimate and the memory available) when
    the network of these ops would not fit (`memory_bytes` > `available`, by default
    `available_memory()`); returns the estimate in bytes."""
    weights, acts = memory_bytes(weight_ops, activation_ops)
    need = weights + acts
    have = available_memory() if available is None else available
    if have is not None and need > have:
        raise HwnasError(f"{what} needs about {_size(need)} of memory (weights {_size(weights)}, "
                         f"activations of its largest block {_size(acts)}), more than the "
                         f"{_size(have)} available here; use a smaller resolution, width or "
                         "batch")
    return need
