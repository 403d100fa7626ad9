"""The `hwnas` command line (typer + rich). A user mistake prints one line and exits with code 2."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hwnas import __version__
from hwnas.errors import HwnasError

app = typer.Typer(help="hwnas: hardware-aware latency models, NAS and deployment.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
arch_app = typer.Typer(help="Sample and inspect architectures.", no_args_is_help=True)
app.add_typer(arch_app, name="arch")
import_app = typer.Typer(help="Import published latency data as profiles.", no_args_is_help=True)
app.add_typer(import_app, name="import")
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"hwnas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """hwnas: measure a device, search under a latency budget, export a verified model."""


@app.command()
def spaces() -> None:
    """List the search spaces: layers, choices per layer and the number of archs."""
    from hwnas.space import SPACES

    table = Table(title="search spaces")
    for col in ("name", "layers", "choices per layer", "archs", "default input", "description"):
        table.add_column(col, no_wrap=col == "name")  # a space name is never cut short
    for name, cls in SPACES.items():
        space = cls()
        counts = sorted({len(layer.choices) for layer in space.layers})
        choices = sorted({c for layer in space.layers for c in layer.choices},
                         key=lambda c: (c in ("zero", "skip"), c))
        table.add_row(name, str(len(space.layers)),
                      f"{'/'.join(map(str, counts))}: {' '.join(choices)}",
                      f"{float(space.size):.3g}", f"{space.resolution}x{space.resolution}",
                      cls.description)
    console.print(table)


@arch_app.command("sample")
def arch_sample(
    space: str = typer.Option("proxyless", help="Search space name (see `hwnas spaces`)."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    resolution: int = typer.Option(None, help="Input resolution (default: the space's)."),
    width: float = typer.Option(1.0, help="Width multiplier."),
    num_classes: int = typer.Option(None, help="Number of classes (default: the space's)."),
    out: Path = typer.Option(None, help="Write the JSON here instead of printing it."),
) -> None:
    """Sample a random arch (uniform per layer) and print its JSON."""
    from hwnas.space import get_space

    arch = get_space(space, resolution, width, num_classes).sample(seed)
    if out:
        arch.save(out)
        console.print(f"wrote {out}")
    else:
        typer.echo(arch.to_json())


@arch_app.command("info")
def arch_info(path: Path = typer.Argument(..., help="An Arch JSON file.")) -> None:
    """Print an arch's ops with their output shapes, MACs and parameters."""
    from hwnas.space import Arch, space_of

    arch = Arch.load(path)
    ops = space_of(arch).ops(arch)
    table = Table(title=f"{arch.space} {arch.resolution}x{arch.resolution} width {arch.width}")
    for col in ("#", "op", "input", "output", "MACs (M)", "params (K)"):
        table.add_column(col, justify="right" if col != "op" else "left")
    for i, op in enumerate(ops):
        name = op.kind if op.kind in ("conv", "classifier") else \
            f"{op.kind} k{op.kernel} e{op.expand}" + (f" g{op.groups}" if op.groups > 1 else "")
        table.add_row(str(i), name + (f" s{op.stride}" if op.stride > 1 else ""),
                      f"{op.cin}x{op.h}x{op.w}", f"{op.cout}x{op.out_h}x{op.out_w}",
                      f"{op.macs / 1e6:.2f}", f"{op.params / 1e3:.1f}")
    macs, params = sum(op.macs for op in ops), sum(op.params for op in ops)
    table.add_row("", "total", "", "", f"{macs / 1e6:.1f}", f"{params / 1e3:.1f}")
    console.print(table)


@app.command()
def devices(as_json: bool = typer.Option(False, "--json", help="Print JSON instead.")) -> None:
    """List the device backends, available here or not, with the reason and runtime version."""
    from hwnas.devices import registry

    rows = registry.describe_all()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="device backends")
    for col in ("name", "available", "runtime", "reason / description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "[green]yes[/]" if r["available"] else "[red]no[/]",
                      escape(r["runtime"]),
                      escape(r["reason"] if not r["available"] else r["description"]))
    console.print(table)


@app.command()
def profile(
    device: str = typer.Option("ort-cpu", help="Backend name (see `hwnas devices`)."),
    space: str = typer.Option("proxyless", help="Search space (see `hwnas spaces`)."),
    resolution: int = typer.Option(None, help="Input resolution (default: the space's)."),
    width: float = typer.Option(1.0, help="Width multiplier."),
    threads: int = typer.Option(1, help="Runtime threads (part of the device fingerprint)."),
    nets: int = typer.Option(200, help="Whole networks to measure (0: lookup table only)."),
    max_minutes: float = typer.Option(None, help="Stop after this long; continue with --resume."),
    out: Path = typer.Option(None, help="Profile folder [default: profiles/<device>-<T>t-"
                                        "<space>-<resolution>]."),
    resume: bool = typer.Option(False, help="Continue an interrupted profile in --out."),
    seed: int = typer.Option(0, min=0, help="Seed for the network sample and round order."),
    quick: bool = typer.Option(False, help="A shorter timing protocol (tests, demos)."),
    generic: int = typer.Option(0, help="Also measure N generic ops (conv, depthwise, linear, "
                                        "pooling, ...) sampled from realistic shapes, for "
                                        "`hwnas predict MODEL.onnx`."),
    kernel_nets: int = typer.Option(0, help="Also time N random CNNs end to end and kernel by "
                                            "kernel (the runtime's per-node profile), the "
                                            "training data of `hwnas predict MODEL.onnx` "
                                            "(ort-cpu; about 100 take 5 minutes)."),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]",
                            help="Convert and time on a Ray cluster: `--ray` alone starts a local "
                                 "Ray instance, `--ray auto` or `--ray HOST:PORT` joins a cluster "
                                 "whose nodes declare resources like device:ort-cpu (needs "
                                 "pip install 'hwnas[distributed]')."),
    devices: str = typer.Option(None, help="With --ray: profile these devices at once "
                                           "(comma-separated), one profile each in --out-dir."),
    out_dir: Path = typer.Option(None, help="With --devices: folder of the profiles "
                                            "[default: profiles]."),
    device_resource: str = typer.Option(None, help="With --ray: the Ray resource that marks "
                                                   "--device's nodes [default: device:<NAME>]."),
    timing_cpus: str = typer.Option("node", help="With --ray: CPUs a timing task holds on its "
                                                 "node, so that no conversion runs beside it "
                                                 "('node': all of them; at least threads + 1)."),
) -> None:
    """Measure every distinct op of a space (the lookup table) and N whole networks on a device.

    Items are measured in shuffled interleaved rounds; finished rows are flushed as they come, so
    an interrupted run loses at most the chunk in flight: rerun with --resume. With --ray, the
    conversions run as Ray tasks on any node and the timing on the nodes that hold the device.
    """
    from hwnas.devices.measurement import Protocol
    from hwnas.profile.profiler import ProfileConfig

    config = ProfileConfig(device=device, space=space, resolution=resolution, width=width,
                           threads=threads, nets=nets, out=out, max_minutes=max_minutes,
                           seed=seed, generic=generic, kernel_nets=kernel_nets,
                           protocol=Protocol.quick() if quick else Protocol())
    if ray is None:
        given = [flag for flag, value in (("--devices", devices), ("--out-dir", out_dir),
                                          ("--device-resource", device_resource),
                                          ("--timing-cpus", timing_cpus != "node" or None))
                 if value is not None]
        if given:
            raise HwnasError(f"{', '.join(given)}: only with --ray")
    elif devices is not None and (out is not None or device_resource is not None):
        raise HwnasError("--devices writes one profile per device in --out-dir: drop --out "
                         "and --device-resource")
    with _phase_bars() as progress:
        if ray is not None:
            root = _profile_ray(config, ray, devices, out_dir, device_resource, timing_cpus,
                                resume, progress)
        else:
            root = _profile_here(config, resume, progress)
    if isinstance(root, list):  # a farm: one row per device
        _print_farm(root, config)
        return
    from hwnas.profile.record import read_record

    record = read_record(root)
    console.print(f"{record.status}: {root}  (wall {record.wall_s:.0f} s, "
                  f"timed {record.timed_s:.0f} s)")


