"""Few-shot latency prediction (hwnas.latency.few_shot): HELP's data protocol checked on its
published data (split sizes, the fpga pool range and hardware embedding, target normalisation,
no meta-test column read by meta-training), the Meta-SGD mechanics on synthetic tasks (MAML
update, deterministic modulator, meta-gradient reaching the inner lrs, second order), metric
parity (the "FLOPs" row, the op-count ridge baseline), encodings, intervals and safe
persistence. Tests reading `../shared/data/latency` skip when it is absent."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from hwnas.errors import HwnasError, NotFittedError
from hwnas.latency.few_shot import (
    HELP,
    HELP_DEVICES,
    N_POOL,
    N_QUERY,
    REFERENCE_ARCHS,
    LatencyTable,
    LinearMapAdapter,
    RidgeFewShot,
    encode_fbnet,
    encode_nb201,
    hardware_embedding,
    help_sources,
    help_split,
    nb201_conv_weight_count,
    normalize_latency,
    op_counts,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

LATENCY = Path(__file__).resolve().parents[2] / "shared" / "data" / "latency"
NB201_CSV, FBNET_CSV = LATENCY / "nb201_latency_help.csv", LATENCY / "fbnet_latency_help.csv"
needs_data = pytest.mark.skipif(not NB201_CSV.exists() or not FBNET_CSV.exists(),
                                reason=f"reference data not found at {LATENCY} "
                                       "(only in the project workspace)")
TINY = {"net": "mlp", "hidden": 8, "episodes": 2, "tasks_per_episode": 3, "n_query": 20,
        "mc_samples": 2, "eval_every": 1}


@pytest.fixture(scope="module")
def nb201_df():
    if not NB201_CSV.exists():
        pytest.skip(f"reference data not found at {LATENCY}")
    return pd.read_csv(NB201_CSV)


@pytest.fixture(scope="module")
def fbnet_df():
    if not FBNET_CSV.exists():
        pytest.skip(f"reference data not found at {LATENCY}")
    return pd.read_csv(FBNET_CSV)


def _synthetic(n_dev: int = 4, n: int = 60, d: int = 12, seed: int = 0) -> dict:
    """Source devices whose latency is a device-specific positive linear function of x."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, d)).astype(float)
    out = {}
    for i in range(n_dev):
        w = rng.uniform(0.1, 1.0, d)
        y = 1.0 + x @ w
        out[f"dev{i}"] = (x, y, rng.uniform(0, 1, 10))
    return out


# --------------------------------------------------------------------------- H1: protocol


@needs_data
def test_split_sizes_and_fpga_pool_range(nb201_df, fbnet_df):
    for dev in sum(HELP_DEVICES["nb201"].values(), []):
        pool, query = help_split(nb201_df, dev, "nb201")
        assert (len(pool), len(query)) == (720, 800), dev
        assert pool.min() >= 0 and pool.max() < 900 and query.min() >= 900 and query.max() < 1900
        lat = nb201_df[f"{dev}_ms"].to_numpy()
        # the 10 % fastest and slowest of each part are dropped
        for part, idx in ((np.arange(900), pool), (np.arange(900, 1900), query)):
            s = np.sort(lat[part])
            cut = len(part) // 10
            assert lat[idx].min() >= s[cut - 1] and lat[idx].max() <= s[len(part) - cut]
    for dev in sum(HELP_DEVICES["fbnet"].values(), []):
        pool, query = help_split(fbnet_df, dev, "fbnet")
        # int(4000 * 0.1) : int(4000 * 0.9) and int(1000 * 0.1) : int(1000 * 0.9)
        assert (len(pool), len(query)) == (3200, 800), dev
        assert pool.max() < N_POOL["fbnet"] <= query.min() and query.max() < 4000 + N_QUERY
    pool, _ = help_split(nb201_df, "fpga", "nb201")
    lat = nb201_df["fpga_ms"].to_numpy()[pool]
    assert lat.min() == pytest.approx(2.36176, abs=1e-5)
    assert lat.max() == pytest.approx(5.31536, abs=1e-5)
    y = normalize_latency(lat, lat.min(), lat.max())
    assert y.min() == pytest.approx(0.05) and y.max() == pytest.approx(0.95)
    assert ((y >= 0.05 - 1e-12) & (y <= 0.95 + 1e-12)).all()


