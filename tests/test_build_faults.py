"""The build under faults: a lost worker, a second build in the same folder, a stale completion marker, a
full disk, a file size limit, a folder that cannot be written, and sources that change under a build.

Each fault ends in one line naming what failed (a `BuildError`; the CLI prints `error: ...`), leaves
nothing staged under OUT, and a rerun of the same command finishes the build with the bytes of a clean one.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import v2pe_data.build as build_module
from tests.fixtures.sources import write_docvqa_official
from v2pe_common.buildfolder import DONE_DIR, LOCK_FILE
from v2pe_data.build import BuildError, build
from v2pe_data.config import BuildConfig
from v2pe_data.validate import validate_build
from v2pe_data.writers import internvl as internvl_module
from v2pe_data.writers import wds as wds_module

CLI = [sys.executable, "-m", "v2pe_data"]
# Said once a build is accepted, before its first sample: a build that fails while writing shows it, then its error.
BUNDLED_WARNING = "warning: counting with the bundled tokenizer"
ROOT = Path(__file__).resolve().parents[1]


def small(out, **kw) -> BuildConfig:
    args = dict(length=8192, num_samples=6, shard_size=2, out=str(out), seed=3)
    args.update(kw)
    return BuildConfig(**args)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its mtime and content hash: what "touches nothing" compares."""
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def staged(out: Path) -> list[Path]:
    """Temporaries of any writer: hidden `*.tmp` files and the InternVL staging folder `internvl/.tmp`."""
    return sorted(out.rglob("*.tmp"))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean three-format build: the bytes every recovered build must reproduce."""
    out = tmp_path_factory.mktemp("clean") / "b"
    build(small(out, formats=["wds", "parquet", "internvl"]), show_progress=False)
    return out


@pytest.fixture
def docvqa(tmp_path):
    """A private copy of a DocVQA release (images on disk), free to edit."""
    return write_docvqa_official(tmp_path / "src").root


def real(out, root, **kw) -> BuildConfig:
    args = dict(length=4096, min_length=1024, num_samples=4, shard_size=2, out=str(out), seed=7,
                sources=[{"kind": "docvqa", "path": str(root)}])
    args.update(kw)
    return BuildConfig(**args)


# -- a worker process dies ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_a_killed_worker_stops_the_build_in_seconds_naming_its_task_and_a_rerun_completes(tmp_path):
    out = tmp_path / "killed"
    args = ["build", "long_vqa", "--len", "8192", "--num-samples", "12", "--shard-size", "1", "--seed", "3",
            "--workers", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        # A worker writing a shard holds `.train-NNNNNN.tar.<its pid>.tmp`: kill one while it writes,
        # after at least one task has finished, as the out-of-memory killer would.
        deadline, victim = time.time() + 240, None
        while victim is None and time.time() < deadline and proc.poll() is None:
            if any((out / DONE_DIR).glob("*.json")):
                writing = [p for p in (out / "shards").glob(".train-*.tar.*.tmp")]
                if writing:
                    victim = int(writing[0].name.split(".")[-2])
            time.sleep(0.02)
        assert victim is not None, "the build never reached a running shard task"
        workers = _children(proc.pid)
        assert victim in workers
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.time() - killed_at < 30
    assert proc.returncode == 1, stderr
    warning, *lines = stderr.strip().splitlines()
    assert warning.startswith(BUNDLED_WARNING), stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: worker process {victim} was killed by SIGKILL"), stderr
    # On a busy machine the worker may finish the task it was seen writing, and be killed at the start of
    # its next one or between two: the line names the task it was writing, or says it held none.
    if "while writing shard task " in lines[0]:
        task = int(lines[0].split("while writing shard task ")[1].split()[0])
        assert not (out / DONE_DIR / f"{task:06d}.json").exists()  # the task named is the one lost
    else:
        assert "between shard tasks" in lines[0], stderr
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # the other worker was stopped too
    assert not (out / "manifest.json").exists()

    rerun = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert validate_build(out)["samples"] == 12
    assert staged(out) == []  # the killed workers' temporaries were swept


# -- two builds, one folder ----------------------------------------------------------------------------------


def test_a_second_build_into_a_locked_folder_is_refused_in_one_line_and_touches_nothing(tmp_path):
    out = tmp_path / "busy"
    cfg = small(out, num_samples=2)
    build(cfg, show_progress=False)
    (out / "manifest.json").unlink()  # as if the first build were still running
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(out / LOCK_FILE)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        with pytest.raises(BuildError) as err:
            build(cfg, show_progress=False)
        assert err.value.usage and "another build is writing to" in one_line(err.value) and str(out) in str(err.value)
        assert snapshot(out) == before
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock all the same
        holder.wait(timeout=30)
    build(cfg, show_progress=False)
    assert validate_build(out)["samples"] == 2


def test_a_marker_whose_hash_does_not_match_its_file_makes_the_rerun_redo_that_task(clean, tmp_path):
    out = tmp_path / "stale"
    shutil.copytree(clean, out)
    (out / "manifest.json").unlink()
    # marker 0 claims a wrong sha256 for its tar (two writers raced); shard 1 was damaged in place, same size
    marker = out / DONE_DIR / "000000.json"
    data = json.loads(marker.read_text())
    data["files"][0]["sha256"] = "0" * 64
    marker.write_text(json.dumps(data))
    shard = out / "shards" / "train-000001.tar"
    damaged = bytearray(shard.read_bytes())
    damaged[700] ^= 0xFF
    shard.write_bytes(bytes(damaged))

    build(small(out, formats=["wds", "parquet", "internvl"]), show_progress=False)
    assert validate_build(out)["samples"] == 6
    assert (out / "manifest.json").read_bytes() == (clean / "manifest.json").read_bytes()
    assert shard.read_bytes() == (clean / "shards" / "train-000001.tar").read_bytes()


# -- the disk fills, the file size limit is hit, the folder cannot be written ----------------------------------


class FullDisk:
    """`open` for the writer modules: files opened for writing share `free` bytes. Past them `write()`
    fails with ENOSPC naming no file, and every later `close()` fails the same way (its buffered tail
    cannot be flushed), as on a real full disk."""

    def __init__(self, free: int):
        self.free = free
        self.full = False

    def open(self, path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        return _Filling(fh, self) if any(c in mode for c in "wax+") else fh


class _Filling:
    def __init__(self, fh, disk: FullDisk):
        self._fh, self._disk = fh, disk

    def _enospc(self) -> OSError:
        self._disk.full = True
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, data) -> int:
        if len(data) > self._disk.free:
            raise self._enospc()
        self._disk.free -= len(data)
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()
        if self._disk.full:
            raise self._enospc()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_a_full_disk_fails_in_one_line_leaves_nothing_staged_and_a_rerun_matches_a_clean_build(
        clean, tmp_path, monkeypatch):
    out = tmp_path / "full"
    cfg = small(out, formats=["wds", "parquet", "internvl"])
    disk = FullDisk(free=2_000_000)  # task 0 fits (about 1.4 MB of tar and images), task 1 does not
    monkeypatch.setattr(wds_module, "open", disk.open, raising=False)
    monkeypatch.setattr(internvl_module, "open", disk.open, raising=False)
    with pytest.raises(BuildError) as err:
        build(cfg, show_progress=False)
    line = one_line(err.value)
    assert not err.value.usage
    assert line.startswith(f"cannot write {out}/") and line.endswith(": No space left on device"), line
    assert staged(out) == []  # no temporary file, no InternVL staging folder, although every close() failed
    assert (out / DONE_DIR / "000000.json").exists() and not (out / "manifest.json").exists()

    monkeypatch.undo()  # space freed: the same command finishes the build
    build(cfg, show_progress=False)
    assert (out / "manifest.json").read_bytes() == (clean / "manifest.json").read_bytes()
    assert validate_build(out)["samples"] == 6


def test_abort_never_raises_and_removes_the_rest_when_one_removal_fails(tmp_path, monkeypatch):
    """What one failed removal leaves behind is swept by the next build that locks the folder."""
    from v2pe_data.build import Builder
    from v2pe_data.writers.base import ShardOutputs
    from v2pe_data.writers.formats import formats_for

    FORMATS = formats_for("long_vqa")
    out = tmp_path / "b"
    cfg = small(out, num_samples=1, formats=list(FORMATS))
    build(cfg, show_progress=False)
    plan = Builder(cfg).plan(0)
    outputs = ShardOutputs(FORMATS, out, "train", 0)
    outputs.write(plan.record, [item.load() for item in plan.items])
    real_unlink, calls = Path.unlink, []

    def first_fails(self, missing_ok=False):
        calls.append(self)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", first_fails)
    outputs.abort()  # no exception: it would hide the error that made the build abort
    monkeypatch.undo()
    assert staged(out) == [calls[0]]  # only the file whose removal failed; the other formats' are gone
    build(cfg, show_progress=False)
    assert staged(out) == [] and validate_build(out)["samples"] == 1


def test_a_file_size_limit_fails_in_one_line_naming_the_file(tmp_path):
    """`ulimit -f`: CPython ignores SIGXFSZ, so the write fails with EFBIG, reported like a full disk."""
    out = tmp_path / "capped"
    limit = 256 * 1024  # below one tar shard of this build (about 700 kB)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([*CLI, "build", "long_vqa", "--len", "8192", "--num-samples", "2", "--seed", "3",
                             "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            preexec_fn=cap)
    warning, *lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert warning.startswith(BUNDLED_WARNING), result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {out}/shards/"), result.stderr
    assert lines[0].endswith(": File too large")
    assert staged(out) == []


def test_an_out_that_is_a_file_is_refused_as_usage_in_one_line(tmp_path):
    out = tmp_path / "a-file"
    out.write_text("mine")
    with pytest.raises(BuildError) as err:
        build(small(out, num_samples=1), show_progress=False)
    assert err.value.usage and "is a file" in one_line(err.value) and str(out) in str(err.value)
    assert out.read_text() == "mine"


def test_an_out_that_cannot_be_written_fails_in_one_line_naming_it(tmp_path, monkeypatch):
    """A non-root user gets EACCES from a 0o555 folder; root ignores permission bits, so as root the
    folder is made to answer mkdir with EROFS, as a read-only mount does (what a root test can show)."""
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:
        real_mkdir = os.mkdir

        def read_only(path, *args, **kwargs):
            if Path(path).is_relative_to(out):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", read_only)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(BuildError) as err:
            build(small(out, num_samples=1), show_progress=False)
    finally:
        out.chmod(0o755)
    line = one_line(err.value)
    assert not err.value.usage and line.startswith(f"cannot write {out}/.v2pe: "), line
    assert list(out.iterdir()) == []


def test_a_build_error_keeps_its_usage_flag_across_processes():
    """Errors raised in a worker are pickled to the parent; the CLI's exit code depends on the flag."""
    for usage in (True, False):
        again = pickle.loads(pickle.dumps(BuildError("why", usage=usage)))
        assert str(again) == "why" and again.usage is usage