@contextlib.contextmanager
def _phase_bars():
    """One progress bar per phase ("ops", "nets", "converting nets", ...): yields the
    `progress(phase, done, total)` callback of `Profiler` and `adapt_profile`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, completed=done)
            bar.update(tasks[phase], completed=done, total=total)

        yield progress


def _profile_here(config, resume: bool, progress) -> Path:
    """`hwnas profile` on this machine."""
    from hwnas.profile.profiler import Profiler

    device, threads = config.device, config.threads
    profiler = Profiler(config, progress=progress, log=console.print)
    console.print(f"profiling [bold]{device}[/] ({threads} thread(s)) on "
                  f"{profiler.space.name} {profiler.space.resolution}x"
                  f"{profiler.space.resolution} -> {profiler.root}")
    try:
        root = profiler.run(resume=resume)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: measured rows are kept; continue with "
                      f"`hwnas profile ... --out {profiler.root} --resume`")
        raise typer.Exit(130) from None
    return root


def _profile_ray(config, address: str, devices: str | None, out_dir: Path | None,
                 device_resource: str | None, timing_cpus: str, resume: bool,
                 progress) -> Path | list[dict]:
    """`hwnas profile --ray`: one device (returns its profile) or a farm (returns its rows)."""
    from hwnas.profile.farm import profile_farm, profile_on_ray

    address = None if address == "local" else address
    timing = timing_cpus if timing_cpus == "node" else _int_option("--timing-cpus", timing_cpus)
    try:
        if devices is None:
            return profile_on_ray(config, address, device_resource, resume=resume,
                                  timing_cpus=timing, progress=progress, log=console.print)
        names = [d.strip() for d in devices.split(",") if d.strip()]
        return profile_farm(names, config, out_dir or Path("profiles"), address, resume=resume,
                            timing_cpus=timing, progress=progress, log=console.print)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: measured rows are kept; continue with the same "
                      "command and --resume")
        raise typer.Exit(130) from None


def _print_farm(rows: list[dict], config) -> None:
    """The farm's table (one row per device); exit 1 when a device failed."""
    table = Table(title=f"device farm: {config.space}")
    numeric = ("nodes", "ops", "nets", "wall s")
    for col in ("device", "nodes", "status", "ops", "nets", "wall s", "profile"):
        table.add_column(col, justify="right" if col in numeric else "left",
                         overflow="fold", no_wrap=col in ("device", "status"))
    for r in rows:
        name = r["device"] if r["resource"] == f"device:{r['device']}" else \
            f"{r['device']} ({r['resource']})"
        table.add_row(escape(name), str(r["nodes"]),
                      r["status"] if not r["error"] else f"[red]failed[/]: {escape(r['error'])}",
                      str(r["ops"]), str(r["nets"]), f"{r['wall_s']:.0f}", escape(r["path"]))
    console.print(table)
    if any(r["error"] for r in rows):
        raise typer.Exit(1)


