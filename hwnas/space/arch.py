"""`Arch`: one network of a search space, with a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class Arch:
    """A space name, its settings, and one choice name per searchable layer.

    `channels` overrides the space's stage widths (None: the space default), so that published
    networks with other widths (the released ProxylessNAS-Mobile) build from the same space code.
    """

    space: str
    choices: tuple[str, ...]
    resolution: int = 224
    width: float = 1.0
    num_classes: int = 1000
    channels: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        d = {"space": self.space, "resolution": self.resolution, "width": self.width,
             "num_classes": self.num_classes, "choices": list(self.choices)}
        if self.channels is not None:
            d["channels"] = list(self.channels)
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        from hwnas._io import write_text

        write_text(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: object) -> Arch:
        """Parse and type-check (not space-check: see `SearchSpace.validate`)."""
        if not isinstance(d, dict):
            raise HwnasError(f"an arch must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("space", "choices") if k not in d]
        if missing:
            raise HwnasError(f"arch is missing the field(s): {', '.join(missing)}")
        unknown = set(d) - {"space", "choices", "resolution", "width", "num_classes",
                            "channels", "meta"}
        if unknown:
            raise HwnasError(f"arch has unknown field(s): {', '.join(sorted(unknown))}")
        choices = d["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise HwnasError("arch 'choices' must be a list of choice names (strings)")
        channels = d.get("channels")
        if channels is not None and (not isinstance(channels, list)
                                     or not all(isinstance(c, int) for c in channels)):
            raise HwnasError("arch 'channels' must be a list of integers")
        try:
            arch = cls(space=str(d["space"]), choices=tuple(choices),
                       resolution=_int(d.get("resolution", 224), "resolution"),
                       width=float(d.get("width", 1.0)),
                       num_classes=_int(d.get("num_classes", 1000), "num_classes"),
                       channels=tuple(channels) if channels is not None else None,
                       meta=dict(d.get("meta") or {}))
        except (TypeError, ValueError) as e:
            raise HwnasError(f"arch has a field of the wrong type: {e}") from None
        if not (MIN_RESOLUTION <= arch.resolution <= MAX_RESOLUTION and 0 < arch.width <= 4
                and 1 <= arch.num_classes <= MAX_CLASSES):
            raise HwnasError(f"arch needs {MIN_RESOLUTION} <= resolution <= {MAX_RESOLUTION}, "
                             f"0 < width <= 4 and 1 <= num_classes <= {MAX_CLASSES}; got "
                             f"resolution {arch.resolution}, width {arch.width}, num_classes "
                             f"{arch.num_classes}")
        return arch

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise HwnasError(f"malformed arch JSON: {e.msg} at line {e.lineno} column {e.colno}")\
                from None
        except RecursionError:
            raise HwnasError("malformed arch JSON: nested too deeply") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        """Read an arch file and check it against its space (choices, layer count, settings);
        any problem is one `HwnasError` naming the file."""
        from hwnas.space import space_of

        p = Path(path)
        if not p.is_file():
            raise HwnasError(f"arch file not found: {p}")
        try:
            arch = cls.from_json(p.read_text(encoding="utf-8"))
            space_of(arch)
            return arch
        except UnicodeDecodeError as e:
            raise HwnasError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
                from None
        except HwnasError as e:
            raise HwnasError(f"{p}: {e}") from None


MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096  # a 4096x4096 input is already 200 MB in float32
MAX_CLASSES = 1_000_000


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HwnasError(f"arch '{name}' must be an integer, got {value!r}")
    return value
