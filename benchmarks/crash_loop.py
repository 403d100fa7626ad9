"""Crash loop: hwnas killed (SIGKILL) at random moments, resumed, and checked after every kill.

For each command the real CLI (`python -m hwnas ...`) runs in its own process group, which is
killed with SIGKILL at a seeded random moment; the command is then resumed (`hwnas profile
--resume`; the same command again for the searches and `hwnas proxies`, which resume by
default, and for `hwnas export`, which is rerun) and killed again, N kills in all. A run that
completes before its kill, or the run after a few kills (the searches: 4 or 5, export: 3), ends
a cycle: its result is compared with an uninterrupted run of the same command and seed, and
the next cycle starts on a fresh folder (`hwnas export` keeps its
folder and alternates between two archs, so that a kill can leave an old manifest beside a new
artifact).

The kill moment: a seeded uniform delay after the run first writes something (a file of its
output appears or changes), up to a share of the uninterrupted run's writing time; one kill in
five instead lands in the start-up, before anything is written.

After every kill, and at the end of every cycle, everything the command wrote is read back:
parquet (pyarrow), JSON, JSON lines (a torn last line is allowed: the readers drop it), CSV,
safetensors, ONNX (onnx.checker), .pt2 (zip), and every export manifest present must validate
(`hwnas.export.manifest`) and name its artifact's sha256. Counted per command:

- kills: SIGKILLs delivered to a running hwnas;
- lost: finished items (profile rows, trajectory/history rows, proxy rows, exported targets)
  seen after a kill that are missing or were replaced at the end of their cycle, plus items of
  the uninterrupted run missing at the end;
- duplicated: items present twice (same key) in any state read back;
- differing: cycles whose final result differs from the uninterrupted run's (profile: the
  measured op keys, the row counts, and the nets being exactly those of the run's plan, not
  the timings, on which the plan itself depends; strategy searches: the whole
  trajectory and the chosen arch; ProxylessNAS: every history row (but its wall time) and the
  chosen arch; proxies: the rows and scores; export: the
  ONNX file's sha256, the parity verdicts and the arch in each manifest);
- corrupt: files that do not read back, and manifests that do not validate or whose sha256 does
  not match their artifact;
- failed resumes: resumed runs that exited with an error instead of continuing;
- temp files: `.NAME.tmpPID` files left behind by killed writers (never read, but never cleaned).

    nice -n 10 flock /tmp/hwnas_cpu.lock python benchmarks/crash_loop.py [--commands profile,proxies,export]

The strategy searches read NAS-Bench-201 tables from ../shared/data and are skipped (with the
reason) without them. Writes benchmarks/results/crash_loop.md and .json; a run of some commands
keeps the other commands' rows of the previous run (the table says which run each row is from).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import RESULTS, SHARED_DATA, Results, load_results

NAME = "crash_loop"
ACCURACY = SHARED_DATA / "accuracy" / "nats_bench.csv"
LATENCY = SHARED_DATA / "latency" / "nb201_latency_help.csv"
STRATEGIES = ("evolution", "random", "reinforce", "tpe", "nsga2")
PROFILE_ARGS = ["--device", "ort-cpu", "--space", "proxyless", "--resolution", "32", "--nets",
                "20", "--quick"]


# --- running and killing ----------------------------------------------------------------------
def _state(paths: list[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `paths` (files or folders): what "wrote something"
    compares."""
    out = {}
    for p in paths:
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
        elif p.is_dir():
            for root, _, files in os.walk(p):
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(os.path.join(root, f))
                        out[os.path.join(root, f)] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass
class Run:
    rc: int | None  # None: killed
    first_write_s: float | None  # seconds from the start to the first change of the outputs
    wall_s: float
    error: str = ""


def run_cli(argv: list[str], watch: list[Path], cwd: Path, log: Path,
            kill_after_write: float | None = None, kill_at: float | None = None,
            timeout: float = 900) -> Run:
    """`python -m hwnas ARGV` in its own process group; SIGKILL it `kill_after_write` seconds
    after it first changes a file under `watch`, or `kill_at` seconds after its start."""
    before = _state(watch)
    t0 = time.monotonic()
    with open(log, "ab") as f:
        f.write(f"\n$ hwnas {' '.join(argv)}\n".encode())
        f.flush()
        proc = subprocess.Popen([sys.executable, "-m", "hwnas", *argv], cwd=cwd, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        first = None
        killed = False
        while proc.poll() is None:
            now = time.monotonic() - t0
            if first is None and _state(watch) != before:
                first = now
            due = (kill_at is not None and now >= kill_at) or (
                kill_after_write is not None and first is not None
                and now >= first + kill_after_write)
            if due or now > timeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                killed = due
                proc.wait()
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
    if killed:
        return Run(None, first, wall)
    error = ""
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        error = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines
                     else "")
    return Run(proc.returncode, first, wall, error.strip()[:300])


