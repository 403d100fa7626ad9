"""Parsers of native per-op profiler output: onnxruntime, TFLite `benchmark_model`, trtexec.

Pure Python (json, re, pandas). Every parser raises `hwnas.errors.HwnasError` with a message that
names the source and the problem on malformed input. All times are returned in milliseconds.

- `parse_ort_profile`: onnxruntime's profiling JSON (`SessionOptions.enable_profiling`).
- `parse_tflite_benchmark`: the log of `benchmark_model --enable_op_profiling=true`.
- `parse_trtexec_profile`: trtexec `--exportProfile` JSON; `parse_trtexec_times`: `--exportTimes`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.errors import HwnasError

Source = str | Path | list | dict

# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _load_json(source: Source, what: str) -> tuple[Any, str]:
    """(decoded JSON, a label naming the source) from a path or an already decoded object."""
    if isinstance(source, (list, dict)):
        return source, f"<{what} object>"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HwnasError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HwnasError(f"{what}: cannot read {path}: {e}") from None
    if not text.strip():
        raise HwnasError(f"{what}: {path} is empty")
    try:
        return json.loads(text), str(path)
    except json.JSONDecodeError as e:
        raise HwnasError(f"{what}: {path} is not valid JSON (truncated?): {e.msg} at line "
                         f"{e.lineno} column {e.colno}") from None


def _number(value: Any, label: str, key: str) -> float:
    """A finite-or-not float from a JSON value, or a HwnasError naming where it was."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HwnasError(f"{label}: {key} should be a number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------

_KERNEL_SUFFIX = "_kernel_time"


@dataclass
class OrtProfile:
    """A parsed onnxruntime profile.

    `events`: one row per kernel execution (node, op_type, provider, run, ts_us, dur_ms,
    input_shapes, output_shapes, node_index). `runs`: one row per `InferenceSession.run`
    (run, model_run_ms, kernel_sum_ms, n_kernels); `model_run_ms` is NaN when the trace has no
    `model_run` events (runs are then inferred from repeated node names).
    """

    source: str
    events: pd.DataFrame
    runs: pd.DataFrame

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def _kept(self, skip_runs: int) -> pd.DataFrame:
        if skip_runs < 0:
            raise ValueError("skip_runs must be >= 0")
        first = sorted(self.runs["run"])[skip_runs:skip_runs + 1]
        if not first:
            raise HwnasError(f"{self.source}: skip_runs={skip_runs} leaves no run "
                             f"(the profile has {self.n_runs})")
        return self.events[self.events["run"] >= first[0]]

    def nodes(self, skip_runs: int = 0) -> pd.DataFrame:
        """Per node (first-seen order): op_type, provider, runs, mean/median/min ms, shapes.

        `skip_runs` drops the first runs (the first `run` of a session is usually a cold one).
        """
        ev = self._kept(skip_runs)
        g = ev.groupby("node", sort=False)
        out = g.agg(op_type=("op_type", "first"), provider=("provider", "first"),
                    runs=("dur_ms", "size"), mean_ms=("dur_ms", "mean"),
                    median_ms=("dur_ms", "median"), min_ms=("dur_ms", "min"),
                    input_shapes=("input_shapes", "first"),
                    output_shapes=("output_shapes", "first"))
        return out.reset_index()

    def op_types(self, skip_runs: int = 0) -> pd.DataFrame:
        """Per op type: kernels per run, mean ms per run (summed over its nodes), share of total."""
        ev = self._kept(skip_runs)
        n_runs = ev["run"].nunique()
        g = ev.groupby("op_type", sort=False)
        out = pd.DataFrame({"kernels_per_run": g.size() / n_runs,
                            "ms_per_run": g["dur_ms"].sum() / n_runs})
        out["share"] = out["ms_per_run"] / out["ms_per_run"].sum()
        return out.sort_values("ms_per_run", ascending=False).reset_index()


def _ort_events(data: Any, label: str) -> list:
    if isinstance(data, dict):  # the Chrome-trace "object" form
        data = data.get("traceEvents")
    if not isinstance(data, list):
        raise HwnasError(f"onnxruntime profile {label}: expected a list of trace events")
    return data


def _shapes(value: Any) -> list[list[int]]:
    """`[{"float": [1, 3, 224, 224]}, ...]` -> `[[1, 3, 224, 224], ...]`."""
    if not isinstance(value, list):
        return []
    return [list(next(iter(d.values()))) for d in value if isinstance(d, dict) and d]