# -- sources that change -----------------------------------------------------------------------------------


def test_a_rerun_against_an_edited_source_is_refused_naming_the_source_and_the_file(docvqa, tmp_path):
    out = tmp_path / "out"
    cfg = real(out, docvqa)
    first = build(cfg, show_progress=False)
    manifest = (out / "manifest.json").read_bytes()
    assert build(cfg, show_progress=False) == first  # an unchanged source: the same build, the same bytes
    assert (out / "manifest.json").read_bytes() == manifest

    qas = docvqa / "spdocvqa_qas" / "train_v1.0_withQT.json"
    size = qas.stat().st_size
    qas.write_text(qas.read_text() + "\n")
    with pytest.raises(BuildError) as err:
        build(cfg, show_progress=False)
    line = one_line(err.value)
    assert err.value.usage
    assert line.startswith(f"source 'docvqa' changed since the build in {out} started: "
                           f"spdocvqa_qas/train_v1.0_withQT.json (size {size} -> {size + 1})"), line
    assert (out / "manifest.json").read_bytes() == manifest


def _builder_that(then):
    """A Builder class that runs `then()` once its sources are indexed, i.e. while the build runs."""

    class Builder(build_module.Builder):
        def __init__(self, cfg):
            super().__init__(cfg)
            then()

    return Builder


def test_an_image_deleted_mid_build_fails_naming_source_item_and_file(docvqa, tmp_path, monkeypatch):
    out = tmp_path / "out"
    images = docvqa / "spdocvqa_images"
    monkeypatch.setattr(build_module, "Builder", _builder_that(lambda: [p.unlink() for p in images.iterdir()]))
    with pytest.raises(BuildError) as err:
        build(real(out, docvqa), show_progress=False)
    line = one_line(err.value)
    assert not err.value.usage
    assert line.startswith("source 'docvqa', item ") and f"{images}/docvqa_train_" in line, line
    assert "No such file or directory" in line
    assert staged(out) == [] and not (out / "manifest.json").exists()


def test_a_source_changed_while_the_build_ran_stops_it_before_the_manifest(docvqa, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(build_module, "Builder", _builder_that(lambda: (docvqa / "notes.txt").write_text("new")))
    with pytest.raises(BuildError) as err:
        build(real(out, docvqa), show_progress=False)
    assert one_line(err.value).startswith("source 'docvqa' changed while this build ran: notes.txt (added)")
    assert not (out / "manifest.json").exists()
