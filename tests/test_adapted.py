"""`hwnas adapt` and `AdaptedPredictor`: the math on planted data, then a real adapt (a quick
ort-cpu source profile at 32x32, 6 + 4 nets measured) whose profile round-trips through load,
`hwnas predict`, a ProxylessNAS search and `hwnas export --verify`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from hwnas.cli import app
from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.latency import LookupTablePredictor, best_predictor
from hwnas.latency.adapted import (
    HELP_REFERENCE_FBNET,
    HELP_REFERENCE_NB201,
    AdaptConfig,
    AdaptedPredictor,
    adapt_profile,
    kernel_work,
    support_archs,
    work_table,
)
from hwnas.latency.learned import conformal_q
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.reader import Profile
from hwnas.space import OpSpec, get_space

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
runner = CliRunner()


def test_kernel_work_splits_an_mbconv_into_its_convolutions():
    op = OpSpec("mbconv", cin=16, cout=24, h=28, w=28, kernel=7, stride=2, expand=3)
    work = dict(kernel_work(op))
    mid, ho = 16 * 3, 14
    assert set(work) == {"pw", "dw7"}
    assert work["dw7"] == pytest.approx(ho * ho * mid * 49 / 1e9)
    # expand 1x1 at the input size, project 1x1 at the output size
    assert work["pw"] == pytest.approx((28 * 28 * 16 * mid + ho * ho * mid * 24) / 1e9)


def _planted(space, lut, n=10, seed=0):
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    s = LookupTablePredictor().fit(space, lut).predict(archs)
    work = work_table(space)
    dw7 = np.array([sum(work[o.key].get("dw7", 0.0) for o in space.ops(a)) for a in archs])
    return archs, s, dw7


def _table(space):
    """A positive synthetic table: MACs-proportional plus a constant per op."""
    return {op.key: 1e-3 + op.macs / 1e8 for op in space.distinct_ops()}


def test_a_planted_kernel_class_is_found_and_recovered():
    space = get_space("proxyless", 64)
    lut = _table(space)
    archs, s, dw7 = _planted(space, lut)
    y = 1.3 * s + 40.0 * dw7 + 0.05
    p = AdaptedPredictor().fit(space, lut, archs, y)
    assert p.classes_ == ("dw7",)
    assert p.scale_ == pytest.approx(1.3, rel=1e-6)
    assert p.class_coef_["dw7"] == pytest.approx(40.0, rel=1e-6)
    assert p.intercept_ == pytest.approx(0.05, abs=1e-8)
    others, s2, dw72 = _planted(space, lut, 20, seed=1)
    np.testing.assert_allclose(p.predict(others), 1.3 * s2 + 40.0 * dw72 + 0.05, rtol=1e-8)
    # the table is additive: t_new(op) = 1.3 t_src(op) + 40 W_dw7(op)
    op = next(o for o in space.distinct_ops() if dict(kernel_work(o)).get("dw7"))
    assert p.table_[op.key] == pytest.approx(1.3 * lut[op.key] + 40.0 * dict(kernel_work(op))["dw7"])


def test_a_plain_scale_keeps_the_linear_map_and_linear_map_never_adds_a_class():
    space = get_space("proxyless", 64)
    lut = _table(space)
    archs, s, dw7 = _planted(space, lut)
    noise = np.random.default_rng(3).normal(0, 0.01, s.size)
    y = (0.7 * s + 0.02) * np.exp(noise)
    p = AdaptedPredictor().fit(space, lut, archs, y)
    assert p.classes_ == ()
    assert p.name == "adapted (linear map)"
    q = AdaptedPredictor("linear-map").fit(space, lut, archs, 1.3 * s + 40.0 * dw7 + 0.05)
    assert q.classes_ == () and list(q.candidates_) == ["linear-map"]


def test_intervals_are_leave_one_out_conformal():
    space = get_space("proxyless", 64)
    lut = _table(space)
    archs, s, _ = _planted(space, lut)
    y = (0.9 * s + 0.01) * np.exp(np.random.default_rng(4).normal(0, 0.05, s.size))
    p = AdaptedPredictor("linear-map", alpha=0.1).fit(space, lut, archs, y)
    # the LOO prediction of sample i is the map fitted on the other 9
    i = 3
    keep = np.arange(10) != i
    ref = AdaptedPredictor("linear-map").fit(space, lut, [a for a, k in zip(archs, keep, strict=True) if k],
                                             y[keep])
    assert p.loo_[i] == pytest.approx(ref.predict([archs[i]])[0], rel=1e-9)
    assert p.q_ == pytest.approx(conformal_q(p.loo_, y, 0.1))
    # with k = 10 and alpha = 0.1 the level is 1: the largest LOO log residual
    assert p.q_ == pytest.approx(np.max(np.abs(np.log(p.loo_ / y))))
    lo, hi = p.interval(archs[:2])
    np.testing.assert_allclose(hi / lo, math.exp(2 * p.q_))


def test_refusals_are_one_line():
    space = get_space("proxyless", 64)
    lut = _table(space)
    archs, s, _ = _planted(space, lut, 3)
    with pytest.raises(HwnasError, match="at least 3"):
        AdaptedPredictor().fit(space, lut, archs[:2], s[:2])
    with pytest.raises(HwnasError, match="positive"):
        AdaptedPredictor().fit(space, lut, archs, -s)
    with pytest.raises(HwnasError, match="lacks"):
        AdaptedPredictor().fit(space, dict(list(lut.items())[:5]), archs, s)
    with pytest.raises(HwnasError, match="unknown adaptation method"):
        AdaptedPredictor("help")


def test_nb201_uses_helps_reference_architectures():
    space = get_space("nb201")
    archs, how = support_archs(space, 10, _table(space))
    assert "HELP" in how
    assert [space.arch_str(a) for a in archs] == list(HELP_REFERENCE_NB201)
    more, how = support_archs(space, 12, _table(space))
    assert len(more) == 12 and "spread" in how
    fb = get_space("fbnet")
    archs, how = support_archs(fb, 10, _table(fb))
    assert "HELP" in how and list(fb.indices(archs[0])) == [int(c) for c in
                                                              HELP_REFERENCE_FBNET[0]]


def test_the_embedded_reference_archs_are_helps(shared_data):
    """The embedded archs are the rows REFERENCE_ARCHS indexes in HELP's latency CSVs."""
    import pandas as pd

    from hwnas.latency.few_shot import REFERENCE_ARCHS

    nb = pd.read_csv(shared_data / "latency" / "nb201_latency_help.csv", usecols=["arch_str"])
    assert list(nb["arch_str"].iloc[REFERENCE_ARCHS["nb201"]]) == list(HELP_REFERENCE_NB201)
    cols = [f"L{i:02d}" for i in range(22)]
    fb = pd.read_csv(shared_data / "latency" / "fbnet_latency_help.csv", usecols=cols)
    rows = fb[cols].iloc[REFERENCE_ARCHS["fbnet"]].to_numpy()
    assert ["".join(map(str, r)) for r in rows] == list(HELP_REFERENCE_FBNET)