def _ort_kernel_row(event: dict, index: int, label: str) -> dict:
    args = event.get("args") or {}
    if not isinstance(args, dict):
        raise HwnasError(f"onnxruntime profile {label}: event {index} has non-object args")
    ts = event.get("ts", math.nan)
    return {"node": event["name"][: -len(_KERNEL_SUFFIX)],
            "op_type": str(args.get("op_name", "")),
            "provider": str(args.get("provider", "")),
            "ts_us": _number(ts, label, f"event {index} ts"),
            "dur_ms": _number(event.get("dur"), label, f"event {index} dur") / 1e3,
            "input_shapes": _shapes(args.get("input_type_shape")),
            "output_shapes": _shapes(args.get("output_type_shape")),
            "node_index": args.get("node_index")}


def _assign_runs(rows: list[dict], model_runs: list[tuple[float, float]]) -> None:
    """Set each row's `run`: the `model_run` interval holding it, else the k-th sighting."""
    if model_runs:
        for r in rows:
            r["run"] = next((i for i, (t0, d) in enumerate(model_runs)
                             if t0 <= r["ts_us"] <= t0 + d), -1)
        return
    seen: dict[str, int] = {}
    for r in rows:
        r["run"] = seen.get(r["node"], 0)
        seen[r["node"]] = r["run"] + 1


def parse_ort_profile(source: Source) -> OrtProfile:
    """Parse onnxruntime's profiling JSON (a Chrome trace: a list of events, or `traceEvents`).

    Keeps `cat == "Node"` events whose name ends with `_kernel_time` (`dur` in microseconds);
    `model_run` session events, when present, give the per-run totals and group the kernels.
    """
    data, label = _load_json(source, "onnxruntime profile")
    events = _ort_events(data, label)
    rows, model_runs = [], []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise HwnasError(f"onnxruntime profile {label}: event {i} is not an object")
        name = ev.get("name")
        if not isinstance(name, str):
            continue
        if ev.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            rows.append(_ort_kernel_row(ev, i, label))
        elif ev.get("cat") == "Session" and name == "model_run":
            model_runs.append((_number(ev.get("ts"), label, f"event {i} ts"),
                               _number(ev.get("dur"), label, f"event {i} dur")))
    if not rows:
        raise HwnasError(f"onnxruntime profile {label}: no Node '*{_KERNEL_SUFFIX}' events "
                         "(was the session created with enable_profiling?)")
    model_runs.sort()
    _assign_runs(rows, model_runs)
    ev_df = pd.DataFrame(rows)
    sums = ev_df[ev_df["run"] >= 0].groupby("run")["dur_ms"].agg(["sum", "size"])
    n = len(model_runs) if model_runs else int(ev_df["run"].max()) + 1
    runs = pd.DataFrame({
        "run": range(n),
        "model_run_ms": [d / 1e3 for _, d in model_runs] if model_runs else [math.nan] * n,
        "kernel_sum_ms": [float(sums["sum"].get(i, 0.0)) for i in range(n)],
        "n_kernels": [int(sums["size"].get(i, 0)) for i in range(n)],
    })
    return OrtProfile(label, ev_df, runs)


# --------------------------------------------------------------------------------------------
# TFLite benchmark_model
# --------------------------------------------------------------------------------------------

_INFO = re.compile(r"^(?:INFO:\s?)")
_SECTION = re.compile(r"Profiling Info for (.+?):\s*$")
_TABLE = re.compile(r"^=+ (.+?) =+$")
_HEADER_COL = re.compile(r"\[([^\]]+)\]")
_STAT = re.compile(r"(\w+)=([-+0-9.eE]+|nan|inf)")
_PARAM = re.compile(r"^([A-Za-z#][^:\[]*?):\s*\[(.*)\]\s*$")
_INIT = re.compile(r"Initialized session in ([0-9.eE+-]+)\s*ms")

# header text -> column name (avg ms is per call; `total_ms` = avg_ms * times_called)
_TFLITE_COLUMNS = {"node type": "node_type", "start": "start_ms", "first": "first_ms",
                   "avg ms": "avg_ms", "%": "pct", "cdf%": "cdf_pct", "mem KB": "mem_kb",
                   "times called": "times_called", "Name": "name"}


