"""ParZC (hwnas.search.parzc): DiffKendall fixtures, the Bayesian layers, node-wise features, learning on
synthetic node-wise data, the saved-model format and its checks, the training-free ParZC-dagger."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy import stats

from hwnas.errors import HwnasError, NotFittedError
from hwnas.search.parzc import (
    MABN,
    BayesianLinear,
    ParZC,
    depth_weights,
    deterministic,
    diff_kendall,
    nodewise_features,
    pairwise_loss,
    parse_loss,
    ranking_loss,
    training_free_score,
)

TINY = dict(hidden=16, patches=4, dim=16, depth=1, epochs=3, lr=1e-3)


def _synthetic(n: int, layers: int = 16, seed: int = 0):
    """Node-wise rows in [0, 1]; the target weighs the layers by depth (early +, late -), so the plain
    sum of the features ranks poorly."""
    rng = np.random.default_rng(seed)
    w = np.cos(np.pi * np.arange(layers) / (layers - 1)) + 0.3
    X = rng.uniform(size=(n, layers)).astype(np.float32)
    return X, X @ w + 0.05 * rng.standard_normal(n)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def tiny_model():
    X, y = _synthetic(30, layers=8, seed=1)
    return ParZC(**TINY).fit(X, y), X


# --------------------------------------------------------------------------- DiffKendall


def test_diff_kendall_fixture():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert diff_kendall(x, x).item() == pytest.approx(-0.2223484, abs=1e-6)
    assert diff_kendall(x, x.flip(0)).item() == pytest.approx(0.2223484, abs=1e-6)
    # the same value from the official formula, sigmoid(a z) - sigmoid(-a z), ordered pairs / C(N, 2)
    d = x[:, None] - x[None, :]
    t = torch.sigmoid(0.5 * d) - torch.sigmoid(-0.5 * d)
    assert diff_kendall(x, x).item() == pytest.approx((-(t * t).sum() / 3).item(), abs=1e-7)


def test_diff_kendall_large_alpha_is_minus_two_tau():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = rng.permutation(50).astype(np.float64)
        b = rng.permutation(50).astype(np.float64)
        tau = stats.kendalltau(a, b)[0]
        dk = diff_kendall(torch.tensor(a), torch.tensor(b), alpha=1e4).item()
        assert dk == pytest.approx(-2 * tau, abs=1e-6)
        paper = diff_kendall(torch.tensor(a), torch.tensor(b), alpha=1e4, normalization="paper").item()
        assert paper == pytest.approx(-tau, abs=1e-6)


def test_diff_kendall_paper_is_half_of_code():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, generator=g), torch.randn(20, generator=g)
    code = diff_kendall(x, y, alpha=0.5, normalization="code")
    assert diff_kendall(x, y, normalization="paper").item() == pytest.approx(code.item() / 2, rel=1e-6)
    with pytest.raises(HwnasError):
        diff_kendall(x, y, normalization="other")
    with pytest.raises(HwnasError):
        diff_kendall(x[:1], y[:1])


def test_diff_kendall_gradient_descent_raises_tau():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(40, generator=g)
    pred = torch.randn(40, generator=g).requires_grad_(True)
    before = stats.kendalltau(pred.detach().numpy(), target.numpy())[0]
    opt = torch.optim.Adam([pred], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        diff_kendall(pred, target).backward()
        opt.step()
    after = stats.kendalltau(pred.detach().numpy(), target.numpy())[0]
    assert after > before + 0.3 and after > 0.8


def test_pairwise_and_loss_sums():
    p, t = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])
    assert pairwise_loss(p, t).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # ties in the target add log 2 (sign 0), as in the official pair_loss
    assert pairwise_loss(p, torch.zeros(2)).item() == pytest.approx(math.log(2), rel=1e-6)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, generator=g), torch.randn(10, generator=g)
    both = ranking_loss(x, y, "pairwise+diffkendall")
    assert both.item() == pytest.approx((pairwise_loss(x, y) + diff_kendall(x, y)).item(), rel=1e-6)
    assert ranking_loss(x, y, "mse").item() == pytest.approx(F.mse_loss(x, y).item(), rel=1e-6)
    assert parse_loss("pw+dk") == ("pairwise", "diffkendall")
    for bad in ("kendall", "mse+mse", ""):
        with pytest.raises(HwnasError):
            parse_loss(bad)


# --------------------------------------------------------------------------- Bayesian layers


def test_bayesian_linear():
    torch.manual_seed(0)
    layer = BayesianLinear(8, 4).eval()
    assert layer.bias_mu is None  # the official layer has no bias
    assert F.softplus(layer.weight_rho).unique().tolist() == pytest.approx([0.0067153], abs=1e-7)
    assert layer.weight_mu.abs().max().item() <= 1 / math.sqrt(8)  # Kaiming-uniform, a = sqrt(5)
    x = torch.randn(5, 8)
    assert not torch.equal(layer(x), layer(x))  # eps resampled at every forward, in eval too
    layer.deterministic = True
    assert torch.equal(layer(x), layer(x))
    assert torch.allclose(layer(x), x @ layer.weight_mu.T)


@pytest.mark.parametrize("bias", [False, True])
def test_bayesian_linear_zero_noise_is_linear(bias):
    torch.manual_seed(1)
    layer = BayesianLinear(8, 4, bias=bias)
    with torch.no_grad():
        layer.weight_rho.fill_(-100.0)
        if bias:
            layer.bias_rho.fill_(-100.0)
    ref = torch.nn.Linear(8, 4, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(layer.weight_mu)
        if bias:
            ref.bias.copy_(layer.bias_mu)
    x = torch.randn(6, 8)
    assert torch.allclose(layer(x), ref(x), atol=1e-6)


def test_mabn_structure_and_deterministic_switch():
    torch.manual_seed(0)
    model = MABN(294).eval()  # the NB201 layout: 3 proxies x 98 layers
    assert model.project.out_features == 256
    assert (model.patch_to_embedding.in_features, model.patch_to_embedding.out_features) == (16, 512)
    assert (model.head.in_features, model.head.out_features) == (512, 1)
    assert len(model.mixer_blocks) == 4
    ff4, ff05 = model.mixer_blocks[0][0].fn, model.mixer_blocks[0][1].fn
    assert (ff4[0].out_features, ff05[0].out_features) == (2048, 256)
    x = torch.rand(3, 294)
    with torch.no_grad():
        assert model(x).shape == (3,)
        with deterministic(model):
            assert model.deterministic
            assert torch.equal(model(x), model(x))
        assert not model.deterministic
        assert not torch.equal(model(x), model(x))


def test_zero_noise_mabn_is_deterministic(tiny_model):
    est, X = tiny_model
    with torch.no_grad():
        saved = [(layer, layer.weight_rho.clone()) for layer in est.model_.bayesian_layers()]
        for layer, _ in saved:
            layer.weight_rho.fill_(-100.0)
    try:
        mean, std = est.predict_dist(X, samples=8)
        assert np.all(std < 1e-6)
        np.testing.assert_allclose(mean, est.predict(X, deterministic=True), atol=1e-6)
    finally:
        with torch.no_grad():
            for layer, rho in saved:
                layer.weight_rho.copy_(rho)
    _, std = est.predict_dist(X, samples=8)
    assert std.max() > 0


# --------------------------------------------------------------------------- node-wise features


def test_nodewise_features():
    layer_means = [
        [np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0])],  # proxy 1 constant -> 0/0 -> zeros
        [np.array([0.0, 4.0, 2.0, 1.0]), np.array([np.nan, 1.0, 2.0])],  # a NaN -> all zeros (official)
        [np.array([-3.0, 7.0]), np.array([2.0, 1.0, 0.0, 4.0, 3.0])],
    ]
    F_ = nodewise_features(layer_means, length=5)
    assert F_.dtype == np.float32 and F_.shape == (3, 10)
    np.testing.assert_allclose(F_[0], [0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(F_[1], [0, 1, 0.5, 0.25, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(F_[2], [0, 1, 0, 0, 0, 0.5, 0.25, 0, 1, 0.75])
    for a, p, n in [(0, 0, 3), (1, 0, 4), (2, 0, 2), (2, 1, 5)]:  # the non-constant vectors
        seg = F_[a, p * 5:p * 5 + n]
        assert seg.max() == 1.0 and seg.min() == 0.0
        assert np.all(F_[a, p * 5 + n:(p + 1) * 5] == 0)  # padded at the end
    assert not np.isnan(F_).any()
    # a 3-D array works the same
    arr = np.random.default_rng(0).uniform(size=(4, 3, 6))
    assert nodewise_features(arr, length=8).shape == (4, 24)
    with pytest.raises(HwnasError, match="architecture 1"):
        nodewise_features([[np.ones(3)], [np.arange(6.0)]], length=5)
    with pytest.raises(HwnasError, match="architecture 1"):
        nodewise_features([[np.ones(3), np.ones(3)], [np.ones(3)]], length=5)


# --------------------------------------------------------------------------- the estimator


def test_parzc_defaults_are_official():
    p = ParZC().get_params()
    assert (p["epochs"], p["lr"], p["weight_decay"], p["batch_size"]) == (200, 1e-4, 1e-3, 10)
    assert (p["loss"], p["alpha"], p["hidden"], p["dim"], p["depth"]) == ("diffkendall", 0.5, 256, 512, 4)


def test_parzc_learns_depth_weighting():
    X, y = _synthetic(360)
    Xtr, ytr, Xte, yte = X[:60], y[:60], X[60:], y[60:]
    est = ParZC(epochs=20, lr=2e-3, hidden=32, patches=4, dim=32, depth=1).fit(Xtr, ytr)
    tau_sum = stats.kendalltau(Xte.sum(axis=1), yte)[0]
    tau = stats.kendalltau(est.predict(Xte), yte)[0]
    assert tau > tau_sum + 0.2, (tau, tau_sum)
    assert len(est.loss_curve_) == 20 and est.loss_curve_[-1] < est.loss_curve_[0]
    assert est.n_features_in_ == 16
    assert est.y_mean_ == pytest.approx(ytr.mean()) and est.y_std_ == pytest.approx(ytr.std())


def test_parzc_is_seeded_and_leaves_global_rng():
    X, y = _synthetic(25, layers=8, seed=2)
    state = torch.random.get_rng_state()
    a = ParZC(**TINY, seed=5).fit(X, y)
    assert torch.equal(state, torch.random.get_rng_state())
    b = ParZC(**TINY, seed=5).fit(X, y)
    c = ParZC(**TINY, seed=6).fit(X, y)
    np.testing.assert_array_equal(a.predict(X, deterministic=True), b.predict(X, deterministic=True))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.predict(X), a.predict(X))  # seeded draws
    assert not np.array_equal(a.predict(X, deterministic=True), c.predict(X, deterministic=True))


def test_parzc_other_losses_and_checks(tiny_model):
    X, y = _synthetic(21, layers=8)  # 21 rows: a last batch of one row is skipped for rank losses
    for loss in ("mse", "pairwise", "mse+pairwise+diffkendall"):
        est = ParZC(**{**TINY, "epochs": 1}, loss=loss).fit(X, y)
        assert np.isfinite(est.predict(X)).all()
    with pytest.raises(NotFittedError):
        ParZC().predict(X)
    with pytest.raises(HwnasError, match="loss"):
        ParZC(loss="ranknet").fit(X, y)
    with pytest.raises(HwnasError, match="divisible"):
        ParZC(hidden=30, patches=4).fit(X, y)
    with pytest.raises(HwnasError, match="features"):
        tiny_model[0].predict(X[:, :5])
    with pytest.raises(HwnasError, match="rows"):
        ParZC(**TINY).fit(X, y[:-1])


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tiny_model, tmp_path):
    est, X = tiny_model
    meta = {"proxies": ["grad_norm", "snip", "synflow"], "length": 98, "space": "nb201"}
    est.save(tmp_path / "m", meta=meta)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["parzc.json", "parzc.safetensors"]
    doc = json.loads((tmp_path / "m" / "parzc.json").read_text())
    assert doc["format"] == "hwnas-parzc-1" and doc["meta"] == meta and doc["n_features_in"] == 8
    back = ParZC.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(X, deterministic=True), est.predict(X, deterministic=True))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.meta_ == meta and back.get_params() == est.get_params()
    assert (back.y_mean_, back.y_std_, back.loss_curve_) == (est.y_mean_, est.y_std_, est.loss_curve_)


@pytest.fixture
def saved(tiny_model, tmp_path):
    folder = tmp_path / "saved"
    tiny_model[0].save(folder, meta={"space": "test"})
    return folder


def _edit_json(folder, edit):
    path = folder / "parzc.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_load_refuses_missing_files(saved):
    (saved / "parzc.safetensors").unlink()
    with pytest.raises(HwnasError, match="parzc.safetensors"):
        ParZC.load(saved)
    (saved / "parzc.json").unlink()
    with pytest.raises(HwnasError, match="parzc.json"):
        ParZC.load(saved)


def test_load_refuses_bad_json(saved):
    _edit_json(saved, lambda d: d.update(format="hwnas-parzc-0"))
    with pytest.raises(HwnasError, match=r"parzc\.json: format"):
        ParZC.load(saved)
    _edit_json(saved, lambda d: d.update(format="hwnas-parzc-1"))
    _edit_json(saved, lambda d: d["params"].update(epochs="200"))
    with pytest.raises(HwnasError, match=r"parzc\.json: params: epochs"):
        ParZC.load(saved)
    _edit_json(saved, lambda d: d["params"].update(epochs=3))
    _edit_json(saved, lambda d: d.update(y_std=[1.0]))
    with pytest.raises(HwnasError, match=r"parzc\.json: y_std"):
        ParZC.load(saved)
    (saved / "parzc.json").write_text("{not json")
    with pytest.raises(HwnasError, match=r"parzc\.json"):
        ParZC.load(saved)


def test_load_refuses_shape_mismatch(saved):
    path = saved / "parzc.safetensors"
    state = load_file(str(path))
    state["head.weight_mu"] = torch.zeros(1, 7)
    save_file(state, str(path))
    with pytest.raises(HwnasError, match=r"parzc\.safetensors: tensor 'head\.weight_mu' has shape"):
        ParZC.load(saved)
    # the JSON describing a different model than the tensors
    state["head.weight_mu"] = torch.zeros(1, 16)
    save_file(state, str(path))
    ParZC.load(saved)
    _edit_json(saved, lambda d: d.update(n_features_in=9))
    with pytest.raises(HwnasError, match=r"parzc\.safetensors: tensor 'project\.weight'"):
        ParZC.load(saved)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_pickle_without_running_it(saved, tmp_path):
    marker = tmp_path / "pwned"
    (saved / "parzc.safetensors").write_bytes(pickle.dumps({"head.weight_mu": _Payload(marker)}))
    with pytest.raises(HwnasError, match=r"parzc\.safetensors: not a valid safetensors file"):
        ParZC.load(saved)
    assert not marker.exists()


# --------------------------------------------------------------------------- ParZC-dagger


def test_depth_weights():
    w = depth_weights(10, "sin")
    assert w[0] == 0.5
    assert w[5] == pytest.approx((math.sin(0.5) + 1) / 2)
    np.testing.assert_allclose(depth_weights(4, "quadratic"), [1.0, 9 / 16, 4 / 16, 1 / 16])
    np.testing.assert_array_equal(depth_weights(3, "uniform"), np.ones(3))
    np.testing.assert_allclose(depth_weights(3, lambda i, L: i / L), [0, 1 / 3, 2 / 3])
    assert depth_weights(0, "quadratic").shape == (0,)
    with pytest.raises(HwnasError):
        depth_weights(3, "cubic")
    with pytest.raises(HwnasError):
        depth_weights(3, lambda i, L: np.ones(2))


def test_training_free_score():
    sums = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])]
    sin = [1 * 0.5 + 2 * (math.sin(0.1) + 1) / 2 + 3 * (math.sin(0.2) + 1) / 2,
           4 * 0.5 + 5 * (math.sin(0.1) + 1) / 2]
    np.testing.assert_allclose(training_free_score(sums), sin)
    quad = [1 * 1 + 2 * (2 / 3) ** 2 + 3 * (1 / 3) ** 2, 4 * 1 + 5 * 0.25]
    np.testing.assert_allclose(training_free_score(sums, "quadratic"), quad)
    np.testing.assert_allclose(training_free_score(sums, "uniform"), [6.0, 9.0])