# --- a real adapt ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A quick ort-cpu source (proxyless 32, ops only), adapted to 2 threads from 6 nets,
    checked on 4 more."""
    root = tmp_path_factory.mktemp("adapt")
    src = root / "ort-cpu-1t-proxyless-32"
    Profiler(ProfileConfig(device="ort-cpu", space="proxyless", resolution=32, nets=0, out=src,
                           protocol=Protocol.quick())).run()
    out = root / "adapted-2t"
    result = adapt_profile(AdaptConfig(source=src, out=out, threads=2, samples=6, check=4,
                                       quick=True))
    return src, out, result


def test_adapted_profile_round_trips(adapted):
    src, out, result = adapted
    prof = Profile.load(out)
    rec = prof.record
    assert rec.adapted["source"] == src.name and rec.adapted["k"] == 6
    assert rec.threads == 2 and rec.backend == "ort-cpu" and not rec.nets_only
    assert len(prof.nets) == 10  # 6 support + 4 check, all measured here
    assert set(rec.adapted["support"]) <= set(prof.nets["net_id"])
    assert (prof.ops["source"] == "adapted").all()
    assert len(prof.ops) == len(prof.space.distinct_ops())
    # the record's map + the table reproduce the fitted predictor exactly
    loaded = best_predictor(prof)
    assert isinstance(loaded, AdaptedPredictor) and loaded.name == result.predictor.name
    archs = prof.archs()
    np.testing.assert_allclose(loaded.predict(archs), result.predictor.predict(archs), rtol=1e-9)
    np.testing.assert_allclose(loaded.interval(archs)[1], result.predictor.interval(archs)[1],
                               rtol=1e-9)
    check = rec.adapted["check"]
    assert check["n"] == 4 and 0 <= check["adapted"]["within_10"] <= 1
    assert "spearman_rho" in check["adapted"] and "within_10" in check["zero_shot"]
    # the search's E[LAT] over the adapted table is exact: (1, intercept)
    from hwnas.search.run import latency_model

    model = latency_model(out)
    assert model.scale == pytest.approx(1.0) and model.offset == pytest.approx(
        result.predictor.intercept_, abs=1e-9)


def test_adapted_profile_is_accepted_by_predict_search_and_export(adapted, tmp_path):
    _, out, result = adapted
    arch = Profile.load(out).archs()[0]
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(arch.to_json())
    r = runner.invoke(app, ["predict", str(arch_file), "--profile", str(out), "--json"])
    assert r.exit_code == 0, r.output
    pred = json.loads(r.output)
    assert pred["predictor"] == result.predictor.name
    assert pred["latency_ms"] == pytest.approx(result.predictor.predict([arch])[0], rel=1e-6)
    assert {o["source"] for o in pred["ops"]} == {"adapted table"}

    from hwnas.search.run import SearchConfig, latency_model, run_search

    model = latency_model(out)
    budget = model.fastest_ms + 0.5 * (model.slowest_ms - model.fastest_ms)
    summary = run_search(SearchConfig(out, budget, out=tmp_path / "run", loss="add#linear",
                                      data="digits", epochs=1, warmup_epochs=1, batch_size=32,
                                      train_resolution=32, train_width=0.35, max_batches=2,
                                      data_limit=200, threads=1))
    assert (tmp_path / "run" / "arch.json").exists()
    assert summary["predictor"] == result.predictor.name

    from hwnas.export.pipeline import ExportConfig, export

    (m,) = export(ExportConfig(arch=tmp_path / "run" / "arch.json", targets=("onnx",),
                               out=tmp_path / "exp", profiles=(out,), verify=True, quick=True,
                               parity_inputs=2))
    assert m["predicted"]["profile"] == out.name
    assert m["predicted"]["predictor"] == result.predictor.name
    assert m["verified"]["threads"] == 2 and m["verified"]["measured_ms"] > 0


def test_cli_adapt_refusals(adapted, tmp_path, capsys):
    from hwnas.cli import main

    src, out, _ = adapted
    cases = {
        "same folder": ["adapt", "--from", str(src), "--out", str(src)],
        "too few": ["adapt", "--from", str(src), "--out", str(tmp_path / "a"), "--samples", "2"],
        "method": ["adapt", "--from", str(src), "--out", str(tmp_path / "b"), "--method", "x"],
        "exists": ["adapt", "--from", str(src), "--out", str(out)],
        "from adapted": ["adapt", "--from", str(out), "--out", str(tmp_path / "c")],
        "profile into it": ["profile", "--out", str(out), "--resume", "--nets", "0",
                            "--resolution", "32", "--threads", "2", "--quick"],
    }
    for name, args in cases.items():
        with pytest.raises(SystemExit) as info:
            main(args)
        err = capsys.readouterr().err
        assert info.value.code == 2, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "device.json").exists()


def test_demo_adapts_a_shipped_profile_measured_elsewhere(adapted, tmp_path):
    """The demo on a machine whose CPU differs from the shipped profile's: it adapts the shipped
    profile first, says how good that is, and uses it only when the check is good enough."""
    import shutil

    from hwnas.demo import ADAPT_GOOD, DemoConfig, _profile

    src, _, _ = adapted
    shipped = tmp_path / "shipped"
    shutil.copytree(src, shipped / src.name)
    record = json.loads((shipped / src.name / "device.json").read_text())
    record["fingerprint"]["cpu_model"] = "Another CPU 9000"
    (shipped / src.name / "device.json").write_text(json.dumps(record))
    said: list[str] = []
    cfg = DemoConfig(out=tmp_path / "demo", resolution=32, nets=4)
    path = _profile("ort-cpu", cfg, said.append, 4, root=shipped)
    text = "\n".join(said)
    assert "measured elsewhere" in text and "Another CPU 9000" in text
    assert "adapting ort-cpu-1t-proxyless-32" in text and "held-out nets within 10%" in text
    adapted_dir = tmp_path / "demo" / f"adapted-{src.name}"
    check = Profile.load(adapted_dir).record.adapted["check"]["adapted"]
    if check["within_10"] >= ADAPT_GOOD:
        assert path == adapted_dir and "instead of profiling from scratch" in text
    else:
        assert path != adapted_dir and "measuring a new profile" in text
        assert Profile.load(path).record.adapted is None
