"""Small file helpers used everywhere: atomic writes, sha256, a numpy-aware JSON encoder.

Every file hwnas writes (profiles, artifacts, manifests, checkpoints, reports) goes through
`atomic_path` / `write_atomic`: the data goes to a temporary file in the same folder, is flushed
to disk (fsync), then renamed over the target. A reader therefore sees the old file or the new
one, never half of one, and a kill at any moment leaves no truncated file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def now() -> str:
    """The current UTC time, ISO 8601 to the second (what profiles and manifests record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends cleanly, fsync it and rename it
    over `path`. On an exception the temporary file is removed and `path` is untouched.

    For writers that want a file name (torch.export.save, a converter, safetensors, parquet);
    `suffix` keeps an extension some writers insist on (e.g. ".pt2").
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, text.encode())


def json_default(value: object) -> object:
    """`json.dumps(default=...)` for what hwnas records: numpy scalars and arrays, paths."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(obj: object, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=json_default)


def write_json(path: str | Path, obj: object) -> None:
    """Write `obj` as indented JSON (numpy values as plain numbers), atomically."""
    write_text(path, dumps(obj) + "\n")


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model_config(folder: str | Path, config_file: str, weights_file: str, fmt: str,
                      fields: tuple[str, ...]) -> tuple[dict, Path, Path]:
    """The JSON half of a model saved as JSON + safetensors (ParZC, HELP): both files must exist,
    the JSON must be an object with `"format": fmt` and every one of `fields`; returns (the
    document, its path, the weights' path). Any problem -> HwnasError("<file>: <what>")."""
    from hwnas.errors import HwnasError

    folder = Path(folder)
    cfg_path, w_path = folder / config_file, folder / weights_file
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise HwnasError(f"{path}: file not found")
    try:
        doc = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HwnasError(f"{cfg_path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise HwnasError(f"{cfg_path}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != fmt:
        raise HwnasError(f"{cfg_path}: format is {doc.get('format')!r}, expected {fmt!r}")
    for key in fields:
        if key not in doc:
            raise HwnasError(f"{cfg_path}: missing field {key!r}")
    return doc, cfg_path, w_path


def read_checked_tensors(path: Path, expected: dict, config_file: str) -> dict:
    """The weights half: the tensors of a safetensors file (no pickle, no code runs), which must
    be exactly `expected`'s names with their shapes and dtypes, and finite. Any problem ->
    HwnasError("<file>: <what>") naming `config_file` as the model description."""
    import torch
    from safetensors.torch import load_file

    from hwnas.errors import HwnasError

    try:
        state = load_file(str(path))
    except Exception as e:  # not a safetensors file (a pickle, truncated, ...): nothing runs
        raise HwnasError(f"{path}: not a valid safetensors file ({type(e).__name__}: {e})"
                         ) from None
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise HwnasError(f"{path}: tensors do not match the model in {config_file}: missing "
                         f"{missing}, unexpected {unknown}")
    for key, ref in expected.items():
        t = state[key]
        if tuple(t.shape) != tuple(ref.shape):
            raise HwnasError(f"{path}: tensor {key!r} has shape {tuple(t.shape)}, the model in "
                             f"{config_file} needs {tuple(ref.shape)}")
        if t.dtype != ref.dtype:
            raise HwnasError(f"{path}: tensor {key!r} has dtype {t.dtype}, expected {ref.dtype}")
        if not torch.isfinite(t).all():
            raise HwnasError(f"{path}: tensor {key!r} has non-finite values")
    return state


def write_model_folder(folder: str | Path, config_file: str, weights_file: str, fmt: str,
                       doc: dict, state: dict) -> None:
    """Save a model as JSON + safetensors (what `read_model_config` / `read_checked_tensors`
    read back): the weights first, then the JSON, each atomically; a `doc` that is not JSON is
    refused (HwnasError) before anything is written."""
    from safetensors.torch import save_file

    from hwnas.errors import HwnasError

    try:
        text = dumps(doc)
    except (TypeError, ValueError) as e:
        raise HwnasError(f"meta cannot be written as JSON: {e}") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / weights_file) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": fmt})
    write_text(folder / config_file, text + "\n")
