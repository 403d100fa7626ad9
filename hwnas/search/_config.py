"""Checks shared by the search configs (`ShiftNASConfig`, `FBNetV5Config`): one error line that
names the setting, never a traceback."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from hwnas.errors import HwnasError


def check_numbers(config: object, at_least: dict[str, int] | None = None,
                  non_negative: Iterable[str] = ()) -> None:
    """Refuse an integer setting of `config` below its minimum (`at_least`: name -> minimum) or
    that is not a whole number, and a number setting (`non_negative`) that is not finite and
    >= 0, with one `HwnasError` naming the setting."""
    for name, low in (at_least or {}).items():
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise HwnasError(f"{name} must be a whole number, got {v!r}")
        if v < low:
            raise HwnasError(f"{name} must be at least {low}, got {v}")
    for name in non_negative:
        v = getattr(config, name)
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)
                                       and v >= 0):
            raise HwnasError(f"{name} must be a finite number >= 0, got {v!r}")
