"""Regenerate the README's result blocks from the committed files under `benchmarks/results/`.

A block in README.md looks like

    <!-- BEGIN benchmarks/results/NAME.md -->
    ...generated; never edited by hand...
    <!-- END benchmarks/results/NAME.md -->

and is replaced by the current content of that file (its `# Title` line shown in bold).
`--check` changes nothing and exits 1 when a block differs from its file (the test suite runs
the same check).

    python benchmarks/readme.py [--check]        (make readme)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- BEGIN (?P<name>benchmarks/results/[\w.-]+\.md) -->\n)(?P<body>.*?)"
                   r"(<!-- END (?P=name) -->)", re.S)


def demote(markdown: str) -> str:
    """A results file's own `# Title` becomes bold text, so the README keeps its outline."""
    return "\n".join(f"**{line[2:].strip()}**" if line.startswith("# ") else line
                     for line in markdown.splitlines())


def render(readme: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """README text with every block filled from its file; the names of blocks that changed."""
    changed: list[str] = []

    def fill(m: re.Match) -> str:
        path = root / m["name"]
        if not path.is_file():
            raise SystemExit(f"error: README block names {m['name']}, which does not exist")
        body = demote(path.read_text().strip()) + "\n"
        if body != m["body"]:
            changed.append(m["name"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, readme), changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report blocks that differ")
    args = ap.parse_args()
    path = ROOT / "README.md"
    text, changed = render(path.read_text())
    if args.check:
        for name in changed:
            print(f"README block differs from {name}: run `make readme`")
        sys.exit(1 if changed else 0)
    path.write_text(text)
    print(f"README.md: {len(changed)} block(s) regenerated" + (f": {', '.join(changed)}"
                                                               if changed else ""))


if __name__ == "__main__":
    main()
