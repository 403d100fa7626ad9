"""`hwnas demo`: the three user flows end to end on the embedded default (what `make demo` runs).

1. profile: reuse the shipped `profiles/ort-cpu-1t-proxyless-<R>` when its fingerprint matches
   this machine (saying so), else measure ort-cpu (quick protocol: every op + `nets` networks);
   litert too when installed (lookup table only: its sum was within 1% on the shipped profile);
2. validate the ort-cpu profile (held-out accuracy; the learned predictor is saved in it);
3. search (ProxylessNAS, full_v2, mul#log) with the budget half way between the fastest and the
   slowest network of the space, on scikit-learn's digits at 32x32;
4. train the found network briefly from scratch;
5. export it to onnx and tflite with those weights, parity-checked and verified (timed on the
   device, drift-corrected to the profile) against the prediction;
6. write report.html.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hwnas.errors import HwnasError

SHIPPED = Path(__file__).resolve().parents[1] / "profiles"


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    resolution: int = 128
    nets: int = 40
    epochs: int = 4
    warmup_epochs: int = 2
    train_epochs: int = 3
    litert: bool = True
    quick: bool = False  # tests: tiny everything

    def __post_init__(self) -> None:
        from hwnas.space.arch import MAX_RESOLUTION

        if not 32 <= self.resolution <= MAX_RESOLUTION:
            raise HwnasError(f"the demo's resolution must be within 32..{MAX_RESOLUTION}, got "
                             f"{self.resolution}")
        if self.quick:
            self.resolution, self.nets, self.epochs, self.warmup_epochs = 64, 20, 1, 1
            self.train_epochs, self.litert = 1, False


def shipped_profile(device: str, resolution: int, threads: int = 1,
                    root: Path = SHIPPED) -> tuple[Path | None, str]:
    """The shipped profile for this device/resolution if its fingerprint matches this machine."""
    from hwnas.devices.fingerprint import differences
    from hwnas.devices.registry import get_backend
    from hwnas.profile.record import read_record

    path = root / f"{device}-{threads}t-proxyless-{resolution}"
    if not (path / "device.json").exists():
        return None, f"no shipped {path.name} profile"
    stored = read_record(path).fingerprint
    diff = differences(stored, get_backend(device, threads=threads).fingerprint())
    if diff:
        return None, "shipped profile measured elsewhere (" + ", ".join(
            f"{k}: {a} vs {b}" for k, (a, b) in diff.items()) + ")"
    return path, f"the shipped profile {path.name} was measured on this kind of machine"


def _profile(device: str, cfg: DemoConfig, say: Callable[[str], None], nets: int) -> Path:
    from hwnas.devices.measurement import Protocol
    from hwnas.profile.profiler import ProfileConfig, Profiler

    out = cfg.out / f"profile-{device}-proxyless-{cfg.resolution}"
    if not cfg.quick:
        path, why = shipped_profile(device, cfg.resolution)
        if path is not None:
            say(f"{device}: {why}; reusing it (copied to {out}, so that the demo's validation "
                "and predictor files stay out of the repository)")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(path, out)
            return out
        say(f"{device}: {why}; measuring")
    config = ProfileConfig(device=device, space="proxyless", resolution=cfg.resolution,
                           nets=nets, out=out, protocol=Protocol.quick())
    return Profiler(config, log=say).run(resume=True)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """Run every step; returns {step: (result, where)} and prints a summary table."""
    from hwnas._io import write_json
    from hwnas.devices.litert import LiteRTBackend
    from hwnas.export.pipeline import ExportConfig, compared_ms, export
    from hwnas.latency import LookupTablePredictor, best_predictor
    from hwnas.latency.validate import fit_and_save, validate
    from hwnas.profile.reader import Profile
    from hwnas.report import build_report
    from hwnas.search.run import SearchConfig, run_search, train_arch

    console = console or Console()

    def say(msg: str) -> None:
        console.print(escape(msg))

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    done: dict[str, tuple[str, str]] = {}

    console.rule(f"1. profile ort-cpu, proxyless {cfg.resolution}x{cfg.resolution}")
    ort_dir = _profile("ort-cpu", cfg, say, cfg.nets)
    prof = Profile.load(ort_dir)
    done["profile ort-cpu"] = (f"{len(prof.ops)} ops, {len(prof.nets)} nets", str(ort_dir))
    profiles = [ort_dir]
    if cfg.litert and LiteRTBackend.available()[0]:
        console.rule("1b. profile litert (lookup table)")
        lite_dir = _profile("litert", cfg, say, 0)
        profiles.append(lite_dir)
        done["profile litert"] = (f"{len(Profile.load(lite_dir).ops)} ops", str(lite_dir))

    console.rule("2. validate the latency predictors")
    report = validate(prof)
    write_json(ort_dir / "validation.json", report)
    model = fit_and_save(prof)
    learned = report["results"]["learned"]
    say(f"held-out: learned ({learned['family']}) {learned['within_5']:.0%} within 5%, "
        f"{learned['within_10']:.0%} within 10%, Kendall tau {learned['kendall_tau']:.3f}; "
        f"lookup-table sum {report['results']['lut_sum']['within_10']:.0%} within 10%")
    done["validate"] = (f"{model.family_}: {learned['within_10']:.0%} within 10%",
                        str(ort_dir / "validation.json"))

    console.rule("3. search under a latency budget")
    fastest, slowest = LookupTablePredictor.from_profile(prof).extremes()
    best = best_predictor(prof)
    lo, hi = (float(best.predict([a])[0]) for a in (fastest, slowest))
    budget = round(lo + 0.5 * (hi - lo), 3)
    say(f"fastest {lo:.3f} ms, slowest {hi:.3f} ms -> budget {budget} ms")
    run_dir = out / "search"
    search_cfg = SearchConfig(profile=ort_dir, budget_ms=budget, out=run_dir,
                              epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                              loss="mul#log" if budget > 1 else "add#linear",
                              max_batches=4 if cfg.quick else None)
    summary = run_search(search_cfg, lambda r: say(
        f"epoch {r['epoch'] + 1}/{r['epochs_total']} ({r['phase']}): E[LAT] "
        f"{r['expected_ms']:.3f} ms, argmax {r['argmax_ms']:.3f} ms, "
        f"valid acc {r['valid_acc']:.2f}"))
    say(summary["message"])
    done["search"] = (f"{summary['predicted_ms']:.3f} ms predicted, budget {budget} ms "
                      f"({'met' if summary['met'] else 'NOT met'})", str(run_dir / "arch.json"))

    console.rule("4. train the found network")
    train_dir = out / "train"
    trained = train_arch(run_dir / "arch.json", "digits", epochs=cfg.train_epochs,
                         out=train_dir, max_batches=4 if cfg.quick else None)
    say(f"test accuracy {trained['test_acc']:.3f} on digits (32x32, {cfg.train_epochs} epochs)")
    done["train"] = (f"test accuracy {trained['test_acc']:.3f}",
                     str(train_dir / "model.safetensors"))

    console.rule("5. export onnx + tflite, parity-checked and verified")
    targets = ("onnx", "tflite") if "profile litert" in done else ("onnx",)
    export_dir = out / "export"
    manifests = export(ExportConfig(arch=run_dir / "arch.json", targets=targets,
                                    out=export_dir, weights=train_dir / "model.safetensors",
                                    profiles=tuple(profiles), verify=True, quick=cfg.quick),
                       log=say)
    for m in manifests:
        v, p = m["verified"], m["predicted"]
        measured = compared_ms(v)
        line = (f"{m['target']}: parity {m['parity']['max_abs']:.1e} "
                f"({'ok' if m['parity']['passed'] else 'FAIL'}), measured {measured:.3f} ms")
        if p:
            line += f", predicted {p['latency_ms']:.3f} ms (ratio {v['ratio_to_predicted']:.2f})"
        if m["target"] == "onnx":
            fits = measured <= budget * 1.10
            line += f"; budget {budget} ms {'met' if fits else 'NOT met'} (+-10% noise band)"
        say(line)
        done[f"export {m['target']}"] = (line.split(": ", 1)[1], str(export_dir / m["target"]))

    console.rule("6. report")
    report_path = build_report(ort_dir, run_dir, export_dir, out / "report.html")
    done["report"] = ("self-contained HTML", str(report_path))

    table = Table(title=f"hwnas demo: done in {time.monotonic() - t0:.0f} s")
    table.add_column("step")
    table.add_column("result")
    table.add_column("where")
    for step, (result, where) in done.items():
        table.add_row(step, escape(result), escape(where))
    console.print(table)
    if not manifests or not all(m["parity"]["passed"] for m in manifests):
        raise HwnasError("an export failed its parity check (see the manifests)")
    return done
