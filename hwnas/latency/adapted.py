"""A new device from ten measurements: a profile's lookup table adapted by k measured networks.

`hwnas adapt --from PROFILE --device NAME --samples 10` measures k whole networks of the source
profile's space on the new device (the normal protocol, through `Profiler`), fits an
`AdaptedPredictor` on them and writes a profile that search and export take like any other,
marked as adapted in its record (`ProfileRecord.adapted`: the source, k, the fitted map and, with
`--check N`, the validation on N more measured networks).

The model (`AdaptedPredictor`)
------------------------------
The strong simple baseline of the few-shot literature is the source device's predictor plus a
linear map fitted on the k samples (HELP, Lee et al. NeurIPS 2021, Sec. 4: "a source device's
predictor ... adapted"; the issue's measured AMD -> Intel transfer). Here the source predictor is
its lookup-table sum S(a) = sum_op t_src(op), so the whole model stays a lookup table:

    latency(a) = c * S(a) + sum_{g in G} beta_g * W_g(a) + b          (1)

W_g(a) is the work (GMACs) of the arch's convolutions of kernel class g (`kernel_work`: `pw`
1x1, `dw3`/`dw5`/`dw7` depthwise, `conv3` dense kxk, `linear`, ...), read from the modules the
profile timed (`OpSpec.module()`, forward hooks), summed over its ops. Eq. (1) is additive per
op: t_new(op) = c * t_src(op) + sum_g beta_g W_g(op) and b is a per-network constant, so the
adapted profile's `ops.parquet` holds t_new (marked `source = "adapted"`) and the ProxylessNAS
expected latency over it is exact (`hwnas.search.run.expected_latency_fit` finds (1, b)).

[our method, not from a paper] G is chosen on the k samples alone: the candidates are the plain
linear map (G empty, "linear-map") and each single kernel class present in the space; the
candidate with the lowest leave-one-out mean squared log error wins, but a kernel class is kept
only when it at least halves the plain map's leave-one-out error (`min_gain`) - with 10 samples,
a term must pay for itself. A candidate whose table has a non-positive op time is not allowed.
Why kernel classes: runtimes differ most per kernel type; XNNPACK's 7x7 depthwise is 1.3-6x
onnxruntime's where its 3x3 one is 0.45x (measured: `profiles/litert-*` over `ort-cpu-*`), which
no single scale fits. The coefficients are fitted by least squares on relative error,
min sum ((pred - y) / y)^2, the error the within-10% metric counts.

Intervals: as `hwnas.latency.few_shot`, leave-one-out conformal on the k samples:
q_ = `conformal_q`(LOO predictions, y, alpha), interval [pred exp(-q_), pred exp(q_)].

Picking the k networks (`support_archs`): HELP's 10 fixed reference architectures where the
space has them (`nb201` and `fbnet`; `hwnas.latency.few_shot.REFERENCE_ARCHS`, the hardware
embedding of the HELP paper), otherwise `plan_nets` (k networks spread evenly over the source's
latency range).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas.errors import HwnasError, NotFittedError
from hwnas.latency.base import LatencyPredictor
from hwnas.latency.learned import conformal_q
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.metrics import accuracy
from hwnas.space import Arch, OpSpec, SearchSpace

METHODS = ("kernel-map", "linear-map")

#: NAS-Bench-201 cells of HELP's 10 reference architectures (`REFERENCE_ARCHS["nb201"]`, the
#: official index; `data/nasbench201/hardware_embedding_index.pt` of the HELP code).
HELP_REFERENCE_NB201 = (
    "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
    "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|skip_connect~1|none~2|",
    "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    "|none~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|"
    "nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "nor_conv_3x3~2|",
)

#: FBNet (HW-NAS-Bench) archs of HELP's 10 reference architectures (`REFERENCE_ARCHS["fbnet"]`),
#: one digit per layer: the op index 0..8 (k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2,
#: k5_e3, k5_e6, skip), as the CSV's L00..L21.
HELP_REFERENCE_FBNET = (
    "1866803437874325730137", "5485168530480245066005", "7275468066512407560332",
    "8161627168752018032254", "1707434661105677676312", "2245725722123146363201",
    "4455311042242050562525", "8844681803128858228148", "0767336174377084856851",
    "1240730564570143233306",
)


# --------------------------------------------------------------------------- kernel classes
@functools.lru_cache(maxsize=4096)
def kernel_work(op: OpSpec) -> tuple[tuple[str, float], ...]:
    """GMACs of `op`'s convolutions and linear layers by kernel class, read from the module the
    profile timed (`op.module()` run once on zeros, forward hooks): `pw` (1x1, not grouped),
    `dw<k>` (depthwise kxk), `gconv<k>` (grouped, not depthwise), `conv<k>` (dense kxk, k > 1),
    `linear`. Sorted (class, GMACs) pairs."""
    import torch

    module = op.module().eval()
    work: dict[str, float] = {}

    def hook(mod, _inp, out) -> None:
        if isinstance(mod, torch.nn.Conv2d):
            k = int(mod.kernel_size[0])
            if mod.groups > 1 and mod.groups == mod.in_channels:
                cls = f"dw{k}"
            elif mod.groups > 1:
                cls = f"gconv{k}"
            else:
                cls = "pw" if k == 1 else f"conv{k}"
            macs = out.numel() * (mod.in_channels // mod.groups) * k * int(mod.kernel_size[1])
        elif isinstance(mod, torch.nn.Linear):
            cls, macs = "linear", out.numel() * mod.in_features
        else:
            return
        work[cls] = work.get(cls, 0.0) + macs / 1e9

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module(torch.zeros(op.input_shape))
    finally:
        for h in handles:
            h.remove()
    return tuple(sorted(work.items()))


def work_table(space: SearchSpace) -> dict[str, dict[str, float]]:
    """Per distinct op key of `space`: its GMACs per kernel class (`kernel_work`)."""
    return {op.key: dict(kernel_work(op)) for op in space.distinct_ops()}


def _per_arch(space: SearchSpace, archs: Sequence[Arch], per_op: dict[str, float]) -> np.ndarray:
    return np.array([sum(per_op.get(op.key, 0.0) for op in space.ops(a)) for a in archs])


# --------------------------------------------------------------------------- the predictor
def _fit_rel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients of y ~ [x, 1] minimising the squared relative error sum ((pred - y) / y)^2."""
    a = np.column_stack([x, np.ones(len(y))]) / y[:, None]
    return np.linalg.lstsq(a, np.ones(len(y)), rcond=None)[0]


