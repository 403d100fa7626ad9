"""ProxylessNAS search: the gradient estimators, path sampling, the budget, data specs, a tiny search."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.data import load_data
from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.latency.loss import ExpectedLatency, LatencyLoss
from hwnas.latency.lut import LookupTablePredictor
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.reader import Profile
from hwnas.search.run import (
    SearchConfig,
    fill_to_budget,
    fit_to_budget,
    latency_model,
    run_search,
    train_arch,
    training_space,
)
from hwnas.search.supernet import Skip, SuperNet
from hwnas.search.trainer import arch_optimizer
from hwnas.space import Arch, get_space

TRAIN_RES, TRAIN_WIDTH = 16, 0.35


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    """A real (quick) ort-cpu profile of the proxyless space at resolution 32, no whole nets."""
    out = tmp_path_factory.mktemp("search-prof") / "ort-cpu-1t-proxyless-32"
    Profiler(ProfileConfig(device="ort-cpu", space="proxyless", resolution=32, nets=0, out=out,
                           protocol=Protocol.quick())).run()
    return out


def _space(name="proxyless"):
    return get_space(name, resolution=TRAIN_RES, width=TRAIN_WIDTH, num_classes=10)


def _net(seed=0, dtype=torch.float32, space="proxyless"):
    torch.manual_seed(seed)
    net = SuperNet(_space(space), seed=seed).to(dtype)
    with torch.no_grad():  # a distribution far from uniform
        net.alpha.copy_((torch.randn_like(net.alpha) * 1.5).masked_fill(~net.mask, 0.0))
    return net


def _layer_input(net, i, batch=4, dtype=torch.float32):
    layer = net.space.layers[i]
    return torch.randn(batch, layer.cin, layer.h, layer.w, dtype=dtype)


def _force_path(net, i, j):
    """Binary gates of layer i set to path j (what `binarize` draws at random)."""
    m = net.mixed[i]
    m.active = j
    gates = torch.zeros(m.n, dtype=net.alpha.dtype)
    gates[j] = 1.0
    m.gates = gates.requires_grad_(True)


# --- (a) the full_v2 estimate is the gradient of the relaxed mixed op for a linear loss ---------
@pytest.mark.parametrize("space, layer", [("proxyless", 0), ("proxyless", 1), ("proxyless", 5),
                                          ("proxyless", 20), ("fbnet", 2), ("fbnet", 5)])
def test_full_v2_alpha_gradient_equals_relaxed_gradient(space, layer):
    net = _net(seed=layer, dtype=torch.float64, space=space)
    m = net.mixed[layer]
    x = _layer_input(net, layer, dtype=torch.float64)
    with torch.no_grad():
        c = torch.randn_like(m.candidates[0](x))
    # reference: L = <c, sum_j p_j o_j(x)> with autograd through p = softmax(alpha)
    a = net.alpha.detach().clone().requires_grad_(True)
    p = torch.softmax(a.masked_fill(~net.mask, float("-inf")), -1)
    m.mode, m.path_probs = "all", p[layer, :m.n]
    expected = torch.autograd.grad((c * m(x)).sum(), a)[0]
    sampled = [int(j) for j in net.binarize("full_v2")[[layer]]]
    for j in sorted(set(range(m.n)) | set(sampled)):  # every path, and one binarize() drew
        net.binarize("full_v2")
        _force_path(net, layer, j)
        net.alpha.grad = None
        y = m(x)
        assert y.grad_fn is not None
        (c * y).sum().backward()
        net.set_arch_param_grad()
        got = net.alpha.grad
        assert torch.allclose(got[layer], expected[layer], atol=1e-5, rtol=0), j
        assert torch.all(got[:layer] == 0) and torch.all(got[layer + 1:] == 0)
    lay = net.space.layers[layer]
    if "zero" in lay.choices or (lay.stride == 1 and lay.cin == lay.cout):
        assert isinstance(m.candidates[-1], Skip)  # proxyless zero / fbnet skip: the identity


# --- (b) two-path mode leaves the other paths' probabilities unchanged --------------------------
def test_two_mode_keeps_unsampled_probabilities():
    net = _net(seed=3)
    table = np.where(net.mask.numpy(), np.random.default_rng(0).uniform(0.1, 2.0,
                                                                         net.mask.shape), np.nan)
    expected = ExpectedLatency(table, fixed_ms=1.0)
    loss_fn = LatencyLoss("add#linear", ref_ms=5.0)
    opt = arch_optimizer([net.alpha], lr=0.2)
    x = torch.randn(8, 3, TRAIN_RES, TRAIN_RES)
    y = torch.randint(0, 10, (8,))
    moved = 0.0
    for _ in range(4):
        before = net.probs().detach().clone()
        net.binarize("two")
        involved = [list(m.involved) for m in net.mixed]
        loss = loss_fn(F.cross_entropy(net(x), y), expected(net.latency_alpha()))
        opt.zero_grad()
        loss.backward()
        net.set_arch_param_grad()
        grad_rows = net.alpha.grad
        opt.step()
        net.rescale_updated_arch_param()
        after = net.probs().detach()
        for i, inv in enumerate(involved):
            others = [j for j in range(net.mixed[i].n) if j not in inv]
            assert torch.all(grad_rows[i, others] == 0)
            assert torch.allclose(after[i, others], before[i, others], atol=1e-6, rtol=0)
            assert float(after[i, inv].sum()) == pytest.approx(float(before[i, inv].sum()),
                                                               abs=1e-6)
            moved = max(moved, float((after[i, inv] - before[i, inv]).abs().max()))
        net.clear_gates()
    assert moved > 1e-4  # the sampled pairs did move


# --- (c) one candidate per layer runs (with autograd) in a weight step --------------------------
def test_weight_step_runs_one_candidate_per_layer():
    net = _net(seed=1)
    calls = {}

    def hook(i, j):
        def fn(module, inputs, output):
            calls.setdefault(i, []).append((j, output.requires_grad))
        return fn

    for i, m in enumerate(net.mixed):
        for j, cand in enumerate(m.candidates):
            cand.register_forward_hook(hook(i, j))
    x = torch.randn(4, 3, TRAIN_RES, TRAIN_RES)
    idx = net.sample_paths()
    out = net(x)
    F.cross_entropy(out, torch.randint(0, 10, (4,))).backward()
    assert sorted(calls) == list(range(len(net.mixed)))
    for i, m in enumerate(net.mixed):
        assert [j for j, _ in calls[i]] == [idx[i]]
        assert calls[i][0][1] or isinstance(m.candidates[idx[i]], Skip)
        for j, cand in enumerate(m.candidates):
            grads = [p.grad for p in cand.parameters()]
            if j == idx[i]:
                assert all(g is not None for g in grads)
            else:
                assert all(g is None for g in grads)
    assert net.alpha.grad is None

    # full_v2: the forward runs the sampled path only; the others run in the backward, no_grad
    calls.clear()
    net.zero_grad(set_to_none=True)
    active = net.binarize("full_v2")
    out = net(x)
    assert all([j for j, _ in calls[i]] == [active[i]] for i in calls)
    calls.clear()
    F.cross_entropy(out, torch.randint(0, 10, (4,))).backward()
    for i, m in enumerate(net.mixed):
        assert sorted(j for j, _ in calls.get(i, [])) == \
            sorted(j for j in range(m.n) if j != active[i])
        assert not any(rg for _, rg in calls.get(i, []))


def test_binarize_draws_the_active_path_from_p():
    """The arch step's active paths come from p (a shadowed argument once made them all 0)."""
    net = _net(seed=2)
    last = [m.n - 1 for m in net.mixed]
    with torch.no_grad():
        net.alpha.zero_()
        for i, j in enumerate(last):
            net.alpha[i, j] = 30.0
    for mode in ("full_v2", "two"):
        assert list(net.binarize(mode)) == last
        assert [m.active for m in net.mixed] == last
        net.clear_gates()
    assert list(net.binarize("full_v2", active=[0] * len(last))) == [0] * len(last)