@dataclass(frozen=True)
class Timings:
    """A `count=... first=... curr=... min=... max=... avg=... std=...` line, in milliseconds."""

    count: int
    avg_ms: float
    std_ms: float = math.nan
    min_ms: float = math.nan
    max_ms: float = math.nan
    first_ms: float = math.nan
    curr_ms: float = math.nan

    @classmethod
    def from_line(cls, line: str) -> Timings:
        """Parse the `key=value` pairs (microseconds) of such a line."""
        kv = {k: float(v) for k, v in _STAT.findall(line)}
        if "count" not in kv:
            raise HwnasError(f"timing line without count=: {line.strip()!r}")
        ms = {k: kv[k] / 1e3 for k in ("avg", "std", "min", "max", "first", "curr") if k in kv}
        avg = ms.get("avg", ms.get("curr", math.nan) if kv["count"] == 1 else math.nan)
        return cls(int(kv["count"]), avg, ms.get("std", math.nan), ms.get("min", math.nan),
                   ms.get("max", math.nan), ms.get("first", math.nan), ms.get("curr", math.nan))


@dataclass
class TFLiteBenchmark:
    """A parsed `benchmark_model` log.

    `ops`: the Run Order table of the regular benchmark runs (node_type, [start_ms], first_ms,
    avg_ms (per call), pct, cdf_pct, mem_kb, times_called, name, total_ms = avg_ms *
    times_called, i.e. the op's time per inference). `timings`: that profile's
    `Timings (microseconds)` line (the profiler's per-inference total over the regular runs).
    `loops`: the tool's own `count=...` lines in order (warm-up loop, then the timed loop).
    """

    ops: pd.DataFrame
    timings: Timings | None
    loops: list[Timings] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    init_ms: float | None = None

    @property
    def inference(self) -> Timings | None:
        """The timed benchmark loop (the last `count=` line the tool printed), if any."""
        return self.loops[-1] if self.loops else None

    @property
    def avg_ms(self) -> float:
        """Mean ms per inference: the timed loop's avg, else the profiler's Timings avg."""
        for t in (self.inference, self.timings):
            if t is not None and not math.isnan(t.avg_ms):
                return t.avg_ms
        raise HwnasError("benchmark_model output has no average inference time")

    def by_node_type(self) -> pd.DataFrame:
        """Per node type: nodes, calls per inference, ms per inference, share (from `ops`)."""
        g = self.ops.groupby("node_type", sort=False)
        out = pd.DataFrame({"nodes": g.size(), "calls": g["times_called"].sum(),
                            "ms": g["total_ms"].sum()})
        out["share"] = out["ms"] / out["ms"].sum()
        return out.sort_values("ms", ascending=False).reset_index()


def _clean_lines(text: str) -> list[str]:
    return [_INFO.sub("", line.rstrip("\r\n")) for line in text.splitlines()]


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(title, start, end) of each `... Profiling Info for TITLE:` block; one untitled block
    for the whole text when there is no such header (the 2018-era format)."""
    heads = [(m.group(1), i) for i, line in enumerate(lines) if (m := _SECTION.search(line))]
    if not heads:
        return [("", 0, len(lines))]
    bounds = [i for _, i in heads] + [len(lines)]
    return [(title, i, bounds[k + 1]) for k, (title, i) in enumerate(heads)]


def _pick_section(lines: list[str]) -> tuple[str, int, int]:
    """The regular runs' block; else the last block that is not the initialisation one."""
    secs = _sections(lines)
    for sec in secs:
        if "Regular Benchmark Runs" in sec[0]:
            return sec
    rest = [s for s in secs if "Initialization" not in s[0]]
    return rest[-1] if rest else ("", 0, 0)  # never read the initialisation table as ops


def _header_columns(line: str) -> list[str]:
    cols = [c.strip() for c in _HEADER_COL.findall(line)]
    return [_TFLITE_COLUMNS.get(c, c) for c in cols]


def _is_num(tok: str) -> bool:
    try:
        float(tok.rstrip("%"))
    except ValueError:
        return False
    return True


