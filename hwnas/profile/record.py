"""`ProfileRecord`: the typed contents of a profile's `device.json`, with its one reader and writer.

device.json describes what was measured and how: the search space and its settings, the device
fingerprint, the backend and its options, the timing protocol, the drift reference net and its
timings, progress counters, and for imported profiles where the numbers came from. On disk it is
a JSON object (schema version 1); in memory a frozen dataclass, validated on reading
(`from_dict` / `read_record` raise `HwnasError` naming the file and the field) and written by
`to_dict` / `write_record`. Keys this hwnas does not know (an importer's `unmatched_entries`,
fields of a newer writer) are kept in `extra` and written back unchanged.

The profiler updates the record while it measures (status, timings, wall_s, ...): being frozen,
the record is replaced (`dataclasses.replace`, see `ProfileRecord.updated_now` and
`DriftReference.with_timing`), and the new one is written after every chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hwnas._io import now, read_json, write_json
from hwnas.errors import HwnasError
from hwnas.space import Arch

SCHEMA_VERSION = 1
RECORD_FILE = "device.json"
_REFERENCE_NOTE = ("timed inside every chunk; rows keep raw statistics and reference_ms, "
                   "Profile.load divides the drift out")


def _check(source: str, key: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """`value` if it is one of `types` (a bool is not a number here), else a clear error."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in
                                           (types if isinstance(types, tuple) else (types,)))
    if not ok:
        raise HwnasError(f"{source}: field {key!r} must be {what}, got "
                         f"{type(value).__name__} {value!r:.60}")
    return value


@dataclass(frozen=True)
class DriftReference:
    """The drift reference net of a profile (`reference` in device.json).

    `arch` is the net (as `Arch.to_dict`), `timings` one (time, median ms) pair per measured
    chunk; rows of the tables carry the same median in `reference_ms`.
    """

    arch: Arch
    timings: tuple[tuple[str, float], ...] = ()
    note: str = _REFERENCE_NOTE

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DriftReference:
        _check(source, "reference", data, dict, "an object")
        arch = _check(source, "reference.arch", data.get("arch"), dict, "an arch object")
        try:
            parsed = Arch.from_dict(arch)
        except (HwnasError, KeyError, TypeError, ValueError) as e:
            raise HwnasError(f"{source}: field 'reference.arch' is not an arch ({e})") from None
        timings = _check(source, "reference.timings", data.get("timings", []), list, "a list")
        pairs = []
        for t in timings:
            if not (isinstance(t, list | tuple) and len(t) == 2 and isinstance(t[0], str)
                    and isinstance(t[1], int | float) and not isinstance(t[1], bool)):
                raise HwnasError(f"{source}: field 'reference.timings' must hold [time, ms] "
                                 f"pairs, got {t!r:.60}")
            pairs.append((t[0], float(t[1])))
        note = _check(source, "reference.note", data.get("note", ""), str, "a string")
        return cls(parsed, tuple(pairs), note)

    def to_dict(self) -> dict:
        return {"arch": self.arch.to_dict(), "timings": [list(t) for t in self.timings],
                "note": self.note}

    def with_timing(self, median_ms: float) -> DriftReference:
        """This reference with one more chunk's (now, median) timing."""
        return replace(self, timings=(*self.timings, (now(), round(float(median_ms), 6))))


# (key, types, description) of the optional fields; absent ones take the dataclass default
_STR, _INT, _FLOAT = (str,), (int,), (int, float)
_OPTIONAL = {
    "created": (_STR, "a string"), "updated": (_STR, "a string"), "status": (_STR, "a string"),
    "backend": (_STR, "a string"), "backend_options": ((dict,), "an object"),
    "protocol": ((dict, type(None)), "an object or null"),
    "nets_requested": (_INT, "an integer"), "generic_requested": (_INT, "an integer"),
    "kernel_nets_requested": (_INT, "an integer"),
    "seed": ((int, type(None)), "an integer or null"), "wall_s": (_FLOAT, "a number"),
    "timed_s": (_FLOAT, "a number"), "convert_s": (_FLOAT, "a number"),
    "imported": ((bool,), "true or false"), "nets_only": ((bool,), "true or false"),
    "notes": (_STR, "a string"), "adapted": ((dict, type(None)), "an object or null"),
}


# the space settings `ProfileRecord.settings` hands to `get_space` (their ranges are checked there)
_SETTINGS = {
    "resolution": ((int, type(None)), "an integer"), "width": (_FLOAT, "a number"),
    "num_classes": ((int, type(None)), "an integer"),
    "channels": ((list, type(None)), "a list of integers or null"),
}


