"""`build_report`: one self-contained HTML page (plots embedded as PNG) for a profile, optionally a
search run and an export folder.

Sections: the device fingerprint; the validation table and the predicted-vs-measured scatter of
held-out networks (from the profile's validation.json, computed when absent); with a run: the
search summary, its trajectory (history.csv), the per-layer latency breakdown of the chosen network
(lookup table) and the latency/accuracy cloud of sampled networks (cloud.csv); with an export
folder: one row per manifest.json (parity, predicted and verified latency).
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas import __version__
from hwnas._io import write_text
from hwnas.errors import HwnasError
from hwnas.report import plots
from hwnas.search.strategies import STRATEGIES

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
       margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.muted { color: #666; font-size: 0.9em; } .ok { color: #1a7f37; } .bad { color: #c62828; }
.figs { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; max-width: 560px; }
"""


def _esc(v: object) -> str:
    return html.escape(str(v))


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def _table(rows: list[dict], left: tuple[str, ...] = ()) -> str:
    if not rows:
        return "<p class='muted'>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th class='{'l' if c in left else ''}'>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td class='{'l' if c in left else ''}'>{_esc(_fmt(r[c]))}"
                                    "</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(uri: str, caption: str) -> str:
    return f"<figure><img src='{uri}' alt='{_esc(caption)}'><figcaption>{_esc(caption)}" \
           "</figcaption></figure>"


def _read_json(path: Path) -> dict:
    from hwnas._io import read_json

    doc = read_json(path)
    if not isinstance(doc, dict):
        raise HwnasError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


# --- sections ---------------------------------------------------------------------------------
def _device_section(prof) -> str:
    fp = prof.record.fingerprint
    rows = [{"field": k, "value": v} for k, v in fp.items()]
    info = (f"{_esc(prof.record.space)} space, "
            f"{len(prof.ops)} lookup-table ops, {len(prof.nets)} measured networks; status "
            f"{_esc(prof.record.status or '-')}")
    return f"<h2>Device</h2><p>{info}</p>" + _table(rows, left=("field", "value"))


def _validation_section(prof) -> str:
    from hwnas.latency.validate import report_rows, validate

    if prof.record.adapted is not None:
        return _adapted_section(prof)
    path = prof.root / "validation.json"
    report = _read_json(path) if path.exists() else {}
    if "heldout" not in report:
        if len(prof.nets) < 20:
            return "<h2>Predictor validation</h2><p class='muted'>The profile has fewer than 20 " \
                   "measured networks: nothing to validate.</p>"
        report = validate(prof)
    rows = [{k: v for k, v in row.items() if k != "MAPE"} for row in report_rows(report)]
    h = report["heldout"]
    measured = np.asarray(h["measured_ms"])
    fig = plots.predicted_vs_measured(
        measured, {"lookup-table sum": np.asarray(h["lut_ms"]),
                   "learned": np.asarray(h["learned_ms"])},
        f"{prof.name}: {len(measured)} held-out networks")
    return (f"<h2>Predictor validation</h2><p>Trained on {report['n_train']} measured networks, "
            f"tested on the {report['n_test']} held out.</p>" + _table(rows, left=("predictor",))
            + "<div class='figs'>" + _figure(fig, "Predicted vs measured latency of held-out "
                                                  "networks; the band is +-10%.") + "</div>")


def _adapted_section(prof) -> str:
    """An adapted profile (`hwnas adapt`): its source, k, the map and its check on held-out
    networks measured on the device."""
    from hwnas.latency.validate import report_rows

    a = prof.record.adapted
    m = a.get("map") or {}
    text = (f"<h2>Adapted predictor</h2><p>Adapted from profile {_esc(a.get('source'))} with "
            f"{_esc(a.get('k'))} networks measured on this device ({_esc(a.get('picked'))}); "
            f"kernel classes: {_esc(', '.join(m.get('classes') or []) or 'none')}. Its lookup "
            f"table is predicted, not measured.</p>")
    check = a.get("check")
    if not check:
        return text + "<p class='muted'>No held-out check (hwnas adapt --check N).</p>"
    rows = report_rows({"results": {"adapted": check["adapted"],
                                    "zero-shot (source table)": check["zero_shot"]}})
    return (text + f"<p>Checked on {check['n']} held-out networks measured on this device.</p>"
            + _table(rows, left=("predictor",)))


