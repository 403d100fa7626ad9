"""`export`: an Arch (and its trained weights) to deployable artifacts, each checked and described.

Per target (`hwnas.export.targets`), into `<out>/<target>/`:

1. the artifact (`model.onnx`, `model.tflite`, `model.engine`, `model.pt2`), written atomically;
2. parity: the artifact run in its runtime on the same inputs as the torch model (held-out
   images of the calibration data when given, else fixed random inputs); max absolute and
   relative difference and top-1 agreement. fp32 must be within 1e-4 max absolute (or, for a
   trained net whose logits are large, no further from the float64 model than twice torch fp32's
   own rounding error); fp16 within 2e-2 relative; int8 must agree on the top-1 class for 90% of
   the held-out images (`parity`);
3. with `--int8`: the accuracy of the fp32 torch model and of the int8 artifact on the held-out
   images (when the model's classes are the data's) and their top-1 agreement;
4. the predicted latency from a profile of a device that runs this artifact (its best predictor
   and 90% interval); ops the profile's table lacks (a head with another number of classes)
   are priced by the op predictor fitted on the profile's ops;
5. with `verify`: the artifact file itself timed by the device backend. When the profile was
   measured by that backend, its drift reference net is timed in the same interleaved rounds
   (`hwnas.profile.drift`) and the measured latency is scaled to the profile's reference speed
   (`corrected_ms`, the same correction `Profile.load` applies to the profile's rows), then
   compared with the prediction (`ratio_to_predicted`). A reference more than 1.25x off its
   profiled time means a busy machine rather than drift: then the raw time is compared and
   `drift_note` says so;
6. `manifest.json`, validated against `hwnas.export.manifest.SCHEMA`.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas import __version__
from hwnas._io import now, remove_stale_temps, sha256, write_json
from hwnas.convert.onnx import INPUT_NAME
from hwnas.data import check_spec
from hwnas.errors import HwnasError
from hwnas.export.manifest import MANIFEST_VERSION, validate_manifest
from hwnas.export.targets import PRECISIONS, Target, get_target
from hwnas.space import Arch, get_space, space_of

TOLERANCE_ABS = 1e-4  # fp32: max absolute difference to the torch model
TOLERANCE_REL_FP16 = 2e-2  # fp16: max |diff| / max |torch output|
MIN_AGREEMENT_INT8 = 0.9  # int8: top-1 agreement with the fp32 torch model


@dataclass
class ExportConfig:
    """Settings of one `hwnas export` call (see the module docstring)."""

    arch: Arch | Path
    targets: tuple[str, ...] = ("onnx",)
    out: Path = Path("artifacts/export")
    weights: Path | None = None
    precision: str = "fp32"
    calib: str | None = None  # data spec for int8 calibration (and held-out parity images)
    profiles: tuple[Path, ...] = ()
    verify: bool = False
    device: str | None = None  # backend for --verify (default: the target's)
    threads: int | None = None  # verify threads (default: the profile's, else 1)
    parity_inputs: int = 8
    quick: bool = False  # the short timing protocol

    def __post_init__(self) -> None:
        """Refuse impossible settings before anything is built or written."""
        if self.threads is not None and self.threads < 1:
            raise HwnasError(f"threads must be >= 1, got {self.threads}")
        if self.parity_inputs < 1:
            raise HwnasError(f"parity_inputs must be >= 1, got {self.parity_inputs}")
        if self.calib is not None:
            check_spec(self.calib)


# --- inputs -----------------------------------------------------------------------------------
def load_arch(arch: Arch | Path) -> Arch:
    arch = arch if isinstance(arch, Arch) else Arch.load(arch)
    space_of(arch)  # validates the choices against the space
    return arch


def load_model(arch: Arch, weights: Path | None) -> tuple[nn.Module, Arch]:
    """The arch's network with `weights` (safetensors from `hwnas train`); (model, arch used).

    The weights file records the arch it was trained as. When it has the same layers and
    another number of classes (trained on a small dataset), the model takes the weights' classes
    and keeps the arch's resolution. Anything else that differs is an error naming it.
    """
    if weights is None:
        torch.manual_seed(0)
        return space_of(arch).build(arch).eval(), arch
    weights = Path(weights)
    if not weights.is_file():
        raise HwnasError(f"weights file not found: {weights}")
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except Exception as e:  # not a safetensors file, truncated, ...
        raise HwnasError(f"cannot read weights {weights}: {e}") from None
    if "arch" in meta:
        try:
            trained = Arch.from_json(meta["arch"])
        except HwnasError as e:
            raise HwnasError(f"{weights}: the arch in its metadata is unreadable ({e})") from None
        for name in ("space", "choices", "width", "channels"):
            if getattr(trained, name) != getattr(arch, name):
                raise HwnasError(f"the arch does not match the weights: {name} is "
                                 f"{getattr(arch, name)!r} in the arch but "
                                 f"{getattr(trained, name)!r} in {weights.name}")
        if trained.num_classes != arch.num_classes:
            arch = Arch(arch.space, arch.choices, arch.resolution, arch.width,
                        trained.num_classes, arch.channels, dict(arch.meta))
    model = space_of(arch).build(arch).eval()
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise HwnasError(f"the arch does not match the weights: {weights.name} has no "
                             f"tensor {key!r}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise HwnasError(f"the arch does not match the weights: {key} is "
                             f"{tuple(tensor.shape)} in the arch, {tuple(state[key].shape)} in "
                             f"{weights.name}")
        if state[key].dtype != tensor.dtype:
            raise HwnasError(f"{weights}: tensor {key!r} is {state[key].dtype}, the arch's "
                             f"network needs {tensor.dtype}")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise HwnasError(f"{weights}: tensor {key!r} has non-finite values (NaN or inf)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise HwnasError(f"the arch does not match the weights: {weights.name} has tensors the "
                         f"arch lacks ({', '.join(extra[:3])}...)")
    model.load_state_dict(state)
    return model, arch


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        raise HwnasError(f"cannot write to the output folder {out}: {e.strerror or e}") from None


# --- checks -----------------------------------------------------------------------------------
def parity(reference: np.ndarray, got: np.ndarray, precision: str,
           exact: np.ndarray | None = None) -> dict:
    """Max absolute / relative difference and top-1 agreement; `passed` per `criterion`.

    fp32: max absolute difference to torch <= 1e-4; when a trained network's logits are large
    that can sit below float32's own rounding noise, so with `exact` (the torch model in float64)
    the export also passes when its error against float64 is at most twice torch fp32's own
    (`within_fp32_noise`; both errors are recorded). fp16: max |diff| / max |torch| <= 2e-2.
    int8: top-1 agreement with the fp32 torch model >= 90% on the held-out images (logits of an
    int8 model differ by far more than any fp32 tolerance; what a user keeps is the decision).
    """
    diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max())
    max_rel = max_abs / max(float(np.abs(reference).max()), 1e-12)
    agree = float((got.argmax(1) == reference.argmax(1)).mean())
    out = {"inputs": int(len(reference)), "max_abs": max_abs, "max_rel": max_rel}
    if precision == "fp32":
        tol, passed, rule = TOLERANCE_ABS, max_abs <= TOLERANCE_ABS, "max_abs <= 1e-4"
        if exact is not None:
            torch_err = float(np.abs(reference - exact).max())
            ours = float(np.abs(got.astype(np.float64) - exact).max())
            noise = ours <= 2 * torch_err + 1e-7
            out.update(max_abs_vs_fp64=ours, torch_fp32_vs_fp64=torch_err,
                       within_fp32_noise=bool(noise))
            passed = passed or noise
            rule = "max_abs <= 1e-4, or error vs float64 <= 2x torch fp32's own"
    elif precision == "fp16":
        tol, passed, rule = None, max_rel <= TOLERANCE_REL_FP16, "max_rel <= 2e-2"
    else:
        tol, passed, rule = None, agree >= MIN_AGREEMENT_INT8, "top1_agreement >= 0.9"
    return {**out, "tolerance_abs": tol, "criterion": rule, "passed": bool(passed),
            "top1_agreement": agree}


def _profile_for(target: Target, profiles: list, device: str | None):
    """The first profile measured by a backend that runs this target (and `device` if given)."""
    for prof in profiles:
        backend = prof.record.backend
        if backend in target.devices and (device is None or backend == device):
            return prof
    return None


def _same_space(prof, arch: Arch) -> str:
    """Why the profile's space cannot price this arch ("" when it can)."""
    s = prof.space
    if arch.space != s.name and arch.space in s.priced_spaces():
        s = get_space(arch.space, s.resolution, s.width, None, s.channels)  # a task's space
    for name, mine, theirs in (("space", arch.space, s.name), ("resolution", arch.resolution,
                               s.resolution), ("width", arch.width, s.width)):
        if mine != theirs:
            return f"{name} {mine} != the profile's {theirs}"
    if (arch.channels or None) != (getattr(s, "channels", None) or None):
        return "stage widths differ from the profile's"
    return ""