def _int_option(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HwnasError(f"{flag} must be 'node' or a whole number, got {text!r}") from None


def _load_profile(path: Path):
    from hwnas.profile.reader import Profile

    return Profile.load(path)


@app.command()
def measure(
    model: Path = typer.Argument(..., help="A model file: .onnx (ort-* backends) or .tflite "
                                          "(litert)."),
    device: str = typer.Option("ort-cpu", help="Backend name (see `hwnas devices`)."),
    threads: int = typer.Option(1, help="Runtime threads."),
    profile: Path = typer.Option(None, help="Time beside this profile's drift reference and "
                                            "also give the time scaled to its speed."),
    input_shape: str = typer.Option(None, help="Input shape, e.g. 1,3,224,224 [default: the "
                                               "model's]."),
    quick: bool = typer.Option(False, help="A shorter timing protocol."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Time any model file with the profiling protocol (warm-up, interleaved rounds with the
    drift reference, fingerprint): foreign models timed exactly as profiles are."""
    from hwnas.convert import model_input_shape
    from hwnas.devices.measurement import Protocol
    from hwnas.devices.registry import get_backend
    from hwnas.profile.profiler import measure_file

    backend = get_backend(device, threads=threads)
    backend.require()
    if model.suffix != f".{backend.artifact}":
        raise HwnasError(f"{model}: {device} runs .{backend.artifact} files, not "
                         f"{model.suffix or 'a file without suffix'}")
    shape = model_input_shape(model, _shape(input_shape) if input_shape else None)
    prof = _load_profile(profile) if profile is not None else None
    result = measure_file(backend, model, shape, Protocol.quick() if quick else Protocol(),
                          profile=prof)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    fp = result["fingerprint"]
    console.print(f"{escape(model.name)} on {device} ({threads} thread(s), input "
                  f"{'x'.join(map(str, shape))}; {fp.get('cpu_model')}, "
                  f"{fp.get('runtime_version')})")
    console.print(f"measured: median [bold]{result['median_ms']:.3f} ms[/] (p10 "
                  f"{result['p10_ms']:.3f}, p90 {result['p90_ms']:.3f}, {result['n']} runs"
                  f"{', FLAGGED: unstable' if result['flagged'] else ''})")
    ref = f"drift reference {result['reference_ms']:.3f} ms"
    if prof is not None and result["profile_reference_ms"]:
        ref += f" (profiled {result['profile_reference_ms']:.3f} ms)"
        if result["scaled_ms"] is not None:
            console.print(f"scaled to {prof.name}'s speed: {result['scaled_ms']:.3f} ms "
                          f"(factor {result['drift_scale']:.3f})")
        else:
            console.print(f"not scaled to {prof.name}'s speed: {result['drift_note']}")
    console.print(ref)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise HwnasError(f"--input-shape must be integers like 1,3,224,224, got {text!r}") \
            from None
    if not shape or any(v < 1 for v in shape):
        raise HwnasError(f"--input-shape must be positive integers, got {text!r}")
    return shape


@app.command()
def validate(
    profile: Path = typer.Option(..., help="Profile folder."),
    test_frac: float = typer.Option(0.4, help="Share of the measured nets held out."),
    seed: int = typer.Option(0, min=0, help="Seed of the train/test split."),
    alpha: float = typer.Option(0.1, help="Interval miscoverage (0.1: 90% intervals)."),
    save: bool = typer.Option(True, help="Then fit the learned predictor on all nets and save "
                                         "it inside the profile (predictor.skops/json)."),
) -> None:
    """Held-out accuracy of FLOPs-linear, lookup-table sum and the learned predictor.

    Writes validation.json into the profile and prints the table."""
    from hwnas.latency.validate import report_rows, validate_profile

    prof = _load_profile(profile)
    with console.status("validating on held-out nets" + (", then fitting on all" if save
                                                          else "")):
        report, model = validate_profile(prof, test_frac, seed, alpha, save)
    table = Table(title=f"{prof.name}: {report['n_test']} held-out nets "
                        f"(trained on {report['n_train']})")
    rows = report_rows(report)
    for col in rows[0]:
        table.add_column(col, justify="right" if col != "predictor" else "left")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    if model is not None:
        console.print(f"saved the learned predictor ({model.family_}) in {prof.root}")


@app.command()
def adapt(
    source: Path = typer.Option(..., "--from", help="The measured profile to adapt (its space, "
                                                    "settings and lookup table)."),
    out: Path = typer.Option(..., help="Folder of the adapted profile."),
    device: str = typer.Option(None, help="Backend of the new device (default: the source's)."),
    threads: int = typer.Option(None, help="Runtime threads (default: the source's)."),
    samples: int = typer.Option(10, help="Networks measured on the new device (k)."),
    check: int = typer.Option(0, help="Also measure N held-out networks and print how good the "
                                      "adapted predictor is on them."),
    pool: list[Path] = typer.Option([], help="Folders of more source profiles (same space and "
                                             "settings); the best-fitting one is used."),
    method: str = typer.Option("kernel-map", help="kernel-map (linear map + one kernel class "
                                                  "when it pays) or linear-map."),
    seed: int = typer.Option(0, min=0, help="Seed of the network choice and round order."),
    resume: bool = typer.Option(False, help="Finish an interrupted adapt in --out."),
    quick: bool = typer.Option(False, help="A shorter timing protocol (tests, demos)."),
) -> None:
    """A new device from k measured networks: adapt a profile's lookup table to it.

    Measures --samples networks of the source profile's space on --device (HELP's reference
    set where the space has one, else a spread over the latency range), fits the source table
    + a linear map (and one kernel class, e.g. 7x7 depthwise, when that halves the
    leave-one-out error), and writes a profile marked as adapted that `hwnas search`,
    `hwnas predict` and `hwnas export` accept.
    """
    from hwnas.latency.adapted import AdaptConfig, adapt_profile

    config = AdaptConfig(source=source, out=out, device=device, threads=threads,
                         samples=samples, check=check, pool=tuple(pool), method=method,
                         seed=seed, quick=quick)
    with _phase_bars() as progress:
        try:
            result = adapt_profile(config, progress=progress, log=console.print, resume=resume)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]: measured nets are kept; continue with "
                          f"`hwnas adapt ... --out {out} --resume`")
            raise typer.Exit(130) from None
    p = result.predictor
    console.print(f"adapted profile: {result.root}  (from {result.source.name}, k = "
                  f"{p.n_samples_}: {result.picked}; {p.name})")
    if result.check is not None:
        from hwnas.latency.validate import report_rows

        c = result.check
        table = Table(title=f"{c['n']} held-out nets measured on the new device")
        rows = report_rows({"results": {"adapted": c["adapted"],
                                        "zero-shot (source table)": c["zero_shot"]}})
        for col in rows[0]:
            table.add_column(col, justify="right" if col != "predictor" else "left")
        for row in rows:
            table.add_row(*row.values())
        console.print(table)


@app.command()
def predict(
    target: Path = typer.Argument(None, help="An Arch JSON or an ONNX model."),
    profile: Path = typer.Option(..., help="Profile folder."),
    smallest: bool = typer.Option(False, help="Instead of a file: the fastest net of the "
                                              "profile's space by its table."),
    largest: bool = typer.Option(False, help="Instead of a file: the slowest net."),
    as_json: bool = typer.Option(False, "--json", help='Print {"latency_ms", "interval_ms", '
                                                       '"ops"} as JSON.'),
    verify: bool = typer.Option(False, help="ONNX model: also measure it on the profile's "
                                            "device and show predicted and measured ms per "
                                            "kernel (needs a profile with --kernel-nets)."),
    quick: bool = typer.Option(False, help="With --verify: a shorter timing protocol."),
) -> None:
    """Predict the latency of an arch or any ONNX model on a profiled device.

    An ONNX model is split into the kernels the runtime executes (onnxruntime's optimised graph)
    and priced by the profile's kernel predictor when the profile has kernel measurements
    (`hwnas profile --kernel-nets N`), else op by op from its generic ops.
    """
    from hwnas.space import Arch

    prof = _load_profile(profile)
    if sum([target is not None, smallest, largest]) != 1:
        raise HwnasError("give exactly one of: a file, --smallest, --largest")
    if target is not None and target.suffix == ".onnx":
        _predict_onnx(prof, target, as_json, verify, quick)
        return
    if verify:
        raise HwnasError("--verify applies to an ONNX model (an arch is verified by "
                         "`hwnas export ARCH --verify`)")
    from hwnas.latency import LookupTablePredictor
    from hwnas.latency import predict as predict_arch

    if target is None:
        arch = LookupTablePredictor.from_profile(prof).extremes()[0 if smallest else 1]
    else:
        arch = Arch.load(target)
    p = predict_arch(prof, arch)
    latency, interval = p.ms, list(p.interval) if p.interval else None
    ops = p.breakdown or []
    result = {"latency_ms": latency, "interval_ms": interval, "predictor": p.predictor,
              "profile": prof.name, "ops": ops}
    if p.note:
        result["note"] = p.note
    if target is None:
        result["arch"] = arch.to_dict()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if ops:
        _print_ops(ops, f"{prof.name}: per-op lookup table")
    if p.note:
        console.print(p.note)
    level = f"{p.coverage:.0%} " if p.coverage else ""
    iv = f" ({level}interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    console.print(f"predicted latency: [bold]{latency:.3f} ms[/]{iv} "
                  f"[{result['predictor']}]")
    if target is None:
        typer.echo(arch.to_json())


def _print_ops(ops: list[dict], title: str) -> None:
    table = Table(title=title)
    for col in ("#", "op", "source", "ms"):
        table.add_column(col, justify="right" if col in ("#", "ms") else "left")
    for i, o in enumerate(ops):
        table.add_row(str(i), escape(str(o.get("key") or o.get("name"))), o["source"],
                      f"{o['ms']:.4f}")
    console.print(table)


def _predict_onnx(prof, path: Path, as_json: bool, verify: bool, quick: bool) -> None:
    from hwnas.latency.kernels import predict_file
    from hwnas.latency.onnx_graph import predict_onnx_profile
    from hwnas.profile.kernel_nets import read_kernel_tables

    if not path.is_file():
        raise HwnasError(f"{path}: file not found")
    if len(read_kernel_tables(prof.root)[1]):
        result = predict_file(prof, path, verify=verify, quick=quick)
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
            return
        _print_kernels(result, path)
        return
    if verify:
        raise HwnasError(f"{prof.name} has no kernel measurements: --verify needs a profile "
                         "made with `hwnas profile --kernel-nets N`")
    result = predict_onnx_profile(prof, path)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_ops(result["ops"], f"{path.name} on {prof.name}")
    for msg in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(msg)}")
    console.print(f"predicted latency: [bold]{result['latency_ms']:.3f} ms[/]")


def _print_kernels(result: dict, path: Path) -> None:
    rows = result["kernel_rows"]
    verified = "measured" in result
    table = Table(title=f"{path.name} on {result['profile']}: {result['kernels']} kernels as "
                        "onnxruntime runs them")
    cols = ["#", "kernel", "type", "predicted ms"] + (["measured ms", "diff ms"] if verified
                                                      else [])
    for col in cols:
        table.add_column(col, justify="left" if col in ("kernel", "type") else "right")
    for i, r in enumerate(rows):
        cells = [str(i), escape(str(r["node"])), escape(str(r["op"])),
                 f"{r['predicted_ms']:.4f}"]
        if verified:
            cells += [f"{r['measured_ms']:.4f}", f"{r['predicted_ms'] - r['measured_ms']:+.4f}"]
        table.add_row(*cells)
    console.print(table)
    c = result["combine"]
    console.print(f"predicted latency: [bold]{result['latency_ms']:.3f} ms[/] = "
                  f"{c['a']:.3f} x {result['kernel_sum_ms']:.3f} ms of kernels + "
                  f"{c['b'] * 1e3:.2f} us x {result['kernels']} kernels + {c['c'] * 1e3:.1f} us "
                  f"[kernel predictor, {result['kernel_predictor']}]")
    if verified:
        m = result["measured"]
        scaled = (f", scaled to the profile's speed {m['scaled_ms']:.3f} ms"
                  if m["scaled_ms"] else f" (not scaled: {m['drift_note'] or 'no reference'})")
        console.print(f"measured: {m['median_ms']:.3f} ms{scaled}; predicted / compared - 1 = "
                      f"{result['error']:+.1%}")
        worst = sorted(rows, key=lambda r: -abs(r["predicted_ms"] - r["measured_ms"]))[:3]
        console.print("largest kernel differences: " + ", ".join(
            f"{escape(str(r['node']))} ({r['op']}) {r['predicted_ms'] - r['measured_ms']:+.3f} ms"
            for r in worst))


@app.command()
def search(
    profile: Path = typer.Option(None, help="Profile folder of the target device (its latency "
                                            "predictor)."),
    budget_ms: str = typer.Option(None, help="Latency budget on that device (ms); with --method "
                                             "fbnetv5 one per task: cls=X,seg=Y,det=Z."),
    out: Path = typer.Option(Path("runs/search"), help="Run folder."),
    method: str = typer.Option(None, help="proxyless | shiftnas | fbnetv5 | evolution | random | "
                                          "reinforce | tpe | nsga2 [default: proxyless; "
                                          "evolution when --accuracy-table is given]."),
    tasks: str = typer.Option(None, help="With --method fbnetv5: the tasks searched together, "
                                         "a comma list of cls, seg, det (default all three)."),
    space: str = typer.Option("nb201", help="Search space of a strategy search (the space of "
                                            "the tables; with --profile, the profile's)."),
    accuracy_table: Path = typer.Option(None, help="CSV/parquet: arch index or arch string -> "
                                                   "accuracy (the evaluator of a strategy "
                                                   "search)."),
    accuracy_column: str = typer.Option(None, help="Accuracy column of --accuracy-table."),
    latency_table: Path = typer.Option(None, help="HW-NAS-Bench/HELP CSV: one <device>_ms "
                                                  "column per device (instead of --profile)."),
    device: str = typer.Option(None, help="Device column of --latency-table (raspi4 or "
                                          "raspi4_ms)."),
    evaluations: int = typer.Option(300, help="Evaluations of a strategy search (a latency "
                                              "lookup costs none)."),
    grad: str = typer.Option("full_v2", help="Architecture gradient: full_v2 | two | reinforce."),
    loss: str = typer.Option("auto", help="Latency loss: mul#log | add#linear | auto (mul#log "
                             "when every network is above 1 ms, else add#linear)."),
    data: str = typer.Option("digits", help="digits | digits-shift | folder:PATH | "
                             "cifar10:PATH."),
    epochs: int = typer.Option(10, help="Search epochs after the warm-up."),
    warmup_epochs: int = typer.Option(2, help="Weight-only warm-up epochs."),
    batch_size: int = typer.Option(64, help="Batch size."),
    train_resolution: int = typer.Option(32, help="Proxy-task training resolution (latency "
                                                  "always comes from the profile's own)."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    fill_floor: float = typer.Option(0.85, help="Fill a result below this share of the budget "
                                                "with slower, most probable choices (0: off)."),
    resume: bool = typer.Option(True, help="Continue an interrupted run in --out."),
    split: str = typer.Option("none", help="Sub-supernets: none (one-shot) | gm (GM-NAS: "
                              "split layers by gradient matching) | fewshot (one sub-supernet "
                              "per op of layer 0)."),
    splits: int = typer.Option(2, help="With --split gm: number of splits (2 groups each)."),
    restart: str = typer.Option("none", help="With --split: none (children inherit weights) | "
                                "final (re-initialise them at the last split)."),
    gm_batches: int = typer.Option(10, help="With --split gm: minibatches per gradient-"
                                   "matching distance."),
    weight_sharing: str = typer.Option("entangled", help="entangled (kernel/expand choices "
                                       "share weights, OFA-style) | independent (ProxylessNAS)."),
    evaluator: str = typer.Option("table", help="Strategy search score: table (--accuracy-table) "
                                  "| a zero-cost proxy (synflow, snip, grad_norm, grasp, fisher, "
                                  "jacob_cov, naswot, params, macs, conv_count) | parzc:MODEL "
                                  "(a folder from `hwnas parzc fit`) | parzc-free[:PROXY[:sin|"
                                  "quadratic]] (training-free ParZC), none of which trains | "
                                  "train[:EPOCHS] (each candidate trained from scratch on "
                                  "--proxy-data, default 2 epochs; spread it with --batch N "
                                  "--ray)."),
    proxy_data: str = typer.Option("digits", help="Minibatch of the data-dependent proxies: "
                                   "digits | folder:PATH | cifar10:PATH."),
    proxies_table: Path = typer.Option(None, help="A `hwnas proxies` file to read scores from "
                                       "instead of computing them (same settings)."),
    steps: int = typer.Option(None, help="With --method shiftnas: joint supernet + generator "
                              "steps; with fbnetv5: search steps (default 300 for both)."),
    bins: int = typer.Option(None, help="With --method shiftnas: complexity bins (quantiles of "
                             "sampled latencies) (default 8)."),
    lambda_rc: float = typer.Option(None, help="With --method shiftnas: weight of the resource "
                                    "loss (Eq. 10) (default 1.0)."),
    shift_warmup: int = typer.Option(None, help="With --method shiftnas: steps before the first "
                                     "bin-probability update (default 100)."),
    shift_every: int = typer.Option(None, help="With --method shiftnas: steps between "
                                    "bin-probability updates (default 50)."),
    sampling: str = typer.Option(None, help="With --method shiftnas: shift (ShiftNAS) | "
                                 "uniform-bins (bin probabilities frozen) | sandwich (uniform "
                                 "subnets, sandwich rule) (default shift)."),
    ag_warmup: int = typer.Option(None, help="With --method shiftnas: generator-only steps on "
                                  "the resource loss before the joint steps (default 300)."),
    cost: str = typer.Option(None, help="With --method shiftnas: latency (ms from the profile, "
                             "the default) | flops (GFLOPs, the paper's complexity)."),
    bin_mode: str = typer.Option(None, help="With --method shiftnas: quantile (default) | width "
                                 "(equal-width bins, as the paper's 0.1 GFLOPs bins)."),
    batch: int = typer.Option(1, help="Strategy search: candidates asked together and scored "
                                      "in parallel (with --ray), then told in order."),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]",
                            help="Strategy search: score each batch's candidates as Ray tasks "
                                 "(`--ray` alone: a local Ray instance; `--ray auto` or "
                                 "HOST:PORT: a cluster; needs pip install 'hwnas[distributed]')."),
) -> None:
    """Search under a latency budget.

    --method proxyless (the default without --accuracy-table): ProxylessNAS on a profile, a
    binary-gated supernet, the profile's latency loss, a budget controller, and a final check (and
    repair) with the profile's best predictor. The default data (scikit-learn's digits) ships with
    the install; for accuracy that matters, point --data at CIFAR-10 or an image folder and train
    longer. --split gm|fewshot searches in sub-supernets (GM-NAS / few-shot NAS) and keeps the
    best one's result.

    --method shiftnas: ShiftNAS on a profile of space ofa: a masked supernet and an architecture
    generator trained once for every budget of the profile's latency range (--steps, --bins,
    --lambda-rc, --shift-warmup, --shift-every, --sampling); then `hwnas generate RUN
    --budget-ms X` writes the arch for a budget (with --budget-ms here, RUN/arch.json too).

    --method fbnetv5: FBNetV5 on a profile of space fbnetv5: one supernet of skippable blocks
    over two resolution paths, one keep/skip distribution per task (--tasks cls,seg,det), one
    forward and backward per step for all tasks (REINFORCE with importance sampling), a budget
    per task (--budget-ms cls=X,seg=Y,det=Z); writes RUN/<task>/arch.json. --data takes
    multitask:digits (the default for this method) or multitask:FOLDER.

    --method evolution | random | reinforce | tpe | nsga2 (evolution is the default with
    --accuracy-table): a strategy proposes architectures, each scored from --accuracy-table and
    priced by --profile or --latency-table/--device (a constraint <= --budget-ms, checked before
    any evaluation); RUN/trajectory.csv records every proposal and a rerun resumes it;
    RUN/summary.json holds the chosen arch, its accuracy, predicted latency, feasibility,
    evaluations used, the Pareto front and the exact optimum of the tables.
    --evaluator synflow|...|parzc:MODEL scores with a zero-cost proxy or a fitted ParZC model
    instead of the table (nothing is trained; the table, when given, reports the regret).
    --batch N [--ray [ADDRESS]]: N candidates asked at a time, the new ones scored as parallel
    Ray tasks on a cluster; the trajectory is written and resumed by this process as without."""
    from hwnas.search.strategies import STRATEGIES

    if method is None:
        method = "proxyless" if accuracy_table is None and evaluator == "table" else "evolution"
    if method not in STRATEGIES and (batch != 1 or ray is not None):
        raise HwnasError("--batch and --ray: for the strategy searches (--method evolution | "
                         "random | reinforce | tpe | nsga2)")
    if method == "fbnetv5":
        _check_gradient_method_options(method, evaluator, proxies_table, accuracy_table,
                                       latency_table, device)
        if profile is None:
            raise HwnasError("--method fbnetv5 needs --profile DIR (a profile of space fbnetv5)")
        shift_only = [k for k, v in (("--bins", bins), ("--lambda-rc", lambda_rc),
                                     ("--shift-warmup", shift_warmup),
                                     ("--shift-every", shift_every), ("--sampling", sampling),
                                     ("--ag-warmup", ag_warmup), ("--cost", cost),
                                     ("--bin-mode", bin_mode)) if v is not None]
        if shift_only:
            raise HwnasError(f"{', '.join(shift_only)}: for --method shiftnas")
        _fbnetv5_search(profile, budget_ms, tasks, out,
                        "multitask:digits" if data == "digits" else data, batch_size,
                        train_resolution, seed, resume, steps)
        return
    if tasks is not None:
        raise HwnasError("--tasks: for --method fbnetv5")
    budget_ms = _budget_number(budget_ms)
    shift_opts = {"--steps": steps, "--bins": bins, "--lambda-rc": lambda_rc,
                  "--shift-warmup": shift_warmup, "--shift-every": shift_every,
                  "--sampling": sampling, "--ag-warmup": ag_warmup, "--cost": cost,
                  "--bin-mode": bin_mode}
    if method != "shiftnas" and any(v is not None for v in shift_opts.values()):
        given = [k for k, v in shift_opts.items() if v is not None]
        raise HwnasError(f"{', '.join(given)}: for --method shiftnas")
    if method == "shiftnas":
        _check_gradient_method_options(method, evaluator, proxies_table, accuracy_table,
                                       latency_table, device)
        if profile is None:
            raise HwnasError("--method shiftnas needs --profile DIR (a profile of space ofa)")
        _shiftnas_search(profile, budget_ms, out, data, batch_size, train_resolution, seed,
                         resume, {k.lstrip("-").replace("-", "_"): v
                                  for k, v in shift_opts.items() if v is not None})
        return
    if method != "proxyless":
        if method not in STRATEGIES:
            raise HwnasError(f"unknown search method {method!r}; available: proxyless, "
                             f"{', '.join(STRATEGIES)}, shiftnas")
        _strategy_search(method, space, accuracy_table, accuracy_column, latency_table, device,
                         profile, budget_ms, evaluations, seed, out, resume, evaluator,
                         proxy_data, proxies_table, batch, ray)
        return
    _check_gradient_method_options(method, evaluator, proxies_table, accuracy_table,
                                   latency_table, device)
    if profile is None or budget_ms is None:
        raise HwnasError("--method proxyless needs --profile DIR and --budget-ms X")
    from hwnas.search.run import SearchConfig, run_search

    config = SearchConfig(profile=profile, budget_ms=budget_ms, out=out, grad_mode=grad,
                          loss=loss, data=data, epochs=epochs, warmup_epochs=warmup_epochs,
                          batch_size=batch_size, train_resolution=train_resolution, seed=seed,
                          fill_floor=fill_floor, resume=resume, split=split, splits=splits,
                          restart=restart, gm_batches=gm_batches,
                          weight_sharing=weight_sharing)
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("search", total=epochs + warmup_epochs)

        def progress(row: dict) -> None:
            bar.update(task, completed=row.get("epoch", 0) + 1,
                       total=row.get("epochs_total", epochs + warmup_epochs))

        summary = run_search(config, progress)
    pred = summary.get("predicted_ms")
    console.print(f"arch: {out / 'arch.json'}  predicted {pred:.3f} ms vs budget {budget_ms} ms: "
                  f"{'met' if summary.get('met') else '[red]NOT met[/]'}"
                  if isinstance(pred, (int, float)) else f"done: {out}")


def _budget_number(text: str | None) -> float | None:
    """--budget-ms of every method but fbnetv5: one number of ms."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise HwnasError(f"--budget-ms {text!r} is not a number of ms (per-task budgets "
                         "TASK=MS are for --method fbnetv5)") from None
    if not (math.isfinite(value) and value > 0):
        raise HwnasError(f"--budget-ms must be a positive number of ms, got {text}")
    return value


