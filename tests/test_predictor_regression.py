"""Regression test of predictor accuracy on the shipped profiles.

Every shipped profile `profiles/*/` carries the `validation.json` that `hwnas validate --profile
DIR` wrote (`hwnas.latency.validate.validate_profile`): held-out metrics of the FLOPs-linear
proxy, the lookup-table sum and the learned predictor. Here the same held-out validation is run
again (`validate` with the seed and test fraction the stored report used) on whatever profile
data is there now, and the fresh figures must not fall below the stored ones by more than a
noise margin.

The profiles are read at collection time, not hard-coded: a profile re-measured while this file
runs is picked up as it is. A profile that is still being measured (device.json status is not
"complete") is skipped; one whose validation.json no longer describes its data (other held-out
nets or other measured times: re-measured, `hwnas validate` not rerun) fails
`test_validation_json_describes_the_profile_data`, and the accuracy comparison is skipped for it
since the stored figures are then about other data.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from hwnas.latency.validate import report_rows, split, validate
from hwnas.profile.reader import Profile

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent for p in (ROOT / "profiles").glob("*/validation.json"))
TEST_FRAC = 0.4  # `validate`'s and `hwnas validate`'s default; checked against n_test below

# Noise margins. `validate` is deterministic given the data and the seeds: the split is a seeded
# numpy permutation, KFold and every scikit-learn family take random_state=seed, so on the same
# library versions the figures are reproduced exactly (they are, here: every metric equal to the
# stored one). The margins only absorb library-version differences in model fitting (another
# scikit-learn's tree splits or MLP solver, another BLAS's rounding in least squares), which can
# move a few held-out nets across the 5%/10% lines or change which family wins cross-validation.
# With 80 held-out nets one net is 1.25 points: 5 points is 4 nets flipping at once, far beyond
# rounding and well short of a real regression (a broken feature or table sum moves tens of
# points). Errors (RMSPE, MAPE, RMSE) may grow by 10% of the stored value plus 0.5 points;
# Kendall tau may drop by 0.02.
#   metric: (direction, absolute margin, relative margin); +1 higher is better, -1 lower is.
MARGINS = {
    "within_5": (+1, 0.05, 0.0),
    "within_10": (+1, 0.05, 0.0),
    "kendall_tau": (+1, 0.02, 0.0),
    "rmspe": (-1, 0.005, 0.10),
    "mape": (-1, 0.005, 0.10),
    "rmse_ms": (-1, 0.0, 0.10),
}

_FRESH: dict[Path, tuple[dict, float]] = {}  # one validation run per profile, shared by tests


def _stored(root: Path) -> dict:
    path = root / "validation.json"
    if not path.is_file():
        pytest.skip(f"{path} is gone (the profile is being replaced)")
    return json.loads(path.read_text())


def _profile(root: Path) -> Profile:
    if not (root / "device.json").is_file():
        pytest.skip(f"{root} has no device.json (the profile is being replaced)")
    prof = Profile.load(root)
    if prof.record.status != "complete":
        pytest.skip(f"{root.name} is {prof.record.status!r}, not complete (being measured)")
    return prof


def _stale(prof: Profile, stored: dict) -> str:
    """Why the stored report is not about this profile's data ("" when it is)."""
    n = len(prof.nets)
    if stored["n_train"] + stored["n_test"] != n:
        return (f"validation.json has {stored['n_train']} + {stored['n_test']} nets, the "
                f"profile {n}")
    _, te = split(n, TEST_FRAC, stored["seed"])
    if te.size != stored["n_test"]:
        return f"test fraction {TEST_FRAC} gives {te.size} held-out nets, stored {stored['n_test']}"
    ids = [str(prof.nets["net_id"].iloc[i]) for i in te]
    if ids != stored["heldout"]["net_id"]:
        return "the held-out net ids differ from the seeded split of the profile's nets"
    measured = prof.net_latency()[te]
    if not np.allclose(measured, stored["heldout"]["measured_ms"], rtol=1e-9, atol=0.0):
        worst = float(np.max(np.abs(measured / np.asarray(stored["heldout"]["measured_ms"]) - 1)))
        return f"the held-out nets' measured times differ (by up to {worst:.1%})"
    return ""