def _shiftnas_section(run: Path, summary: dict) -> str:
    """A ShiftNAS run (`hwnas search --method shiftnas`): the generator's network per bin and
    the learned bin distribution per update (bins.json)."""
    bins = _read_json(run / "bins.json")
    per_bin = summary.get("per_bin") or []
    unit = summary.get("unit", "ms")
    rows = [{"bin": b["bin"], f"target {unit}": b["target"], f"generated {unit} (table)": b["cost"],
             "valid acc (shared)": b.get("valid_acc"), "probability": p}
            for b, p in zip(per_bin, bins.get("probs") or [None] * len(per_bin), strict=False)]
    hist = bins.get("history") or []
    k = len(bins["edges"]) - 1
    steps = [0] + [int(h["step"]) for h in hist]
    probs = [[1.0 / k] * k] + [h["probs"] for h in hist]
    figs = [_figure(plots.bin_distribution(steps, np.asarray(probs), bins["edges"]),
                    "Probability of each complexity bin after each Eq. 8 update (the first point "
                    "is the uniform start; frozen for --sampling uniform-bins)."),
            _figure(plots.budget_tracking([b["target"] for b in per_bin],
                                          [b["cost"] for b in per_bin],
                                          [b["valid_acc"] for b in per_bin]
                                          if all("valid_acc" in b for b in per_bin) else None,
                                          unit),
                    "The generator's network for each bin centre: its cost by the run's table "
                    "against the target.")]
    rng = summary.get("trained_range") or [float("nan")] * 2
    return (f"<h2>ShiftNAS: {_esc(run.name)}</h2><p>sampling {_esc(summary.get('sampling'))}, "
            f"{summary.get('steps')} steps, {summary.get('b_updates')} bin updates; "
            f"<code>hwnas generate</code> answers budgets in {rng[0]:.4g} .. {rng[1]:.4g} {unit}."
            f"</p>" + _table(rows) + "<div class='figs'>" + "".join(figs) + "</div>")


def _strategy_section(run: Path, summary: dict) -> str:
    """A strategy search (`hwnas search --method random|evolution|reinforce|tpe|nsga2`): the
    chosen arch against the exact optimum of the tables, and every trial (trajectory.csv)."""
    chosen = summary.get("chosen") or {}
    ref = summary.get("reference") or {}
    rows = [{"method": summary.get("method"), "evaluator": summary.get("evaluator"),
             "budget ms": summary.get("budget_ms"), "chosen": chosen.get("arch_str"),
             "score": summary.get("score"), "table accuracy": summary.get("accuracy"),
             "predicted ms": summary.get("predicted_ms"), "met": summary.get("met"),
             "evaluations": summary.get("evaluations_used"),
             "optimum accuracy": ref.get("accuracy"), "regret": ref.get("regret")}]
    figs = []
    traj = run / "trajectory.csv"
    if traj.exists():
        df = pd.read_csv(traj)
        df = df[df["status"] == "evaluated"]
        if len(df):
            lat = df["latency_ms"].to_numpy(float) if "latency_ms" in df.columns else None
            what = "accuracy" if summary.get("evaluator") == "table" \
                else f"{summary.get('evaluator')} score"
            figs.append(_figure(plots.strategy_trajectory(
                df["evaluation"].to_numpy(int), df["score"].to_numpy(float), lat,
                df["feasible"].astype(str).str.lower().isin(["true", "1"]).to_numpy(),
                summary.get("budget_ms"), what),
                "Every evaluated candidate: its score per evaluation with the best feasible one "
                "so far, and its latency by the run's predictor against the budget."))
    met = summary.get("met")
    return (f"<h2>Strategy search: {_esc(run.name)}</h2>"
            f"<p class='{'ok' if met else 'bad'}'>{_esc(summary.get('message', ''))}</p>"
            + _table(rows) + "<div class='figs'>" + "".join(figs) + "</div>")


def _fbnetv5_section(run: Path, summary: dict) -> str:
    """An FBNetV5 run (`hwnas search --method fbnetv5`): each task's derived network, its
    latency against the task's budget and its metric with shared weights."""
    rows = [{"task": t, "blocks kept": d.get("bits"), "predicted ms": d.get("predicted_ms"),
             "budget ms": d.get("budget_ms"), "met": d.get("met"), "metric": d.get("metric"),
             "valid metric (shared)": d.get("valid_metric")}
            for t, d in (summary.get("per_task") or {}).items()]
    return (f"<h2>FBNetV5: {_esc(run.name)}</h2><p>{summary.get('steps')} steps, tasks "
            f"{_esc(', '.join(summary.get('tasks') or []))}; "
            f"{_esc(summary.get('latency_note', ''))}.</p>" + _table(rows))


