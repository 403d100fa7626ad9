"""Held-out accuracy of a profile's predictors: FLOPs-linear, lookup-table sum, learned correction."""

from __future__ import annotations

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.learned import NetworkPredictor
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.metrics import accuracy
from hwnas.latency.op_predictor import OpPredictor
from hwnas.profile.reader import Profile

MIN_SPLIT = 5  # nets on each side of a train/test split (5-fold CV needs 5 to train)


def split(n: int, test_frac: float = 0.4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/test split of n items."""
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * (1 - test_frac)))
    return np.sort(perm[:k]), np.sort(perm[k:])


def flops_linear(macs_train: np.ndarray, y_train: np.ndarray, macs_test: np.ndarray
                 ) -> np.ndarray:
    """The FLOPs proxy as a predictor: latency ~ a * MACs + b, least squares on the train nets."""
    a, b = np.polyfit(macs_train, y_train, 1)
    return a * macs_test + b


def validate(profile: Profile, test_frac: float = 0.4, seed: int = 0, alpha: float = 0.1
             ) -> dict:
    """Fit on a train split of the profile's nets, report metrics on the held-out rest."""
    if not 0.0 < test_frac < 1.0:
        raise HwnasError(f"test_frac must be within (0, 1), got {test_frac}")
    if not 0.0 < alpha < 1.0:
        raise HwnasError(f"alpha (interval miscoverage) must be within (0, 1), got {alpha}")
    archs, y = profile.archs(), profile.net_latency()
    if len(archs) < 20:
        raise HwnasError(f"{profile.root}: validation needs at least 20 measured networks, "
                         f"the profile has {len(archs)}")
    tr, te = split(len(archs), test_frac, seed)
    if min(tr.size, te.size) < MIN_SPLIT:
        raise HwnasError(f"test_frac {test_frac} leaves {tr.size} training and {te.size} "
                         f"held-out nets of {len(archs)}; each side needs at least {MIN_SPLIT}")
    lut = LookupTablePredictor.from_profile(profile)
    a_tr, a_te = [archs[i] for i in tr], [archs[i] for i in te]
    macs = profile.nets["macs"].to_numpy(dtype=float)
    learned = NetworkPredictor(alpha=alpha, seed=seed).fit(lut, a_tr, y[tr])
    lo, hi = learned.interval(a_te)
    results = {
        "flops_linear": accuracy(y[te], flops_linear(macs[tr], y[tr], macs[te])),
        "lut_sum": accuracy(y[te], lut.predict(a_te)),
        "learned": {**accuracy(y[te], learned.predict(a_te), lo, hi),
                    "family": learned.family_, "nominal_coverage": 1 - alpha},
    }
    heldout = {"net_id": [str(profile.nets["net_id"].iloc[i]) for i in te],
               "measured_ms": y[te].tolist(), "lut_ms": lut.predict(a_te).tolist(),
               "learned_ms": learned.predict(a_te).tolist(), "lo_ms": lo.tolist(),
               "hi_ms": hi.tolist()}
    return {"profile": profile.name, "n_train": int(tr.size), "n_test": int(te.size),
            "seed": seed, "cv_mape": learned.cv_mape_, "results": results, "heldout": heldout}


def report_rows(report: dict) -> list[dict[str, str]]:
    """The rows of a `validate` report as printed (`hwnas validate`) and shown (`hwnas report`)."""
    rows = []
    for name, r in report["results"].items():
        rows.append({"predictor": f"learned ({r['family']})" if "family" in r else name,
                     "within 5%": f"{r['within_5']:.1%}", "within 10%": f"{r['within_10']:.1%}",
                     "RMSPE": f"{r['rmspe']:.2%}", "MAPE": f"{r['mape']:.2%}",
                     "bias": f"{r['bias']:+.2%}", "Kendall tau": f"{r['kendall_tau']:.3f}",
                     "Spearman rho": f"{r['spearman_rho']:.3f}" if "spearman_rho" in r else "-",
                     "coverage": f"{r['coverage']:.0%} (nominal {r['nominal_coverage']:.0%})"
                     if "coverage" in r else "-"})
    return rows


def fit_and_save(profile: Profile, alpha: float = 0.1, seed: int = 0) -> NetworkPredictor:
    """Fit the learned predictor on all of the profile's nets, the op predictor on all its ops
    and, when it has kernel measurements, the kernel predictor (any-model prediction, `hwnas
    predict MODEL.onnx`); save them inside the profile."""
    lut = LookupTablePredictor.from_profile(profile)
    model = NetworkPredictor(alpha=alpha, seed=seed).fit(lut, profile.archs(),
                                                        profile.net_latency())
    model.save(profile.root)
    if len(profile.ops) >= 2:
        OpPredictor().fit(profile.ops).save(profile.root)
    from hwnas.latency.kernels import load_or_fit

    load_or_fit(profile, save=True)  # the kernel predictor, when the profile has kernel nets
    return model


def validate_profile(profile: Profile, test_frac: float = 0.4, seed: int = 0,
                     alpha: float = 0.1, save: bool = True
                     ) -> tuple[dict, NetworkPredictor | None]:
    """The `hwnas validate` flow (the demo runs it too): held-out accuracy of every predictor
    (`validate`) written to `<profile>/validation.json`; then, with `save`, the learned and op
    predictors fitted on all nets and ops and saved in the profile (`fit_and_save`)."""
    from hwnas._io import write_json

    report = validate(profile, test_frac, seed, alpha)
    write_json(profile.root / "validation.json", report)
    model = fit_and_save(profile, alpha=alpha, seed=seed) if save else None
    return report, model