def _with_step_bar(label: str, steps: int, run: Callable[[Callable[[dict], None]], dict]
                   ) -> dict:
    """`run(progress)` under a progress bar of `steps` steps, `progress` called with each
    step's row (its `step` and `steps_total`), as the ShiftNAS and FBNetV5 runs report."""
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task(label, total=steps)
        return run(lambda row: bar.update(task, completed=row["step"] + 1,
                                          total=row["steps_total"]))


def _fbnetv5_search(profile: Path, budgets: str | None, tasks: str | None, out: Path, data: str,
                    batch_size: int, train_resolution: int, seed: int, resume: bool,
                    steps: int | None) -> None:
    """`hwnas search --method fbnetv5` (see `search`)."""
    from hwnas.search.fbnetv5_run import FBNetV5Config, check_run_folder, run_fbnetv5

    options = {"steps": steps} if steps is not None else {}
    config = FBNetV5Config(profile=profile, out=out, tasks=tasks or "cls,seg,det",
                           budgets_ms=budgets, data=data, batch_size=batch_size,
                           train_resolution=train_resolution, seed=seed, resume=resume,
                           **options)
    check_run_folder(config)  # before the progress bar
    summary = _with_step_bar(f"fbnetv5 ({','.join(config.tasks)})", config.steps,
                             lambda progress: run_fbnetv5(config, progress))
    for t, r in summary["per_task"].items():
        budget = r["budget_ms"]
        met = "" if budget is None else (
            f" vs budget {budget:g} ms: " + ("met" if r["met"] else "[red]NOT met[/]"))
        console.print(f"{t}: {r['arch']}  bits {r['bits']}  predicted {r['predicted_ms']:.4g} "
                      f"ms{met}  {r['metric']} {r['valid_metric']:.3f} (in the supernet)")