@needs_data
def test_fpga_hardware_embedding(nb201_df):
    hw = hardware_embedding(nb201_df, "fpga", "nb201")
    expected = [0.072, 0.119, 0, 0.176, 0.335, 0.263, 0.306, 0.601, 0.130, 1.0]
    np.testing.assert_allclose(hw, expected, atol=1e-3)
    raw = nb201_df["fpga_ms"].to_numpy()[REFERENCE_ARCHS["nb201"]]
    np.testing.assert_allclose(raw[:3], [2.0578, 2.3906, 1.5426], atol=1e-4)


@needs_data
def test_meta_training_reads_no_meta_test_column(nb201_df):
    table = LatencyTable(nb201_df, "nb201")
    dev = HELP_DEVICES["nb201"]
    sources = help_sources(table, dev["meta_train"], encoding="onehot")
    valid = help_sources(table, dev["meta_valid"], with_query=True, encoding="onehot")
    assert table.read_devices == []  # lazy: nothing read yet
    HELP(**TINY).fit(sources, valid)
    LinearMapAdapter("best").fit(sources)
    assert set(table.read_devices) == set(dev["meta_train"]) | set(dev["meta_valid"])
    assert not set(table.read_devices) & set(dev["meta_test"])
    # the recorder does see a meta-test read
    help_sources(table, dev["meta_test"])["fpga"]
    assert "fpga" in table.read_devices
    with pytest.raises(HwnasError, match="latency"):
        table.frame(["fpga_ms"])


# --------------------------------------------------------------------------- H3: mechanics


def test_inner_update_is_maml_without_learned_lrs_and_modulator():
    src = _synthetic()
    m = HELP(net="mlp", hidden=8, episodes=0, n_query=20, learn_inner_lr=False,
             z_on=False).fit(src)
    x, y, hw = src["dev0"]
    xs = torch.as_tensor(x[:10], dtype=torch.float32)[None]
    ys = torch.as_tensor(normalize_latency(y[:10], y.min(), y.max()), dtype=torch.float32)[None]
    hwt = torch.as_tensor(hw, dtype=torch.float32)[None]
    p0, kl = m._initial(1, hwt, None, detach=False)
    assert float(kl.sum()) == 0.0
    for k, v in p0.items():  # modulator bypassed: the initial parameters are theta
        assert torch.equal(v[0], m.params_[k])
    p1 = m._inner(p0, xs, ys, hwt, 1, create_graph=False)
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in m.params_.items()}
    loss = ((m._forward({k: v[None] for k, v in theta.items()}, xs, hwt) - ys) ** 2).mean()
    grads = torch.autograd.grad(loss, list(theta.values()))
    for (k, v), g in zip(theta.items(), grads, strict=True):
        torch.testing.assert_close(p1[k][0], v - 1e-3 * g, rtol=1e-5, atol=1e-7)


