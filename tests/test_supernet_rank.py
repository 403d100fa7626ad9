"""Issue 15: entangled supernets, sub-supernet masks, ranking metrics, the GM-NAS search flow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hwnas.data import load_data
from hwnas.errors import HwnasError
from hwnas.search import gm
from hwnas.search.ranking import (
    RankConfig,
    inherited_accuracy,
    rank_metrics,
    run_supernet_rank,
    train_split_supernets,
    uniform_epoch,
)
from hwnas.search.supernet import CellSuperNet, SuperNet, build_supernet
from hwnas.search.trainer import weight_optimizer
from hwnas.space import get_space
from hwnas.space.blocks import InvertedResidual
from hwnas.space.elastic import SharedInvertedResidual, load_choice_into

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("style", ["proxyless", "fbnet"])
@pytest.mark.parametrize("stride,cout", [(1, 16), (2, 24)])
def test_elastic_choice_is_the_plain_block_with_sliced_weights(style, stride, cout):
    torch.manual_seed(0)
    shared = SharedInvertedResidual(16, cout, stride, 7, 6, "relu6", style)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for bn in (shared.expand_bn, shared.dw_bn, shared.project_bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    shared.eval()
    x = torch.randn(2, 16, 9, 9)
    for kernel, expand in ((3, 3), (5, 6), (7, 3), (3, 6)):
        plain = InvertedResidual(16, cout, kernel, stride, expand, style=style, act="relu6").eval()
        load_choice_into(plain, shared, kernel, expand)
        torch.testing.assert_close(shared.run(x, kernel, expand), plain(x), rtol=1e-5,
                                   atol=1e-5)


def test_entangled_supernet_shares_one_block_per_layer_and_independent_does_not():
    space = get_space("proxyless", 32, 0.35, 10)
    ent = SuperNet(space, seed=0)
    ind = SuperNet(space, seed=0, weight_sharing="independent")
    n_ent = sum(p.numel() for p in ent.weight_parameters())
    n_ind = sum(p.numel() for p in ind.weight_parameters())
    assert n_ent < n_ind / 2  # 6 MBConv candidates per layer in one set of weights
    assert all(m.shared is not None for m in ent.mixed)
    assert all(m.shared is None for m in ind.mixed)
    # the state dict holds the shared weights once (safetensors refuses aliased tensors)
    names = list(ent.state_dict())
    assert len(names) == len(set(names))
    assert not any(".candidates." in n and "_w" in n for n in names)
    with pytest.raises(HwnasError, match="weight sharing"):
        SuperNet(space, weight_sharing="tied")


def test_entangled_supernet_learns_with_uniform_paths():
    """The stall of issue 15: uniform single-path training now rises well above chance (0.1)."""
    data = load_data("digits", 16, limit=700)
    space = get_space("proxyless", 16, 0.35, data.num_classes)
    net = build_supernet(space, seed=0)
    opt = weight_optimizer(net.weight_parameters(), 0.05)
    gen = torch.Generator().manual_seed(0)
    accs = [uniform_epoch(net, opt, data, 32, 0.05, seed=e, generator=gen) for e in range(6)]
    assert accs[-1] > 0.35, accs


def test_enc_masks_restrict_sampling_probabilities_and_membership():
    space = get_space("proxyless", 16, 0.35, 10)
    net = SuperNet(space, seed=0)
    enc = net.mask.cpu().numpy().copy()
    enc[0, :] = False
    enc[0, [1, 4]] = True
    net.set_enc(enc)
    gen = torch.Generator().manual_seed(1)
    draws = {int(net.sample_uniform(gen)[0]) for _ in range(40)}
    assert draws == {1, 4}
    p = net.probs()[0].detach().numpy()
    assert p[[0, 2, 3, 5]].sum() == 0 and math.isclose(p[[1, 4]].sum(), 1.0, rel_tol=1e-6)
    idx = np.zeros((2, len(space.layers)), dtype=np.int64)
    idx[0, 0], idx[1, 0] = 1, 0
    assert net.contains(idx).tolist() == [True, False]
    with pytest.raises(HwnasError, match="enc mask"):
        net.set_enc(np.zeros_like(enc))


def test_cell_supernet_gradient_set_excludes_the_edge_stem_and_classifier():
    space = get_space("nb201", 8, 1.0, 10, (8, 16, 32))
    net = CellSuperNet(space, cells_per_stage=2)
    for layer in range(6):
        grad_set = {id(p) for p in net.split_parameters(layer)}
        own = {id(p) for p in net.layer_parameters(layer)}
        assert own and not grad_set & own
        assert not grad_set & {id(p) for p in net.stem.parameters()}
        assert not grad_set & {id(p) for p in net.head.parameters()}
        other = {id(p) for p in net.layer_parameters((layer + 1) % 6)}
        assert other <= grad_set
    net.set_paths([0] * 6)  # every edge `none`: the output does not depend on the input
    net.eval()
    x = torch.randn(3, 3, 8, 8)
    out = net(x)
    torch.testing.assert_close(out, net(torch.randn(3, 3, 8, 8)))
    net.set_paths([3] * 6)
    assert not torch.allclose(out, net(x))


def test_rank_metrics():
    truth = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    m = rank_metrics(truth, truth, k=3)
    assert m["kendall_tau"] == pytest.approx(1.0) and m["spearman_rho"] == pytest.approx(1.0)
    assert m["top_k_overlap"] == 1.0 and m["top1_regret"] == 0.0
    r = rank_metrics(truth[::-1], truth, k=3)
    assert r["kendall_tau"] == pytest.approx(-1.0) and r["top_k_overlap"] == 0.0
    assert r["top1_regret"] == pytest.approx(0.5)
    with pytest.raises(HwnasError):
        rank_metrics([1, 2], [1, 2])


@pytest.mark.parametrize("method,n_subs", [("oneshot", 1), ("fewshot", 5), ("gm", 4)])
def test_sub_supernets_partition_the_space_and_own_each_arch_once(method, n_subs):
    data = load_data("digits-shift", 8, limit=200)
    space = get_space("nb201", 8, 1.0, data.num_classes, (8, 16, 32))
    subs = train_split_supernets(space, data, method, epochs=4, batch_size=32, seed=0,
                                 cells_per_stage=1, gm_batches=1)
    assert len(subs) == n_subs
    encs = [s.net.enc.cpu().numpy() for s in subs]
    full = subs[0].net.mask.cpu().numpy()
    assert gm.coverage(encs, full)
    assert sum(gm.n_archs(e) for e in encs) == 5 ** 6
    if method == "gm":
        assert all(len(s.splits) == 2 for s in subs)
        assert {len(g) for s in subs for sp in s.splits for g in sp["groups"]} <= {1, 2, 3, 4}
    acc = inherited_accuracy(subs[0].net, subs[0].net.sample_uniform(), data,
                             recalibrate_batches=1)
    assert 0.0 <= acc <= 1.0


def test_run_supernet_rank_small_end_to_end():
    data = load_data("digits-shift", 8, limit=200)
    space = get_space("nb201", 8, 1.0, data.num_classes, (8, 16, 32))
    cfg = RankConfig(space, data, archs=4, seeds=(0, 1), standalone_epochs=1,
                     supernet_epochs=2, methods=("oneshot", "fewshot"), batch_size=32,
                     cells_per_stage=1)
    out = run_supernet_rank(cfg)
    assert len(out["archs"]) == 4
    for a in out["archs"]:
        assert len(a["standalone_per_seed"]) == 2
        assert a["standalone_acc"] == pytest.approx(np.mean(a["standalone_per_seed"]))
        assert {"inherited_oneshot", "inherited_fewshot"} <= set(a)
    assert out["methods"]["fewshot"]["supernets"] == 5
    assert -1.0 <= out["methods"]["oneshot"]["kendall_tau"] <= 1.0
    with pytest.raises(HwnasError, match="unknown supernet method"):
        RankConfig(space, data, methods=("darts",))


def test_gm_search_freezes_alpha_until_the_last_split_and_resumes(tmp_path):
    """`run_search(split="gm")`: weight steps only before the last split, 4 sub-supernets whose
    masks partition the space, the pick among them, and a resume that reloads all 4."""
    from hwnas.search.run import SearchConfig, run_search

    profile = "profiles/ort-cpu-1t-proxyless-224"
    cfg = dict(profile=profile, budget_ms=8.0, out=tmp_path / "run", epochs=3, warmup_epochs=1,
               max_batches=2, batch_size=32, split="gm", gm_batches=1, train_resolution=16,
               train_width=0.35, data_limit=300)
    summary = run_search(SearchConfig(**cfg))
    hist = list(csvrows(tmp_path / "run" / "history.csv"))
    # total 4 epochs: splits at epochs 1 and 2; alpha frozen (no arch step) before epoch 2
    for row in hist:
        frozen = int(row["epoch"]) < 2
        assert (row["arch_loss"] == "nan" or row["arch_loss"] == "") == frozen, row
    assert [int(r["supernets"]) for r in hist] == [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4]
    subs = summary["subsupernets"]
    assert len(subs) == 4 and summary["chosen_sub"] in range(4)
    encs = [np.asarray(s["allowed"], dtype=bool) for s in subs]
    prof_mask = encs[0] | encs[1] | encs[2] | encs[3]
    assert gm.coverage(encs, prof_mask)
    assert summary["met"] == (summary["predicted_ms"] <= 8.0)
    (tmp_path / "run" / "summary.json").unlink()
    again = run_search(SearchConfig(**cfg))  # every epoch done: reloads the 4 sub-supernets
    assert again["choices"] == summary["choices"]
    assert [s["allowed"] for s in again["subsupernets"]] == [s["allowed"] for s in subs]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["split"] == "gm"


def csvrows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def test_cli_supernet_rank_and_split_errors_are_one_line(tmp_path, capsys):
    from typer.testing import CliRunner

    from hwnas.cli import app, main

    for argv, msg in ((["supernet-rank", "--methods", "oneshot,darts"], "unknown method"),
                      (["search", "--profile", "profiles/ort-cpu-1t-proxyless-224",
                        "--budget-ms", "8", "--split", "halves", "--out", str(tmp_path / "r")],
                       "unknown split")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and msg in err and err.count("\n") == 1, err
        assert not (tmp_path / "r").exists()
    runner = CliRunner()
    out = tmp_path / "rank.json"
    ok = runner.invoke(app, ["supernet-rank", "--archs", "3", "--seeds", "1",
                             "--standalone-epochs", "1", "--supernet-epochs", "1",
                             "--methods", "oneshot", "--limit", "150", "--resolution", "8",
                             "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    result = json.loads(out.read_text())
    assert len(result["archs"]) == 3 and "oneshot" in result["methods"]


def test_restart_final_reinitialises_children_and_keeps_their_masks():
    from hwnas.search.ranking import _fresh, _replace_weights, split_once

    data = load_data("digits-shift", 8, limit=150)
    space = get_space("nb201", 8, 1.0, data.num_classes, (8, 16, 32))
    parent = _fresh(space, 0, 1, 0.05, "entangled")
    gen = torch.Generator().manual_seed(0)
    uniform_epoch(parent.net, parent.opt, data, 32, 0.05, seed=0, generator=gen)
    children = split_once(parent, "gm", 2, data, 32, gm_batches=1, seed=0)
    assert len(children) == 2
    before = {k: v.clone() for k, v in children[0].net.state_dict().items()}
    for name, v in parent.net.state_dict().items():  # below the final split: inherited
        if name not in ("enc",):
            torch.testing.assert_close(before[name], v)
    fresh = _replace_weights(children[0], space, 7, 1, 0.05, "entangled", epoch=3)
    assert torch.equal(fresh.net.enc, children[0].net.enc) and fresh.start == 3
    changed = [n for n, v in fresh.net.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[n])]
    assert any("weight" in n for n in changed)