def _split_row(line: str, n_cols: int) -> list[str] | None:
    """Cells of a data row: tab-separated when it has tabs, else space-aligned (node type and
    name may hold spaces, so the numeric run in between anchors the split)."""
    if "\t" in line:
        cells = [c.strip() for c in line.split("\t")]
        if cells and cells[0] == "":
            cells = cells[1:]
        if len(cells) > n_cols:  # a name holding a tab (CSV-style names)
            cells = cells[:n_cols - 1] + ["\t".join(cells[n_cols - 1:])]
        return cells if len(cells) == n_cols else None
    toks, n_num = line.split(), n_cols - 2
    for i in range(1, len(toks) - n_num + 1):
        if all(_is_num(t) for t in toks[i:i + n_num]):
            return [" ".join(toks[:i]), *toks[i:i + n_num], " ".join(toks[i + n_num:])]
    return None


def _row(cells: list[str], cols: list[str], lineno: int) -> dict:
    row: dict[str, Any] = {}
    for col, cell in zip(cols, cells, strict=True):
        if col in ("node_type", "name"):
            row[col] = cell
            continue
        try:
            row[col] = float(cell.rstrip("%"))
        except ValueError:
            raise HwnasError(f"benchmark_model output line {lineno + 1}: column {col!r} is "
                             f"not a number: {cell!r}") from None
    return row


def _run_order(lines: list[str], start: int, end: int) -> tuple[list[dict], int]:
    """Rows of the first `Run Order` table in lines[start:end] and the index after it."""
    i = next((k for k in range(start, end)
              if (m := _TABLE.match(lines[k].strip())) and m.group(1) == "Run Order"), None)
    if i is None or i + 1 >= end:
        return [], start
    cols = _header_columns(lines[i + 1])
    if "avg_ms" not in cols or cols[0] != "node_type" or cols[-1] != "name":
        raise HwnasError(f"benchmark_model output line {i + 2}: unexpected Run Order header "
                         f"{lines[i + 1].strip()!r}")
    rows, k = [], i + 2
    while k < end and lines[k].strip() and not lines[k].lstrip().startswith("="):
        cells = _split_row(lines[k], len(cols))
        if cells is None:
            raise HwnasError(f"benchmark_model output line {k + 1}: cannot split into the "
                             f"{len(cols)} Run Order columns: {lines[k].strip()!r}")
        rows.append(_row(cells, cols, k))
        k += 1
    return rows, k


def _ops_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "times_called" not in df:
        df["times_called"] = 1.0
    df["times_called"] = df["times_called"].astype(int)
    df["total_ms"] = df["avg_ms"] * df["times_called"]
    return df


def _loops(lines: list[str], end: int) -> list[Timings]:
    """The tool's own `count=...` lines before the profile output (not `Timings (...)` ones)."""
    return [Timings.from_line(x) for x in lines[:end] if x.lstrip().startswith("count=")]


