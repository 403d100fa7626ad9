"""The rule for a user mistake, shared by the reliability tests: `hwnas` exits 2 with exactly one
`error:` line and no traceback."""

from __future__ import annotations

import contextlib
import io
import subprocess

from hwnas.cli import main


def run_cli(argv: list) -> tuple[int, str, str]:
    """`hwnas ARGV` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a finished `python -m hwnas` subprocess that refused its input."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]
