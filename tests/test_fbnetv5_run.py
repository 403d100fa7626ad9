"""FBNetV5 end to end (`hwnas.search.fbnetv5_run`): one backbone pass per step for any number of
tasks (F2), a task's latency weight lowering its expected, table and measured latency (F4), the run
folder, the CLI and its mistakes.

Latency comes from a real quick ort-cpu profile of the `fbnetv5` space (a few seconds to
measure): no latency is made up. The estimator's own tests (F1, planted F3, analytic F4) are in
tests/test_fbnetv5_estimator.py.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.data.multitask import load_multitask
from hwnas.devices.measurement import Protocol
from hwnas.errors import HwnasError
from hwnas.profile.profiler import ProfileConfig, Profiler
from hwnas.profile.reader import Profile
from hwnas.search.fbnetv5 import ReinforceEstimator, TaskDistributions
from hwnas.search.fbnetv5_run import (
    FBNetV5Config,
    parse_budgets,
    run_fbnetv5,
    search_step,
    task_tables,
)
from hwnas.space import Arch, get_space

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

RES = 32


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fb-prof") / "ort-cpu-fbnetv5-32"
    Profiler(ProfileConfig(device="ort-cpu", space="fbnetv5", resolution=RES, nets=0, out=out,
                           protocol=Protocol.quick())).run()
    return out


def _config(profile_dir: Path, out: Path, **kw) -> FBNetV5Config:
    settings = dict(profile=profile_dir, out=out, steps=12, warmup=4, batch_size=32,
                    bn_batches=2, seed=0)
    return FBNetV5Config(**{**settings, **kw})


@pytest.mark.parametrize("n_tasks", [1, 2, 3, 6])
def test_one_backbone_forward_and_backward_per_step(n_tasks: int) -> None:
    """F2: whatever the number of tasks, a step runs the backbone once forward and once backward
    (hooks on the stem, the first op every path goes through)."""
    space = get_space("fbnetv5", RES, 0.5)
    kinds_all = ["cls", "seg", "det"] * 2
    names = [f"{k}{i // 3}" if i >= 3 else k for i, k in enumerate(kinds_all)][:n_tasks]
    kinds = dict(zip(names, kinds_all[:n_tasks], strict=True))
    net = space.supernet(tuple(dict.fromkeys(kinds.values())))
    for n, k in kinds.items():
        if n not in net.heads:
            net.heads[n] = copy.deepcopy(net.heads[k])
    data = load_multitask("multitask:digits", RES, 0)
    x, y = next(data.batches("train", 16, True, seed=0))
    dists = TaskDistributions(n_tasks, len(space.layers), tasks=names)
    est = ReinforceEstimator()
    counts = {"fwd": 0, "bwd": 0}
    net.stem.register_forward_hook(lambda *a: counts.__setitem__("fwd", counts["fwd"] + 1))
    # a tensor hook on the stem's output: called once per backward through the backbone
    def on_output(module, inputs, output) -> None:
        output.register_hook(lambda g: counts.__setitem__("bwd", counts["bwd"] + 1))

    net.stem.register_forward_hook(on_output)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        net.zero_grad(set_to_none=True)
        dists.zero_grad(set_to_none=True)
        res = search_step(net, dists, est, kinds, x, y, generator=gen)
        assert counts == {"fwd": step + 1, "bwd": step + 1}
        assert res["losses"].shape == (n_tasks,)
        # every task's head and the logits got gradients from the one backward
        for n in names:
            assert any(p.grad is not None for p in net.heads[n].parameters())
        if step > 0:  # the first call only initialises the baselines (arch loss 0)
            assert dists.logits.grad is not None


def test_budgets_parse_and_refuse() -> None:
    assert parse_budgets("cls=3.5, seg=6", ("cls", "seg", "det")) == {"cls": 3.5, "seg": 6.0}
    assert parse_budgets(None, ("cls",)) == {}
    for text, msg in (("cls=3,foo=2", "not a task of this run"), ("cls", "write TASK=MS"),
                      ("cls=abc", "not a number"), ("cls=-1", "positive")):
        with pytest.raises(HwnasError, match=msg):
            parse_budgets(text, ("cls", "seg"))


def test_a_run_writes_one_arch_per_task(profile_dir, tmp_path) -> None:
    out = tmp_path / "run"
    summary = run_fbnetv5(_config(profile_dir, out, budgets_ms="cls=100,det=100"))
    prof = Profile.load(profile_dir)
    tables = task_tables(prof, prof.space, ("cls", "seg", "det"))
    for t in ("cls", "seg", "det"):
        arch = Arch.load(out / t / "arch.json")
        assert arch.space == f"fbnetv5-{t}" and arch.resolution == RES
        r = summary["per_task"][t]
        assert r["predicted_ms"] == pytest.approx(float(tables[t].predict([arch])[0]))
        assert len(r["bits"]) == 12 and 0.0 <= r["valid_metric"] <= 1.0
    assert summary["per_task"]["cls"]["met"] is True
    assert summary["per_task"]["seg"]["budget_ms"] is None
    for name in ("config.json", "history.csv", "dists.safetensors", "supernet.safetensors",
                 "probs.json", "summary.json"):
        assert (out / name).exists(), name
    probs = json.loads((out / "probs.json").read_text())
    assert probs["tasks"] == ["cls", "seg", "det"] and len(probs["history"][-1]["probs"]) == 3
    from hwnas.report import build_report  # `hwnas report --run` shows each task's network

    page = build_report(profile_dir, out, None, tmp_path / "report.html").read_text()
    assert "FBNetV5: run" in page and summary["per_task"]["seg"]["bits"] in page
    with pytest.raises(HwnasError, match="cannot resume"):
        run_fbnetv5(_config(profile_dir, out))


def test_latency_weight_lowers_expected_table_and_measured_latency(profile_dir, tmp_path) -> None:
    """F4: raising the latency weight of a task lowers its expected (closed-form) and derived
    table latency monotonically, and the derived nets measured on ort-cpu follow."""
    from hwnas.devices.registry import get_backend
    from hwnas.profile.profiler import measure_beside_reference
    from hwnas.profile.sampling import net_id

    prof = Profile.load(profile_dir)
    lut = task_tables(prof, prof.space, ("cls",))["cls"]
    fastest = float(lut.predict([prof.space.for_task("cls").arch(["skip"] * 12)])[0])
    budget = fastest * 1.01  # below every net with a block: the term keeps pushing
    expected, table, archs = [], [], []
    for i, lam in enumerate((0.0, 0.05, 0.3, 3.0)):
        out = tmp_path / f"k{i}"
        summary = run_fbnetv5(_config(profile_dir, out, tasks="cls", budgets_ms=f"cls={budget}",
                                      latency_lambda=lam, controller="none", steps=60, warmup=5,
                                      arch_lr=0.1))
        hist = (out / "history.csv").read_text().splitlines()
        header, last = hist[0].split(","), hist[-1].split(",")
        expected.append(float(last[header.index("cls_expected_ms")]))
        table.append(summary["per_task"]["cls"]["predicted_ms"])
        archs.append(Arch.load(out / "cls" / "arch.json"))
    assert all(a >= b for a, b in zip(expected, expected[1:], strict=False)), expected
    assert all(a >= b - 1e-12 for a, b in zip(table, table[1:], strict=False)), table
    assert table[0] > table[-1] and expected[0] > expected[-1]
    backend = get_backend("ort-cpu", threads=1)
    meas = measure_beside_reference(backend, prof, archs[:1] + archs[-1:], Protocol.quick(), 0)
    first, last = (meas[net_id(a)]["measured_ms"] for a in (archs[0], archs[-1]))
    assert last < first


def test_config_mistakes(profile_dir, tmp_path) -> None:
    for kw, msg in ((dict(tasks="cls,foo"), "unknown task"), (dict(tasks="cls,cls"), "twice"),
                    (dict(steps=0), "steps must be at least 1"),
                    (dict(steps="5"), "steps must be a whole number"),
                    (dict(lr=math.nan), "lr must be a finite number"),
                    (dict(init_keep=1.0), "init_keep"), (dict(controller="x"), "controller"),
                    (dict(data="digits"), "multitask")):
        with pytest.raises(HwnasError, match=msg):
            _config(profile_dir, tmp_path / "x", **kw)


def test_a_profile_of_another_space_is_refused(tmp_path) -> None:
    other = tmp_path / "p"
    Profiler(ProfileConfig(device="ort-cpu", space="nb201", resolution=8, width=0.25, nets=0,
                           out=other, protocol=Protocol.quick())).run()
    with pytest.raises(HwnasError, match="needs a profile of space 'fbnetv5'"):
        run_fbnetv5(_config(other, tmp_path / "run"))


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    from hwnas.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    cap = capsys.readouterr()
    return info.value.code, cap.out, cap.err


def test_cli_search_fbnetv5(profile_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    code, so, se = _main(["search", "--method", "fbnetv5", "--profile", str(profile_dir),
                          "--out", str(out), "--steps", "6", "--tasks", "cls,det",
                          "--budget-ms", "cls=100,det=100"], capsys)
    assert code == 0, se
    assert (out / "cls" / "arch.json").exists() and (out / "det" / "arch.json").exists()
    assert not (out / "seg").exists()
    assert "cls:" in so and "det:" in so


@pytest.mark.parametrize("args, message", [
    (["--budget-ms", "cls=1,foo=2"], "not a task of this run"),
    (["--tasks", "cls,xyz"], "unknown task"),
    (["--bins", "4"], "for --method shiftnas"),
    (["--accuracy-table", "x.csv"], "for the strategy methods"),
])
def test_cli_fbnetv5_mistakes_exit_2(profile_dir, tmp_path, capsys, args, message) -> None:
    code, _, err = _main(["search", "--method", "fbnetv5", "--profile", str(profile_dir),
                          "--out", str(tmp_path / "o"), *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_tasks_and_per_task_budgets_belong_to_fbnetv5(tmp_path, capsys) -> None:
    code, _, err = _main(["search", "--method", "evolution", "--tasks", "cls"], capsys)
    assert code == 2 and "--tasks: for --method fbnetv5" in err
    code, _, err = _main(["search", "--profile", str(tmp_path), "--budget-ms", "cls=3"], capsys)
    assert code == 2 and "not a number of ms" in err


def test_bits_of_the_derived_arch_follow_the_probabilities(profile_dir, tmp_path) -> None:
    out = tmp_path / "run"
    summary = run_fbnetv5(_config(profile_dir, out, tasks="seg", steps=5))
    r = summary["per_task"]["seg"]
    probs = np.array(r["keep_probs"])
    assert r["bits"] == "".join("1" if p > 0.5 else "0" for p in probs)


def test_a_task_arch_is_priced_and_exported_with_the_profile(profile_dir, tmp_path) -> None:
    """RUN/<task>/arch.json of a task space is priced by the `fbnetv5` profile's lookup table
    (`SearchSpace.priced_spaces`) in `hwnas.latency.predict` and in the export manifest."""
    from hwnas.export.pipeline import ExportConfig, export
    from hwnas.latency import predict

    prof = Profile.load(profile_dir)
    arch = prof.space.for_task("seg").arch(["keep", "skip"] * 6)
    p = predict(prof, arch)
    lut = task_tables(prof, prof.space, ("seg",))["seg"]
    assert p.ms == pytest.approx(float(lut.predict([arch])[0]))
    assert "fbnetv5-seg priced by the lookup table" in p.note
    assert sum(r["ms"] for r in p.breakdown) == pytest.approx(p.ms)
    arch.save(tmp_path / "arch.json")
    manifests = export(ExportConfig(arch=tmp_path / "arch.json", targets=("onnx",),
                                       out=tmp_path / "exp", profiles=(profile_dir,)))
    assert len(manifests) == 1
    m = json.loads((tmp_path / "exp" / "onnx" / "manifest.json").read_text())
    assert m["predicted"]["latency_ms"] == pytest.approx(p.ms)
