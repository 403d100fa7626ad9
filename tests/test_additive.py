"""`AdditivePredictor`: a lookup table learned from whole networks (nets-only profiles).

A planted additive latency model (per-choice costs with a part that grows with the pixels, as the
predictor assumes) must be recovered; the conformal interval must cover about 1 - alpha of held-out
nets; the table at a resolution must price exactly as `predict`; bad input is refused. The HELP
OFA file, when `../shared/data` is present, checks the fit on real published GPU latencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.additive import AdditivePredictor
from hwnas.latency.importers import import_latency_csv
from hwnas.profile.reader import Profile
from hwnas.space import get_space
from hwnas.space.ofa import OFASpace

HELP_OFA = Path(__file__).resolve().parents[2] / "shared" / "data" / "latency" / \
    "ofa_mbv3_latency_help.csv"


def _planted(n: int, seed: int, noise: float = 0.0):
    """n OFA archs at random resolutions with latency = an additive model (+ relative noise)."""
    space = OFASpace(224)
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.05, 0.5, size=(20, 10))
    b = rng.uniform(0.1, 1.0, size=(20, 10))
    skip = space.layers[2].choices.index("skip")
    archs, ys = [], []
    for _ in range(n):
        arch = space.sample(rng)
        r = int(rng.choice(np.arange(128, 225, 4)))
        arch = space.at(r).arch(arch.choices)
        idx = space.canonical_indices(np.array(space.indices(arch)))
        s = (r / 224) ** 2
        y = 2.0 + 3.0 * s
        for i, j in enumerate(idx):
            if not (j == skip and "skip" in space.layers[i].choices):
                y += a[i, j] + b[i, j] * s
        archs.append(arch)
        ys.append(y * (1 + noise * rng.standard_normal()))
    return space, archs, np.array(ys)


def test_recovers_a_planted_additive_model() -> None:
    space, archs, y = _planted(1200, seed=0)
    model = AdditivePredictor().fit(space, archs[:1000], y[:1000])
    pred = model.predict(archs[1000:])
    assert np.max(np.abs(pred - y[1000:]) / y[1000:]) < 0.01
    assert model.elastic_ and model.cv_mape_ < 0.01 and model.n_train_ == 1000


def test_table_at_a_resolution_prices_as_predict() -> None:
    space, archs, y = _planted(400, seed=1, noise=0.02)
    model = AdditivePredictor().fit(space, archs, y)
    for r in (128, 176, 224):
        table, fixed = model.table_at(r)
        sub = [a for a in archs if a.resolution == r][:10] or [space.at(r).arch(archs[0].choices)]
        idx = space.canonical_indices(model.indices(sub))
        by_table = fixed + table[np.arange(20)[None, :], idx].sum(1)
        np.testing.assert_allclose(by_table, model.predict(sub), rtol=1e-9)
    # the space's resolution: `table_`, `fixed_ms_` and `predict_indices` agree
    idx = model.indices(archs[:20])
    np.testing.assert_allclose(model.fixed_ms_ + model.table_[np.arange(20)[None, :],
                                                             space.canonical_indices(idx)].sum(1),
                               model.predict_indices(idx), rtol=1e-9)
    # skip costs nothing; a layer without skip has its cheapest entry moved into the fixed part
    for i, layer in enumerate(space.layers):
        row = model.table_[i, :len(layer.choices)]
        if "skip" in layer.choices:
            assert row[layer.choices.index("skip")] == 0.0
        else:
            assert np.nanmin(row) == pytest.approx(0.0, abs=1e-12)


def test_interval_covers_held_out_nets() -> None:
    space, archs, y = _planted(1500, seed=2, noise=0.05)
    model = AdditivePredictor(alpha=0.1).fit(space, archs[:1000], y[:1000])
    lo, hi = model.interval(archs[1000:])
    covered = np.mean((y[1000:] >= lo) & (y[1000:] <= hi))
    assert model.coverage == pytest.approx(0.9)
    assert 0.85 <= covered <= 0.96


def test_a_space_without_elastic_resolution() -> None:
    space = get_space("fbnet")
    rng = np.random.default_rng(3)
    cost = rng.uniform(0.1, 1.0, size=(len(space.layers), 9))
    archs = [space.sample(rng) for _ in range(300)]
    y = np.array([1.0 + sum(cost[i, j] for i, j in enumerate(space.indices(a))) for a in archs])
    model = AdditivePredictor().fit(space, archs[:250], y[:250])
    assert not model.elastic_
    np.testing.assert_allclose(model.predict(archs[250:]), y[250:], rtol=1e-3)


def test_bad_input_is_refused(tmp_path) -> None:
    space, archs, y = _planted(40, seed=4)
    with pytest.raises(HwnasError, match="40 archs but 39 latencies"):
        AdditivePredictor().fit(space, archs, y[:39])
    with pytest.raises(HwnasError, match="at least 10 measured networks"):
        AdditivePredictor().fit(space, archs[:5], y[:5])
    bad = y.copy()
    bad[3] = -1.0
    with pytest.raises(HwnasError, match="finite and positive"):
        AdditivePredictor().fit(space, archs, bad)
    with pytest.raises(HwnasError, match="alpha"):
        AdditivePredictor(alpha=1.5)


def test_from_a_nets_only_profile(tmp_path) -> None:
    space, archs, y = _planted(600, seed=5, noise=0.01)
    rows = [{**space.to_help_row(a), "dev_ms": float(ms)} for a, ms in zip(archs, y, strict=True)]
    csv = tmp_path / "ofa.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    prof = Profile.load(import_latency_csv(csv, "dev", tmp_path / "prof"))
    model = AdditivePredictor.from_profile(prof)
    assert model.name == "additive:dev" and model.n_train_ == 600
    assert model.cv_mape_ < 0.03


@pytest.mark.skipif(not HELP_OFA.exists(), reason="../shared/data (HELP's OFA latencies) absent")
def test_help_ofa_gpu_latencies_are_close_to_additive() -> None:
    """On HELP's published titan_rtx batch-64 latencies (a compute-bound GPU setting) an additive
    table predicts held-out nets within a few percent (a check of the form, not a benchmark)."""
    df = pd.read_csv(HELP_OFA)
    space = OFASpace(224)
    archs = [space.from_help_row(r) for r in df.to_dict("records")]
    y = df["titan_rtx_64_ms"].to_numpy()
    model = AdditivePredictor().fit(space, archs[:4000], y[:4000])
    err = np.abs(model.predict(archs[4000:]) - y[4000:]) / y[4000:]
    assert np.mean(err) < 0.05
