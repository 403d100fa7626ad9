"""The `hwnas` command line: in process (typer's CliRunner) and through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwnas import __version__
from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.space import Arch, get_space, space_of

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def run_hwnas(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m hwnas ARGS`: the real entry point (`hwnas.cli:main`), colours off."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "hwnas", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# --- what works -------------------------------------------------------------------------------

def test_version(tmp_path: Path) -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hwnas {__version__}"
    proc = run_hwnas(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hwnas {__version__}"


def test_no_arguments_prints_help() -> None:
    result = invoke()
    assert "Usage" in result.output and "spaces" in result.output


def test_spaces_lists_every_space() -> None:
    result = invoke("spaces")
    assert result.exit_code == 0, result.output
    for name in ("proxyless", "fbnet", "fbnet-imagenet"):
        assert name in result.stdout
    assert "k3_e1_g2" in result.stdout and "zero" in result.stdout


def _sample(*args: str) -> Arch:
    result = invoke("arch", "sample", *args)
    assert result.exit_code == 0, result.output
    return Arch.from_json(result.stdout)


def test_arch_sample_prints_valid_deterministic_json() -> None:
    first = invoke("arch", "sample", "--space", "proxyless", "--seed", "0")
    assert first.exit_code == 0, first.output
    d = json.loads(first.stdout)
    assert d["space"] == "proxyless" and len(d["choices"]) == 21
    arch = Arch.from_json(first.stdout)
    space = space_of(arch)  # validates against the space
    assert arch == get_space("proxyless").sample(0)
    assert space.resolution == 224 and space.width == 1.0
    again = invoke("arch", "sample", "--space", "proxyless", "--seed", "0")
    assert again.stdout == first.stdout
    assert _sample("--space", "proxyless", "--seed", "1") != arch


@pytest.mark.parametrize("name", ["fbnet", "fbnet-imagenet"])
def test_arch_sample_other_spaces(name: str) -> None:
    arch = _sample("--space", name, "--seed", "3")
    space_of(arch)
    assert arch == get_space(name).sample(3)


def test_arch_sample_settings_carry_through(tmp_path: Path) -> None:
    arch = _sample("--space", "proxyless", "--seed", "2", "--resolution", "128", "--width", "0.75",
                   "--num-classes", "10")
    assert (arch.resolution, arch.width, arch.num_classes) == (128, 0.75, 10)
    space = space_of(arch)
    assert (space.resolution, space.width, space.num_classes) == (128, 0.75, 10)
    assert arch == get_space("proxyless", 128, 0.75, 10).sample(2)
    out = tmp_path / "a.json"
    result = invoke("arch", "sample", "--space", "fbnet", "--resolution", "64", "--out", str(out))
    assert result.exit_code == 0 and "wrote" in result.stdout
    assert Arch.load(out).resolution == 64


def test_arch_info_prints_a_table_with_totals(tmp_path: Path) -> None:
    path = tmp_path / "arch.json"
    arch = get_space("proxyless", resolution=128).sample(5)
    arch.save(path)
    result = invoke("arch", "info", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    ops = space_of(arch).ops(arch)
    assert "MACs (M)" in out and "params (K)" in out and "proxyless 128x128" in out
    total = next(line for line in out.splitlines() if "total" in line)
    assert f"{sum(op.macs for op in ops) / 1e6:.1f}" in total
    assert f"{sum(op.params for op in ops) / 1e3:.1f}" in total
    assert "mbconv" in out and "classifier" in out


def test_devices_lists_ort_cpu() -> None:
    result = invoke("devices")
    assert result.exit_code == 0, result.output
    assert "ort-cpu" in result.stdout
    as_json = invoke("devices", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    by_name = {r["name"]: r for r in rows}
    assert "ort-cpu" in by_name and "torch-cpu" in by_name
    for r in rows:
        assert {"name", "available", "reason", "runtime", "description"} <= set(r)
        assert r["available"] or r["reason"]  # a device that cannot run says why


# --- user mistakes: exit code 2, one `error:` line on stderr, no traceback ---------------------

def _write_mistakes(d: Path) -> dict[str, tuple[list[str], str]]:
    """Each case: (arguments, a distinctive part of the message)."""
    good = get_space("proxyless").sample(0).to_dict()
    wrong_choice = dict(good, choices=[*good["choices"][:3], "k9_e9", *good["choices"][4:]])
    (d / "wrong_choice.json").write_text(json.dumps(wrong_choice))
    (d / "wrong_count.json").write_text(json.dumps(dict(good, choices=good["choices"][:-1])))
    (d / "malformed.json").write_text('{"space": "proxyless", "choices": [')
    (d / "unknown_space.json").write_text(json.dumps(dict(good, space="darts")))
    # text in the user's input that looks like rich markup must be printed as is
    markup = dict(good, choices=[*good["choices"][:3], "[/oops]", *good["choices"][4:]])
    (d / "markup.json").write_text(json.dumps(markup))
    return {
        "wrong choice": (["arch", "info", "wrong_choice.json"],
                         "layer 3 (stage1.3): unknown choice 'k9_e9'; valid: k3_e3"),
        "layer count": (["arch", "info", "wrong_count.json"],
                        "space 'proxyless' has 21 searchable layers, the arch gives 20 choices"),
        "malformed json": (["arch", "info", "malformed.json"],
                           "malformed.json: malformed arch JSON"),
        "missing file": (["arch", "info", "missing.json"], "arch file not found: missing.json"),
        "unknown space": (["arch", "sample", "--space", "darts"],
                          "unknown search space 'darts'; known: proxyless, fbnet, fbnet-imagenet"),
        "unknown space in file": (["arch", "info", "unknown_space.json"],
                                  "unknown search space 'darts'"),
        "bad width": (["arch", "sample", "--width", "0"], "width multiplier must be within"),
        "markup in input": (["arch", "info", "markup.json"], "unknown choice '[/oops]'"),
    }


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory) -> dict[str, tuple[list[str], str, Path]]:
    d = tmp_path_factory.mktemp("mistakes")
    return {k: (args, msg, d) for k, (args, msg) in _write_mistakes(d).items()}


# Each run through the entry point imports torch (about a second): the in-process test covers
# every case, the subprocess one the main mistakes and the markup regression.
CASES = ["wrong choice", "layer count", "malformed json", "missing file", "unknown space",
         "markup in input"]
IN_PROCESS_ONLY = ["unknown space in file", "bad width"]


@pytest.fixture(scope="module")
def entry_point_runs(mistakes) -> dict[str, subprocess.CompletedProcess]:
    """The mistake cases through the real entry point, two processes at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_hwnas, mistakes[k][0], mistakes[k][2]) for k in CASES}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case", CASES)
def test_mistake_through_entry_point(case: str, mistakes, entry_point_runs) -> None:
    _, message, _ = mistakes[case]
    proc = entry_point_runs[case]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("case", CASES + IN_PROCESS_ONLY)
def test_mistake_in_process(case: str, mistakes, monkeypatch) -> None:
    """The typer app raises the HwnasError that the entry point turns into `error:` + exit 2."""
    args, message, d = mistakes[case]
    monkeypatch.chdir(d)
    result = invoke(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, HwnasError)
    assert message in str(result.exception)


def test_main_turns_errors_into_exit_2(mistakes, monkeypatch, capsys) -> None:
    from hwnas.cli import main

    args, message, d = mistakes["wrong choice"]
    monkeypatch.chdir(d)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
