"""The importers of published latency data on small inline fixtures, so that they are tested on a
clean checkout: `test_importers.py` runs the same checks on the full files in ../shared/data and
skips without them.

Each fixture is written to tmp_path in the published file's own format, from a few rows copied
verbatim (`inline_reference_data`) plus, where the importer needs a complete table, entries
generated in the same format with made-up latencies. Expected values are computed here from the
fixture, independently of the importer (the ProxylessNAS keys are built from the space's published
stage layout, not with `proxyless_yaml_key`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inline_reference_data import (
    FBNET_JSON_ENTRY_2,
    FBNET_JSON_ENTRY_3,
    FBNET_JSON_NULLS,
    HELP_FBNET_CSV,
    PROXYLESS_YAML_HEAD,
)

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

# --- ProxylessNAS YAML ------------------------------------------------------------------------

# The published table's layout (shared/data/README.md): stem 224 -> 112x112x32, the fixed first
# block to 16 channels, 21 searchable layers in stages of widths 24,40,80,96,192,320, depths
# 4,4,4,4,4,1, first strides 2,2,2,1,2,1, then Conv_1 to 1280 and the 1000-way Logits.
STAGES = [(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]
KERNELS, EXPANDS = (3, 5, 7), (3, 6)
FIXED = ["Conv-input:224x224x3-output:112x112x32",
         "expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0",
         "Conv_1-input:7x7x320-output:7x7x1280", "Logits-input:7x7x1280-output:1000"]
# in the table, never run by the space (its first block is always kernel 3)
UNUSED = [f"expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:{k}-stride:1-idskip:0"
          for k in (5, 7)]


def _layers() -> list[dict[tuple[int, int], str]]:
    """Per searchable layer: (kernel, expand) -> its key in the published table."""
    out, size, cin = [], 112, 16
    for width, depth, first_stride in STAGES:
        for d in range(depth):
            stride = first_stride if d == 0 else 1
            o = size // stride
            out.append({(k, e): f"expanded_conv-input:{size}x{size}x{cin}-output:{o}x{o}x{width}"
                                f"-expand:{e}-kernel:{k}-stride:{stride}-idskip:{int(d > 0)}"
                        for k in KERNELS for e in EXPANDS})
            size, cin = o, width
    return out


def _entry(key: str, mean: float | str, count: int = 100, var: float = 0.01) -> str:
    return f"{key}:\n  count: {count}\n  mean: {mean}\n  var: {var}\n"


def _means() -> dict[str, float]:
    """Every key of the fixture and its mean: the published head's, then made-up ones."""
    import yaml

    means = {k: float(v["mean"]) for k, v in yaml.safe_load(PROXYLESS_YAML_HEAD).items()}
    for i, layer in enumerate(_layers()):
        for (k, e), key in layer.items():
            means.setdefault(key, round(0.05 * k * e + 0.01 * i + 0.2, 6))
    return means


def _yaml_text(means: dict[str, float], head: str = PROXYLESS_YAML_HEAD) -> str:
    published = set(_published_keys())
    return head + "".join(_entry(k, m) for k, m in means.items() if k not in published)


def _published_keys() -> list[str]:
    import yaml

    return list(yaml.safe_load(PROXYLESS_YAML_HEAD))


