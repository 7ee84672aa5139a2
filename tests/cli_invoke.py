"""In-process calls of a Typer app for tests: the exit code and what a terminal shows (stdout and stderr)."""

from __future__ import annotations

from typer.testing import CliRunner

_RUNNER = CliRunner()


def invoke(app, *args) -> tuple[int, str]:
    result = _RUNNER.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output
