"""ONNX -> TensorRT engine (`.engine`): what `tensorrt` measures and `--target tensorrt` ships.

Uses the TensorRT Python API (8.6 and 10.x): an explicit-batch network parsed by `trt.OnnxParser`,
a builder config with a workspace limit and optional FP16/INT8, `build_serialized_network`.
An engine is tied to the GPU model and TensorRT version that built it: build it where it runs.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from hwnas._io import write_atomic
from hwnas.errors import HwnasError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hwnas[gpu]' on a machine with an NVIDIA GPU"


def _cuda_missing() -> str:
    """Why torch sees no CUDA GPU, or "" when it does."""
    import torch

    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return (f"no CUDA GPU: torch {torch.__version__} is a CPU-only build "
                "(torch.version.cuda is None); TensorRT needs an NVIDIA GPU and a CUDA build "
                "of torch")
    return (f"no CUDA GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no device "
            "(no NVIDIA GPU or driver, or CUDA_VISIBLE_DEVICES hides it)")


def _tensorrt_missing() -> str:
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "tensorrt":
            return f"TensorRT is not installed: {INSTALL_HINT}"
        return f"TensorRT is installed but does not load ({e}): {INSTALL_HINT}"
    except Exception as e:  # installed, but its libraries (libnvinfer, CUDA) do not load
        return f"TensorRT is installed but does not load ({e}): {INSTALL_HINT}"
    return ""


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when TensorRT imports and a CUDA GPU is present, else (False, what is missing)."""
    missing = [m for m in (_tensorrt_missing(), _cuda_missing()) if m]
    return (not missing, "; ".join(missing))


def tensorrt_version() -> str:
    """The installed TensorRT version, or "" when it does not import."""
    try:
        import tensorrt as trt
    except Exception:
        return ""
    return trt.__version__


def require_tensorrt() -> None:
    """Raise `HwnasError` saying what is missing unless TensorRT can run here."""
    ok, reason = tensorrt_available()
    if not ok:
        raise HwnasError(reason)


@functools.lru_cache(maxsize=1)
def trt_logger():
    """The one TensorRT logger of this process (TensorRT keeps a global one); it keeps errors
    of the current build in `.errors` and forwards warnings and errors to `logging`."""
    import tensorrt as trt

    severe = {trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in severe:
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return _Logger()


def _network_flags(trt) -> int:
    """Explicit batch: a flag TensorRT 8 needs, the default (and deprecated) from TensorRT 10."""
    major = int(trt.__version__.split(".")[0])
    if major >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse(trt, builder, onnx_path: Path):
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise HwnasError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors or ["?"]))
    return network, parser


def _has_qdq(trt, network) -> bool:
    return any(network.get_layer(i).type == trt.LayerType.QUANTIZE
               for i in range(network.num_layers))


def _config(trt, builder, network, fp16: bool, int8: bool, calibrator, workspace_gb: float):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif not int8 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 would break 1e-4 parity
    if int8:
        if calibrator is None and not _has_qdq(trt, network):
            raise HwnasError("int8=True needs a calibrator (trt.IInt8Calibrator) or an ONNX model "
                             "with QuantizeLinear/DequantizeLinear nodes")
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
    return config


def build_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = False,
                 int8: bool = False, calibrator=None, workspace_gb: float = 2) -> Path:
    """Build a serialized TensorRT engine from an ONNX file and write it atomically.

    fp16 / int8 allow those precisions (TensorRT still picks per layer); int8 needs `calibrator`
    (a `trt.IInt8Calibrator`) unless the model carries Q/DQ nodes. Raises `HwnasError` with what
    is missing (TensorRT, a GPU) or what TensorRT reported when parsing or building fails.
    """
    require_tensorrt()
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise HwnasError(f"no ONNX file at {onnx_path}")
    logger = trt_logger()
    logger.errors.clear()
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, onnx_path)
    config = _config(trt, builder, network, fp16, int8, calibrator, workspace_gb)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors) or "see the TensorRT log"
        raise HwnasError(f"TensorRT could not build an engine from {onnx_path}: {detail}")
    write_atomic(engine_path, bytes(memoryview(serialized)))
    return engine_path