@pytest.fixture(scope="module")
def yaml_file(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    pytest.importorskip("yaml", reason="pyyaml is not installed (needed for the YAML importer)")
    means = _means()
    path = tmp_path_factory.mktemp("pxy") / "table.yaml"
    path.write_text(_yaml_text(means))
    return path, means


@pytest.fixture(scope="module")
def proxyless(yaml_file, tmp_path_factory) -> LookupTablePredictor:
    path, _ = yaml_file
    out = import_proxyless_yaml(path, tmp_path_factory.mktemp("px") / "pixel1")
    return LookupTablePredictor.from_profile(Profile.load(out))


def test_fixture_layout_matches_the_published_keys(yaml_file) -> None:
    """The generated keys follow the published file's: its layer-0 and fixed rows are among them,
    and the whole fixture has the published file's 72 entries."""
    _, means = yaml_file
    published = _published_keys()
    assert set(published) <= set(means)
    assert set(_layers()[0].values()) <= set(published)
    assert set(FIXED + UNUSED) <= set(published)
    assert len(means) == 72


def _fixed_ms(means: dict[str, float]) -> float:
    return sum(means[k] for k in FIXED)


@pytest.mark.parametrize("k,e", [(3, 3), (7, 6), (5, 3)])
def test_proxyless_every_layer_one_choice(proxyless, yaml_file, k: int, e: int) -> None:
    _, means = yaml_file
    space = proxyless.space_
    arch = space.arch([f"k{k}_e{e}"] * len(space.layers))
    expected = _fixed_ms(means) + sum(means[layer[(k, e)]] for layer in _layers())
    assert proxyless.predict([arch])[0] == pytest.approx(expected, rel=1e-12)


def test_proxyless_smallest_network(proxyless, yaml_file) -> None:
    """'zero' (0 ms) on every layer that allows it, the cheapest block elsewhere."""
    _, means = yaml_file
    space = proxyless.space_
    fastest, slowest = proxyless.extremes()
    cheapest = [min(means[key] for key in layer.values()) for layer in _layers()]
    firsts = [i for i, layer in enumerate(space.layers) if "zero" not in layer.choices]
    assert len(firsts) == 6 and sum(c == "zero" for c in fastest.choices) == 15
    expected = _fixed_ms(means) + sum(cheapest[i] for i in firsts)
    assert proxyless.predict([fastest])[0] == pytest.approx(expected, rel=1e-12)
    dearest = sum(max(means[key] for key in layer.values()) for layer in _layers())
    assert proxyless.predict([slowest])[0] == pytest.approx(_fixed_ms(means) + dearest, rel=1e-12)


def test_proxyless_expected_latency_uniform(proxyless, yaml_file) -> None:
    _, means = yaml_file
    space = proxyless.space_
    probs = np.zeros(proxyless.table_.shape)
    expected = _fixed_ms(means)
    for i, (layer, keys) in enumerate(zip(space.layers, _layers(), strict=True)):
        n = len(layer.choices)  # 7 where 'zero' (0 ms) is allowed, else 6
        probs[i, :n] = 1.0 / n
        expected += sum(means[key] for key in keys.values()) / n
    assert proxyless.expected(probs) == pytest.approx(expected, rel=1e-12)


def test_proxyless_profile_metadata(yaml_file, tmp_path: Path) -> None:
    path, _ = yaml_file
    prof = Profile.load(import_proxyless_yaml(path, tmp_path / "p"))
    assert prof.record.imported is True and prof.record.space == "proxyless"
    assert "mean" in prof.record.notes.lower()
    assert not {"p10_ms", "p90_ms", "min_ms"} & set(prof.ops.columns)
    assert sorted(prof.record.extra["unmatched_entries"]) == sorted(UNUSED)
    assert len(prof.ops) == len(get_space("proxyless").distinct_ops()) == 70
    stem = prof.ops.set_index("source_key").loc[FIXED[0]]
    assert stem["median_ms"] == pytest.approx(4.397037934668071) and stem["n"] == 949
    assert stem["var_ms2"] == pytest.approx(0.1562765530967112)


def test_proxyless_missing_op_is_named(yaml_file, tmp_path: Path) -> None:
    _, means = yaml_file
    head = PROXYLESS_YAML_HEAD.replace(_entry(FIXED[2], "6.28499578503688", 949,
                                              0.43429750694010927), "")
    assert head != PROXYLESS_YAML_HEAD
    trimmed = tmp_path / "t.yaml"
    trimmed.write_text(_yaml_text(means, head))
    with pytest.raises(HwnasError, match="missing from the table: Conv_1-input:7x7x320"):
        import_proxyless_yaml(trimmed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_proxyless_non_numeric_mean(yaml_file, tmp_path: Path) -> None:
    _, means = yaml_file
    p = tmp_path / "bad.yaml"
    p.write_text(_yaml_text(means).replace("mean: 4.397037934668071", "mean: fast", 1))
    with pytest.raises(HwnasError, match="Conv-input:224x224x3.*non-numeric"):
        import_proxyless_yaml(p, tmp_path / "out")


# --- FBNet per-layer JSON ---------------------------------------------------------------------

NO_SKIP = [1, 5, 9, 13, 17, 21]  # the first layer of each stage that changes the width


def _fbnet_entries() -> list:
    """The published file's 28-entry layout: null at the fixed layers, its first two searchable
    entries verbatim, the other 20 made up (microseconds; 8 values where skip is not allowed)."""
    entries: list = [None] * 28
    entries[2], entries[3] = list(FBNET_JSON_ENTRY_2), list(FBNET_JSON_ENTRY_3)
    for row in range(2, 22):
        n = 8 if row in NO_SKIP else 9
        entries[row + 2] = [1000.0 * (row + 1) + 100.0 * j for j in range(n)]
    assert [i for i, e in enumerate(entries) if e is None] == list(FBNET_JSON_NULLS)
    return entries


def _fbnet_file(tmp_path: Path, entries: list | None = None) -> Path:
    p = tmp_path / "lookup_table_pi.json"
    p.write_text(json.dumps(entries if entries is not None else _fbnet_entries(), indent=1))
    return p


def test_fbnet_table(tmp_path: Path) -> None:
    t = import_fbnet_table_json(_fbnet_file(tmp_path))
    assert t.table.shape == (22, 9) and t.choices == FBNET_CHOICES
    assert t.fixed_ms == 0.0  # the null layers are not timed
    assert [i for i in range(22) if np.isnan(t.table[i, 8])] == NO_SKIP
    assert np.isfinite(t.table[:, :8]).all()
    np.testing.assert_allclose(t.table[0], np.array(FBNET_JSON_ENTRY_2) / 1000)  # us -> ms
    np.testing.assert_allclose(t.table[1, :8], np.array(FBNET_JSON_ENTRY_3) / 1000)
    assert t.table[0, 8] == pytest.approx(0.23233408000123745)  # the published skip, ~0.23 ms
    assert t.strides[:10] == (1, 2, 1, 1, 1, 2, 1, 1, 1, 1)  # stage strides 1,2,2,1,..


def test_fbnet_table_predict_and_expected(tmp_path: Path) -> None:
    t = import_fbnet_table_json(_fbnet_file(tmp_path))
    idx = np.zeros((1, 22), dtype=int)
    assert t.predict_indices(idx)[0] == pytest.approx(t.table[:, 0].sum())
    assert t.predict_indices(idx)[0] == pytest.approx(
        (FBNET_JSON_ENTRY_2[0] + FBNET_JSON_ENTRY_3[0] + sum(1000.0 * (r + 1)
                                                             for r in range(2, 22))) / 1000)
    probs = np.where(t.allowed, 1.0, 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    assert t.expected(probs) == pytest.approx(np.nanmean(t.table, axis=1).sum())
    with pytest.raises(HwnasError, match="'skip' is not allowed at layer 1"):
        t.predict_indices(np.full((1, 22), 8))


def test_fbnet_table_non_numeric(tmp_path: Path) -> None:
    entries = _fbnet_entries()
    entries[5][3] = "slow"
    with pytest.raises(HwnasError, match="entry 5 has a non-numeric"):
        import_fbnet_table_json(_fbnet_file(tmp_path, entries))


# --- HW-NAS-Bench / HELP CSV ------------------------------------------------------------------

def _help_csv(tmp_path: Path) -> Path:
    p = tmp_path / "fbnet_latency_help.csv"
    p.write_text(HELP_FBNET_CSV)
    return p


def test_help_csv_nets_only_profile(tmp_path: Path) -> None:
    src = _help_csv(tmp_path)
    prof = Profile.load(import_latency_csv(src, "pixel3_ms", tmp_path / "pixel3"))
    raw = pd.read_csv(io.StringIO(HELP_FBNET_CSV))
    assert prof.record.nets_only is True and len(prof.ops) == 0
    assert len(prof.nets) == len(raw) == 5
    assert prof.space.resolution == 32 and prof.space.num_classes == 100
    np.testing.assert_allclose(prof.net_latency(), raw["pixel3_ms"].to_numpy())
    assert prof.net_latency()[0] == pytest.approx(17.55774545)
    space = prof.space
    cols = [f"L{i:02d}" for i in range(22)]
    for r in range(len(raw)):
        arch = Arch.from_json(prof.nets["arch"].iloc[r])
        assert space.indices(arch) == raw.loc[r, cols].tolist()
        assert "-".join(arch.choices) == raw.loc[r, "ops_str"]
        assert prof.nets["macs"].iloc[r] == sum(op.macs for op in space.ops(arch))
        assert prof.nets["params"].iloc[r] == sum(op.params for op in space.ops(arch))


def test_help_csv_device_name_without_suffix(tmp_path: Path) -> None:
    prof = Profile.load(import_latency_csv(_help_csv(tmp_path), "raspi4", tmp_path / "r"))
    assert prof.record.fingerprint["column"] == "raspi4_ms"
    raw = pd.read_csv(io.StringIO(HELP_FBNET_CSV))
    np.testing.assert_allclose(prof.net_latency(), raw["raspi4_ms"].to_numpy())
