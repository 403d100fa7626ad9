"""The README's generated blocks are exactly the committed benchmark results they name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_module():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_blocks_match_their_results_files() -> None:
    mod = _readme_module()
    text = (ROOT / "README.md").read_text()
    rendered, changed = mod.render(text)
    assert changed == [], f"run `make readme`: {changed}"
    assert mod.BLOCK.search(text), "the README has no generated block"


def test_a_hand_edited_block_is_detected(tmp_path: Path) -> None:
    mod = _readme_module()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.md").write_text("| a |\n|---|\n| 1 |\n")
    text = ("intro\n<!-- BEGIN benchmarks/results/x.md -->\n| a |\n|---|\n| 2 |\n"
            "<!-- END benchmarks/results/x.md -->\nrest\n")
    rendered, changed = mod.render(text, tmp_path)
    assert changed == ["benchmarks/results/x.md"] and "| 1 |" in rendered and "| 2 |" not in rendered