def _fresh(root: Path, prof: Profile, stored: dict) -> tuple[dict, float]:
    if root not in _FRESH:
        t0 = time.perf_counter()
        report = validate(prof, test_frac=TEST_FRAC, seed=stored["seed"],
                          alpha=1 - stored["results"]["learned"]["nominal_coverage"])
        _FRESH[root] = report, time.perf_counter() - t0
    return _FRESH[root]


def test_shipped_profiles_have_validation_reports() -> None:
    assert PROFILES, "no profiles/*/validation.json found: run `hwnas validate --profile DIR`"


@pytest.mark.parametrize("root", PROFILES, ids=[p.name for p in PROFILES])
def test_validation_json_describes_the_profile_data(root: Path) -> None:
    """The stored held-out set is the seeded split of the profile's nets, with their times."""
    stored, prof = _stored(root), _profile(root)
    assert set(stored["results"]) == {"flops_linear", "lut_sum", "learned"}
    why = _stale(prof, stored)
    assert not why, f"{root}/validation.json is stale ({why}): rerun `hwnas validate " \
                    f"--profile {root}`"


@pytest.mark.parametrize("root", PROFILES, ids=[p.name for p in PROFILES])
def test_heldout_accuracy_not_below_the_stored_report(root: Path) -> None:
    stored, prof = _stored(root), _profile(root)
    why = _stale(prof, stored)
    if why:
        pytest.skip(f"validation.json is stale ({why}); see "
                    "test_validation_json_describes_the_profile_data")
    fresh, seconds = _fresh(root, prof, stored)
    print(f"\n{root.name}: validation refitted in {seconds:.1f} s, learned family "
          f"{fresh['results']['learned']['family']} (stored "
          f"{stored['results']['learned']['family']})")
    for row in report_rows(fresh):
        print("  " + "  ".join(f"{k} {v}" for k, v in row.items()))
    assert fresh["heldout"]["net_id"] == stored["heldout"]["net_id"]
    assert (fresh["n_train"], fresh["n_test"]) == (stored["n_train"], stored["n_test"])
    worse = []
    for predictor, old in stored["results"].items():
        new = fresh["results"][predictor]
        for metric, (direction, absolute, relative) in MARGINS.items():
            if metric not in old:
                continue
            a, b = float(old[metric]), float(new[metric])
            assert math.isfinite(b), f"{predictor} {metric} is {b}"
            margin = absolute + relative * abs(a)
            if direction * (b - a) < -margin:
                worse.append(f"{predictor} {metric}: {b:.4g} (stored {a:.4g}, margin "
                             f"{margin:.3g})")
    assert not worse, f"{root.name}: held-out accuracy fell below validation.json:\n  " + \
        "\n  ".join(worse)


@pytest.mark.parametrize("root", PROFILES, ids=[p.name for p in PROFILES])
def test_learned_predictor_still_beats_the_table_sum(root: Path) -> None:
    """What the learned correction is for: on held-out nets it is at least as accurate as the
    plain table sum it corrects (`lut` is one of its candidate families, so cross-validation
    only picks a correction that helped), within the same noise margin."""
    stored, prof = _stored(root), _profile(root)
    if _stale(prof, stored):
        pytest.skip("validation.json is stale; see test_validation_json_describes_the_profile_data")
    fresh, _ = _fresh(root, prof, stored)
    learned, lut = fresh["results"]["learned"], fresh["results"]["lut_sum"]
    assert learned["within_10"] >= lut["within_10"] - 0.05
    assert learned["rmspe"] <= lut["rmspe"] * 1.10 + 0.005
