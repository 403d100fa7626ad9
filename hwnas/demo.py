"""`hwnas demo`: the three user flows end to end on the embedded default (what `make demo` runs).

1. profile: reuse the shipped `profiles/ort-cpu-1t-proxyless-<R>` when its fingerprint matches
   this machine (saying so); else adapt it to this machine from 10 measured networks
   (`hwnas adapt`), say how good that is on 20 more, and use it when >= 90 % of them are within
   10 %; else measure ort-cpu (quick protocol: every op + `nets` networks);
   litert too when installed (lookup table only; the export step predicts its file from it);
2. validate the ort-cpu profile (held-out accuracy; the learned predictor is saved in it);
3. search (ProxylessNAS, full_v2, mul#log or add#linear) with the budget half way between the fastest and the
   slowest network of the space, on scikit-learn's digits at 32x32;
4. train the found network briefly from scratch;
5. export it to onnx and tflite with those weights, parity-checked and verified (timed on the
   device; the time scaled to the profile's speed by its drift reference is shown beside the
   measured one) against the prediction; the budget is "met" only when that time is within it;
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
from hwnas.profile.drift import MAX_DRIFT

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
    """The shipped profile for this device/resolution if its fingerprint matches this machine and
    this machine runs the profile's drift reference net at the profile's speed (within
    `MAX_DRIFT`): a virtual machine's CPU name does not tell every host apart."""
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
    speed = reference_speed(path, device, threads)
    if speed is not None and not (1 / MAX_DRIFT <= speed <= MAX_DRIFT):
        return None, (f"the shipped profile {path.name} matches this machine's fingerprint, but "
                      f"this machine runs its reference net {speed:.2f}x as long as when it "
                      "was profiled (another host behind the same CPU name)")
    return path, f"the shipped profile {path.name} was measured on this kind of machine"


def reference_speed(path: Path, device: str, threads: int = 1) -> float | None:
    """The profile's drift reference net timed now (quick protocol) / its profiled time (None:
    the profile has no reference)."""
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.profile.profiler import measure_beside_reference
    from hwnas.profile.reader import Profile

    prof = Profile.load(path)
    ref = prof.reference_arch()
    if ref is None or prof.reference_ms() is None:
        return None
    res = measure_beside_reference(get_backend(device, threads=threads), prof, [ref],
                                   Protocol.quick())
    return next(iter(res.values()))["drift"]


ADAPT_SAMPLES, ADAPT_CHECK, ADAPT_GOOD = 10, 20, 0.9  # use the adapted profile at >= 90 % within 10 %


def _profile(device: str, cfg: DemoConfig, say: Callable[[str], None], nets: int,
             root: Path = SHIPPED) -> Path:
    """The profile the demo uses: the shipped one when it was measured on this kind of
    machine; else (ort-cpu) the shipped one adapted to this machine from 10 measured networks
    (`hwnas adapt`), checked on 20 more, and used instead of a new profile when at least 90 %
    of those are predicted within 10 %; else a new (quick) profile."""
    from hwnas.devices.measurement import Protocol
    from hwnas.profile.profiler import ProfileConfig, Profiler

    out = cfg.out / f"profile-{device}-proxyless-{cfg.resolution}"
    if not cfg.quick:
        path, why = shipped_profile(device, cfg.resolution, root=root)
        if path is not None:
            say(f"{device}: {why}; reusing it (copied to {out}, so that the demo's validation "
                "and predictor files stay out of the repository)")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(path, out)
            return out
        say(f"{device}: {why}")
        shipped = root / f"{device}-1t-proxyless-{cfg.resolution}"
        if nets and (shipped / "ops.parquet").exists():
            adapted = _adapt_shipped(shipped, cfg, say)
            if adapted is not None:
                return adapted
        say(f"{device}: measuring a new profile")
    config = ProfileConfig(device=device, space="proxyless", resolution=cfg.resolution,
                           nets=nets, out=out, protocol=Protocol.quick())
    return Profiler(config, log=say).run(resume=True)


def _adapt_shipped(shipped: Path, cfg: DemoConfig, say: Callable[[str], None]) -> Path | None:
    """`hwnas adapt` of a shipped profile to this machine; the adapted profile when its check
    is good enough (`ADAPT_GOOD` within 10 %), else None (the caller profiles from scratch)."""
    from hwnas.latency.adapted import AdaptConfig, adapt_profile

    out = cfg.out / f"adapted-{shipped.name}"
    say(f"adapting {shipped.name} to this machine from {ADAPT_SAMPLES} measured networks "
        f"(checked on {ADAPT_CHECK} more) before profiling from scratch")
    shutil.rmtree(out, ignore_errors=True)
    result = adapt_profile(AdaptConfig(source=shipped, out=out, samples=ADAPT_SAMPLES,
                                       check=ADAPT_CHECK, quick=True))
    a, z = result.check["adapted"], result.check["zero_shot"]
    say(f"adapted ({result.predictor.name}): {a['within_10']:.0%} of {ADAPT_CHECK} held-out "
        f"nets within 10%, MAPE {a['mape']:.1%}, Kendall tau {a['kendall_tau']:.3f} "
        f"(the shipped table as is: {z['within_10']:.0%} within 10%, MAPE {z['mape']:.1%})")
    if a["within_10"] >= ADAPT_GOOD:
        say(f"using the adapted profile {out} instead of profiling from scratch")
        return out
    say(f"below {ADAPT_GOOD:.0%} within 10%: not good enough")
    return None