_OMITTED_WHEN = {"reference": None, "protocol": None, "seed": None, "imported": False,
                 "nets_only": False, "notes": "", "kernel_nets_requested": 0, "adapted": None}


@dataclass(frozen=True)
class ProfileRecord:
    """What a profile measured and how (device.json). See the module docstring.

    `status`: "measuring", "complete" or "incomplete" (a time cap stopped it; `--resume`).
    `backend`: the backend that measured it (a `hwnas devices` name) or "imported".
    `nets_only`: whole networks without a lookup table (imported, or an adapt still measuring).
    `adapted`: set by `hwnas adapt` (`hwnas.latency.adapted`): ops.parquet then holds a table
    adapted from another profile by k measured networks, not measurements.
    """

    space: str
    space_settings: dict
    fingerprint: dict
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    updated: str = ""
    status: str = "complete"
    backend: str = ""
    backend_options: dict = field(default_factory=dict)
    protocol: dict | None = None
    nets_requested: int = 0
    generic_requested: int = 0
    kernel_nets_requested: int = 0  # random networks timed kernel by kernel (kernel_nets.py)
    seed: int | None = None
    wall_s: float = 0.0
    timed_s: float = 0.0
    convert_s: float = 0.0
    reference: DriftReference | None = None
    imported: bool = False
    nets_only: bool = False
    notes: str = ""
    adapted: dict | None = None  # `hwnas adapt`: source, k, the map, the check (latency.adapted)
    extra: dict = field(default_factory=dict)  # keys this hwnas does not know, kept as read

    # --- reading ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str | Path = RECORD_FILE) -> ProfileRecord:
        """Validate a device.json object; `HwnasError` names `source` and the field."""
        source = str(source)
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise HwnasError(f"{source}: schema_version {version!r} is not supported "
                             f"(this hwnas reads version {SCHEMA_VERSION})")
        for key in ("space", "space_settings", "fingerprint"):
            if key not in data:
                raise HwnasError(f"{source}: required field {key!r} is missing")
        kw: dict[str, Any] = {
            "space": _check(source, "space", data["space"], str, "a string"),
            "space_settings": _check(source, "space_settings", data["space_settings"], dict,
                                     "an object"),
            "fingerprint": _check(source, "fingerprint", data["fingerprint"], dict, "an object"),
        }
        for key, (types, what) in _SETTINGS.items():
            if key in kw["space_settings"]:
                _check(source, f"space_settings.{key}", kw["space_settings"][key], types, what)
        for key, (types, what) in _OPTIONAL.items():
            if key in data:
                value = _check(source, key, data[key], types, what)
                kw[key] = float(value) if types is _FLOAT else value
        if data.get("reference") is not None:
            kw["reference"] = DriftReference.from_dict(data["reference"], source)
        known = {f.name for f in fields(cls)}
        kw["extra"] = {k: v for k, v in data.items() if k not in known}
        return cls(**kw)

    # --- writing ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The device.json object; the fields in `_OMITTED_WHEN` are left out at those values
        (a measured profile has no `notes`, an imported one no `reference`)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in _OMITTED_WHEN and value == _OMITTED_WHEN[f.name]):
                continue
            out[f.name] = value.to_dict() if isinstance(value, DriftReference) else value
        return {**out, **self.extra}

    def updated_now(self, **changes: Any) -> ProfileRecord:
        """A copy with `changes` applied and `updated` set to now."""
        return replace(self, **changes, updated=now())

    # --- derived ------------------------------------------------------------------------------
    @property
    def threads(self) -> int:
        """Runtime threads the profile was measured with (1 when not recorded)."""
        return int(self.fingerprint.get("threads", self.backend_options.get("threads", 1)))

    def settings(self) -> Mapping[str, Any]:
        """The space settings as `get_space` takes them (resolution, width, num_classes, channels)."""
        s = self.space_settings
        channels = s.get("channels")
        return {"resolution": s.get("resolution"), "width": s.get("width", 1.0),
                "num_classes": s.get("num_classes"),
                "channels": tuple(channels) if channels else None}


def read_record(root: str | Path) -> ProfileRecord:
    """The one reader of device.json: `HwnasError` for a missing, malformed or invalid file."""
    path = Path(root) / RECORD_FILE
    if not path.exists():
        raise HwnasError(f"{Path(root)} is not a profile: {RECORD_FILE} is missing")
    data = read_json(path)
    return ProfileRecord.from_dict(data, path)


def write_record(root: str | Path, record: ProfileRecord) -> None:
    """The one writer of device.json (atomic)."""
    write_json(Path(root) / RECORD_FILE, record.to_dict())