def _check_gradient_method_options(method: str, evaluator: str, proxies_table: Path | None,
                                   accuracy_table: Path | None, latency_table: Path | None,
                                   device: str | None) -> None:
    """Refuse the strategy-search options with --method proxyless / shiftnas."""
    from hwnas.search.strategies import STRATEGIES

    if evaluator != "table" or proxies_table is not None:
        raise HwnasError("--evaluator / --proxies-table: for the strategy methods (--method "
                         f"{'|'.join(STRATEGIES)}); --method {method} trains its supernet")
    table_opts = [n for n, v in (("--accuracy-table", accuracy_table),
                                 ("--latency-table", latency_table), ("--device", device))
                  if v is not None]
    if table_opts:
        raise HwnasError(f"{', '.join(table_opts)}: for the strategy methods (--method "
                         f"{'|'.join(STRATEGIES)}); --method {method} reads the profile")


def _shiftnas_search(profile: Path, budget_ms: float | None, out: Path, data: str,
                     batch_size: int, train_resolution: int, seed: int, resume: bool,
                     options: dict) -> None:
    """`hwnas search --method shiftnas` (see `search`)."""
    from hwnas.search.shiftnas_run import (
        ShiftNASConfig,
        check_run_folder,
        generate,
        run_shiftnas,
    )

    config = ShiftNASConfig(profile=profile, out=out, data=data, batch_size=batch_size,
                            train_resolution=train_resolution, seed=seed, resume=resume,
                            **options)
    if config.cost == "flops" and budget_ms is not None:
        raise HwnasError("--budget-ms: a --cost flops run takes budgets in GFLOPs; train it, "
                         "then `hwnas generate RUN --budget-gflops X`")
    check_run_folder(config)  # before the progress bar
    summary = _with_step_bar(f"shiftnas ({config.sampling})", config.steps,
                             lambda progress: run_shiftnas(config, progress))
    lo, hi = summary["trained_range"]
    unit = summary["unit"]
    flag = "--budget-ms" if unit == "ms" else "--budget-gflops"
    console.print(f"ShiftNAS run: {out} (budgets {lo:.4g} .. {hi:.4g} {unit}); `hwnas generate "
                  f"{out} {flag} X` writes the arch for a budget")
    if budget_ms is not None:
        result = generate(out, budget_ms, unit="ms")
        result["arch"].save(out / "arch.json")
        console.print(_generated_line(result, out / "arch.json"))


def _generated_line(result: dict, path: Path) -> str:
    met = "met" if result["met"] else "[red]NOT met[/]"
    unit = result["unit"]
    if unit == "ms":
        ms = result["predicted_ms"] if result["predicted_ms"] is not None else result["cost"]
        how = result["predictor"] or "lookup table"
        return (f"arch: {path}  predicted {ms:.4g} ms ({how}) vs budget {result['budget']:g} ms: "
                f"{met}")
    latency = (f"; predicted {result['predicted_ms']:.4g} ms ({result['predictor']})"
               if result["predicted_ms"] is not None else "")
    return (f"arch: {path}  {result['cost']:.4g} {unit} vs budget {result['budget']:g} {unit}: "
            f"{met}{latency}")