def budget_words(compared: float, budget: float) -> str:
    """'met' only when the (scaled) measured time is within the budget; within +10% over it is
    'over by x%, within the +-10% noise band', further over it is 'NOT met'."""
    if compared <= budget:
        return f"budget {budget} ms met"
    over = compared / budget - 1
    if over <= 0.10:
        return f"budget {budget} ms exceeded by {over:.1%}, within the +-10% noise band"
    return f"budget {budget} ms NOT met (over by {over:.1%})"


def verified_words(v: dict) -> str:
    """The measured time, and the drift-scaled one with its factor when scaling applied."""
    text = f"measured {v['measured_ms']:.3f} ms"
    if v.get("corrected_ms"):
        text += (f" (scaled to the profile's speed: {v['corrected_ms']:.3f} ms, factor "
                 f"{v['drift_scale']:.3f})")
    elif v.get("drift_note"):
        text += " (not scaled: the machine was busy)"
    return text


class _Demo:
    """The demo's steps, in order; each prints what it did and records (result, where)."""

    def __init__(self, cfg: DemoConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.out = Path(cfg.out)
        self.done: dict[str, tuple[str, str]] = {}

    def say(self, msg: str) -> None:
        self.console.print(escape(msg))

    def profile(self) -> tuple[Path, list[Path]]:
        from hwnas.devices.litert import LiteRTBackend
        from hwnas.profile.reader import Profile

        cfg = self.cfg
        self.console.rule(f"1. profile ort-cpu, proxyless {cfg.resolution}x{cfg.resolution}")
        ort_dir = _profile("ort-cpu", cfg, self.say, cfg.nets)
        prof = Profile.load(ort_dir)
        self.done["profile ort-cpu"] = (f"{len(prof.ops)} ops, {len(prof.nets)} nets",
                                        str(ort_dir))
        profiles = [ort_dir]
        if cfg.litert and LiteRTBackend.available()[0]:
            self.console.rule("1b. profile litert (lookup table)")
            lite_dir = _profile("litert", cfg, self.say, 0)
            profiles.append(lite_dir)
            self.done["profile litert"] = (f"{len(Profile.load(lite_dir).ops)} ops",
                                           str(lite_dir))
        return ort_dir, profiles

    def validate(self, ort_dir: Path) -> None:
        from hwnas.latency.validate import validate_profile
        from hwnas.profile.reader import Profile

        self.console.rule("2. validate the latency predictors")
        prof = Profile.load(ort_dir)
        if prof.record.adapted is not None:  # checked on its held-out nets when adapted
            check = prof.record.adapted["check"]["adapted"]
            self.done["validate"] = (f"adapted: {check['within_10']:.0%} within 10% on "
                                     f"{check['n']} held-out nets", str(ort_dir / "device.json"))
            self.say(f"the adapted profile was checked on {check['n']} held-out networks when "
                     "it was made (step 1)")
            return
        report, model = validate_profile(prof)
        learned = report["results"]["learned"]
        self.say(f"held-out: learned ({learned['family']}) {learned['within_5']:.0%} within 5%, "
                 f"{learned['within_10']:.0%} within 10%, Kendall tau "
                 f"{learned['kendall_tau']:.3f}; lookup-table sum "
                 f"{report['results']['lut_sum']['within_10']:.0%} within 10%")
        self.done["validate"] = (f"{model.family_}: {learned['within_10']:.0%} within 10%",
                                 str(ort_dir / "validation.json"))

    def search(self, ort_dir: Path) -> tuple[Path, float]:
        from hwnas.latency import LookupTablePredictor, best_predictor
        from hwnas.profile.reader import Profile
        from hwnas.search.run import SearchConfig, run_search

        cfg = self.cfg
        self.console.rule("3. search under a latency budget")
        prof = Profile.load(ort_dir)
        fastest, slowest = LookupTablePredictor.from_profile(prof).extremes()
        lo, hi = (float(v) for v in best_predictor(prof).predict([fastest, slowest]))
        budget = round(lo + 0.5 * (hi - lo), 3)
        self.say(f"fastest {lo:.3f} ms, slowest {hi:.3f} ms (predicted) -> budget {budget} ms")
        run_dir = self.out / "search"
        config = SearchConfig(
            profile=ort_dir, budget_ms=budget, out=run_dir, epochs=cfg.epochs,
            warmup_epochs=cfg.warmup_epochs, loss="auto",
            max_batches=4 if cfg.quick else None)
        if (run_dir / "config.json").exists():  # an older demo's search: resume only if the same
            from hwnas.errors import HwnasError
            from hwnas.search.run import RESUME_KEYS
            from hwnas.search.strategy import check_same_settings

            try:
                check_same_settings(run_dir / "config.json", config.to_dict(), RESUME_KEYS,
                                    run_dir, "")
            except HwnasError:
                self.say(f"{run_dir} holds a search with other settings (an older demo): "
                         "starting it over")
                config.resume = False
        summary = run_search(config, lambda r: self.say(
            f"epoch {r['epoch'] + 1}/{r['epochs_total']} ({r['phase']}): E[LAT] "
            f"{r['expected_ms']:.3f} ms, argmax {r['argmax_ms']:.3f} ms, "
            f"valid acc {r['valid_acc']:.2f}"))
        self.say(summary["message"])
        self.done["search"] = (f"{summary['predicted_ms']:.3f} ms predicted, budget {budget} ms "
                               f"({'met' if summary['met'] else 'NOT met'} by the prediction)",
                               str(run_dir / "arch.json"))
        return run_dir, budget

    def train(self, run_dir: Path) -> Path:
        from hwnas.search.run import train_arch

        cfg = self.cfg
        self.console.rule("4. train the found network")
        train_dir = self.out / "train"
        trained = train_arch(run_dir / "arch.json", "digits", epochs=cfg.train_epochs,
                             out=train_dir, max_batches=4 if cfg.quick else None)
        self.say(f"test accuracy {trained['test_acc']:.3f} on digits (32x32, "
                 f"{cfg.train_epochs} epochs)")
        self.done["train"] = (f"test accuracy {trained['test_acc']:.3f}",
                              str(train_dir / "model.safetensors"))
        return train_dir

    def export(self, run_dir: Path, train_dir: Path, profiles: list[Path],
               budget: float) -> tuple[Path, list[dict]]:
        from hwnas.export.pipeline import ExportConfig, compared_ms, export

        self.console.rule("5. export onnx + tflite, parity-checked and verified")
        targets = ("onnx", "tflite") if "profile litert" in self.done else ("onnx",)
        export_dir = self.out / "export"
        manifests = export(ExportConfig(
            arch=run_dir / "arch.json", targets=targets, out=export_dir,
            weights=train_dir / "model.safetensors", profiles=tuple(profiles), verify=True,
            quick=self.cfg.quick), log=self.say)
        for m in manifests:
            v, p = m["verified"], m["predicted"]
            line = (f"{m['target']}: parity {m['parity']['max_abs']:.1e} "
                    f"({'ok' if m['parity']['passed'] else 'FAIL'}), {verified_words(v)}")
            if p:
                line += (f", predicted {p['latency_ms']:.3f} ms (ratio "
                         f"{v['ratio_to_predicted']:.2f})")
            if m["target"] == "onnx":
                line += f"; {budget_words(compared_ms(v), budget)}"
            self.say(line)
            self.done[f"export {m['target']}"] = (line.split(": ", 1)[1],
                                                  str(export_dir / m["target"]))
        return export_dir, manifests

    def report(self, ort_dir: Path, run_dir: Path, export_dir: Path) -> None:
        from hwnas.report import build_report

        self.console.rule("6. report")
        path = build_report(ort_dir, run_dir, export_dir, self.out / "report.html")
        self.done["report"] = ("self-contained HTML", str(path))

    def summary(self, seconds: float) -> None:
        table = Table(title=f"hwnas demo: done in {seconds:.0f} s")
        for col in ("step", "result", "where"):
            table.add_column(col)
        for step, (result, where) in self.done.items():
            table.add_row(step, escape(result), escape(where))
        self.console.print(table)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """Run every step (the module docstring); returns {step: (result, where)} and prints a
    summary table. Each step calls the library function its CLI command calls."""
    demo = _Demo(cfg, console or Console())
    demo.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ort_dir, profiles = demo.profile()
    demo.validate(ort_dir)
    run_dir, budget = demo.search(ort_dir)
    train_dir = demo.train(run_dir)
    export_dir, manifests = demo.export(run_dir, train_dir, profiles, budget)
    demo.report(ort_dir, run_dir, export_dir)
    demo.summary(time.monotonic() - t0)
    if not manifests or not all(m["parity"]["passed"] for m in manifests):
        raise HwnasError("an export failed its parity check (see the manifests)")
    return demo.done
