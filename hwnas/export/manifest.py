"""`manifest.json`: what was exported, how it was checked, and how fast it is (JSON Schema)."""

from __future__ import annotations

import json
from pathlib import Path

from hwnas.errors import HwnasError

MANIFEST_VERSION = 1

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INTERVAL = {"type": ["array", "null"], "items": _NUM, "minItems": 2, "maxItems": 2}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "hwnas export manifest",
    "type": "object",
    "required": ["manifest_version", "hwnas", "created", "target", "precision", "arch", "input",
                 "output", "artifact", "runtimes", "parity", "predicted", "verified"],
    "properties": {
        "manifest_version": {"const": MANIFEST_VERSION},
        "hwnas": {"type": "string"},
        "created": {"type": "string"},
        "target": {"enum": ["onnx", "tflite", "tensorrt", "torch"]},
        "precision": {"enum": ["fp32", "fp16", "int8"]},
        "arch": {"type": "object", "required": ["space", "choices", "resolution"]},
        "weights": {"type": ["object", "null"],
                    "properties": {"file": {"type": "string"}, "sha256": {"type": "string"}}},
        "input": {"type": "object", "required": ["name", "shape", "layout", "dtype"],
                  "properties": {"shape": {"type": "array", "items": {"type": "integer"}},
                                 "layout": {"enum": ["NCHW"]}}},
        "output": {"type": "object", "required": ["shape"]},
        "artifact": {"type": "object", "required": ["file", "bytes", "sha256"],
                     # a file name beside the manifest, never a path that leads elsewhere
                     "properties": {"file": {"type": "string",
                                             "pattern": r"^(?!\.\.?$)[^/\\]+$"},
                                    "bytes": {"type": "integer", "minimum": 1},
                                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
        "runtimes": {"type": "object", "additionalProperties": {"type": "string"}},
        "export_s": _NUM,
        "parity": {"type": "object",
                   "required": ["inputs", "max_abs", "max_rel", "tolerance_abs", "criterion",
                                "passed", "top1_agreement"],
                   "properties": {"inputs": {"type": "integer", "minimum": 1},
                                  "max_abs": _NUM, "max_rel": _NUM,
                                  "tolerance_abs": _NUM_OR_NULL, "criterion": {"type": "string"},
                                  "passed": {"type": "boolean"},
                                  "top1_agreement": _NUM}},
        "quantization": {"type": ["object", "null"],
                         "required": ["method", "calibration", "samples", "top1_agreement"]},
        "predicted": {"type": ["object", "null"],
                      "required": ["profile", "latency_ms", "interval_ms", "predictor"],
                      "properties": {"latency_ms": _NUM, "interval_ms": _INTERVAL}},
        "verified": {"type": ["object", "null"],
                     "required": ["device", "measured_ms", "p10_ms", "p90_ms", "runs",
                                  "drift_scale", "ratio_to_predicted"],
                     "properties": {"measured_ms": _NUM, "corrected_ms": _NUM_OR_NULL,
                                    "ratio_to_predicted": _NUM_OR_NULL}},
    },
}




def validate_manifest(manifest: dict) -> None:
    """Raise `HwnasError` naming the first problem when `manifest` does not fit the schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest),
                    key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise HwnasError(f"manifest does not match its schema at {where}: {e.message}")


def load_manifest(path: str | Path) -> dict:
    """Read and validate a manifest.json; any problem is one `HwnasError` naming the file."""
    path = Path(path)

    def finite_only(name: str) -> float:
        raise ValueError(f"{name} is not a number a manifest records")

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"), parse_constant=finite_only)
    except RecursionError:
        raise HwnasError(f"cannot read manifest {path}: JSON nested too deeply") from None
    except (OSError, ValueError) as e:
        raise HwnasError(f"cannot read manifest {path}: {e}") from None
    try:
        validate_manifest(manifest)
    except HwnasError as e:
        raise HwnasError(f"{path}: {e}") from None
    return manifest