# --- (d) the latency gradient through the supernet's alpha is the closed form -------------------
def test_latency_gradient_matches_closed_form(profile_dir):
    prof = Profile.load(profile_dir)
    lut = LookupTablePredictor.from_profile(prof)
    net = SuperNet(training_space(prof.space, TRAIN_RES, TRAIN_WIDTH, 10), seed=0)
    with torch.no_grad():
        net.alpha.normal_(0, 1.0)
    e = ExpectedLatency.from_predictor(lut, scale=1.3, offset=0.1)
    assert torch.equal(e.mask, net.mask)
    e(net.alpha).backward()
    closed = e.closed_form_grad(net.alpha.detach())
    assert torch.allclose(net.alpha.grad, closed, atol=1e-6, rtol=1e-5)
    assert torch.all(net.alpha.grad[~net.mask] == 0)
    # one-hot alpha: E[LAT] is the table sum of that arch (scaled)
    arch = prof.space.sample(1)
    idx = torch.as_tensor(lut.indices([arch])[0])
    with torch.no_grad():
        net.alpha.fill_(-1e4)
        net.alpha[torch.arange(len(idx)), idx] = 0.0
    assert float(e(net.alpha).detach()) == pytest.approx(1.3 * float(lut.predict([arch])[0]) + 0.1,
                                                rel=1e-5)