@app.command("generate")
def generate_cmd(
    run: Path = typer.Argument(..., help="A ShiftNAS run folder (`hwnas search --method "
                                         "shiftnas`)."),
    budget_ms: float = typer.Option(None, help="Latency budget (ms), inside the run's trained "
                                               "range."),
    budget_gflops: float = typer.Option(None, help="The budget of a run trained with --cost "
                                                   "flops (GFLOPs)."),
    out: Path = typer.Option(None, help="The arch.json to write (default RUN/arch-<budget>ms"
                                        ".json, or -<budget>gflops)."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    calibrate: bool = typer.Option(True, help="Condition the generator on the C' (of a grid over "
                                              "the trained range) whose network is the costliest "
                                              "under the budget by the profile's predictor; "
                                              "--no-calibrate: the paper's argmax AG(budget)."),
) -> None:
    """The architecture a ShiftNAS run's generator gives for a latency budget, no search: writes
    an arch.json ready for `hwnas export`."""
    from hwnas.search.shiftnas_run import generate

    if (budget_ms is None) == (budget_gflops is None):
        raise HwnasError("give one budget: --budget-ms X (a latency run) or --budget-gflops X "
                         "(a run trained with --cost flops)")
    budget, unit = (budget_ms, "ms") if budget_ms is not None else (budget_gflops, "GFLOPs")
    result = generate(run, budget, calibrate=calibrate, unit=unit)
    suffix = "ms" if unit == "ms" else "gflops"
    path = out if out is not None else run / f"arch-{budget:g}{suffix}.json"
    result["arch"].save(path)
    if json_:
        typer.echo(json.dumps({**result, "arch": result["arch"].to_dict(), "path": str(path)},
                              indent=2))
        return
    console.print(_generated_line(result, path))
    if result["predictor_note"]:
        console.print(escape(result["predictor_note"]))


def _strategy_search(method: str, space: str, accuracy_table: Path | None,
                     accuracy_column: str | None, latency_table: Path | None, device: str | None,
                     profile: Path | None, budget_ms: float | None, evaluations: int, seed: int,
                     out: Path, resume: bool, evaluator: str = "table", proxy_data: str = "digits",
                     proxies_table: Path | None = None, batch: int = 1,
                     ray: str | None = None) -> None:
    """`hwnas search --method evolution|random|reinforce|tpe|nsga2` (see `search`)."""
    from hwnas.search.tabular import (
        StrategySearchConfig,
        prepare_strategy_search,
        run_strategy_search,
    )

    config = StrategySearchConfig(method=method, accuracy_table=accuracy_table, out=out,
                                  space=space, accuracy_column=accuracy_column,
                                  latency_table=latency_table, device=device, profile=profile,
                                  budget_ms=budget_ms, evaluations=evaluations, seed=seed,
                                  resume=resume, evaluator=evaluator, proxy_data=proxy_data,
                                  proxies_table=proxies_table, batch=batch, ray=ray)
    prepared = prepare_strategy_search(config)  # every check first: nothing shown or written
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task(f"search ({method})", total=evaluations)

        def progress(trial) -> None:
            bar.update(task, completed=trial.evaluation)

        summary = run_strategy_search(config, progress, prepared)
    chosen, ref = summary["chosen"], summary["reference"]
    if chosen is None:
        console.print(f"[red]{escape(summary['message'])}[/]")
        return
    lat = (f", predicted {summary['predicted_ms']:.3f} ms" if summary["predicted_ms"] is not None
           else "")
    met = "" if budget_ms is None else \
        f" vs budget {budget_ms:g} ms: {'met' if summary['met'] else '[red]NOT met[/]'}"
    score = f"accuracy {summary['accuracy']:.4g}" if evaluator == "table" else \
        f"{summary['evaluator']} {summary['score']:.4g}" + (
            f" (table accuracy {summary['accuracy']:.4g})" if summary["accuracy"] is not None
            else "")
    console.print(f"{escape(chosen['arch_str'])} (nb201 index {chosen['index']}): {score}"
                  f"{lat}{met}; {summary['evaluations_used']} evaluations, "
                  f"{summary['proposals']} proposals")
    if ref is not None:
        console.print(f"exact optimum of the tables: accuracy {ref['accuracy']:.4g} (regret "
                      f"{ref['regret']:.3g})")
    console.print(f"arch: {out / 'arch.json'}, summary: {out / 'summary.json'}")


@app.command()
def proxies(
    out: Path = typer.Option(..., help="The proxies file to write (parquet; resumable)."),
    proxies_: str = typer.Option("synflow", "--proxies", help="Comma-separated: grad_norm, snip, "
                                 "grasp, fisher, jacob_cov, synflow, naswot, params, macs, "
                                 "conv_count."),
    space: str = typer.Option("nb201", help="Search space."),
    archs: int = typer.Option(None, help="Score this many architectures (a seeded draw)."),
    all_: bool = typer.Option(False, "--all", help="Score every NAS-Bench-201 cell (15,625)."),
    data: str = typer.Option("digits", help="Minibatch of the data-dependent proxies: digits | "
                             "digits-shift | folder:PATH | cifar10:PATH."),
    batch_size: int = typer.Option(64, help="Images in the minibatch."),
    resolution: int = typer.Option(None, help="Input resolution (default: the space's)."),
    classes: int = typer.Option(None, help="Classes of the head (default: the space's)."),
    seed: int = typer.Option(0, min=0, help="Seed of the draw and of each network's "
                                            "initialisation."),
    data_seed: int = typer.Option(42, min=0, help="Seed of the minibatch (the official 42)."),
    threads: int = typer.Option(None, help="torch threads (default: torch's)."),
    resume: bool = typer.Option(True, help="Continue an interrupted run on --out."),
) -> None:
    """Zero-cost proxy scores of architectures, without training: per architecture and per
    conv/linear layer (the node-wise vectors ParZC learns from), in one parquet file. Data-free:
    synflow, params, macs, conv_count; the others take one minibatch of --data."""
    from hwnas.search.proxy_table import ProxiesConfig, run_proxies

    if threads is not None and threads < 1:
        raise HwnasError(f"--threads must be at least 1, got {threads}")
    config = ProxiesConfig(out=out, proxies=tuple(proxies_.split(",")), space=space,
                           archs=archs, all=all_, data=data, batch_size=batch_size,
                           data_seed=data_seed, seed=seed, resolution=resolution,
                           num_classes=classes, resume=resume, threads=threads)
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("proxies", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_proxies(config, progress)
    console.print(f"{summary['rows']} architectures ({summary['scored']} scored now, "
                  f"{summary['resumed']} from before) x {', '.join(summary['proxies'])}: {out}")


parzc_app = typer.Typer(help="ParZC: learn to rank architectures from node-wise proxy scores.",
                        no_args_is_help=True)
app.add_typer(parzc_app, name="parzc")


@parzc_app.command("fit")
def parzc_fit(
    proxies_table: Path = typer.Option(..., help="A `hwnas proxies` file with the layer-wise "
                                       "scores of --features."),
    accuracy_table: Path = typer.Option(..., help="CSV/parquet: NB201 index or arch string -> "
                                        "accuracy (the labels)."),
    out: Path = typer.Option(..., help="Folder for the model (parzc.safetensors + parzc.json)."),
    accuracy_column: str = typer.Option(None, help="Accuracy column of --accuracy-table."),
    features: str = typer.Option("grad_norm,snip,synflow", help="Proxies whose node-wise "
                                 "vectors are the input (the official NB201 set)."),
    train: int = typer.Option(None, help="Train on this many rows of the table (a seeded draw; "
                              "the rest are held out and reported). Default: all rows."),
    epochs: int = typer.Option(200, help="Training epochs."),
    loss: str = typer.Option("diffkendall", help="diffkendall | pairwise | mse, or a sum like "
                             "pairwise+diffkendall."),
    seed: int = typer.Option(0, min=0, help="Seed."),
) -> None:
    """Fit ParZC (MABN with Bayesian layers, DiffKendall loss) on architectures with known
    accuracy; prints Kendall tau and Spearman rho on the held-out rows."""
    from hwnas.search.proxy_table import ParZCFitConfig, fit_parzc

    feats = tuple(f.strip() for f in features.split(",") if f.strip())
    cfg = ParZCFitConfig(proxies_table=proxies_table, accuracy_table=accuracy_table, out=out,
                         accuracy_column=accuracy_column, features=feats, train=train, seed=seed,
                         options={"epochs": epochs, "loss": loss})
    with console.status("fitting ParZC"):
        r = fit_parzc(cfg)
    held = (f"; held-out {r['held_out_rows']} rows: Kendall tau {r['held_out_kendall_tau']:.3f}, "
            f"Spearman rho {r['held_out_spearman_rho']:.3f}") if "held_out_kendall_tau" in r \
        else ""
    console.print(f"ParZC fitted on {r['train_rows']} rows ({', '.join(r['proxies'])} x "
                  f"{r['length']} layers){held}: {out}")


@parzc_app.command("predict")
def parzc_predict(
    model: Path = typer.Argument(..., help="A folder from `hwnas parzc fit`."),
    proxies_table: Path = typer.Option(..., help="A `hwnas proxies` file (same settings)."),
    accuracy_table: Path = typer.Option(None, help="With it: Kendall tau / Spearman rho on the "
                                        "rows the model did not train on."),
    accuracy_column: str = typer.Option(None, help="Accuracy column of --accuracy-table."),
    out: Path = typer.Option(None, help="Write the predictions (CSV: index, arch_str, parzc, "
                             "parzc_std[, accuracy])."),
) -> None:
    """ParZC's score (mean over weight samples) and its spread for each row of a proxies file."""
    from hwnas.search.proxy_table import predict_parzc

    df, report = predict_parzc(model, proxies_table, accuracy_table, accuracy_column)
    if out is not None:
        from hwnas._io import write_text

        write_text(out, df.to_csv(index=False))
    top = df.sort_values("parzc", ascending=False).head(5)
    for row in top.itertuples():
        console.print(f"{row.index:6d}  {escape(str(row.arch_str))}  {row.parzc:.4f} "
                      f"+- {row.parzc_std:.4f}")
    if "kendall_tau" in report:
        console.print(f"on {report['evaluated_rows']} rows not trained on: Kendall tau "
                      f"{report['kendall_tau']:.3f}, Spearman rho {report['spearman_rho']:.3f}")
    if out is not None:
        console.print(f"written: {out}")


@app.command("supernet-rank")
def supernet_rank(
    space: str = typer.Option("nb201", help="Search space: nb201 | proxyless | fbnet."),
    data: str = typer.Option("digits-shift", help="Proxy task: digits | digits-shift | "
                             "folder:PATH | cifar10:PATH."),
    resolution: int = typer.Option(16, help="Training resolution."),
    width: float = typer.Option(0.35, help="Width multiplier of the chain spaces."),
    channels: str = typer.Option("8,16,32", help="nb201: stage widths (NB201's own: 16,32,64)."),
    cells: int = typer.Option(1, help="nb201: cells per stage (NB201's own: 5)."),
    archs: int = typer.Option(30, help="Architectures drawn uniformly (the ground truth)."),
    seeds: int = typer.Option(3, help="Stand-alone trainings per architecture."),
    standalone_epochs: int = typer.Option(3, help="Epochs of each stand-alone training."),
    supernet_epochs: int = typer.Option(20, help="Epochs of every (sub-)supernet."),
    methods: str = typer.Option("oneshot,fewshot,gm", help="Comma-separated: oneshot, "
                                "fewshot, gm."),
    gm_batches: int = typer.Option(10, help="Minibatches per gradient-matching distance."),
    limit: int = typer.Option(None, help="At most this many training + validation images."),
    seed: int = typer.Option(0, min=0, help="Seed of the architecture sample and the "
                                            "supernets."),
    out: Path = typer.Option(None, help="Write the full result (per architecture) as JSON."),
) -> None:
    """How well a supernet's inherited weights rank architectures: trains --archs architectures
    from scratch (--seeds each, the ground truth), trains one-shot, few-shot (one sub-supernet
    per op of layer 0) and GM-NAS (2 gradient-matching splits) supernets, and prints Kendall tau,
    Spearman rho, top-5 overlap and top-1 regret of inherited vs stand-alone accuracy."""
    from hwnas.data import load_data
    from hwnas.search.ranking import METHODS, RankConfig, run_supernet_rank
    from hwnas.space import get_space

    wanted = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in wanted if m not in METHODS]
    if bad or not wanted:
        raise HwnasError(f"unknown method(s) {', '.join(bad) or '(none)'}; use "
                         f"{', '.join(METHODS)}")
    d = load_data(data, resolution, seed, limit=limit)
    if space == "nb201":
        try:
            chans = tuple(int(c) for c in channels.split(","))
        except ValueError:
            raise HwnasError(f"--channels must be 3 integers like 8,16,32, got {channels!r}") \
                from None
        if len(chans) != 3 or min(chans) < 1:
            raise HwnasError(f"--channels must be 3 positive integers, got {channels!r}")
        sp, cells_per_stage = get_space("nb201", resolution, 1.0, d.num_classes, chans), cells
    else:
        sp, cells_per_stage = get_space(space, resolution, width, d.num_classes), None
    cfg = RankConfig(sp, d, archs=archs, seeds=tuple(range(seed, seed + seeds)),
                     standalone_epochs=standalone_epochs, supernet_epochs=supernet_epochs,
                     methods=wanted, seed=seed, cells_per_stage=cells_per_stage,
                     gm_batches=gm_batches)
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("stand-alone trainings", total=archs)
        current = {"method": None}

        def progress(row: dict) -> None:
            if row["stage"] == "standalone":
                bar.update(task, completed=row["done"])
            elif row["stage"] == "supernet":
                if current["method"] != row["method"]:
                    current["method"] = row["method"]
                    bar.update(task, description=f"{row['method']} supernet(s)",
                               completed=0, total=row["epochs"])
                bar.update(task, completed=row["epoch"] + 1)

        result = run_supernet_rank(cfg, progress)
    from rich.table import Table

    table = Table(title=f"inherited vs stand-alone accuracy ({sp.name}, {archs} archs)")
    for col in ("method", "sub-supernets", "Kendall tau", "Spearman rho", "top-5 overlap",
                "top-1 regret", "time s"):
        table.add_column(col)
    for name, m in result["methods"].items():
        table.add_row(name, str(m["supernets"]), f"{m['kendall_tau']:.3f}",
                      f"{m['spearman_rho']:.3f}", f"{m['top_k_overlap']:.2f}",
                      f"{m['top1_regret']:.4f}", f"{m['wall_s']:.0f}")
    console.print(table)
    if out is not None:
        from hwnas._io import write_json

        write_json(out, result)
        console.print(f"written: {out}")


@app.command()
def train(
    arch: Path = typer.Argument(..., help="An Arch JSON."),
    data: str = typer.Option("digits", help="digits | folder:PATH | cifar10:PATH."),
    epochs: int = typer.Option(10, help="Epochs."),
    batch_size: int = typer.Option(64, help="Batch size."),
    train_resolution: int = typer.Option(32, help="Training resolution."),
    out: Path = typer.Option(None, help="Write model.safetensors and train.json here."),
    seed: int = typer.Option(0, min=0, help="Seed."),
) -> None:
    """Train a chosen network from scratch and report its accuracy."""
    from hwnas.search.run import train_arch

    res = train_arch(arch, data, epochs=epochs, batch_size=batch_size, seed=seed,
                     train_resolution=train_resolution, out=out)
    console.print(f"valid accuracy {res['valid_acc']:.3f}, test accuracy {res['test_acc']:.3f}")


@app.command("export")
def export_cmd(
    arch: Path = typer.Argument(..., help="An Arch JSON (e.g. runs/NAME/arch.json)."),
    target: str = typer.Option("onnx", help="onnx | tflite | tensorrt | torch, or several "
                                            "separated by commas."),
    out: Path = typer.Option(Path("artifacts/export"), help="Output folder: one subfolder "
                                                            "per target."),
    weights: Path = typer.Option(None, help="model.safetensors from `hwnas train` (default: "
                                            "random initial weights)."),
    fp16: bool = typer.Option(False, help="Half precision (tensorrt)."),
    int8: bool = typer.Option(False, help="Post-training static int8 (onnx, tflite, tensorrt); "
                                          "needs --calib."),
    calib: str = typer.Option(None, help="Calibration / held-out images: digits | folder:PATH "
                                         "| cifar10:PATH."),
    profile: list[Path] = typer.Option(None, help="Profile(s) to predict latency from; each "
                                                  "target uses the one its runtime measured."),
    verify: bool = typer.Option(False, help="Time the exported file on its device backend."),
    device: str = typer.Option(None, help="Backend for --verify (default: onnx->ort-cpu, "
                                          "tflite->litert, torch->torch-cpu, tensorrt)."),
    threads: int = typer.Option(None, help="Threads for --verify (default: the profile's)."),
    quick: bool = typer.Option(False, help="A shorter timing protocol for --verify."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifests as JSON."),
) -> None:
    """Export an arch to deployable files, check each against torch, and describe it.

    Every artifact is run in its own runtime on the same inputs as the torch model (parity:
    fp32 within 1e-4 max absolute); manifest.json beside it records the arch, input shape and
    layout, runtime versions, size and sha256, parity, the predicted latency from --profile and,
    with --verify, the latency measured on that very file and its ratio to the prediction."""
    from hwnas.export.pipeline import ExportConfig, export

    if fp16 and int8:
        raise HwnasError("choose one of --fp16 and --int8")
    targets = tuple(t.strip() for t in target.split(",") if t.strip())
    config = ExportConfig(arch=arch, targets=targets, out=out, weights=weights,
                          precision="fp16" if fp16 else "int8" if int8 else "fp32", calib=calib,
                          profiles=tuple(profile or ()), verify=verify, device=device,
                          threads=threads, quick=quick)
    log = (lambda _m: None) if as_json else (lambda m: console.print(escape(m)))
    manifests = export(config, log=log)
    if as_json:
        typer.echo(json.dumps(manifests, indent=2))
    else:
        _print_exports(manifests, out)
    failed = [m["target"] for m in manifests if not m["parity"]["passed"]]
    if failed:
        Console(stderr=True).print(f"[red]parity check failed[/] for {', '.join(failed)} "
                                   "(see manifest.json)")
        raise typer.Exit(1)


def _print_exports(manifests: list[dict], out: Path) -> None:
    """One row per target. "measured" is the time measured on the file; "scaled" is that time
    scaled to the profile's speed by its drift reference (blank when not scaled)."""
    table = Table(title=f"exports in {out}/<target>/")
    for col in ("target", "MB", "parity", "pred. ms", "measured ms", "scaled ms", "/ pred."):
        table.add_column(col, justify="left" if col == "target" else "right")
    for m in manifests:
        pred, ver = m.get("predicted"), m.get("verified")
        par = m["parity"]
        mark = "[green]ok[/]" if par["passed"] else "[red]FAIL[/]"
        shown = f"{par['max_abs']:.0e}" if m["precision"] != "int8" \
            else f"{par['top1_agreement']:.0%} top-1"
        table.add_row(f"{m['target']} {m['precision']}", f"{m['artifact']['bytes'] / 1e6:.1f}",
                      f"{shown} {mark}", f"{pred['latency_ms']:.2f}" if pred else "-",
                      f"{ver['measured_ms']:.2f}" if ver else "-",
                      f"{ver['corrected_ms']:.2f}" if ver and ver.get("corrected_ms") else "-",
                      f"{ver['ratio_to_predicted']:.2f}" if ver and ver.get("ratio_to_predicted")
                      else "-")
    console.print(table)
    for m in manifests:
        q = m.get("quantization")
        if q and "accuracy_change" in q:
            console.print(f"{m['target']} int8: held-out accuracy {q['accuracy_fp32']:.1%} -> "
                          f"{q['accuracy_int8']:.1%} ({q['accuracy_change']:+.1%})")
        if m.get("predicted") and m["predicted"].get("note"):
            console.print(f"{m['target']}: {escape(m['predicted']['note'])}")


@app.command()
def report(
    profile: Path = typer.Option(..., help="Profile folder."),
    run: Path = typer.Option(None, help="A search run folder (hwnas search --out)."),
    export: Path = typer.Option(None, help="An export folder (hwnas export --out)."),
    out: Path = typer.Option(Path("report.html"), help="The HTML file to write."),
) -> None:
    """One self-contained HTML page: device fingerprint, predictor validation (predicted vs
    measured), the search trajectory, per-layer latency of the chosen network, the latency /
    accuracy cloud, and the exports with their parity and verified latency."""
    from hwnas.report import build_report

    path = build_report(profile, run, export, out)
    console.print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


@import_app.command("proxyless-yaml")
def import_proxyless(path: Path = typer.Argument(..., help="ProxylessNAS lookup-table YAML."),
                     out: Path = typer.Option(..., help="Profile folder to write.")) -> None:
    """The ProxylessNAS mobile lookup-table YAML -> a proxyless 224x224 profile (ops only)."""
    from hwnas.latency.importers import import_proxyless_yaml

    root = import_proxyless_yaml(path, out)
    console.print(f"wrote {root}")


@import_app.command("fbnet-json")
def import_fbnet(path: Path = typer.Argument(..., help="FBNet per-layer table JSON.")) -> None:
    """Read an FBNet per-layer lookup table (microseconds) and print its summary."""
    from hwnas.latency.importers import import_fbnet_table_json

    t = import_fbnet_table_json(path)
    allowed = ~np.isnan(t.table)
    console.print(f"{path}: {t.table.shape[0]} layers x {t.table.shape[1]} choices "
                  f"({', '.join(t.choices)}); fixed {t.fixed_ms:.3f} ms; fastest net "
                  f"{t.fixed_ms + np.nanmin(t.table, 1).sum():.3f} ms, slowest "
                  f"{t.fixed_ms + np.nanmax(t.table, 1).sum():.3f} ms; "
                  f"{int(allowed.sum())} entries")


@import_app.command("latency-csv")
def import_csv(path: Path = typer.Argument(..., help="HW-NAS-Bench/HELP latency CSV."),
               device: str = typer.Option(..., help="Device column, e.g. raspi4 or pixel3_ms."),
               out: Path = typer.Option(..., help="Profile folder to write."),
               space: str = typer.Option(None, help="Space of the nets (default: by the "
                                                    "columns, ofa for HELP's OFA layout "
                                                    "resolution,d0..,ks00..,e00.., else fbnet "
                                                    "for L00..).")) -> None:
    """One device column of a HW-NAS-Bench/HELP CSV -> a nets-only profile."""
    from hwnas.latency.importers import import_latency_csv

    root = import_latency_csv(path, device, out, space)
    console.print(f"wrote {root}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the demo writes its results."),
    resolution: int = typer.Option(128, help="Input resolution (128 reuses the shipped "
                                             "profile when this machine matches it)."),
    quick: bool = typer.Option(False, help="Tiny settings (64x64, 1 epoch, no litert): a "
                                           "smoke test in about a minute."),
) -> None:
    """The three user flows end to end: profile a device (or reuse a matching shipped profile),
    validate its predictors, search under a latency budget, train the result, export it to onnx
    and tflite with parity and verified latency, and write report.html."""
    from hwnas.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, resolution=resolution, quick=quick), console)