# --- reading back what was written --------------------------------------------------------------
def check_file(path: Path) -> str:
    """'' when `path` reads back as its kind of file, else what is wrong."""
    name = path.name
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif name.endswith(".jsonl"):
            lines = path.read_text().split("\n")
            for ln in lines[:-1]:  # the part after the last newline may be a torn row
                if ln:
                    json.loads(ln)
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".csv"):
            text = path.read_text()
            rows = list(csv.reader(io.StringIO(text[: text.rfind("\n") + 1])))
            if rows and any(len(r) != len(rows[0]) for r in rows):
                return "rows of unequal length"
        elif name.endswith(".safetensors"):
            from safetensors.torch import load_file

            load_file(str(path))
        elif name.endswith(".onnx"):
            import onnx

            onnx.checker.check_model(onnx.load(str(path)))
        elif name.endswith(".pt2"):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
                if bad:
                    return f"bad member {bad}"
    except Exception as e:  # noqa: BLE001 - any failure to read back is the finding
        return f"{type(e).__name__}: {str(e)[:120]}"
    return ""


def read_back(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(corrupt files with the problem, temporary files left behind) under `paths`."""
    corrupt, temps = [], []
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) \
            if p.is_dir() else []
        for f in files:
            if f.name.startswith(".") and ".tmp" in f.name:
                temps.append(str(f))
            elif not f.name.endswith(".lock"):
                why = check_file(f)
                if why:
                    corrupt.append(f"{f.name}: {why}")
    return corrupt, temps


@dataclass
class State:
    """What a command's outputs hold after a kill or at the end: its finished items (key ->
    identity, e.g. a row's content or its measured_at), keys present twice, unreadable files."""

    items: dict = field(default_factory=dict)
    duplicates: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    temps: list = field(default_factory=list)


def keyed(pairs: list[tuple]) -> tuple[dict, list]:
    items, dups = {}, []
    for key, ident in pairs:
        if key in items:
            dups.append(key)
        items[key] = ident
    return items, dups


# --- the commands -------------------------------------------------------------------------------
class Case:
    """One command in the loop. `argv(out, cycle, resume)`; `watch(out)`: the paths it writes;
    `state(out, cycle)`; `result(out, cycle)`: what must equal the uninterrupted run's."""

    name = ""
    kills = 20
    frac = 0.5  # the kill window: this share of the uninterrupted run's writing time
    fresh_cycles = True  # a cycle starts on an empty output
    per_cycle = 10 ** 6  # at most this many kills before a cycle runs to completion

    def prepare(self, work: Path, shared: dict) -> str:
        """'' when the command can run here, else why not (the row says so)."""
        return ""

    def out(self, work: Path) -> Path:
        return work / "out"

    def watch(self, out: Path) -> list[Path]:
        return [out]

    def references(self) -> int:
        return 1  # uninterrupted runs needed (export: one per arch)

    def compare(self, got: dict, ref: dict) -> list[str]:
        return [k for k in ref if got.get(k) != ref[k]]


class ProfileCase(Case):
    name, kills, frac = "profile", 50, 0.2

    def argv(self, out, cycle, resume):
        return ["profile", *PROFILE_ARGS, "--out", str(out)] + (["--resume"] if resume else [])

    def state(self, out, cycle):
        import pyarrow.parquet as pq

        s = State()
        s.corrupt, s.temps = read_back([out])
        pairs = []
        for table, key in (("ops", "key"), ("nets", "net_id")):
            path = out / f"{table}.parquet"
            if path.exists() and not any(c.startswith(path.name) for c in s.corrupt):
                df = pq.read_table(path, columns=[key, "measured_at"]).to_pandas()
                pairs += [((table, k), t) for k, t in zip(df[key], df["measured_at"],
                                                          strict=True)]
        s.items, s.duplicates = keyed(pairs)
        return s

    def result(self, out, cycle):
        import pandas as pd

        from hwnas.profile.sampling import net_id
        from hwnas.space import Arch

        ops, nets = pd.read_parquet(out / "ops.parquet"), pd.read_parquet(out / "nets.parquet")
        plan = [net_id(Arch.from_dict(a))
                for a in json.loads((out / "plan.json").read_text())["archs"]]
        # the plan spreads the nets over the latency range by the measured table, so the net
        # ids themselves depend on the timings: the nets must be the run's own plan
        return {"status": json.loads((out / "device.json").read_text())["status"],
                "ops rows": len(ops), "op keys": sorted(ops["key"]), "nets rows": len(nets),
                "nets are the plan": sorted(nets["net_id"]) == sorted(plan),
                "plan length": len(plan)}


class ProxylessCase(Case):
    """`hwnas search --method proxyless` on a tiny proxy task (a 3-class image folder at 8x8)
    and the profile of ProfileCase's uninterrupted run."""

    name, kills, frac = "search proxyless", 20, 0.5
    per_cycle = 5

    def prepare(self, work, shared):
        from hwnas.search.run import latency_model

        profile = shared.get("profile")
        if profile is None:  # no profile case in this run: measure one
            profile = work / "profile"
            r = run_cli(["profile", *PROFILE_ARGS, "--out", str(profile)], [], work,
                        work / "profile.log")
            if r.rc != 0:
                return f"could not measure the profile: {r.error}"
        self.images = work / "images"
        _digit_folder(self.images)
        model = latency_model(profile)
        self.profile = profile
        self.budget = round((model.fastest_ms + model.slowest_ms) / 2, 4)
        return ""

    def argv(self, out, cycle, resume):
        return ["search", "--method", "proxyless", "--profile", str(self.profile), "--budget-ms",
                str(self.budget), "--loss", "add#linear", "--grad", "two", "--epochs", "2",
                "--warmup-epochs", "1", "--batch-size", "32", "--train-resolution", "8",
                "--data", f"folder:{self.images}", "--out", str(out)]

    def state(self, out, cycle):
        s = State()
        s.corrupt, s.temps = read_back([out])
        path = out / "history.csv"
        rows = []
        if path.exists() and not any(c.startswith("history.csv") for c in s.corrupt):
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
        # a history row is finished once the checkpoint holds its epoch: rows past it are
        # redone by a resumed run
        done = _checkpoint_epochs(out / "checkpoint.safetensors")
        s.items, s.duplicates = keyed([((int(r["epoch"]), int(r["sub"])), "row") for r in rows
                                       if int(r["epoch"]) < done])
        return s

    def result(self, out, cycle):
        rows = list(csv.DictReader(io.StringIO((out / "history.csv").read_text())))
        return {"history rows": len(rows),
                "epochs": [int(r["epoch"]) for r in rows],
                # every logged figure but the wall time: a resume is exact (the checkpoint holds
                # the optimizers' state and the validation batches drawn)
                "history": [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
                "arch": json.loads((out / "arch.json").read_text())["choices"]}

    def compare(self, got, ref):
        return [k for k in ("history rows", "epochs", "history", "arch") if got.get(k) != ref[k]]


class StrategyCase(Case):
    kills, frac, per_cycle = 20, 0.8, 4

    def __init__(self, method: str) -> None:
        self.method = method
        self.name = f"search {method}"

    def prepare(self, work, shared):
        if not (ACCURACY.is_file() and LATENCY.is_file()):
            return f"no NAS-Bench-201 tables ({ACCURACY.parent.parent} absent)"
        return ""

    def argv(self, out, cycle, resume):
        return ["search", "--method", self.method, "--accuracy-table", str(ACCURACY),
                "--accuracy-column", "CIFAR10TestAccuracy200Epochs", "--latency-table",
                str(LATENCY), "--device", "raspi4", "--budget-ms", "10", "--evaluations", "100",
                "--seed", "1", "--out", str(out)]

    def state(self, out, cycle):
        s = State()
        s.corrupt, s.temps = read_back([out])
        path = out / "trajectory.csv"
        if path.exists():
            text = path.read_text()
            rows = list(csv.reader(io.StringIO(text[: text.rfind("\n") + 1])))[1:]
            s.items, s.duplicates = keyed([(r[0], tuple(r)) for r in rows])
        return s

    def result(self, out, cycle):
        rows = list(csv.reader(io.StringIO((out / "trajectory.csv").read_text())))
        summary = json.loads((out / "summary.json").read_text())
        return {"trajectory rows": len(rows) - 1, "trajectory": rows,
                "arch": (summary["chosen"] or {}).get("arch_str"),
                "evaluations": summary["evaluations_used"]}


class ProxiesCase(Case):
    name, kills, frac = "proxies", 20, 0.6

    def out(self, work):
        return work / "proxies.parquet"

    def watch(self, out):
        return [out, out.with_name(out.name + ".partial.jsonl")]

    def argv(self, out, cycle, resume):
        return ["proxies", "--out", str(out), "--archs", "40", "--proxies", "synflow,params",
                "--seed", "1"]

    def state(self, out, cycle):
        import pyarrow.parquet as pq

        s = State()
        partial = out.with_name(out.name + ".partial.jsonl")
        s.corrupt, s.temps = read_back([out, partial, partial.with_name(partial.name + ".json")])
        s.temps = [t for t in _temps(out.parent) if "proxies" in t]
        pairs = []
        if partial.exists():
            for ln in partial.read_text().split("\n")[:-1]:
                with contextlib.suppress(ValueError):
                    row = json.loads(ln)
                    pairs.append((int(row["index"]), round(float(row["synflow"]), 6)))
        if out.exists() and not s.corrupt:
            df = pq.read_table(out).to_pandas()
            for k, v in zip(df["index"], df["synflow"], strict=True):
                if int(k) not in dict(pairs):
                    pairs.append((int(k), round(float(v), 6)))
        s.items, s.duplicates = keyed(pairs)
        return s

    def result(self, out, cycle):
        import pandas as pd

        df = pd.read_parquet(out)
        return {"rows": len(df), "index": [int(v) for v in df["index"]],
                "arch": list(df["arch_str"]),
                "synflow": [float(v) for v in df["synflow"]],
                "params": [float(v) for v in df["params"]],
                "partial left": out.with_name(out.name + ".partial.jsonl").exists()}

    def compare(self, got, ref):
        diff = [k for k in ("rows", "index", "arch", "params", "partial left")
                if got[k] != ref[k]]
        if not np.allclose(got["synflow"], ref["synflow"], rtol=1e-6, atol=0):
            diff.append("synflow")
        return diff


class ExportCase(Case):
    """`hwnas export ARCH --target onnx,torch` into one folder, cycle after cycle, the arch
    alternating between two sampled ones."""

    name, kills, frac, fresh_cycles = "export", 20, 0.6, False
    per_cycle = 3  # a rerun starts over: complete every few kills, then switch the arch
    TARGETS = ("onnx", "torch")

    def prepare(self, work, shared):
        from hwnas.space import get_space

        space = get_space("proxyless", 32)
        self.archs = []
        for seed in (1, 2):
            path = work / f"arch{seed}.json"
            space.sample(seed).save(path)
            self.archs.append(path)
        return ""

    def references(self):
        return 2

    def argv(self, out, cycle, resume):
        return ["export", str(self.archs[cycle % 2]), "--target", ",".join(self.TARGETS),
                "--out", str(out)]

    def state(self, out, cycle):
        from hwnas._io import sha256
        from hwnas.export.manifest import load_manifest

        s = State()
        files = [f for t in self.TARGETS for f in (out / t).glob("*") if f.is_file()]
        s.temps = [str(f) for f in files if f.name.startswith(".") and ".tmp" in f.name]
        want = json.loads(self.archs[cycle % 2].read_text())["choices"]
        pairs = []
        for t in self.TARGETS:
            path = out / t / "manifest.json"
            if not path.exists():
                continue
            try:
                m = load_manifest(path)
            except Exception as e:  # noqa: BLE001
                s.corrupt.append(f"{t}/manifest.json: {str(e)[:120]}")
                continue
            art = out / t / m["artifact"]["file"]
            if not art.is_file() or sha256(art) != m["artifact"]["sha256"]:
                s.corrupt.append(f"{t}/manifest.json: its sha256 does not match "
                                 f"{m['artifact']['file']}")
                continue
            why = check_file(art)
            if why:
                s.corrupt.append(f"{t}/{art.name}: {why}")
            elif m["arch"]["choices"] == want:
                pairs.append((t, m["artifact"]["sha256"] if t == "onnx" else "ok"))
        s.items, s.duplicates = keyed(pairs)
        return s

    def result(self, out, cycle):
        from hwnas.export.manifest import load_manifest

        got = {}
        for t in self.TARGETS:
            m = load_manifest(out / t / "manifest.json")
            got[t] = {"arch": m["arch"]["choices"], "parity": m["parity"]["passed"],
                      **({"sha256": m["artifact"]["sha256"]} if t == "onnx" else {})}
        return got


def _temps(folder: Path) -> list[str]:
    return [str(f) for f in folder.glob(".*.tmp*")]


def _checkpoint_epochs(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("epochs_done", 0))
    except Exception:  # noqa: BLE001 - unreadable: counted as corrupt by read_back
        return 0


def _digit_folder(root: Path, classes: int = 3, per_class: int = 40) -> None:
    """A tiny image folder (8x8 digits from scikit-learn, one subfolder per class)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(classes):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.where(d.target == c)[0][:per_class]:
            Image.fromarray((d.images[i] * 16).astype(np.uint8)).save(root / str(c) / f"{i}.png")


def all_cases() -> list[Case]:
    return [ProfileCase(), ProxylessCase(), *[StrategyCase(m) for m in STRATEGIES],
            ProxiesCase(), ExportCase()]


NO_RESUME = {"search shiftnas": "no resume: a rerun into a folder holding a run is refused "
                                "(one error line); --no-resume starts over",
             "search fbnetv5": "no resume: a rerun into a folder holding a run is refused "
                               "(one error line); --no-resume starts over"}


# --- the loop -----------------------------------------------------------------------------------
def crash_loop(case: Case, work: Path, rng: np.random.Generator, shared: dict) -> dict:
    t_start = time.monotonic()
    row = {"command": case.name, "kills": 0, "lost": 0, "duplicated": 0, "differing": 0,
           "corrupt": 0, "failed resumes": 0, "temp files left": 0, "cycles": 0}
    why = case.prepare(work, shared)
    if why:
        return {"command": case.name, "kills": "skipped", "note": why}
    log = work / "log.txt"
    # the uninterrupted runs: the results to match and the writing time to draw kills from
    refs, active, startup = [], [], []
    for k in range(case.references()):
        out = work / f"reference{k}" / case.out(work).name
        out.parent.mkdir(parents=True)
        r = run_cli(case.argv(out, k, False), case.watch(out), work, log)
        if r.rc != 0:
            return {"command": case.name, "kills": "failed",
                    "note": f"the uninterrupted run failed: {r.error}"}
        refs.append(case.result(out, k))
        startup.append(r.first_write_s or 0.0)
        active.append(r.wall_s - (r.first_write_s or 0.0))
        if isinstance(case, ProfileCase):
            shared["profile"] = out
    window, boot = case.frac * float(np.mean(active)), float(np.mean(startup))
    notes: list[str] = []
    out = case.out(work / "loop")
    out.parent.mkdir(parents=True, exist_ok=True)
    cycle = 0
    while row["kills"] < case.kills:
        if case.fresh_cycles:
            if out.is_dir():
                shutil.rmtree(out)
            out.unlink(missing_ok=True)
            for extra in out.parent.glob(out.name + ".*"):
                extra.unlink()
        seen: dict = {}  # finished items seen after a kill in this cycle
        resume, failures, kills_now = False, 0, []
        while True:
            early = rng.random() < 0.2
            delay = float(rng.uniform(0, boot if early else window))
            r = run_cli(case.argv(out, cycle, resume), case.watch(out), work, log,
                        kill_at=delay if early else None,
                        kill_after_write=None if early else delay)
            s = case.state(out, cycle)
            row["corrupt"] += len(s.corrupt)
            row["duplicated"] += len(s.duplicates)
            notes += [f"cycle {cycle}: {c}" for c in s.corrupt]
            notes += [f"cycle {cycle}: duplicate {d}" for d in s.duplicates]
            if r.rc is None:
                row["kills"] += 1
                kills_now.append(delay)
                seen.update(s.items)
                resume = True
                if row["kills"] >= case.kills or len(kills_now) >= case.per_cycle:
                    break  # resume to completion below
                continue
            if r.rc != 0:
                row["failed resumes"] += 1
                notes.append(f"cycle {cycle}: run failed: {r.error}")
                failures += 1
                if failures >= 2:
                    break
                continue
            break
        # resume to completion (the last kill, or a run that completed before its kill)
        if r.rc is None:
            r = run_cli(case.argv(out, cycle, True), case.watch(out), work, log)
            if r.rc != 0:
                row["failed resumes"] += 1
                notes.append(f"cycle {cycle}: final run failed: {r.error}")
        s = case.state(out, cycle)
        row["temp files left"] = max(row["temp files left"], len(s.temps))
        if r.rc == 0:
            ref = refs[cycle % len(refs)]
            final = s.items
            lost = [k for k, v in seen.items() if final.get(k) != v]
            ref_state = case.result(out, cycle)
            diff = case.compare(ref_state, ref)
            row["lost"] += len(lost)
            notes += [f"cycle {cycle}: lost {k}" for k in lost[:5]]
            if diff:
                row["differing"] += 1
                notes.append(f"cycle {cycle}: differs from the uninterrupted run in "
                             f"{', '.join(diff)}")
            if isinstance(case, ProxylessCase):
                row.setdefault("same arch", 0)
                row["same arch"] += ref_state["arch"] == ref["arch"]
        row["cycles"] += 1
        cycle += 1
    row["minutes"] = (time.monotonic() - t_start) / 60
    row["note"] = "; ".join(notes[:12]) + (f" (+{len(notes) - 12} more)" if len(notes) > 12
                                           else "")
    if isinstance(case, ProxylessCase):
        row["note"] = (f"final arch as the uninterrupted run's in {row.pop('same arch', 0)} of "
                       f"{row['cycles']} cycles" + (f"; {row['note']}" if row["note"] else ""))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.name for c in all_cases()]
    ap.add_argument("--commands", default="all",
                    help="comma list of: profile, search, proxies, export, or a row name "
                         f"({', '.join(names)}); default all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills-scale", type=float, default=1.0,
                    help="scale every command's number of kills (a quick check: 0.1)")
    args = ap.parse_args()
    wanted = names if args.commands == "all" else [
        n for w in args.commands.split(",") for n in names if n == w or n.split()[0] == w]
    res = Results(NAME, "Crash loop: SIGKILL at random moments, resume, nothing lost",
                  seed=args.seed, timing=True)
    rows = []
    shared: dict = {}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hwnas-crash-") as tmp:
        for i, case in enumerate(all_cases()):
            if case.name not in wanted:
                continue
            case.kills = max(1, round(case.kills * args.kills_scale))
            work = Path(tmp) / case.name.replace(" ", "-")
            work.mkdir()
            print(f"{case.name}: {case.kills} kills ...", flush=True)
            row = crash_loop(case, work, np.random.default_rng([args.seed, i]), shared)
            print(f"  {row}", flush=True)
            rows.append(row)
    rows += [{"command": n, "kills": "no resume", "note": why} for n, why in NO_RESUME.items()]
    # rows of the commands not run this time come from the previous results file
    previous = load_results(NAME)
    carried, runs = [], {}
    if previous and args.commands != "all":
        runs = dict(previous["data"].get("runs") or {
            previous["date"][:16]: {"command": previous["command"], "wall_s": previous["wall_s"]}})
        run_now = {r["command"] for r in rows}
        for r in previous["data"].get("rows", []):
            if r["command"] not in run_now:
                carried.append({**r, "run": r.get("run") or previous["date"][:16]})
        for r in rows:
            r["run"] = res.date[:16]
        runs[res.date[:16]] = {"command": res.command, "wall_s": time.monotonic() - t_start}
        runs = {d: v for d, v in runs.items() if any(r.get("run") == d for r in carried + rows)}
        order = {n: k for k, n in enumerate(names + list(NO_RESUME))}
        rows = sorted(rows + carried, key=lambda r: order.get(r["command"], 99))
    res.text("\n\n".join(__doc__.split("\n\n")[1:5]))
    res.text("Target: zero in every column but kills and cycles. profile: `hwnas profile "
             f"{' '.join(PROFILE_ARGS)} --out DIR` (then `--resume`); strategy searches: 100 "
             "evaluations on the NAS-Bench-201 tables (raspi4 latency, budget 10 ms); "
             "proxyless: 1 warm-up + 2 search epochs, 8x8 images of 3 digit classes, the "
             "profile's mid latency as the budget; proxies: synflow and params of 40 NB201 "
             "cells; export: onnx and torch targets of a 32x32 proxyless net.")
    if carried:
        res.text("The rows come from these runs (column `run`), each under the CPU lock:\n\n"
                 + "\n".join(f"- {d}: `nice -n 10 {v['command']}` ({v['wall_s'] / 60:.0f} min)"
                              for d, v in sorted(runs.items())))
    table = [{k: v for k, v in r.items() if k != "note"} for r in rows]
    res.table(table, "Per command: kills, and what the kills cost (target: all zero)")
    notes = [f"- {r['command']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        res.text("Notes:\n\n" + "\n".join(notes))
    res.write(data={"rows": rows, "runs": runs})
    print(f"results in {RESULTS / NAME}.md")


if __name__ == "__main__":
    main()