# --- the budget ---------------------------------------------------------------------------------
def test_budget_below_the_fastest_net_is_refused_naming_it(profile_dir, tmp_path):
    model = latency_model(profile_dir)
    budget = model.fastest_ms * 0.5
    with pytest.raises(HwnasError, match="below the fastest network") as e:
        run_search(SearchConfig(profile_dir, budget, out=tmp_path / "run", loss="add#linear"))
    assert f"{model.fastest_ms:.4g} ms" in str(e.value)
    assert not (tmp_path / "run" / "history.csv").exists()


def test_search_receives_a_latency_predictor(profile_dir):
    """A predictor passed in prices the networks, and E[LAT] is fitted to follow it."""
    from hwnas.latency import LatencyPredictor

    class Doubled(LatencyPredictor):
        name = "doubled lut"

        def __init__(self, lut):
            self.lut = lut

        def indices(self, archs):
            return self.lut.indices(archs)

        def predict_indices(self, idx):
            return 2.0 * self.lut.predict_indices(idx)

    plain = latency_model(profile_dir)
    assert plain.predictor_name == "lut" and plain.scale == 1.0 and plain.offset == 0.0
    model = latency_model(profile_dir, Doubled(plain.lut))
    assert model.predictor_name == "doubled lut" and model.interval(plain.lut.extremes()[0]) is None
    assert model.fastest_ms == pytest.approx(2 * plain.fastest_ms)
    assert model.scale == pytest.approx(2.0) and model.offset == pytest.approx(0.0, abs=1e-9)


def test_mul_log_needs_a_budget_above_one_ms(profile_dir, tmp_path):
    with pytest.raises(HwnasError, match="add#linear"):
        SearchConfig(profile_dir, 0.5, out=tmp_path, loss="mul#log")


def test_auto_loss_is_mul_log_only_when_every_network_is_above_one_ms(profile_dir):
    """log E[LAT] < 0 below 1 ms makes mul#log's power NaN (the demo once crashed on it)."""
    from hwnas.search.run import latency_loss_mode

    model = latency_model(profile_dir)
    for fastest, budget, want in ((0.19, 1.6, "add#linear"), (1.2, 3.0, "mul#log"),
                                  (1.2, 1.0, "add#linear")):
        model.fastest_ms = fastest
        assert latency_loss_mode("auto", model, budget) == want
        assert latency_loss_mode("add#linear", model, budget) == "add#linear"
    model.fastest_ms = 0.19
    with pytest.raises(HwnasError, match="fastest network here is 0.19 ms"):
        latency_loss_mode("mul#log", model, 1.6)


def test_over_budget_network_is_repaired_greedily(profile_dir):
    model = latency_model(profile_dir)
    lut = model.lut
    _, slowest = lut.extremes()
    idx = lut.indices([slowest])[0]
    budget = model.fastest_ms + 0.3 * (model.slowest_ms - model.fastest_ms)
    logp = np.log(np.full(lut.table_.shape, 1.0 / lut.table_.shape[1]))
    logp[np.arange(len(idx)), idx] = 0.0
    fixed, steps = fit_to_budget(idx, logp, lut.table_, model.predict_indices, budget)
    assert model.predict_indices(fixed[None])[0] <= budget
    assert steps and all(s["saving_ms"] > 0 for s in steps)
    # greedy stops as soon as it fits: undoing the last switch would be over budget
    undo = fixed.copy()
    undo[steps[-1]["layer"]] = steps[-1]["from"]
    assert model.predict_indices(undo[None])[0] > budget


