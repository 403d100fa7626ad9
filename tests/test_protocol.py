"""The timing protocol on real runs: statistics consistent with the samples, noise flagged."""

import random
import time

import numpy as np
import pytest
import torch

from hwnas.devices.measurement import Protocol, measure_callable, measure_interleaved
from hwnas.devices.registry import get_backend
from hwnas.space import OpSpec

FAST = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=20, min_s=0.01, max_runs=60, max_s=0.5,
                round_runs=10, retries=1)


def test_statistics_match_the_samples():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).eval()
    x = torch.randn(1, 8, 16, 16)

    def run():
        with torch.inference_mode():
            conv(x)

    m = measure_callable(run, FAST)
    a = np.asarray(m.samples_ms)
    assert m.n == a.size >= FAST.min_runs
    assert m.n <= FAST.max_runs
    assert m.median == pytest.approx(np.median(a))
    assert m.min == pytest.approx(a.min())
    assert m.p10 == pytest.approx(np.percentile(a, 10))
    assert m.p90 == pytest.approx(np.percentile(a, 90))
    assert m.cv == pytest.approx(a.std(ddof=1) / a.mean())
    assert m.min <= m.p10 <= m.median <= m.p90
    assert m.warmup >= FAST.warmup_runs
    assert set(m.stats()) >= {"median_ms", "min_ms", "p10_ms", "p90_ms", "cv", "n"}


def test_noisy_run_is_measured_again_and_flagged():
    rng = random.Random(0)

    def noisy():  # half the calls take 10x longer: p90/p10 ~ 10, far above max_spread
        time.sleep(0.0002 if rng.random() < 0.5 else 0.002)

    m = measure_callable(noisy, FAST)
    assert m.flagged
    assert m.attempts == FAST.retries + 1
    assert m.spread > FAST.max_spread


def test_steady_run_is_not_flagged():
    m = measure_callable(lambda: time.sleep(0.001), FAST)
    assert not m.flagged
    assert 0.9 < m.median < 3.0  # a 1 ms sleep (plus the scheduler's slack)


def test_interleaved_rounds_measure_every_item_and_flag_only_the_noisy_one():
    rng = random.Random(1)
    runners = {
        "steady": lambda: time.sleep(0.0005),
        "noisy": lambda: time.sleep(0.0002 if rng.random() < 0.5 else 0.003),
    }
    seen = []
    res = measure_interleaved(runners, FAST, np.random.default_rng(0),
                              on_done=lambda k, m: seen.append(k))
    assert set(res) == set(runners) == set(seen)
    assert res["noisy"].flagged and not res["steady"].flagged
    assert all(m.n >= FAST.min_runs for m in res.values())


def test_ort_cpu_measures_a_real_block():
    op = OpSpec("mbconv", 16, 24, 16, 16, kernel=3, stride=2, expand=3)
    backend = get_backend("ort-cpu", threads=1)
    m = backend.measure(op.module(), op.input_shape, FAST)
    assert m.median > 0 and m.n >= FAST.min_runs
    assert backend.fingerprint()["backend"] == "ort-cpu"
    assert backend.fingerprint()["threads"] == 1


def test_torch_cpu_measures_a_real_block(tmp_path):
    op = OpSpec("conv", 3, 16, 16, 16, kernel=3, stride=2)
    m = get_backend("torch-cpu").measure(op.module(), op.input_shape, FAST, workdir=tmp_path)
    assert m.median > 0
    assert (tmp_path / "model.pt2").exists()