def _run_section(prof, run: Path) -> str:
    from hwnas.latency.lut import LookupTablePredictor
    from hwnas.space import Arch

    summary = _read_json(run / "summary.json")
    if summary.get("method") == "shiftnas":
        return _shiftnas_section(run, summary)
    if summary.get("method") == "fbnetv5":
        return _fbnetv5_section(run, summary)
    if summary.get("method") in STRATEGIES:
        return _strategy_section(run, summary)
    budget = float(summary["budget_ms"])
    met = summary.get("met")
    rows = [{"budget ms": budget, "predicted ms": summary.get("predicted_ms"),
             "interval ms": " - ".join(f"{v:.3f}" for v in summary["interval_ms"])
             if summary.get("interval_ms") else "-",
             "met": met, "predictor": summary.get("predictor"),
             "valid acc (shared)": summary.get("accuracy", {}).get("valid"),
             "fastest ms": summary.get("fastest_ms"), "slowest ms": summary.get("slowest_ms")}]
    parts = [f"<h2>Search: {_esc(run.name)}</h2>",
             f"<p class='{'ok' if met else 'bad'}'>{_esc(summary.get('message', ''))}</p>",
             _table(rows)]
    figs = []
    hist_path = run / "history.csv"
    if hist_path.exists():
        hist = pd.read_csv(hist_path)
        if "sub" in hist.columns and hist["epoch"].duplicated().any():
            # sub-supernets (GM / few-shot): the best one per epoch
            hist = hist.sort_values("valid_acc").groupby("epoch").tail(1).sort_values("epoch")
        warmup = int((hist["phase"] == "warmup").sum())
        figs.append(_figure(plots.search_trajectory(
            hist["epoch"].to_numpy(), hist["valid_acc"].to_numpy(float),
            hist["expected_ms"].to_numpy(float), hist["argmax_ms"].to_numpy(float), budget,
            warmup), "Search trajectory: accuracy of the argmax network with shared weights, "
                     "E[LAT] of the architecture distribution, the argmax network's latency "
                     "and the budget, per epoch."))
    arch_path = run / "arch.json"
    if arch_path.exists():
        arch = Arch.load(arch_path)
        lut = LookupTablePredictor.from_profile(prof)
        space = prof.space
        names, ms = [], []
        for op, t in lut.breakdown(space.arch(arch.choices)):
            names.append(f"{op.kind} {op.key.split('_', 1)[-1][:38]}")
            ms.append(t)
        figs.append(_figure(plots.layer_breakdown(names, ms, f"chosen network: {sum(ms):.2f} ms"),
                            "Per-layer latency of the chosen network (lookup table; stem, "
                            "blocks, head)."))
    cloud_path = run / "cloud.csv"
    if cloud_path.exists():
        cloud = pd.read_csv(cloud_path)
        final = cloud[cloud["kind"] == "final"].iloc[0]
        rest = cloud[cloud["kind"] != "final"]
        figs.append(_figure(plots.latency_accuracy_cloud(
            rest["predicted_ms"].to_numpy(float), rest["valid_acc"].to_numpy(float),
            float(final["predicted_ms"]), float(final["valid_acc"]), budget),
            "Predicted latency and shared-weight accuracy of random networks of the space; "
            "the star is the chosen one."))
    return "".join(parts) + "<div class='figs'>" + "".join(figs) + "</div>"


def _export_section(folder: Path) -> str:
    from hwnas.export.manifest import load_manifest

    rows = []
    for path in sorted(folder.glob("*/manifest.json")):
        m = load_manifest(path)
        pred, ver = m.get("predicted"), m.get("verified")
        rows.append({"target": m["target"], "precision": m["precision"],
                     "file": f"{path.parent.name}/{m['artifact']['file']}",
                     "MB": m["artifact"]["bytes"] / 1e6,
                     "parity": f"{m['parity']['max_abs']:.1e} ({m['parity']['criterion']}: "
                               f"{'pass' if m['parity']['passed'] else 'FAIL'})",
                     "predicted ms": pred["latency_ms"] if pred else None,
                     "measured ms": ver["measured_ms"] if ver else None,
                     "scaled to profile ms": ver.get("corrected_ms") if ver else None,
                     "device": ver["device"] if ver else None,
                     "compared/predicted": ver.get("ratio_to_predicted") if ver else None})
    if not rows:
        return f"<h2>Exports</h2><p class='muted'>No manifest.json under {_esc(folder)}.</p>"
    return ("<h2>Exports</h2><p>Each artifact was run in its runtime against the torch model. "
            "<em>measured</em> is the time taken on this machine; <em>scaled to profile</em> "
            "is that time multiplied by the drift reference's profiled / current time (empty "
            "when the reference was more than 1.25x off: a busy or different machine); the "
            "ratio compares the scaled time, or the measured one when none, with the "
            "prediction.</p>"
            + _table(rows, left=("target", "precision", "file", "parity", "device")))


def build_report(profile: str | Path, run: str | Path | None = None,
                 export: str | Path | None = None, out: str | Path = "report.html") -> Path:
    """Write the HTML report; returns its path."""
    from hwnas.export.manifest import load_manifest
    from hwnas.profile.reader import Profile

    prof = Profile.load(profile)
    if run is not None:
        run = Path(run)
        if not (run / "summary.json").exists():
            raise HwnasError(f"{run} is not a finished search run (no summary.json)")
    if export is not None:
        export = Path(export)
        if not export.is_dir():
            raise HwnasError(f"export folder not found: {export}")
        for path in sorted(export.glob("*/manifest.json")):  # every input checked first
            load_manifest(path)
    sections = [_device_section(prof), _validation_section(prof)]
    if run is not None:
        try:
            sections.append(_run_section(prof, run))
        except (KeyError, TypeError, ValueError, IndexError, pd.errors.ParserError) as e:
            # HwnasError is a ValueError: a message that names its file passes unchanged
            raise (e if isinstance(e, HwnasError) else HwnasError(
                f"{run}: a file of the run is not as a search writes it ({type(e).__name__}: "
                f"{e})")) from None
    if export is not None:
        sections.append(_export_section(export))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>hwnas report: {_esc(prof.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>hwnas report: {_esc(prof.name)}</h1>"
            f"<p class='muted'>hwnas {__version__}, {now}</p>" + "".join(sections)
            + "</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return out