# --- a tiny search end to end, and resume -------------------------------------------------------
def _config(profile_dir, out, **kw):
    model = latency_model(profile_dir)
    budget = model.fastest_ms + 0.4 * (model.slowest_ms - model.fastest_ms)
    base = dict(out=out, grad_mode="full_v2", loss="add#linear", data="digits", epochs=1,
                warmup_epochs=1, batch_size=32, train_resolution=TRAIN_RES,
                train_width=TRAIN_WIDTH, max_batches=3, data_limit=300, threads=1)
    return SearchConfig(profile_dir, budget, **{**base, **kw})


def _history(out):
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_search_writes_everything_and_resumes(profile_dir, tmp_path):
    out = tmp_path / "run"
    seen = []
    summary = run_search(_config(profile_dir, out), progress=seen.append)
    assert [r["epoch"] for r in seen] == [0, 1]
    for name in ("arch.json", "history.csv", "summary.json", "checkpoint.safetensors",
                 "config.json", "cloud.csv"):
        assert (out / name).is_file(), name
    with open(out / "cloud.csv") as f:
        cloud = list(csv.DictReader(f))
    assert [r["kind"] for r in cloud] == ["final"] + ["sampled"] * 30
    assert cloud[0]["choices"].split() == list(Arch.load(out / "arch.json").choices)
    assert all(0 <= float(r["valid_acc"]) <= 1 and float(r["predicted_ms"]) > 0 for r in cloud)
    arch = Arch.load(out / "arch.json")
    prof = Profile.load(profile_dir)
    prof.space.validate(arch)  # in the profile's space, at the profile's resolution
    assert arch.meta["train_resolution"] == TRAIN_RES
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary))
    for key in ("predicted_ms", "interval_ms", "accuracy", "budget_ms", "met", "latency_note"):
        assert key in s
    assert s["met"] is True and s["predicted_ms"] <= s["budget_ms"]
    assert s["predicted_ms"] == pytest.approx(float(latency_model(profile_dir).best.predict(
        [arch])[0]))
    rows = _history(out)
    assert [r["phase"] for r in rows] == ["warmup", "search"]
    for col in ("train_loss", "valid_acc", "expected_ms", "latency_weight", "entropy"):
        assert all(np.isfinite(float(r[col])) for r in rows), col

    # resume with more epochs: continues after the last finished epoch
    seen.clear()
    run_search(_config(profile_dir, out, epochs=2), progress=seen.append)
    assert [r["epoch"] for r in seen] == [2]
    rows2 = _history(out)
    assert len(rows2) == 3 and rows2[:2] == rows
    # a resume with other settings is refused
    with pytest.raises(HwnasError, match="other settings"):
        run_search(_config(profile_dir, out, epochs=2, seed=5))


