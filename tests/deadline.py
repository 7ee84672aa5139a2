"""Running a command line from a test under a deadline, so a hang fails the test instead of the suite."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

# Seconds a test lets one command line run before it kills it: generous, because another job may hold the
# machine's cores (a CLI's imports alone can take a minute then). Tests assert on what a command said, never
# on how fast it said it; the deadline only turns a hang into a failure.
CLI_DEADLINE = 600


def run_with_deadline(cmd: list[str], timeout: float, *, what: str, cwd=None, env: dict | None = None,
                      ) -> subprocess.CompletedProcess:
    """Run `cmd` in a session of its own, capturing text output; past `timeout` seconds the whole session
    (the command and every process it started) is killed and the test fails naming `what`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=cwd, env=None if env is None else {**os.environ, **env})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"`{what}` did not finish within {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
