"""Profiles as predictors: validation of the files, the lookup table, the learned correction."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.latency.learned import NetworkPredictor
from hwnas.latency.lut import LookupTablePredictor
from hwnas.latency.validate import fit_and_save, validate
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.reader import Profile


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "ort-cpu-1t-proxyless-32"
    Profiler(ProfileConfig(device="ort-cpu", space="proxyless", resolution=32, nets=40,
                           out=out, protocol=Protocol.quick())).run()
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_profile_loads_and_lut_is_the_sum_of_ops(small_profile):
    prof = Profile.load(small_profile)
    lut = LookupTablePredictor.from_profile(prof)
    archs = prof.archs()
    table = prof.lut
    by_hand = [sum(table[op.key] for op in prof.space.ops(a)) for a in archs]
    assert np.allclose(lut.predict(archs), by_hand)


def test_lut_extremes_are_the_fastest_and_slowest(small_profile):
    lut = LookupTablePredictor.from_profile(Profile.load(small_profile))
    fast, slow = lut.extremes()
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, len(layer.choices), 2000) for layer in lut.space_.layers], 1)
    lat = lut.predict_indices(idx)
    f, s = lut.predict([fast, slow])
    assert f <= lat.min() + 1e-12 and s >= lat.max() - 1e-12


def test_expected_latency_of_a_one_hot_distribution_is_the_lut_sum(small_profile):
    lut = LookupTablePredictor.from_profile(Profile.load(small_profile))
    arch = lut.space_.sample(3)
    idx = lut.indices([arch])[0]
    probs = np.zeros_like(lut.table_)
    probs[np.arange(len(idx)), idx] = 1.0
    assert lut.expected(probs) == pytest.approx(float(lut.predict([arch])[0]))


@pytest.mark.parametrize("damage,message", [
    ("drop_column", "required column(s) missing: median_ms"),
    ("nan", "has missing values"),
    ("schema", "schema_version 99 is not supported"),
    ("negative", "must be positive milliseconds"),
    ("no_device", "device.json is missing"),
    ("bad_json", "malformed JSON"),
])
def test_damaged_profile_is_refused_with_a_clear_message(small_profile, tmp_path, damage,
                                                         message):
    root = _copy(small_profile, tmp_path / "p")
    ops = pd.read_parquet(root / "ops.parquet")
    device = json.loads((root / "device.json").read_text())
    if damage == "drop_column":
        ops.drop(columns=["median_ms"]).to_parquet(root / "ops.parquet")
    elif damage == "nan":
        ops.loc[3, "median_ms"] = np.nan
        ops.to_parquet(root / "ops.parquet")
    elif damage == "negative":
        ops.loc[0, "median_ms"] = -1.0
        ops.to_parquet(root / "ops.parquet")
    elif damage == "schema":
        device["schema_version"] = 99
        (root / "device.json").write_text(json.dumps(device))
    elif damage == "no_device":
        (root / "device.json").unlink()
    elif damage == "bad_json":
        (root / "device.json").write_text("{not json")
    with pytest.raises(HwnasError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Profile.load(root)


def test_learned_predictor_round_trips_through_its_safe_file(small_profile, tmp_path):
    root = _copy(small_profile, tmp_path / "p")
    prof = Profile.load(root)
    model = fit_and_save(prof)
    assert (root / "predictor.json").exists()
    assert not list(root.glob("*.pkl"))
    lut = LookupTablePredictor.from_profile(prof)
    again = NetworkPredictor.load(root, lut)
    archs = [prof.space.sample(s) for s in range(20)]
    assert again.family_ == model.family_
    assert np.allclose(again.predict(archs), model.predict(archs))
    lo, hi = again.interval(archs)
    assert np.all(lo <= again.predict(archs)) and np.all(again.predict(archs) <= hi)


def test_predictor_file_with_foreign_types_is_refused(small_profile, tmp_path):
    import skops.io as sio

    root = _copy(small_profile, tmp_path / "p")
    prof = Profile.load(root)
    fit_and_save(prof)
    meta = json.loads((root / "predictor.json").read_text())
    meta["family"] = "gbr"
    (root / "predictor.json").write_text(json.dumps(meta))
    (root / "predictor.skops").write_bytes(sio.dumps({"f": pd.Timestamp("2020-01-01")}))
    with pytest.raises(HwnasError, match="refusing to load types"):
        NetworkPredictor.load(root, LookupTablePredictor.from_profile(prof))


def test_learned_correction_fixes_a_systematic_bias():
    """A synthetic device where every net costs 1.3x its table sum + 0.5 ms: learned fixes it."""
    from hwnas.space import get_space

    space = get_space("proxyless", resolution=32)
    lut = {op.key: 0.01 + op.macs / 1e7 for op in space.distinct_ops()}
    table = LookupTablePredictor().fit(space, lut)
    archs = [space.sample(s) for s in range(80)]
    y = 1.3 * table.predict(archs) + 0.5
    model = NetworkPredictor(families=("lut", "linear", "gbr")).fit(table, archs[:60], y[:60])
    assert model.family_ == "linear"
    assert np.allclose(model.predict(archs[60:]), y[60:], rtol=1e-6)
    assert model.linear_correction()[0] == pytest.approx(1.3)


def test_validate_reports_all_three_predictors(small_profile):
    report = validate(Profile.load(small_profile))
    assert set(report["results"]) == {"flops_linear", "lut_sum", "learned"}
    learned = report["results"]["learned"]
    assert 0 <= learned["coverage"] <= 1 and learned["family"]
    assert report["n_train"] + report["n_test"] == 40


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_validate_and_predict(small_profile, tmp_path):
    root = _copy(small_profile, tmp_path / "p")
    res = _cli("validate", "--profile", str(root))
    assert res.returncode == 0, res.stderr
    assert (root / "validation.json").exists() and "learned" in res.stdout
    res = _cli("predict", "--profile", str(root), "--smallest", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["latency_ms"] > 0 and len(out["interval_ms"]) == 2 and out["ops"]
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(out["arch"]))
    res = _cli("predict", str(arch_path), "--profile", str(root), "--json")
    assert json.loads(res.stdout)["latency_ms"] == pytest.approx(out["latency_ms"])
    res = _cli("predict", "--profile", str(root))
    assert res.returncode == 2 and "exactly one" in res.stderr


def test_drift_correction_scales_rows_by_their_reference():
    from hwnas.profile.drift import correct_drift

    ops = pd.DataFrame({"key": ["a", "b"], "median_ms": [1.0, 2.0], "min_ms": [0.9, 1.8],
                        "reference_ms": [10.0, 12.0]})
    nets = pd.DataFrame({"net_id": ["n"], "median_ms": [30.0], "reference_ms": [11.0]})
    ops2, nets2 = correct_drift(ops, nets)
    base = 11.0  # median of the three reference timings
    assert ops2["median_ms"].tolist() == pytest.approx([1.0 * base / 10, 2.0 * base / 12])
    assert ops2["min_ms"].tolist() == pytest.approx([0.9 * base / 10, 1.8 * base / 12])
    assert ops2["raw_median_ms"].tolist() == [1.0, 2.0]
    assert nets2["median_ms"].tolist() == pytest.approx([30.0])
    plain = pd.DataFrame({"key": ["a"], "median_ms": [1.0]})
    assert correct_drift(plain, pd.DataFrame())[0] is plain


def test_profile_rows_carry_the_in_chunk_reference(small_profile):
    prof = Profile.load(small_profile)
    assert "reference_ms" in prof.ops.columns and "reference_ms" in prof.nets.columns
    assert (prof.ops["raw_median_ms"] > 0).all()


# --- the predictor interface, one-arch predictions ----------------------------------------------
def test_predictors_share_the_latency_predictor_interface():
    from hwnas.latency import LatencyPredictor
    from hwnas.search.run import expected_latency_fit
    from hwnas.space import get_space

    space = get_space("proxyless", resolution=32)
    table = LookupTablePredictor().fit(space, {op.key: 0.01 + op.macs / 1e7
                                               for op in space.distinct_ops()})
    archs = [space.sample(s) for s in range(60)]
    y = 1.3 * table.predict(archs) + 0.5
    model = NetworkPredictor(families=("lut", "linear"), alpha=0.1).fit(table, archs, y)
    for p in (table, model):
        assert isinstance(p, LatencyPredictor)
        assert np.allclose(p.predict(archs[:5]), p.predict_indices(table.indices(archs[:5])))
    assert table.name == "lut" and table.interval(archs) is None and table.coverage is None
    assert model.name == "learned (linear)" and model.coverage == pytest.approx(0.9)
    lo, hi = model.interval(archs[:5])
    assert np.all(lo <= model.predict(archs[:5])) and np.all(model.predict(archs[:5]) <= hi)
    # E[LAT] follows the predictor: exactly the table for the table, the line for a linear one
    assert expected_latency_fit(table, table)[:2] == (1.0, 0.0)
    scale, offset, note = expected_latency_fit(model, table)
    assert (scale, offset) == pytest.approx(model.linear_correction(), rel=1e-6)
    assert note.startswith("linear correction")


def test_predict_one_arch_gives_latency_breakdown_and_name(small_profile):
    from hwnas.latency import Prediction, predict
    from hwnas.space import Arch

    prof = Profile.load(small_profile)
    arch = prof.archs()[0]
    p = predict(prof, arch, LookupTablePredictor.from_profile(prof))
    assert isinstance(p, Prediction) and p.predictor == "lut" and p.interval is None
    assert p.ms == pytest.approx(sum(o["ms"] for o in p.breakdown))
    assert {o["source"] for o in p.breakdown} == {"table"} and p.note == ""
    # another number of classes: the head is priced by the op predictor
    ten = Arch(arch.space, arch.choices, arch.resolution, arch.width, 10, arch.channels)
    q = predict(prof, ten, LookupTablePredictor.from_profile(prof))
    assert "10-class head priced by the op predictor" in q.note
    assert "op predictor" in {o["source"] for o in q.breakdown}
    assert q.ms == pytest.approx(sum(o["ms"] for o in q.breakdown))
    wrong = Arch(arch.space, arch.choices, 64, arch.width, 10, arch.channels)
    with pytest.raises(HwnasError, match="resolution=64"):
        predict(prof, wrong)


# --- the profile record -------------------------------------------------------------------------
def test_shipped_profile_records_load_and_round_trip_unchanged():
    from pathlib import Path

    from hwnas.profile.record import ProfileRecord, read_record

    roots = sorted((Path(__file__).resolve().parents[1] / "profiles").glob("*/device.json"))
    assert roots
    for path in roots:
        record = read_record(path.parent)
        assert isinstance(record, ProfileRecord) and record.reference is not None
        assert record.to_dict() == json.loads(path.read_text())


@pytest.mark.parametrize("change,message", [
    ({"space": 3}, "field 'space' must be a string, got int"),
    ({"fingerprint": []}, "field 'fingerprint' must be an object"),
    ({"wall_s": "long"}, "field 'wall_s' must be a number"),
    ({"nets_requested": True}, "field 'nets_requested' must be an integer"),
    ({"reference": {"arch": {"space": "proxyless"}}}, "field 'reference.arch' is not an arch"),
    ({"reference": {"arch": {"space": "p", "choices": []}, "timings": [[1, 2]]}},
     "field 'reference.timings' must hold"),
    ({"space_settings": None}, "field 'space_settings' must be an object"),
])
def test_record_fields_are_type_checked_naming_file_and_field(change, message):
    from hwnas.profile.record import ProfileRecord

    good = {"schema_version": 1, "space": "proxyless", "space_settings": {"resolution": 32},
            "fingerprint": {}, "unmatched_entries": ["x"]}
    record = ProfileRecord.from_dict(good, "p/device.json")
    assert record.extra == {"unmatched_entries": ["x"]} and record.to_dict()["unmatched_entries"]
    with pytest.raises(HwnasError, match=f"p/device.json: {message}"):
        ProfileRecord.from_dict({**good, **change}, "p/device.json")
    missing = {k: v for k, v in good.items() if k != "fingerprint"}
    with pytest.raises(HwnasError, match="p/device.json: required field 'fingerprint' is missing"):
        ProfileRecord.from_dict(missing, "p/device.json")


def test_drift_scale_and_the_busy_machine_rule():
    from hwnas.profile.drift import MAX_DRIFT, REFERENCE, Drift, reference_arch, reference_item
    from hwnas.space import get_space

    quiet = Drift(reference_ms=10.0, base_ms=11.0)
    assert quiet.scale == pytest.approx(1.1) and not quiet.busy and quiet.note == ""
    assert quiet.correct(2.0) == pytest.approx(2.2)
    busy = Drift(reference_ms=10.0, base_ms=10.0 / (MAX_DRIFT + 0.1))
    assert busy.busy and "busy" in busy.note and busy.correct(2.0) is None
    assert Drift(None, 5.0).scale is None and Drift(None, 5.0).correct(1.0) is None
    space = get_space("proxyless", resolution=32)
    item = reference_item(space)
    assert item.key == REFERENCE and item.shape == space.input_shape()
    assert reference_item(reference_arch(space)).key == REFERENCE
