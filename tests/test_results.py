"""Committed benchmark results say where they come from, and still describe the shipped profiles.

Every `benchmarks/results/*.json` written through `benchmarks/_common.Results` carries the date,
the exact command, the seed and the host's fingerprint; for each shipped profile its numbers
describe, the profile's fingerprint and a digest of its measurements. A result whose host is not
the profile's machine, or whose profile was re-measured since, no longer describes what ships.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hwnas.devices.fingerprint import differences

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HOST_FIELDS = ("cpu_model", "cpu_id", "cpu_isa", "cores", "machine")


def _common():
    spec = importlib.util.spec_from_file_location("_common", ROOT / "benchmarks" / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results() -> list[Path]:
    return sorted(p for p in RESULTS.glob("*.json")
                  if "profiles" in json.loads(p.read_text()))


def problems(result: dict, profiles_dir: Path, digest) -> list[str]:
    """What is wrong with one result against the shipped profiles (empty: nothing)."""
    out = [f"missing {k}" for k in ("date", "command", "seed", "host") if k not in result]
    for name, p in result.get("profiles", {}).items():
        if not p.get("shipped"):
            continue
        root = profiles_dir / name
        if not (root / "device.json").exists():
            out.append(f"describes profile {name}, which is no longer shipped")
            continue
        shipped = json.loads((root / "device.json").read_text())["fingerprint"]
        diff = differences(shipped, result.get("host", {}), HOST_FIELDS)
        if diff:
            out.append(f"ran on another machine than profile {name} was measured on: {diff}")
        if differences(shipped, p["fingerprint"]):
            out.append(f"profile {name}'s fingerprint changed since this run")
        if digest(root) != p["digest"]:
            out.append(f"profile {name} was re-measured since this run (digest differs)")
    return out


def test_results_exist_and_are_read_by_the_readme() -> None:
    assert _results(), "no benchmark result written by benchmarks/_common.Results"
    readme = (ROOT / "README.md").read_text()
    for path in _results():
        assert f"<!-- BEGIN benchmarks/results/{path.stem}.md -->" in readme, \
            f"{path.name} is not quoted in the README (make readme)"


@pytest.mark.parametrize("path", _results(), ids=lambda p: p.stem)
def test_result_describes_the_shipped_profiles(path: Path) -> None:
    result = json.loads(path.read_text())
    assert problems(result, ROOT / "profiles", _common().profile_digest) == [], \
        f"rerun: {result.get('command')}"


def test_a_result_from_another_machine_or_an_older_profile_is_caught(tmp_path: Path) -> None:
    common = _common()
    prof = tmp_path / "p"
    prof.mkdir()
    fp = {"cpu_model": "AMD EPYC", "cpu_id": "AuthenticAMD/25/17/1", "cores": 2,
          "backend": "ort-cpu", "threads": 1}
    (prof / "device.json").write_text(json.dumps({"fingerprint": fp}))
    (prof / "nets.parquet").write_bytes(b"rows")
    good = {"date": "d", "command": "c", "seed": 0,
            "host": {"cpu_model": "AMD EPYC", "cpu_id": "AuthenticAMD/25/17/1", "cores": 2},
            "profiles": {"p": {"shipped": True, "fingerprint": fp,
                               "digest": common.profile_digest(prof)}}}
    assert problems(good, tmp_path, common.profile_digest) == []
    other_cpu = {**good, "host": {**good["host"], "cpu_id": "AuthenticAMD/23/49/0"}}
    assert "another machine" in problems(other_cpu, tmp_path, common.profile_digest)[0]
    (prof / "nets.parquet").write_bytes(b"rows, re-measured")
    assert "re-measured" in problems(good, tmp_path, common.profile_digest)[0]
    assert "no longer shipped" in problems(
        {**good, "profiles": {"gone": good["profiles"]["p"]}}, tmp_path,
        common.profile_digest)[0]
