"""Torch -> TFLite with litert-torch (no tensorflow), the artifact the `litert` backend measures.

litert-torch takes ~4 s to import and ~1 s per block / ~13 s per 224x224 network to convert, so
bulk conversion (`convert_many`) runs in long-lived worker processes (both cores), each importing
litert-torch once, and caches every file by the op's or arch's key: a second profile of the same
space converts nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas._io import atomic_path
from hwnas.errors import HwnasError


def litert_torch_available() -> tuple[bool, str]:
    try:
        with quiet_fds():  # its import prints absl/oneDNN banners
            import litert_torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install of one of its many dependencies
        return False, f"litert-torch is not usable ({type(e).__name__}: {e}); " \
                      "install the extra: pip install 'hwnas[mobile]'"
    return True, ""


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence the converter's C++ and Python chatter (stdout and stderr at the fd level)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def export_tflite(module: nn.Module, input_shape: tuple[int, ...], path: str | Path,
                  quiet: bool = True) -> Path:
    """Convert `module` (eval mode; NCHW input kept, litert-torch inserts a transpose) to `path`."""
    ok, reason = litert_torch_available()
    if not ok:
        raise HwnasError(reason)
    import logging
    import warnings

    import litert_torch

    path = Path(path)
    ctx = quiet_fds() if quiet else contextlib.nullcontext()
    with atomic_path(path, suffix=".tflite") as tmp, ctx, warnings.catch_warnings(), \
            torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("absl").setLevel(logging.ERROR)
        litert_torch.convert(module.eval(), (torch.zeros(input_shape),)).export(str(tmp))
    return path


# --- bulk conversion with a cache --------------------------------------------------------------
def default_cache_dir() -> Path:
    root = os.environ.get("HWNAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hwnas")
    return Path(root) / "tflite"


def cache_path(key: str, cache_dir: Path | None = None) -> Path:
    """Where the .tflite of an item key lives (the key, torch version and seed in the hash)."""
    digest = hashlib.sha1(f"{key}|torch{torch.__version__}|seed0".encode()).hexdigest()[:20]
    return (cache_dir or default_cache_dir()) / f"{digest}.tflite"


def _worker_init() -> None:
    torch.set_num_threads(1)
    with quiet_fds():
        import litert_torch  # noqa: F401  (import once per worker: ~4 s)


def _convert_item(key: str, build: Callable[[], tuple[nn.Module, tuple[int, ...]]],
                  path: str) -> str:
    torch.manual_seed(0)
    module, shape = build()
    export_tflite(module, shape, path)
    return key


def convert_many(items: Iterable[tuple[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]]],
                 cache_dir: Path | None = None, workers: int | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Convert (key, build) items to cached .tflite files in worker processes; {key: path}.

    `build` must be picklable (a top-level function or a functools.partial of one) and return
    (module, input_shape). Already cached keys are not converted again.
    """
    ok, reason = litert_torch_available()
    if not ok:
        raise HwnasError(reason)
    items = list(items)
    out = {key: cache_path(key, cache_dir) for key, _ in items}
    todo = [(k, b) for k, b in items if not out[k].exists()]
    for key in [k for k, _ in items if out[k].exists()]:
        if progress:
            progress(key)
    if not todo:
        return out
    out[todo[0][0]].parent.mkdir(parents=True, exist_ok=True)
    workers = workers or min(len(todo), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = [pool.submit(_convert_item, k, b, str(out[k])) for k, b in todo]
        for fut in as_completed(futures):
            key = fut.result()
            if progress:
                progress(key)
    return out


# --- LiteRT interpreter input/output (float <-> the tensor's own type) --------------------------
def litert_runtime_available() -> tuple[bool, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except Exception as e:
        return False, f"ai-edge-litert is not usable ({type(e).__name__}: {e}); " \
                      "install the extra: pip install 'hwnas[mobile]'"
    return True, ""


def to_input(detail: dict, x: np.ndarray) -> np.ndarray:
    """A float array as the interpreter's input tensor (quantised for an int8/uint8 input)."""
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def from_output(detail: dict, y: np.ndarray) -> np.ndarray:
    """The interpreter's output tensor as floats (dequantised for an integer output)."""
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)