def _pred(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.column_stack([x, np.ones(len(x))]) @ w


class AdaptedPredictor(LatencyPredictor):
    """Eq. (1) of the module docstring: `fit(space, source_lut, archs, latency_ms)`, `predict`,
    `interval` (coverage 1 - alpha).

    Fitted: `classes_` (the kernel classes kept; empty: the plain linear map), `scale_` (c),
    `class_coef_` (beta per kept class), `intercept_` (b, ms), `table_` (the adapted lookup
    table, op key -> ms), `lut_` (a `LookupTablePredictor` over it), `loo_` (leave-one-out
    predictions on the k samples), `candidates_` (LOO mean squared log error per candidate),
    `q_`, `alpha_`, `n_samples_`.
    """

    def __init__(self, method: str = "kernel-map", alpha: float = 0.1, min_gain: float = 0.5
                 ) -> None:
        if method not in METHODS:
            raise HwnasError(f"unknown adaptation method {method!r}; choose one of "
                             f"{', '.join(METHODS)}")
        if not 0.0 < alpha < 1.0:
            raise HwnasError(f"alpha (interval miscoverage) must be within (0, 1), got {alpha}")
        self.method, self.alpha, self.min_gain = method, alpha, min_gain

    @property
    def name(self) -> str:
        self._check()
        return "adapted (" + ("linear map" + "".join(f" + {c}" for c in self.classes_)) + ")"

    @property
    def coverage(self) -> float:
        return 1 - self.alpha_

    def _check(self) -> None:
        if not hasattr(self, "lut_"):
            raise NotFittedError("AdaptedPredictor is not fitted: call fit(...) first")

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, space: SearchSpace, source_lut: dict[str, float], archs: Sequence[Arch],
            latency_ms: Sequence[float]) -> AdaptedPredictor:
        """Fit Eq. (1) on k measured archs of `space`; `source_lut` is the source profile's
        lookup table (op key -> ms) over `space`'s distinct ops."""
        archs, y = list(archs), np.asarray(latency_ms, dtype=float)
        if len(archs) != y.size:
            raise HwnasError(f"{len(archs)} archs but {y.size} latencies")
        if y.size < 3:
            raise HwnasError(f"need at least 3 measured networks to adapt, got {y.size}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise HwnasError("measured latencies must be positive milliseconds")
        src = LookupTablePredictor().fit(space, source_lut)  # refuses a table lacking ops
        work = work_table(space)
        classes = sorted({c for w in work.values() for c in w})
        s = src.predict(archs)
        w_arch = {c: _per_arch(space, archs, {k: w.get(c, 0.0) for k, w in work.items()})
                  for c in classes}
        cands: list[tuple[str, ...]] = [()]
        if self.method == "kernel-map":
            # a class whose work does not vary over the samples is absorbed by the intercept
            cands += [(c,) for c in classes if np.ptp(w_arch[c]) > 1e-12 * max(1.0, w_arch[c].max())]
        scores: dict[tuple[str, ...], float] = {}
        fits: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        for cand in cands:
            x = np.column_stack([s, *(w_arch[c] for c in cand)])
            w = _fit_rel(x, y)
            table = self._table(space, source_lut, work, cand, w)
            if table is None or w[0] <= 0:
                continue  # a table with a non-positive op time is no latency model
            loo = np.empty_like(y)
            for i in range(y.size):
                keep = np.arange(y.size) != i
                loo[i] = _pred(_fit_rel(x[keep], y[keep]), x[i:i + 1])[0]
            loo = np.maximum(loo, 1e-6)  # as `predict_indices`: a latency is positive
            scores[cand] = float(np.mean(np.log(loo / y) ** 2))
            fits[cand] = (w, loo)
        if () not in scores:
            raise HwnasError("the linear map of the source table does not fit the samples "
                             "(a non-positive scale or op time): is the source profile of this "
                             "space and the measurements of the same networks?")
        best = min(scores, key=scores.get)
        if best != () and scores[best] > self.min_gain * scores[()]:
            best = ()
        w, loo = fits[best]
        self.classes_ = tuple(best)
        self.scale_ = float(w[0])
        self.class_coef_ = {c: float(v) for c, v in zip(best, w[1:-1], strict=True)}
        self.intercept_ = float(w[-1])
        self.table_ = self._table(space, source_lut, work, best, w)
        self.lut_ = LookupTablePredictor().fit(space, self.table_)
        self.loo_ = loo
        self.candidates_ = {("+".join(c) or "linear-map"): v for c, v in scores.items()}
        self.q_ = conformal_q(loo, y, self.alpha)
        self.alpha_ = self.alpha
        self.n_samples_ = int(y.size)
        return self

    @staticmethod
    def _table(space: SearchSpace, source_lut: dict[str, float],
               work: dict[str, dict[str, float]], classes: tuple[str, ...], w: np.ndarray
               ) -> dict[str, float] | None:
        """t_new(op) = c t_src(op) + sum_g beta_g W_g(op) over the space's distinct ops (None
        when an op's time is not positive)."""
        table = {}
        for op in space.distinct_ops():
            v = w[0] * source_lut[op.key] + sum(b * work[op.key].get(c, 0.0)
                                                for c, b in zip(classes, w[1:-1], strict=True))
            if not v > 0:
                return None
            table[op.key] = float(v)
        return table

    # --- predicting ---------------------------------------------------------------------------
    def indices(self, archs: Sequence[Arch]) -> np.ndarray:
        self._check()
        return self.lut_.indices(list(archs))

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        self._check()
        return np.maximum(self.lut_.predict_indices(idx) + self.intercept_, 1e-6)

    def interval(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) with nominal coverage 1 - alpha_ (leave-one-out conformal)."""
        p = self.predict(archs)
        return p * math.exp(-self.q_), p * math.exp(self.q_)

    # --- the profile record ---------------------------------------------------------------------
    def to_record(self) -> dict:
        """The map as `ProfileRecord.adapted["map"]` holds it (the table is ops.parquet)."""
        self._check()
        return {"method": self.method, "classes": list(self.classes_), "scale": self.scale_,
                "class_coef": self.class_coef_, "intercept_ms": self.intercept_,
                "alpha": self.alpha_, "q": self.q_, "n_samples": self.n_samples_,
                "loo_msle": self.candidates_}

    @classmethod
    def from_profile(cls, profile) -> AdaptedPredictor:  # profile: hwnas.profile.Profile
        """The adapted profile's predictor: its table (ops.parquet) plus the intercept and
        interval of its record's map; a malformed map is one error naming the file."""
        info = profile.record.adapted or {}
        source = f"{profile.root / 'device.json'}: field 'adapted.map'"
        m = info.get("map")
        try:
            method, alpha, q = str(m["method"]), float(m["alpha"]), float(m["q"])
            intercept = float(m["intercept_ms"])
            classes = tuple(str(c) for c in m["classes"])
            scale = float(m["scale"])
            coef = {str(k): float(v) for k, v in dict(m["class_coef"]).items()}
            n = int(m["n_samples"])
        except (KeyError, TypeError, ValueError) as e:
            raise HwnasError(f"{source} is malformed ({type(e).__name__}: {e})") from None
        if not (0 < alpha < 1 and math.isfinite(q) and q >= 0 and math.isfinite(intercept)):
            raise HwnasError(f"{source} holds an invalid alpha, q or intercept")
        self = cls(method if method in METHODS else "kernel-map", alpha)
        self.classes_, self.scale_, self.class_coef_ = classes, scale, coef
        self.intercept_, self.q_, self.alpha_, self.n_samples_ = intercept, q, alpha, n
        self.table_ = profile.lut
        self.lut_ = LookupTablePredictor().fit(profile.space, self.table_)
        self.candidates_ = dict(m.get("loo_msle", {})) if isinstance(m.get("loo_msle"), dict) \
            else {}
        return self


# --------------------------------------------------------------------------- picking the k nets
def support_archs(space: SearchSpace, k: int, source_lut: dict[str, float], seed: int = 0
                  ) -> tuple[list[Arch], str]:
    """The k networks to measure on the new device, and how they were picked: HELP's 10
    reference architectures for `nb201` and `fbnet` (k = 10; HELP's hardware embedding), else k
    networks spread evenly over the source table's latency range (`plan_nets`)."""
    from hwnas.profile.sampling import plan_nets

    if space.name == "nb201" and k == len(HELP_REFERENCE_NB201):
        return [space.from_arch_str(s) for s in HELP_REFERENCE_NB201], \
            "HELP's 10 reference architectures"
    if space.name == "fbnet" and k == len(HELP_REFERENCE_FBNET):
        return [space.from_indices([int(c) for c in s]) for s in HELP_REFERENCE_FBNET], \
            "HELP's 10 reference architectures"
    return plan_nets(space, k, source_lut, seed=seed), \
        f"{k} networks spread over the source's latency range"


def check_archs(space: SearchSpace, n: int, source_lut: dict[str, float], exclude: set[str],
                seed: int = 0) -> list[Arch]:
    """n held-out networks (spread over the latency range, another seed), none in `exclude`
    (net ids)."""
    from hwnas.profile.sampling import net_id, plan_nets

    if n <= 0:
        return []
    pool = plan_nets(space, n + len(exclude), source_lut, seed=seed + 1)
    out = [a for a in pool if net_id(a) not in exclude][:n]
    return out


# --------------------------------------------------------------------------- the flow
@dataclass
class AdaptConfig:
    """`hwnas adapt`: the source profile, the new device and where the adapted profile goes."""

    source: Path
    out: Path
    device: str | None = None  # default: the source's backend
    threads: int | None = None  # default: the source's
    samples: int = 10
    check: int = 0
    pool: tuple[Path, ...] = ()
    method: str = "kernel-map"
    seed: int = 0
    quick: bool = False  # the quick timing protocol (tests, the demo)

    def __post_init__(self) -> None:
        self.source, self.out = Path(self.source), Path(self.out)
        if self.samples < 3:
            raise HwnasError(f"--samples must be >= 3, got {self.samples}")
        if self.check < 0:
            raise HwnasError(f"--check must be >= 0, got {self.check}")
        if self.threads is not None and self.threads < 1:
            raise HwnasError(f"--threads must be >= 1, got {self.threads}")
        if self.method not in METHODS:
            raise HwnasError(f"unknown --method {self.method!r}; choose one of "
                             f"{', '.join(METHODS)}")
        if self.out.resolve() == self.source.resolve():
            raise HwnasError("--out must be a new folder, not the source profile")


@dataclass
class AdaptResult:
    """What `adapt_profile` did: the adapted profile, its predictor, the source chosen, how
    the k nets were picked, and the validation on the check nets (None without --check)."""

    root: Path
    predictor: AdaptedPredictor
    source: Path
    picked: str
    check: dict | None


def _pool_sources(config: AdaptConfig, first) -> list:
    """The source profile `first` and every profile under the --pool folders with the same
    space and settings (the linear map picks the one that fits the samples best)."""
    from hwnas.profile.reader import Profile

    space = first.space
    if not len(first.ops):
        raise HwnasError(f"{config.source}: the profile has no lookup table (ops.parquet): "
                         "adapting needs the per-op times of the source")
    if first.record.adapted:
        raise HwnasError(f"{config.source} is itself an adapted profile; adapt from a "
                         "measured one")
    out = [first]
    for folder in config.pool:
        folder = Path(folder)
        if not folder.is_dir():
            raise HwnasError(f"--pool {folder} is not a folder")
        for path in sorted(p.parent for p in folder.glob("*/device.json")):
            if path.resolve() in {p.root.resolve() for p in out} or \
                    path.resolve() == config.out.resolve():
                continue
            prof = Profile.load(path)
            if prof.record.adapted or not len(prof.ops) or \
                    prof.space.settings() != space.settings() or prof.space.name != space.name:
                continue
            out.append(prof)
    return out


def adapt_profile(config: AdaptConfig, progress: Callable[[str, int, int], None] | None = None,
                  log: Callable[[str], None] | None = None, resume: bool = False) -> AdaptResult:
    """`hwnas adapt`: measure the k support nets (and `check` held-out nets) of the source
    profile's space on the new device with the normal protocol (`Profiler`, resumable), fit
    `AdaptedPredictor` on the support nets of each candidate source (the --from profile, then
    the --pool profiles of the same space; the lowest leave-one-out error wins), and write the
    adapted profile: ops.parquet = the adapted table, nets.parquet = the measured nets, the
    record's `adapted` = the source, k, the map and the check."""
    from hwnas._io import write_json
    from hwnas.devices.measurement import Protocol
    from hwnas.profile.drift import correct_drift
    from hwnas.profile.profiler import ProfileConfig, Profiler
    from hwnas.profile.reader import Profile
    from hwnas.profile.record import read_record, write_record
    from hwnas.profile.sampling import net_id
    from hwnas.profile.store import read_parquet, write_parquet

    log = log or (lambda msg: None)
    source = Profile.load(config.source)
    space = source.space
    sources = _pool_sources(config, source)
    device = config.device or source.record.backend
    if not device or device == "imported":
        raise HwnasError(f"{config.source} names no backend to measure with; pass --device")
    threads = config.threads or source.record.threads
    root = config.out
    if (root / "device.json").exists():
        rec = read_record(root)
        if not resume:
            raise HwnasError(f"{root} already holds a profile; pass --resume to finish adapting "
                             "it or choose another --out")
        if not (rec.nets_only or rec.adapted) or rec.imported:
            raise HwnasError(f"{root} is a measured profile, not an adapted one; choose "
                             "another --out")
    support, picked = support_archs(space, config.samples, source.lut, config.seed)
    support_ids = [net_id(a) for a in support]
    held = check_archs(space, config.check, source.lut, set(support_ids), config.seed)
    plan = root / "plan.json"
    if not plan.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_json(plan, {"archs": [a.to_dict() for a in [*support, *held]],
                          "support": support_ids})
    protocol = Protocol.quick() if config.quick else Protocol()
    s = space.settings()
    pconf = ProfileConfig(device=device, space=space.name, resolution=s["resolution"],
                          width=s["width"], threads=threads, nets=len(support) + len(held),
                          out=root, seed=config.seed, measure_ops=False, protocol=protocol)
    exists = (root / "device.json").exists()
    if not (exists and read_record(root).adapted is not None):  # adapted: every net is measured
        # nets only: until the map is written the folder is a measured nets-only profile
        Profiler(pconf, progress=progress, log=log).run(resume=exists)
    record = read_record(root)
    if record.status != "complete":
        raise HwnasError(f"{root}: measuring stopped before every net was timed; rerun with "
                         "--resume")
    nets = read_parquet(root / "nets.parquet")
    _, nets = correct_drift(pd.DataFrame(), nets)
    ms = dict(zip(nets["net_id"], nets["median_ms"].astype(float), strict=True))
    y_sup = np.array([ms[i] for i in support_ids])
    best: tuple[float, Any, Any] | None = None
    for prof in sources:
        pred = AdaptedPredictor(config.method).fit(space, prof.lut, support, y_sup)
        err = pred.candidates_[("+".join(pred.classes_) or "linear-map")]
        if best is None or err < best[0]:
            best = (err, pred, prof)
    assert best is not None
    _, predictor, chosen = best
    log(f"adapted from {chosen.root.name}: {predictor.name}, leave-one-out log error "
        f"{math.sqrt(best[0]):.3f}")
    # the adapted table, one row per op with the source row's fields
    ops = chosen.ops.drop(columns=[c for c in chosen.ops.columns if c.endswith("_ms") or c in
                                   ("cv", "n", "warmup", "flagged", "measured_at")],
                          errors="ignore").copy()
    ops = ops[ops["key"].isin(predictor.table_)]
    ops["source"] = "adapted"
    ops["median_ms"] = ops["key"].map(predictor.table_).astype(float)
    write_parquet(root / "ops.parquet", ops.reset_index(drop=True))
    check = None
    if held:
        held_ids = [net_id(a) for a in held]
        y = np.array([ms[i] for i in held_ids])
        lo, hi = predictor.interval(held)
        zero = LookupTablePredictor().fit(space, chosen.lut).predict(held)
        check = {"n": len(held),
                 "adapted": {**accuracy(y, predictor.predict(held), lo, hi),
                             "nominal_coverage": predictor.coverage},
                 "zero_shot": accuracy(y, zero), "net_ids": held_ids}
    adapted = {
        "source": chosen.root.name, "source_fingerprint": chosen.record.fingerprint,
        "source_backend": chosen.record.backend, "k": len(support), "picked": picked,
        "support": support_ids, "candidates": [p.root.name for p in sources],
        "map": predictor.to_record(), "check": check,
    }
    record = replace(record, adapted=adapted, nets_only=False,
                     notes=(f"adapted from profile {chosen.root.name} with {len(support)} "
                            f"measured networks; ops.parquet holds the adapted table, "
                            f"not measurements"))
    write_record(root, record.updated_now())
    Profile.load(root)  # the written profile loads (a clear error now, not at search time)
    return AdaptResult(root, predictor, chosen.root, picked, check)


__all__ = ["HELP_REFERENCE_FBNET", "HELP_REFERENCE_NB201", "METHODS", "AdaptConfig",
           "AdaptResult", "AdaptedPredictor", "adapt_profile", "check_archs", "kernel_work",
           "support_archs", "work_table"]