def predict(prof, arch: Arch) -> dict | None:
    """The manifest's `predicted`: `hwnas.latency.predict` with the profile's best predictor
    (ops missing from its table, another head, are priced by the op predictor)."""
    from hwnas.latency import predict as predict_arch

    p = predict_arch(prof, arch)
    return {"profile": prof.name, "latency_ms": p.ms,
            "interval_ms": list(p.interval) if p.interval else None, "predictor": p.predictor,
            "note": p.note}


def verify(path: Path, device: str, input_shape: tuple[int, ...], prof, threads: int | None,
           quick: bool, predicted: dict | None) -> dict:
    """Time the artifact with the device backend (drift-corrected against the profile)."""
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.profile.drift import reference_item, time_with_reference
    from hwnas.profile.items import load_item

    same = prof is not None and prof.record.backend == device
    if threads is None:
        threads = prof.record.threads if same else 1
    backend = get_backend(device, threads=threads)
    try:
        backend.require()
    except Exception as e:
        raise HwnasError(str(e)) from None
    runners = {"artifact": backend.load(path, input_shape)}
    base = prof.reference_ms() if same else None
    ref = prof.reference_arch() if same else None
    with tempfile.TemporaryDirectory() as tmp:
        reference = (load_item(backend, reference_item(ref), Path(tmp))
                     if base and ref is not None else None)
        protocol = Protocol.quick() if quick else Protocol()
        res, drift = time_with_reference(runners, reference, protocol, np.random.default_rng(0),
                                         base)
    m = res["artifact"]
    # beyond MAX_DRIFT (1.25x) the machine is busy: the scale is reported, not applied
    # (`hwnas.profile.drift.Drift`)
    scale, note, corrected = drift.scale, drift.note, drift.correct(m.median)
    pred = predicted["latency_ms"] if predicted else None
    ratio = (corrected or m.median) / pred if pred else None  # = compared_ms / predicted
    return {"device": device, "threads": threads, "runtime": backend.runtime_version(),
            "measured_ms": m.median, "p10_ms": m.p10, "p90_ms": m.p90, "runs": m.n,
            "drift_scale": scale, "corrected_ms": corrected, "ratio_to_predicted": ratio,
            "drift_note": note,
            "fingerprint_matches_profile": bool(same and _fingerprint_matches(backend, prof))}


