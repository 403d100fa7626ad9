"""Small file helpers used everywhere: atomic writes, sha256, a numpy-aware JSON encoder.

Every file hwnas writes (profiles, artifacts, manifests, checkpoints, reports) goes through
`atomic_path` / `write_atomic`: the data goes to a temporary file in the same folder, is flushed
to disk (fsync), then renamed over the target. A reader therefore sees the old file or the new
one, never half of one, and a kill at any moment leaves no truncated file behind. A write that
fails because the disk is full, a quota is exhausted or the file is over the process's size
limit is one `HwnasError` ("no space left on the device writing FILE"), the target untouched.

`folder_lock` lets one hwnas process at a time write a run folder (a search's `--out`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
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
    from hwnas.errors import HwnasError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except Exception as e:
        why = None if isinstance(e, HwnasError) else disk_full(e)
        if why is None:
            raise
        raise HwnasError(f"{why} writing {path}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# what a write that ran out of room says: errno, and the words of libraries that wrap it
# (pyarrow keeps the errno, safetensors only the message)
_NO_ROOM = ((errno.ENOSPC, "No space left on device", "no space left on the device"),
            (errno.EDQUOT, "Disk quota exceeded", "disk quota exceeded"),
            (errno.EFBIG, "File too large", "file too large (over the process's file-size "
                                            "limit, ulimit -f)"))


def disk_full(error: BaseException) -> str | None:
    """How a failed write ran out of room (a full disk, a quota, a file-size limit), in words;
    None for any other error."""
    code = getattr(error, "errno", None)
    for number, words, said in _NO_ROOM:
        if code == number or words in str(error):
            return said
    return None


def lock_folder(folder: str | Path, name: str = ".hwnas.lock"):
    """Take `folder/name` (the folder is created when missing) so that one hwnas process at a
    time writes `folder`; another one gets `HwnasError` at once. Returns the held `FileLock`
    (release it when done), after removing what killed writers left (`remove_stale_temps`).

    The lock is the operating system's (filelock: fcntl on POSIX, msvcrt on Windows), held by
    an open file: the OS releases it when the process ends in any way, SIGKILL included, so the
    lock file a killed run leaves behind never blocks the next run.
    """
    from filelock import FileLock, Timeout

    from hwnas.errors import HwnasError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise HwnasError(f"{folder} is being written by another hwnas process (lock "
                         f"{lock.lock_file})") from None
    remove_stale_temps(folder)  # what killed writers left: this process owns the folder now
    return lock


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = ".hwnas.lock") -> Iterator[Path]:
    """Hold `lock_folder(folder, name)` while the block runs."""
    lock = lock_folder(folder, name)
    try:
        yield Path(folder) / name
    finally:
        lock.release()


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(\.[^.]*)?$")


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files (`.NAME.tmpPID`) that writers killed in the middle of an
    `atomic_path` left in `folder` (only those of `name` when given): a file whose process is
    gone. A live writer's file is left alone. Returns the files removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if os.name != "posix" or not folder.is_dir():  # liveness is asked with signal 0 (POSIX)
        return removed
    for path in folder.iterdir():
        m = _TEMP.match(path.name)
        if m is None or (name is not None and m["name"] != name) or not path.is_file():
            continue
        pid = int(m["pid"])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that process still runs (or runs as another user)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


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


def read_json(path: str | Path) -> object:
    """The JSON document in a file. A missing, unreadable, non-UTF-8, malformed or too deeply
    nested file is one `HwnasError("<path>: <what>")`, never a traceback."""
    from hwnas.errors import HwnasError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HwnasError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise HwnasError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
            from None
    except OSError as e:
        raise HwnasError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HwnasError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno})") from None
    except RecursionError:
        raise HwnasError(f"{path}: malformed JSON (nested too deeply)") from None


# the widest CSV hwnas reads: published tables have tens of columns (HW-NAS-Bench: one per
# device and layer); a wider header is refused before pandas builds a frame column by column
# (10^6 header-only columns take pandas minutes)
MAX_CSV_COLUMNS = 10_000
_HEADER_BYTES = 4 << 20


def check_csv_width(path: str | Path, max_columns: int = MAX_CSV_COLUMNS) -> None:
    """Refuse (`HwnasError` naming the file) a CSV (plain or .gz) whose header line has more
    than `max_columns` columns, or is longer than 4 MiB, before it is parsed."""
    import gzip

    from hwnas.errors import HwnasError

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.readline(_HEADER_BYTES + 1)
    except (OSError, EOFError) as e:
        raise HwnasError(f"{path}: unreadable ({e})") from None
    if len(head) > _HEADER_BYTES:
        raise HwnasError(f"{path}: the header line is longer than {_HEADER_BYTES >> 20} MiB; "
                         "not a table hwnas reads")
    columns = head.count(b",") + 1
    if columns > max_columns:
        raise HwnasError(f"{path}: {columns} columns, more than a table hwnas reads has "
                         f"({max_columns})")


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
    doc = read_json(cfg_path)
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