def _fail(message: str, code: int = 2) -> None:
    # one line, whatever the message quotes (a YAML parser's multi-line context, a traceback)
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    Console(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)
    sys.exit(code)


def _click_exceptions():
    """The click exception module typer uses (typer >= 0.16 vendors click as `typer._click`)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer: click itself
        from click import exceptions
    return exceptions


# options whose value may be left out, and the value they then take (typer has no such option)
OPTIONAL_VALUES = {"--ray": "local"}


def _optional_values(argv: list[str]) -> list[str]:
    """`--ray` at the end or before another option becomes `--ray local`."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":
            return out + argv[i + 1:]
        if arg in OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every user mistake becomes one `error:` line on stderr and exit
    code 2 (an `HwnasError` from hwnas, or an option that does not parse); never a traceback."""
    exc = _click_exceptions()
    argv = _optional_values(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as e:
        _fail(str(e))
    except exc.NoArgsIsHelpError as e:  # `hwnas` alone, `hwnas arch`: print the help
        typer.echo(e.ctx.get_help())
        sys.exit(0)
    except exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "hwnas"
        _fail(f"{e.format_message()} (see `{cmd} --help`)")
    except exc.ClickException as e:
        _fail(e.format_message())
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except OSError as e:  # a write outside `atomic_path` (an appended log) on a full disk
        from hwnas._io import disk_full

        why = disk_full(e)
        if why is None:
            raise
        _fail(why + (f" writing {e.filename}" if e.filename else f" ({e})"))
    if getattr(exc, "Abort", None) and code is exc.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