def compared_ms(verified: dict) -> float:
    """The verified latency that is compared with the prediction (drift-corrected when it was)."""
    return verified.get("corrected_ms") or verified["measured_ms"]


def _fingerprint_matches(backend, prof) -> bool:
    from hwnas.devices.fingerprint import IDENTITY_FIELDS

    mine, theirs = backend.fingerprint(), prof.record.fingerprint
    return all(mine.get(k) == theirs.get(k) for k in IDENTITY_FIELDS if k in theirs)


# --- the whole export -------------------------------------------------------------------------
@dataclass
class Reference:
    """What every target is compared with: the inputs and the torch model's outputs on them."""

    inputs: np.ndarray  # the parity inputs (held-out images for int8)
    torch_out: np.ndarray
    exact: np.ndarray | None  # the float64 model's outputs (fp32 only)
    calib: np.ndarray | None = None  # int8 calibration images
    labels: np.ndarray | None = None  # held-out labels, when the classes match the model's


def check_config(config: ExportConfig) -> list[Target]:
    """Step 0: the targets, refusing what cannot be exported as asked (before any work)."""
    if config.precision not in PRECISIONS:
        raise HwnasError(f"unknown precision {config.precision!r}; use {', '.join(PRECISIONS)}")
    if not config.targets:
        raise HwnasError("give at least one target")
    targets = [get_target(t) for t in config.targets]
    for t in targets:
        t.require(config.precision)
    if config.precision == "int8" and not config.calib:
        raise HwnasError("--int8 needs calibration data: --calib SPEC (digits, folder:PATH, "
                         "cifar10:PATH)")
    if config.device:
        for t in targets:
            if config.device not in t.devices:
                raise HwnasError(f"device {config.device!r} does not run {t.name} artifacts; "
                                 f"use one of {', '.join(t.devices)}")
    return targets


def reference_outputs(config: ExportConfig, model: nn.Module, arch: Arch,
                      shape: tuple[int, ...], log: Callable[[str], None]) -> Reference:
    """Step 2's truth: held-out images (with --calib) or fixed random inputs, the torch fp32
    outputs and, for fp32, the float64 outputs both fp32 runs approximate."""
    calib = labels = None
    if config.calib:
        from hwnas.export.quantize import calibration_images

        calib, test_x, test_y, n_classes = calibration_images(config.calib, arch.resolution)
        labels = test_y if n_classes == arch.num_classes else None
        inputs = test_x if config.precision == "int8" else test_x[: config.parity_inputs]
    else:
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn((config.parity_inputs, *shape[1:]), generator=g).numpy()
    if config.precision == "int8" and config.weights is None:
        log("warning: int8 of an untrained (random) network: its parity and accuracy figures "
            "say little; pass --weights from `hwnas train`")
    with torch.inference_mode():
        torch_out = np.concatenate([model(torch.from_numpy(x[None])).numpy() for x in inputs])
        exact = None
        if config.precision == "fp32":
            m64 = copy.deepcopy(model).double()
            exact = np.concatenate([m64(torch.from_numpy(x[None]).double()).numpy()
                                    for x in inputs])
    if config.precision == "int8":
        labels = labels if labels is None else labels[: len(inputs)]
    return Reference(inputs, torch_out, exact, calib, labels)


