"""Shared helpers for the benchmark scripts: the repo root, the shared data folder, table printing."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
SHARED_DATA = ROOT.parent / "shared" / "data"


def print_table(rows: list[dict], title: str = "") -> str:
    """Print rows as a Markdown table (what the README quotes) and return it."""
    if not rows:
        print(f"{title}: no rows")
        return ""
    cols = list(rows[0])
    lines = [f"| {' | '.join(cols)} |", f"|{'|'.join('---' for _ in cols)}|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    text = (f"\n{title}\n\n" if title else "") + "\n".join(lines)
    print(text)
    return text


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