@pytest.mark.parametrize("mode", ["full_v2", "two", "reinforce"])
def test_an_interrupted_search_resumes_exactly(profile_dir, tmp_path, mode):
    """The checkpoint holds the optimizers' state and how many validation batches were drawn:
    killed after an epoch and resumed, a search ends as the uninterrupted one, bit for bit."""
    from safetensors.torch import load_file

    kw = dict(grad_mode=mode, epochs=2, warmup_epochs=1, max_batches=2, rl_batch=2)
    run_search(_config(profile_dir, tmp_path / "whole", **kw))

    class Killed(Exception):
        pass

    def kill_after_first_search_epoch(row):
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        run_search(_config(profile_dir, tmp_path / "cut", **kw),
                   progress=kill_after_first_search_epoch)
    assert len(_history(tmp_path / "cut")) == 2
    run_search(_config(profile_dir, tmp_path / "cut", **kw))
    a, b = _history(tmp_path / "whole"), _history(tmp_path / "cut")
    for row in a + b:
        row.pop("seconds")
    assert a == b
    wa = load_file(str(tmp_path / "whole" / "checkpoint.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "checkpoint.safetensors"))
    assert wa.keys() == wb.keys() and any(k.startswith("opt0.") for k in wa)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert Arch.load(tmp_path / "whole" / "arch.json").choices == \
        Arch.load(tmp_path / "cut" / "arch.json").choices


@pytest.mark.parametrize("mode", ["two", "reinforce"])
def test_tiny_search_other_modes(profile_dir, tmp_path, mode):
    s = run_search(_config(profile_dir, tmp_path / mode, grad_mode=mode, warmup_epochs=0,
                           max_batches=2, rl_batch=3))
    assert s["grad_mode"] == mode and s["met"] is True
    assert (tmp_path / mode / "arch.json").is_file()


def test_train_arch_reports_accuracy(tmp_path):
    arch = get_space("proxyless", resolution=32).sample(0)
    res = train_arch(arch, "digits", epochs=1, batch_size=32, train_resolution=TRAIN_RES,
                     train_width=TRAIN_WIDTH, max_batches=3, data_limit=200, out=tmp_path)
    assert 0.0 <= res["test_acc"] <= 1.0 and 0.0 <= res["valid_acc"] <= 1.0
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "train.json").is_file()


# --- data specs ---------------------------------------------------------------------------------
def test_digits_spec_loads_resized_three_channel_normalised():
    d = load_data("digits", resolution=16, seed=0)
    assert d.num_classes == 10
    assert len(d.train) + len(d.valid) + len(d.test) == 1797
    assert d.train.x.shape[1:] == (3, 16, 16) and d.train.x.dtype == torch.uint8
    x, y = next(d.batches("train", 64))
    assert x.shape == (64, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = d.normalize(d.train.x)
    assert torch.allclose(xs.mean((0, 2, 3)), torch.zeros(3), atol=1e-3)
    # the splits are disjoint and seeded
    again = load_data("digits", resolution=16, seed=0)
    assert torch.equal(again.valid.y, d.valid.y)


def test_folder_spec_loads_generated_pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for k in range(5):
            arr = rng.integers(0, 255, (20 + k, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{k}.png")
    d = load_data(f"folder:{tmp_path}", resolution=12, test_frac=0.2, valid_frac=0.25)
    assert d.classes == ["cat", "dog"]
    assert len(d.train) + len(d.valid) + len(d.test) == 10
    assert d.train.x.shape[1:] == (3, 12, 12)


def _fake_cifar(root, n=6):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{k}.png".encode() for k in range(n)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{k}".encode() for k in range(10)]}, f, protocol=2)
    return root


def test_cifar_spec_loads_python_batches(tmp_path):
    root = _fake_cifar(tmp_path / "cifar-10-batches-py")
    d = load_data(f"cifar10:{root}", resolution=16, valid_frac=0.2)
    assert d.classes == [f"c{k}" for k in range(10)]
    assert len(d.train) + len(d.valid) == 30 and len(d.test) == 6
    assert d.test.x.shape[1:] == (3, 16, 16)


def test_cifar_refuses_a_pickle_that_would_run_code(tmp_path):
    root = _fake_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            import os
            return (os.getcwd, ())

    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(HwnasError, match="not a CIFAR-10 python batch"):
        load_data(f"cifar10:{root}", resolution=8)


@pytest.mark.parametrize("spec, match", [
    ("mnist", "unknown data spec"),
    ("", "empty data spec"),
    ("folder:", "needs a path"),
    ("folder:/nonexistent/hwnas-images", "image folder not found"),
    ("cifar10:/nonexistent/hwnas-cifar", "CIFAR-10 folder not found"),
])
def test_bad_data_specs_give_clear_errors(spec, match):
    with pytest.raises(HwnasError, match=match):
        load_data(spec)


def test_cifar_folder_missing_batches_is_named(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(HwnasError, match="missing data_batch_2"):
        load_data(f"cifar10:{tmp_path}")


def test_under_budget_network_is_filled_greedily_up_to_the_budget(profile_dir):
    model = latency_model(profile_dir)
    lut = model.lut
    fastest, _ = lut.extremes()
    idx = lut.indices([fastest])[0]
    budget = model.fastest_ms + 0.6 * (model.slowest_ms - model.fastest_ms)
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(lut.table_.shape[1]), size=lut.table_.shape[0]))
    filled, steps = fill_to_budget(idx, logp, lut.table_, model.predict_indices, budget, 0.85)
    ms = model.predict_indices(filled[None])[0]
    assert steps and all(s["added_ms"] > 0 for s in steps)
    assert ms <= budget
    # it stops once at the floor, or when no slower switch fits under the budget
    if ms < 0.85 * budget:
        for i in range(len(filled)):
            for j in range(lut.table_.shape[1]):
                if np.isfinite(lut.table_[i, j]) and lut.table_[i, j] > lut.table_[i, filled[i]]:
                    trial = filled.copy()
                    trial[i] = j
                    assert model.predict_indices(trial[None])[0] > budget
    else:
        undo = filled.copy()
        undo[steps[-1]["layer"]] = steps[-1]["from"]
        assert model.predict_indices(undo[None])[0] < 0.85 * budget