def test_deterministic_modulator_gives_identical_predictions():
    src = _synthetic()
    x, y, hw = src["dev1"]
    det = HELP(net="mlp", hidden=8, episodes=2, n_query=20, tasks_per_episode=2, determ=True,
               mc_samples=3).fit(src)
    a = det.adapt(x[:10], y[:10], hw, seed=1).predict(x)
    b = det.adapt(x[:10], y[:10], hw, seed=2).predict(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(det.predict_samples(x)[0], det.predict_samples(x)[2])
    sto = HELP(net="mlp", hidden=8, episodes=2, n_query=20, tasks_per_episode=2,
               mc_samples=3).fit(src)
    c = sto.adapt(x[:10], y[:10], hw, seed=1).predict(x)
    np.testing.assert_array_equal(c, sto.adapt(x[:10], y[:10], hw, seed=1).predict(x))
    assert not np.array_equal(c, sto.adapt(x[:10], y[:10], hw, seed=2).predict(x))


def test_meta_gradient_reaches_inner_lrs_second_order():
    src = _synthetic()
    m = HELP(net="mlp", hidden=8, episodes=1, n_query=20, tasks_per_episode=4).fit(src)
    for k, lr in m.task_lr_.items():
        assert lr.grad is not None and lr.grad.abs().sum() > 0, k
        assert not torch.equal(lr.detach(), torch.full_like(lr, 1e-3)), k
    assert all(p.grad.abs().sum() > 0 for p in m.znet_.parameters())
    # second order: the meta-gradient of theta differs from the first-order one
    first = HELP(net="mlp", hidden=8, episodes=1, n_query=20, tasks_per_episode=4,
                 second_order=False).fit(src)
    g2, g1 = m.params_["fc1.weight"].grad, first.params_["fc1.weight"].grad
    assert not torch.allclose(g2, g1)


def test_gcn_runs_on_graph_encoding():
    rng = np.random.default_rng(0)
    ops = rng.integers(0, 5, size=(60, 6))
    x = encode_nb201(ops)
    src = {f"d{i}": (x, 1 + op_counts(x, "nb201") @ rng.uniform(0.1, 1, 4), rng.uniform(0, 1, 10))
           for i in range(3)}
    m = HELP(net="gcn", hidden=8, episodes=2, n_query=20, mc_samples=2).fit(src)
    p = m.adapt(x[:10], src["d0"][1][:10], src["d0"][2]).predict(x)
    assert p.shape == (60,) and np.isfinite(p).all()
    with pytest.raises(HwnasError, match="gcn"):
        HELP(net="gcn", hidden=8, episodes=1, n_query=20).fit(
            {"a": (np.ones((40, 30)), np.ones(40), np.arange(10.0))})


# --------------------------------------------------------------------------- H2: metric parity


@needs_data
def test_flops_proxy_reproduces_published_row(nb201_df):
    table = LatencyTable(nb201_df, "nb201")
    x = table.encodings("onehot")
    got = {}
    for dev in ("titan_rtx_256", "gold_6226", "pixel2", "fpga"):
        _, query = help_split(table, dev, "nb201")
        got[dev] = spearmanr(nb201_conv_weight_count(x[query]), table.latency(dev)[query])[0]
    # computed on HELP's trimmed query split; the paper prints 0.950 / 0.826 / 0.765 / 0.900
    for dev, ref in {"titan_rtx_256": 0.951, "gold_6226": 0.830, "pixel2": 0.763,
                     "fpga": 0.895}.items():
        assert got[dev] == pytest.approx(ref, abs=0.005), (dev, got[dev])
    # the string form agrees with the encoding form
    np.testing.assert_array_equal(nb201_conv_weight_count(nb201_df["arch_str"][:50].tolist()),
                                  nb201_conv_weight_count(x[:50]))


@needs_data
def test_op_count_ridge_ten_shot_baseline(nb201_df):
    table = LatencyTable(nb201_df, "nb201")
    tasks = help_sources(table, HELP_DEVICES["nb201"]["meta_test"], with_query=True)
    per_dev = []
    for d_i, dev in enumerate(tasks):
        t = tasks[dev]
        rhos = []
        for s in range(8):
            sup = np.random.default_rng([d_i, s]).permutation(len(t.y))[:10]
            est = RidgeFewShot("nb201", "counts").adapt(t.x[sup], t.y[sup])
            rhos.append(np.nan_to_num(spearmanr(est.predict(t.x_query), t.y_query)[0]))
        per_dev.append(np.mean(rhos))
    assert np.mean(per_dev) == pytest.approx(0.929, abs=0.02), per_dev


# --------------------------------------------------------------------------- encodings, baselines


@needs_data
def test_fbnet_encoding_matches_help(fbnet_df):
    idx = fbnet_df[[f"L{i:02d}" for i in range(22)]].to_numpy()[:3]
    enc = encode_fbnet(idx)
    assert enc.shape == (3, 132)
    first = enc[0].reshape(22, 6)
    assert idx[0][0] == 7 and first[0].tolist() == [0, 1, 0, 0, 0, 1]  # k5_e6
    assert idx[0][1] == 8 and first[1].tolist() == [0] * 6  # skip
    assert idx[0][2] == 1 and first[2].tolist() == [1, 0, 0, 1, 0, 0]  # k3_e1_g2
    counts = op_counts(enc, "fbnet")
    np.testing.assert_array_equal(counts[0], np.bincount(idx[0], minlength=9)[:8])


def test_nb201_encodings():
    a = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    g = encode_nb201(a)
    assert g.shape == (1, 153)
    np.testing.assert_array_equal(g, encode_nb201([[3, 2, 4, 1, 0, 3]]))
    oh = encode_nb201(a, "onehot")
    assert oh.shape == (1, 30) and oh.sum() == 6
    np.testing.assert_array_equal(op_counts(g, "nb201"), op_counts(oh, "nb201"))
    np.testing.assert_array_equal(op_counts(g, "nb201"), [[1, 1, 2, 1]])
    assert nb201_conv_weight_count(a)[0] == 19
    feat, adj = g[0, :72].reshape(9, 8), g[0, 72:].reshape(9, 9)
    assert feat.sum(1).tolist() == [1] * 9 and feat[8, 7] == 1
    assert (adj[8] == 1).all() and (np.diag(adj) == 1).all()
    with pytest.raises(HwnasError):
        encode_nb201("|conv~0|")
    with pytest.raises(HwnasError):
        encode_fbnet(np.full((1, 22), 9))


def test_linear_map_and_ridge_recover_a_linear_target():
    src = _synthetic()
    x, _, _ = src["dev0"]
    # target = 3 * (a source's latency) + 2: the map through that source is exact
    y = 3 * src["dev2"][1] + 2
    lm = LinearMapAdapter("best").fit(src).adapt(x[:10], y[:10])
    assert lm.source_used_ == "dev2"
    np.testing.assert_allclose(lm.predict(x), y, rtol=0.05)  # the source ridge is shrunk
    lo, hi = lm.interval(x)
    assert (lo <= lm.predict(x)).all() and (hi >= lm.predict(x)).all() and np.isfinite(lm.q_)
    assert len(lm.loo_pred_) == 10
    with pytest.raises(NotFittedError):
        RidgeFewShot("fbnet").predict(x)
    with pytest.raises(HwnasError):
        LinearMapAdapter("nope").fit(src)


# --------------------------------------------------------------------------- persistence


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_save_load_round_trip_and_pickle_refused(tmp_path):
    src = _synthetic()
    x, y, hw = src["dev3"]
    m = HELP(net="mlp", hidden=8, episodes=3, n_query=20, mc_samples=3, eval_every=1)
    m.fit(src, valid={"dev3": (x, y, hw, x, y)})
    assert m.best_episode_ in (1, 2, 3) and len(m.history_) == 3
    m.save(tmp_path / "help", meta={"space": "synthetic"})
    back = HELP.load(tmp_path / "help")
    assert back.meta_ == {"space": "synthetic"} and back.best_episode_ == m.best_episode_
    np.testing.assert_array_equal(m.adapt(x[:10], y[:10], hw).predict(x),
                                  back.adapt(x[:10], y[:10], hw).predict(x))
    assert back.q_ == m.q_
    # a pickle renamed as the weights is refused without running it
    marker = tmp_path / "pwned"
    (tmp_path / "help" / "help.safetensors").write_bytes(
        pickle.dumps({"net.fc1.weight": _Payload(marker)}))
    with pytest.raises(HwnasError, match=r"help\.safetensors: not a valid safetensors file"):
        HELP.load(tmp_path / "help")
    assert not marker.exists()
    # a JSON describing another model is refused
    m.save(tmp_path / "h2")
    doc = json.loads((tmp_path / "h2" / "help.json").read_text())
    doc["params"]["hidden"] = 9
    (tmp_path / "h2" / "help.json").write_text(json.dumps(doc))
    with pytest.raises(HwnasError, match="tensor 'net.fc1.weight'"):
        HELP.load(tmp_path / "h2")
    doc["format"] = "other"
    (tmp_path / "h2" / "help.json").write_text(json.dumps(doc))
    with pytest.raises(HwnasError, match="format"):
        HELP.load(tmp_path / "h2")