INT8_METHODS = {"onnx": "onnxruntime quantize_static QDQ, per-channel, MinMax",
                "tflite": "ai-edge-quantizer static_wi8_ai8",
                "tensorrt": "TensorRT int8 from the QDQ ONNX file"}


def quantization_summary(target: Target, config: ExportConfig, ref: Reference,
                         got: np.ndarray) -> dict | None:
    """Step 3: for int8, the method, calibration, top-1 agreement and accuracy before/after."""
    if config.precision != "int8":
        return None
    quant = {"method": INT8_METHODS.get(target.name, "int8"), "calibration": config.calib,
             "samples": int(len(ref.calib)), "heldout": int(len(ref.inputs)),
             "top1_agreement": float((got.argmax(1) == ref.torch_out.argmax(1)).mean())}
    if ref.labels is not None:
        quant["accuracy_fp32"] = float((ref.torch_out.argmax(1) == ref.labels).mean())
        quant["accuracy_int8"] = float((got.argmax(1) == ref.labels).mean())
        quant["accuracy_change"] = quant["accuracy_int8"] - quant["accuracy_fp32"]
    return quant


def export_target(target: Target, model: nn.Module, arch: Arch, ref: Reference,
                  profiles: list, config: ExportConfig, log: Callable[[str], None]) -> dict:
    """Steps 1-6 for one target: write, parity, int8 summary, prediction, verify, manifest."""
    shape = space_of(arch).input_shape()
    folder = Path(config.out) / target.name
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # half-written files of an export that was killed
    # an earlier export's manifest goes before the artifact is replaced: killed in between, a
    # folder must not hold a manifest that vouches for another file
    (folder / "manifest.json").unlink(missing_ok=True)
    path = folder / f"model.{target.suffix}"
    log(f"{target.name}: writing {path}")
    t0 = time.monotonic()
    target.write(model, shape, path, config.precision, ref.calib)
    export_s = time.monotonic() - t0
    got = target.run(path, ref.inputs)
    prof = _profile_for(target, profiles, config.device)
    predicted, why = None, ""
    if prof is not None:
        why = _same_space(prof, arch)
        if why:
            log(f"{target.name}: no prediction from {prof.name}: {why}")
        else:
            predicted = predict(prof, arch)
    verified = None
    if config.verify:
        device = config.device or target.device
        log(f"{target.name}: timing {path.name} on {device}")
        verified = verify(path, device, shape, None if why else prof, config.threads,
                          config.quick, predicted)
        if verified["drift_note"]:
            log(f"{target.name}: warning: {verified['drift_note']}")
    manifest = {
        "manifest_version": MANIFEST_VERSION, "hwnas": __version__, "created": now(),
        "target": target.name, "precision": config.precision, "arch": arch.to_dict(),
        "weights": ({"file": str(config.weights), "sha256": sha256(config.weights)}
                    if config.weights else None),
        "input": {"name": INPUT_NAME, "shape": list(shape), "layout": "NCHW",
                  "dtype": "float32"},
        "output": {"shape": [1, arch.num_classes]},
        "artifact": {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)},
        "runtimes": target.runtime_versions(), "export_s": export_s,
        "parity": parity(ref.torch_out, got, config.precision, ref.exact),
        "quantization": quantization_summary(target, config, ref, got),
        "predicted": predicted, "verified": verified,
    }
    validate_manifest(manifest)
    write_json(folder / "manifest.json", manifest)
    return manifest


def export(config: ExportConfig, log: Callable[[str], None] = lambda _m: None) -> list[dict]:
    """Export, check and describe the arch for every target (the steps of the module
    docstring); returns the manifests. `hwnas export` and `hwnas demo` both call this."""
    from hwnas.profile.reader import Profile

    targets = check_config(config)
    profiles = [Profile.load(p) for p in config.profiles]
    model, arch = load_model(load_arch(config.arch), config.weights)
    check_writable(Path(config.out))
    ref = reference_outputs(config, model, arch, space_of(arch).input_shape(), log)
    return [export_target(t, model, arch, ref, profiles, config, log) for t in targets]
