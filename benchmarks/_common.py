"""Shared helpers for the benchmark scripts: paths, table printing, and `Results`, the one way a
benchmark writes what it measured.

Every benchmark writes `benchmarks/results/NAME.md` (the block the README quotes, filled in by
`make readme`) and `NAME.json` (the same tables as rows, plus the date, the exact command, the
seed, the host's fingerprint and, for each shipped profile the numbers describe, that profile's
fingerprint and a digest of its measurements). `tests/test_results.py` fails when a result
describes a shipped profile measured on another machine or since re-measured.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
LOCK = "flock /tmp/hwnas_cpu.lock"  # timing benchmarks run alone: two jobs on 2 cores halve speed


def print_table(rows: list[dict], title: str = "") -> str:
    """Print rows as a Markdown table and return it (with its title in bold)."""
    if not rows:
        print(f"{title}: no rows")
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = [f"| {' | '.join(cols)} |", f"|{'|'.join('---' for _ in cols)}|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "-")) for c in cols) + " |")
    text = (f"\n**{title}**\n\n" if title else "") + "\n".join(lines)
    print(text)
    return text


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


class cpu_lock:  # noqa: N801 - used as `with cpu_lock():`
    """Hold the CPU lock (the same file `flock /tmp/hwnas_cpu.lock` takes) around the timed part
    of a benchmark whose other parts (training) need no quiet machine."""

    def __enter__(self) -> None:
        import fcntl

        self._f = open("/tmp/hwnas_cpu.lock", "a")  # noqa: SIM115 - released in __exit__
        fcntl.flock(self._f, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def profile_digest(root: Path) -> str:
    """sha256 over a profile's measurement tables (ops, nets, kernel nets and their kernels):
    changes when the profile is re-measured or extended, not when a predictor is refitted."""
    h = hashlib.sha256()
    for name in ("ops.parquet", "nets.parquet", "kernel_nets.parquet", "kernels.parquet"):
        path = Path(root) / name
        if path.exists():
            h.update(name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def host() -> dict:
    """This machine's fingerprint (hwnas's own, with cpu_id and cpu_isa) and library versions."""
    import platform

    import numpy as np

    from hwnas.devices.fingerprint import host_fingerprint

    info = dict(host_fingerprint())
    info["numpy"] = np.__version__
    for mod in ("onnxruntime", "ai_edge_litert", "sklearn", "optuna"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - an optional library: recorded as absent
            info[mod] = None
    info["platform"] = platform.platform()
    return info


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() + ("+changes" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


class Results:
    """One benchmark run's output, written as Markdown and JSON under `benchmarks/results/`.

        res = Results("repeatability", "Repeatability ...", seed=1, timing=True)
        res.text("what was measured and how")
        res.profile(prof)                       # a shipped profile these numbers describe
        res.table(rows, "title")
        res.write(data={...})                   # anything else worth keeping, as JSON

    `timing=True` marks a benchmark that times the device: its command is quoted under the CPU
    lock, as it must be run.
    """

    def __init__(self, name: str, title: str, *, seed: int | list | None = None,
                 timing: bool = False, argv: list[str] | None = None) -> None:
        self.name, self.title, self.seed, self.timing = name, title, seed, timing
        args = sys.argv[1:] if argv is None else argv
        # the script that runs (search_budget --quick writes "search_budget-quick")
        script = Path(sys.argv[0]).stem if sys.argv[0].endswith(".py") else name
        self.command = " ".join(([LOCK] if timing else []) + ["python", f"benchmarks/{script}.py"]
                                + [shlex.quote(a) for a in args])
        self.date = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._start = time.monotonic()
        self.parts: list[str] = []
        self.tables: list[dict] = []
        self.profiles: dict[str, dict] = {}

    def text(self, markdown: str) -> None:
        """A paragraph of the results file (what was measured, the sets, the targets)."""
        self.parts.append(markdown.strip())

    def table(self, rows: list[dict], title: str) -> str:
        """Print a table, keep it for the Markdown file and its rows for the JSON file."""
        text = print_table(rows, title)
        self.parts.append(text.strip())
        self.tables.append({"title": title, "rows": rows})
        return text

    def profile(self, prof, shipped: bool | None = None) -> None:
        """Record a profile these numbers describe. A profile under `profiles/` counts as
        shipped: the test then checks that this host and its fingerprint agree and that its
        measurements are unchanged since this run."""
        root = Path(prof.root).resolve()
        if shipped is None:
            shipped = root.parent == PROFILES.resolve()
        rec = prof.record
        self.profiles[prof.name] = {
            "shipped": bool(shipped), "fingerprint": rec.fingerprint, "created": rec.created,
            "updated": rec.updated, "digest": profile_digest(root),
            "reference_ms": prof.reference_ms()}

    def write(self, data: dict | None = None, out: Path = RESULTS) -> Path:
        """Write NAME.md and NAME.json (atomically); returns the Markdown path."""
        from hwnas._io import dumps, write_text

        wall = time.monotonic() - self._start
        h = host()
        info = {"name": self.name, "title": self.title, "date": self.date,
                "command": self.command, "seed": self.seed, "commit": _git_commit(),
                "wall_s": round(wall, 1), "host": h, "profiles": self.profiles}
        head = [f"# {self.title}", "",
                f"- command: `{self.command}`" + (f" (seed {self.seed})"
                                                    if self.seed is not None else ""),
                f"- run: {self.date}, {wall / 60:.1f} min, on {h['cpu_model']} "
                f"({h.get('cpu_id')}), {h['cores']} cores; hwnas {info['commit'] or '?'}"]
        for name, p in self.profiles.items():
            ref = f", drift reference {p['reference_ms']:.3g} ms" if p["reference_ms"] else ""
            head.append(f"- profile `{name}`: measured {p['created'][:10]}{ref}")
        md = "\n".join(head) + "\n\n" + "\n\n".join(self.parts) + "\n"
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / f"{self.name}.md", md)
        write_text(out / f"{self.name}.json",
                   dumps({**info, "tables": self.tables, "data": data or {}}, indent=1) + "\n")
        print(f"\nwrote {out / self.name}.md and .json ({wall:.0f} s)")
        return out / f"{self.name}.md"


def load_results(name: str) -> dict | None:
    """A committed results file's JSON (None when it does not exist)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
