"""`hwnas report`: one self-contained HTML page; rendered by a real headless Chromium when present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.export.pipeline import ExportConfig, export
from hwnas.report import build_report
from hwnas.search.run import SearchConfig, run_search

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "ort-cpu-1t-proxyless-128"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A profile, a tiny search run on it and the onnx export of its result."""
    if not PROFILE.is_dir():
        pytest.skip("shipped profile absent")
    tmp = tmp_path_factory.mktemp("report")
    prof = tmp / PROFILE.name
    shutil.copytree(PROFILE, prof)  # validation.json may be written into it
    run = tmp / "run"
    run_search(SearchConfig(prof, budget_ms=1.5, out=run, loss="add#linear", epochs=1,
                            warmup_epochs=1, batch_size=32, train_resolution=16,
                            train_width=0.35, max_batches=2, data_limit=300, threads=1))
    export(ExportConfig(arch=run / "arch.json", targets=("onnx",), out=tmp / "export",
                        profiles=(prof,), parity_inputs=2))
    return prof, run, tmp / "export"


def test_report_is_one_self_contained_page(finished, tmp_path):
    prof, run, exp = finished
    out = build_report(prof, run, exp, tmp_path / "r" / "report.html")
    page = out.read_text()
    images = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4  # scatter, trajectory, per-layer breakdown, cloud
    assert all(len(b) > 2000 for b in images)
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing loaded from elsewhere
    for text in ("Device", "Predictor validation", "Kendall tau", "cpu_model", "Search: run",
                 "budget", "Exports", "model.onnx", "max_abs &lt;= 1e-4",
                 # the export table keeps the measured time and the drift-scaled one apart
                 "measured ms", "scaled to profile ms", "compared/predicted"):
        assert text in page, text


def test_report_cli_and_clear_errors(finished, tmp_path, capsys):
    prof, run, _ = finished
    main_ok = tmp_path / "p.html"
    with pytest.raises(SystemExit) as e:
        main(["report", "--profile", str(prof), "--out", str(main_ok)])
    assert e.value.code == 0 and main_ok.stat().st_size > 10_000
    with pytest.raises(HwnasError, match="not a finished search run"):
        build_report(prof, tmp_path, None, tmp_path / "x.html")
    with pytest.raises(HwnasError, match="export folder not found"):
        build_report(prof, None, tmp_path / "nope", tmp_path / "x.html")


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                None)


def test_report_renders_in_headless_chromium(finished, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    prof, run, exp = finished
    page = build_report(prof, run, exp, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,4000", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    img = imread(str(shot))
    assert img.shape[:2] == (4000, 1200)
    # not a blank page: dark text pixels and coloured plot pixels are both there
    rgb = img[..., :3]
    assert (rgb.max(axis=2) < 0.3).mean() > 0.002
    assert (rgb.max(axis=2) - rgb.min(axis=2) > 0.3).mean() > 0.002
