"""Deployment: write the chosen network for each platform (`Target`), check numerical parity
against torch, optional int8, a validated manifest, and re-measure the file on its device.

The conversions themselves live in `hwnas.convert` (the backends measure the same files).
"""

from __future__ import annotations

from hwnas.export.manifest import load_manifest, validate_manifest
from hwnas.export.pipeline import ExportConfig, compared_ms, export
from hwnas.export.targets import TARGETS, Target, get_target

__all__ = ["TARGETS", "ExportConfig", "Target", "compared_ms", "export", "get_target",
           "load_manifest", "validate_manifest"]