def _params(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        m = _PARAM.match(line.strip())
        if m and "=" not in m.group(1):
            out.setdefault(m.group(1).strip(), m.group(2))
    return out


def _errors(lines: list[str]) -> str:
    bad = [x.strip() for x in lines if x.lstrip().startswith(("ERROR", "Failed", "Error"))]
    return f" The tool reported: {' | '.join(bad[:3])}" if bad else ""


def parse_tflite_benchmark(text: str, require_ops: bool = True) -> TFLiteBenchmark:
    """Parse the stdout of TFLite `benchmark_model --enable_op_profiling=true`.

    Accepts both the tab-separated format (with `Profiling Info for Benchmark Initialization`
    and `Operator-wise Profiling Info for Regular Benchmark Runs` blocks) and the 2018-era
    space-aligned one, with or without `INFO: ` prefixes. Per-op rows come from the Run Order
    table of the regular runs only ("Top by" and "Summary by node type" tables repeat the same
    rows and are not read). `timings` is the `Timings (microseconds)` line of that same block:
    a log holds one per profiled phase (initialisation: count=1; regular runs: count=N), and the
    regular runs' one is the inference time that the per-op rows add up to.
    With `require_ops=False` a log without op profiling is accepted (`ops` is then empty).
    """
    if not isinstance(text, str) or not text.strip():
        raise HwnasError("benchmark_model output is empty")
    lines = _clean_lines(text)
    _, start, end = _pick_section(lines)
    rows, after = _run_order(lines, start, end)
    if not rows and require_ops:
        raise HwnasError("benchmark_model output has no 'Run Order' table (was it run with "
                         f"--enable_op_profiling=true, and did it finish?).{_errors(lines)}")
    tline = next((x for x in lines[after:end] if x.startswith("Timings (microseconds)")), None)
    timings = Timings.from_line(tline) if tline else None
    profile_start = next((i for i, x in enumerate(lines) if _SECTION.search(x)
                          or _TABLE.match(x.strip())), len(lines))
    loops = _loops(lines, profile_start)
    if not rows and not loops:
        raise HwnasError(f"benchmark_model output has no timing lines.{_errors(lines)}")
    init = next((float(m.group(1)) for x in lines if (m := _INIT.search(x))), None)
    ops = _ops_frame(rows) if rows else pd.DataFrame(columns=["node_type", "avg_ms", "name",
                                                              "times_called", "total_ms"])
    return TFLiteBenchmark(ops, timings, loops, _params(lines), init)


# --------------------------------------------------------------------------------------------
# trtexec
# --------------------------------------------------------------------------------------------


@dataclass
class TrtProfile:
    """A trtexec `--exportProfile` result: `count` profiled iterations and one row per layer
    (name, time_ms = total over the iterations, average_ms, median_ms (NaN if absent),
    percentage)."""

    source: str
    count: int
    layers: pd.DataFrame

    @property
    def total_average_ms(self) -> float:
        """Sum of the per-layer averages: per-layer profiling overhead makes it exceed the
        end-to-end GPU time of an unprofiled run."""
        return float(self.layers["average_ms"].sum())


def _trt_layer(item: Any, index: int, label: str) -> dict:
    if not isinstance(item, dict) or "name" not in item:
        raise HwnasError(f"trtexec profile {label}: element {index} is not a layer object "
                         f"with a 'name': {str(item)[:80]!r}")
    if "averageMs" not in item:
        raise HwnasError(f"trtexec profile {label}: layer {item['name']!r} has no averageMs")
    where = f"layer {item['name']!r}"
    get = item.get
    return {"name": str(item["name"]),
            "time_ms": _number(get("timeMs", math.nan), label, f"{where} timeMs"),
            "average_ms": _number(item["averageMs"], label, f"{where} averageMs"),
            "median_ms": _number(get("medianMs", math.nan), label, f"{where} medianMs"),
            "percentage": _number(get("percentage", math.nan), label, f"{where} percentage")}


def parse_trtexec_profile(source: Source) -> TrtProfile:
    """Parse trtexec `--exportProfile` JSON (a path or the decoded list): `[{"count": N},
    {"name", "timeMs", "averageMs"[, "medianMs"], "percentage"}, ...]`."""
    data, label = _load_json(source, "trtexec profile")
    if not isinstance(data, list) or not data:
        raise HwnasError(f"trtexec profile {label}: expected a non-empty JSON list")
    head = data[0]
    if not isinstance(head, dict) or "count" not in head:
        raise HwnasError(f"trtexec profile {label}: first element should be {{\"count\": N}}, "
                         f"got {str(head)[:80]!r}")
    count = _number(head["count"], label, "count")
    layers = [_trt_layer(item, i, label) for i, item in enumerate(data[1:], start=1)]
    if not layers:
        raise HwnasError(f"trtexec profile {label}: no layers")
    return TrtProfile(label, int(count), pd.DataFrame(layers))


@dataclass
class TrtTimes:
    """trtexec `--exportTimes`: one row per inference (compute_ms, latency_ms, h2d_ms, d2h_ms,
    start_compute_ms, ...), in the tool's column names converted to snake case."""

    source: str
    inferences: pd.DataFrame

    @property
    def compute_mean_ms(self) -> float:
        return float(self.inferences["compute_ms"].mean())

    @property
    def compute_median_ms(self) -> float:
        return float(self.inferences["compute_ms"].median())


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def parse_trtexec_times(source: Source) -> TrtTimes:
    """Parse trtexec `--exportTimes` JSON: a list of per-inference objects with `computeMs`,
    `latencyMs`, `h2dMs`, `d2hMs` and start/end stamps (ms)."""
    data, label = _load_json(source, "trtexec times")
    if not isinstance(data, list) or not data:
        raise HwnasError(f"trtexec times {label}: expected a non-empty JSON list")
    rows = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "computeMs" not in item:
            raise HwnasError(f"trtexec times {label}: element {i} has no computeMs")
        rows.append({_snake(k): _number(v, label, f"element {i} {k}") for k, v in item.items()})
    return TrtTimes(label, pd.DataFrame(rows))
