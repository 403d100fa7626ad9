"""Importers of published latency data: the ProxylessNAS YAML, the FBNet JSON table, HELP CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas.errors import HwnasError
from hwnas.latency.importers import (
    import_fbnet_table_json,
    import_latency_csv,
    import_proxyless_yaml,
)
from hwnas.latency.lut import LookupTablePredictor
from hwnas.profile.reader import Profile
from hwnas.space import Arch, get_space
from hwnas.space.fbnet import FBNET_CHOICES

YAML = "lut/proxylessnas_pixel1_mobile_trim.yaml"
FBNET_JSON = "lut/fbnet_cifar10_raspi4_lookup_table_pi.json"
HELP_CSV = "latency/fbnet_latency_help.csv"


@pytest.fixture
def needs_yaml() -> None:
    """pyyaml is not (yet) a declared dependency of hwnas: the YAML importer needs it."""
    pytest.importorskip("yaml", reason="pyyaml is not installed (needed for the YAML importer)")


@pytest.fixture(scope="module")
def proxyless(tmp_path_factory) -> LookupTablePredictor:
    pytest.importorskip("yaml", reason="pyyaml is not installed (needed for the YAML importer)")
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data / YAML).is_file():
        pytest.skip(f"reference data not found at {data} (only in the project workspace)")
    out = import_proxyless_yaml(data / YAML, tmp_path_factory.mktemp("px") / "pixel1")
    return LookupTablePredictor.from_profile(Profile.load(out))


def _uniform(n_choices: int) -> np.ndarray:
    return np.full(n_choices, 1.0 / n_choices)


# --- ProxylessNAS YAML: the README figures ------------------------------------------------------
def test_proxyless_every_layer_k3_e3(proxyless):
    space = proxyless.space_
    arch = space.arch(["k3_e3"] * len(space.layers))
    assert proxyless.predict([arch])[0] == pytest.approx(72.46, abs=0.01)


def test_proxyless_every_layer_k7_e6(proxyless):
    space = proxyless.space_
    arch = space.arch(["k7_e6"] * len(space.layers))
    assert proxyless.predict([arch])[0] == pytest.approx(180.98, abs=0.01)


def test_proxyless_smallest_network(proxyless):
    fastest, _ = proxyless.extremes()
    assert proxyless.predict([fastest])[0] == pytest.approx(32.71, abs=0.01)


def test_proxyless_expected_latency_uniform(proxyless):
    probs = np.zeros(proxyless.table_.shape)
    for i, layer in enumerate(proxyless.space_.layers):
        probs[i, :len(layer.choices)] = _uniform(len(layer.choices))
    assert proxyless.expected(probs) == pytest.approx(108.95, abs=0.01)


def test_proxyless_profile_metadata(proxyless, shared_data, tmp_path):
    out = import_proxyless_yaml(shared_data / YAML, tmp_path / "p")
    prof = Profile.load(out)
    assert prof.record.imported is True and prof.record.space == "proxyless"
    assert "mean" in prof.record.notes.lower()
    assert not {"p10_ms", "p90_ms", "min_ms"} & set(prof.ops.columns)
    # the first block at kernels 5 and 7 is in the table but never run by the space
    assert len(prof.record.extra["unmatched_entries"]) == 2
    assert all("expand:1" in k for k in prof.record.extra["unmatched_entries"])
    assert len(prof.ops) == len(get_space("proxyless").distinct_ops())
    stem = prof.ops.set_index("source_key").loc["Conv-input:224x224x3-output:112x112x32"]
    assert stem["median_ms"] == pytest.approx(4.397037934668071) and stem["n"] == 949


def test_proxyless_missing_op_is_named(needs_yaml, shared_data, tmp_path):
    text = (shared_data / YAML).read_text().splitlines()
    start = text.index(next(t for t in text if t.startswith("Conv_1-")))
    trimmed = tmp_path / "t.yaml"
    trimmed.write_text("\n".join(text[:start] + text[start + 4:]) + "\n")
    with pytest.raises(HwnasError, match="missing from the table: Conv_1-input:7x7x320"):
        import_proxyless_yaml(trimmed, tmp_path / "out")


@pytest.mark.parametrize("content, message", [
    ("- a\n- b\n", "expected a YAML mapping"),
    ("just a string\n", "expected a YAML mapping"),
    ("key: [unclosed\n", "malformed YAML"),
])
def test_proxyless_malformed_yaml(needs_yaml, tmp_path, content, message):
    p = tmp_path / "bad.yaml"
    p.write_text(content)
    with pytest.raises(HwnasError, match=message):
        import_proxyless_yaml(p, tmp_path / "out")


def test_proxyless_non_numeric_mean(needs_yaml, shared_data, tmp_path):
    text = (shared_data / YAML).read_text().replace("mean: 4.397037934668071", "mean: fast", 1)
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(HwnasError, match="Conv-input:224x224x3.*non-numeric"):
        import_proxyless_yaml(p, tmp_path / "out")


# --- FBNet JSON table ---------------------------------------------------------------------------
def test_fbnet_table(shared_data):
    t = import_fbnet_table_json(shared_data / FBNET_JSON)
    assert t.table.shape == (22, 9) and t.choices == FBNET_CHOICES
    assert t.fixed_ms == 0.0  # the file's 6 fixed layers are null (not timed)
    no_skip = [i for i in range(22) if np.isnan(t.table[i, 8])]
    assert no_skip == [1, 5, 9, 13, 17, 21]  # first layer of each stage that changes width
    assert np.isfinite(t.table[:, :8]).all()
    raw = json.loads((shared_data / FBNET_JSON).read_text())
    assert [i for i, e in enumerate(raw) if e is None] == [0, 1, 24, 25, 26, 27]
    assert t.table[0, 0] == pytest.approx(raw[2][0] / 1000)  # microseconds -> ms
    assert 0.1 < t.table[0, 8] < 0.5 and (t.table[:, :8] > 5).all()  # skip ~0.23 ms, blocks ~10 ms
    assert t.strides[:10] == (1, 2, 1, 1, 1, 2, 1, 1, 1, 1)  # stage strides 1,2,2,1,..


def test_fbnet_table_predict_and_expected(shared_data):
    t = import_fbnet_table_json(shared_data / FBNET_JSON)
    idx = np.zeros((1, 22), dtype=int)
    assert t.predict_indices(idx)[0] == pytest.approx(t.table[:, 0].sum())
    probs = np.where(t.allowed, 1.0, 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    assert t.expected(probs) == pytest.approx(np.nanmean(t.table, axis=1).sum())
    with pytest.raises(HwnasError, match="'skip' is not allowed at layer 1"):
        t.predict_indices(np.full((1, 22), 8))


@pytest.mark.parametrize("content, message", [
    ('{"a": 1}', "expected a JSON list"),
    ("[null, [1, 2]]", "expected 22 searchable"),
    ("[1, 2", "malformed JSON"),
])
def test_fbnet_table_malformed(tmp_path, content, message):
    p = tmp_path / "t.json"
    p.write_text(content)
    with pytest.raises(HwnasError, match=message):
        import_fbnet_table_json(p)


def test_fbnet_table_non_numeric(shared_data, tmp_path):
    raw = json.loads((shared_data / FBNET_JSON).read_text())
    raw[5][3] = "slow"
    p = tmp_path / "t.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(HwnasError, match="entry 5 has a non-numeric"):
        import_fbnet_table_json(p)


# --- HW-NAS-Bench / HELP CSV --------------------------------------------------------------------
def test_help_csv_nets_only_profile(shared_data, tmp_path):
    src = shared_data / HELP_CSV
    out = import_latency_csv(src, "pixel3_ms", tmp_path / "pixel3")
    prof = Profile.load(out)
    raw = pd.read_csv(src)
    assert prof.record.nets_only is True and len(prof.ops) == 0
    assert len(prof.nets) == len(raw) == 5000
    assert prof.space.resolution == 32 and prof.space.num_classes == 100
    np.testing.assert_allclose(prof.net_latency(), raw["pixel3_ms"].to_numpy())
    space = prof.space
    cols = [f"L{i:02d}" for i in range(22)]
    for r in (0, 1234, 4999):
        arch = Arch.from_json(prof.nets["arch"].iloc[r])
        assert space.indices(arch) == raw.loc[r, cols].tolist()
        assert "-".join(arch.choices) == raw.loc[r, "ops_str"]
        assert prof.nets["macs"].iloc[r] == sum(op.macs for op in space.ops(arch))
        assert prof.nets["params"].iloc[r] == sum(op.params for op in space.ops(arch))


def test_help_csv_device_name_without_suffix(shared_data, tmp_path):
    out = import_latency_csv(shared_data / HELP_CSV, "raspi4", tmp_path / "r")
    assert Profile.load(out).record.fingerprint["column"] == "raspi4_ms"


def _small_csv(tmp_path: Path, **changes) -> Path:
    df = pd.DataFrame([[0] * 22 + [1.5], [1] * 22 + [2.5]],
                      columns=[f"L{i:02d}" for i in range(22)] + ["dev_ms"])
    for col, values in changes.items():
        df[col] = values
    p = tmp_path / "small.csv"
    df.to_csv(p, index=False)
    return p


def test_help_csv_unknown_device_lists_available(tmp_path):
    with pytest.raises(HwnasError, match="no device column 'pixel9'; available: dev_ms"):
        import_latency_csv(_small_csv(tmp_path), "pixel9", tmp_path / "out")


def test_help_csv_missing_layer_columns(tmp_path):
    p = _small_csv(tmp_path)
    pd.read_csv(p).drop(columns=["L07"]).to_csv(p, index=False)
    with pytest.raises(HwnasError, match="missing: L07"):
        import_latency_csv(p, "dev_ms", tmp_path / "out")


@pytest.mark.parametrize("col, values, message", [
    ("dev_ms", ["1.0", "fast"], "row 1: 'fast' is not a positive latency"),
    ("dev_ms", [1.0, -2.0], "is not a positive latency"),
    ("L03", ["x", 1], "op indices must be integers"),
    ("L03", [0, 9], "L03: op index 9 is out of range 0..8"),
])
def test_help_csv_bad_values(tmp_path, col, values, message):
    with pytest.raises(HwnasError, match=message):
        import_latency_csv(_small_csv(tmp_path, **{col: values}), "dev_ms", tmp_path / "out")


def test_help_csv_small_file_loads(tmp_path):
    out = import_latency_csv(_small_csv(tmp_path), "dev", tmp_path / "out")
    prof = Profile.load(out)
    assert prof.net_latency().tolist() == [1.5, 2.5]
    with pytest.raises(HwnasError, match="already holds a profile"):
        import_latency_csv(_small_csv(tmp_path), "dev", out)


def test_nets_only_profile_predicts_its_measured_nets(tmp_path):
    from hwnas.latency import NetsTablePredictor, best_predictor, predict

    prof = Profile.load(import_latency_csv(_small_csv(tmp_path), "dev", tmp_path / "out"))
    model = best_predictor(prof)
    assert isinstance(model, NetsTablePredictor) and model.name == "table:dev"
    np.testing.assert_allclose(model.predict(prof.archs()), [1.5, 2.5])
    np.testing.assert_allclose(model.predict_indices(np.array([[1] * 22, [0] * 22])), [2.5, 1.5])
    assert model.interval(prof.archs()) is None
    p = predict(prof, prof.archs()[1])
    assert p.ms == 2.5 and p.predictor == "table:dev" and p.breakdown is None
    with pytest.raises(HwnasError, match="not in the table of 2 measured networks"):
        model.predict([prof.space.from_indices([2] * 22)])
