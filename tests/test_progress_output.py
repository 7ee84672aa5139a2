"""Nothing silent for long: on a terminal `v2pe-data build` says it is loading the tokenizer at once, then the
bundled-tokenizer warning, then its progress bar; `validate`, `merge` and `stats` draw bars too. Bars and
status lines go to stderr and only to a terminal, so stdout (what scripts parse) and a captured stderr stay
as they were. `--verbose` logs each phase of a build."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from typer.testing import CliRunner

from v2pe_data.build import build
from v2pe_data.cli import app as data_app
from v2pe_data.config import BuildConfig
from tests.deadline import CLI_DEADLINE

CLI = [sys.executable, "-m", "v2pe_data"]
BUNDLED_WARNING = "warning: counting with the bundled tokenizer"


def on_terminal(*args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (80 columns) and stdout on a pipe: (status, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=slave, start_new_session=True)
    os.close(slave)
    out, err = b"", b""
    open_fds = {proc.stdout.fileno(), master}
    deadline = time.monotonic() + CLI_DEADLINE
    try:
        while open_fds:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"`v2pe-data {' '.join(args)}` did not finish within {CLI_DEADLINE} s")
            for fd in select.select(list(open_fds), [], [], 1.0)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the terminal's other end closed: the process is gone
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == master:
                    err += chunk
                else:
                    out += chunk
    finally:
        os.close(master)
    return proc.wait(), out.decode(), err.decode()


def piped(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=CLI_DEADLINE)


def test_a_build_on_a_terminal_says_loading_then_the_warning_then_draws_its_bar(tmp_path):
    status, out, err = on_terminal("build", "long_vqa", "--len", "8k", "-n", "2", "--out", str(tmp_path / "b"))
    assert status == 0, err
    loading, warning, bar = (err.find(s) for s in ("loading tokenizer bundled", BUNDLED_WARNING, "build long_vqa:"))
    assert 0 == loading < warning < bar, err  # the loading line first, before any import of note
    assert "100%" in err[bar:] and err.count(BUNDLED_WARNING) == 1
    assert out.startswith("2 samples in 1 shards (wds, parquet) -> ") and "loading" not in out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A build written by two shard runs, not yet merged."""
    out = tmp_path_factory.mktemp("progress") / "b"
    for index in (0, 1):
        build(BuildConfig(length=8192, num_samples=2, shard_size=1, seed=3, out=str(out), formats=["wds", "parquet"],
                          num_shards=2, shard_index=index), show_progress=False)
    return out


@pytest.mark.parametrize("command,bar", [("merge", "merge: check"), ("validate", "validate: samples"),
                                         ("stats", "stats:")])
def test_merge_validate_and_stats_draw_a_bar_on_a_terminal_and_print_the_same_stdout(sharded, command, bar):
    if command != "merge" and not (sharded / "manifest.json").exists():
        piped("merge", str(sharded))
    status, out, err = on_terminal(command, str(sharded))
    assert status == 0, err
    assert bar in err and "100%" in err[err.index(bar):], err
    captured = piped(command, str(sharded))
    assert captured.returncode == 0 and captured.stdout == out  # the bar never reaches stdout
    assert bar not in captured.stderr  # nor a captured stderr


@pytest.fixture
def restore_levels():
    saved = {n: logging.getLogger(n).level for n in ("transformers", "v2pe_common", "v2pe_data", "v2pe_train")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_verbose_logs_each_phase_of_a_build_in_order(tmp_path, caplog, restore_levels):
    caplog.set_level(logging.INFO, logger="v2pe_data")
    result = CliRunner().invoke(data_app, ["--verbose", "build", "long_vqa", "--len", "8k", "-n", "2", "--shard-size",
                                           "1", "--format", "wds,parquet", "--out", str(tmp_path / "b"), "-q"])
    assert result.exit_code == 0, result.output
    said = [r.getMessage() for r in caplog.records if r.name.startswith("v2pe_data")]
    phases = ["loading tokenizer bundled", "planning 2 samples in 2 shard task(s): 2 to write",
              "counting tokens with tokenizer bundled", "writing shard task 0", "writing shard task 1",
              "finalizing formats: wds, parquet", "writing card", "writing manifest"]
    at = [next((i for i, m in enumerate(said) if m.startswith(p)), None) for p in phases]
    assert None not in at and at == sorted(at), said


def test_without_verbose_a_build_logs_nothing(tmp_path, caplog, restore_levels):
    result = CliRunner().invoke(data_app, ["build", "long_vqa", "--len", "8k", "-n", "1", "--out",
                                           str(tmp_path / "b"), "-q"])
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.name.startswith("v2pe_data")]
