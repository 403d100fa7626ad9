"""Backends by name, through the entry-point group `hwnas.devices` (built-ins registered there too).

A third party adds a device by declaring, in its own pyproject.toml:
    [project.entry-points."hwnas.devices"]
    my-npu = "my_pkg.backend:MyNpuBackend"
or, at run time (a notebook, a test), with `register_backend("my-npu", MyNpuBackend)`.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from hwnas.devices.base import Backend
from hwnas.errors import HwnasError

GROUP = "hwnas.devices"
BUILTIN = {
    "ort-cpu": "hwnas.devices.ort_cpu:OrtCpuBackend",
    "torch-cpu": "hwnas.devices.torch_cpu:TorchCpuBackend",
    "litert": "hwnas.devices.litert:LiteRTBackend",
    "adb-tflite": "hwnas.devices.adb_tflite:AdbTFLiteBackend",
    "torch-cuda": "hwnas.devices.torch_cuda:TorchCudaBackend",
    "ort-cuda": "hwnas.devices.ort_cuda:OrtCudaBackend",
    "tensorrt": "hwnas.devices.tensorrt:TensorRTBackend",
}


_REGISTERED: dict[str, type[Backend]] = {}


def register_backend(name: str, cls: type[Backend]) -> None:
    """Make a `Backend` subclass available by name in this process (like an entry point)."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise HwnasError(f"register_backend({name!r}): {cls!r} is not a Backend subclass")
    _REGISTERED[name] = cls


def unregister_backend(name: str) -> None:
    _REGISTERED.pop(name, None)


def _targets() -> dict[str, str]:
    found = dict(BUILTIN)  # also works from a source tree that is not installed
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    found.update({name: f"{cls.__module__}:{cls.__qualname__}"
                  for name, cls in _REGISTERED.items()})
    return found


def names() -> list[str]:
    return list(_targets())


def backend_class(name: str) -> type[Backend]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    targets = _targets()
    if name not in targets:
        raise HwnasError(f"unknown device {name!r}; known: {', '.join(targets)}")
    module, _, attr = targets[name].partition(":")
    try:
        cls = getattr(import_module(module), attr)
    except Exception as e:  # a broken third-party plugin must not take the CLI down
        raise HwnasError(f"device {name!r} could not be loaded from {targets[name]}: {e}") from None
    return cls


def get_backend(name: str, **options: object) -> Backend:
    """An instance of the named backend (options: threads, batch, dtype, backend-specific)."""
    return backend_class(name)(**options)


def describe_all() -> list[dict]:
    """One row per backend: name, available, reason, runtime version, description."""
    rows = []
    for name in names():
        try:
            cls = backend_class(name)
            ok, reason = cls.available()
            version = cls.runtime_version() if ok or reason else ""
            rows.append({"name": name, "available": ok, "reason": reason,
                         "runtime": version or "-", "description": cls.description})
        except HwnasError as e:
            rows.append({"name": name, "available": False, "reason": str(e), "runtime": "-",
                         "description": ""})
    return rows
