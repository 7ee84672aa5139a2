"""`v2pe-data build`: exact length bins, determinism, atomic resumable shards, clear errors on bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2pe_common.buildfolder import DONE_DIR
from v2pe_data.build import BuildError, build
from v2pe_data.config import BuildConfig, ConfigError
from v2pe_data.validate import ValidationError, iter_tar_samples, validate_build

CLI = [sys.executable, "-m", "v2pe_data"]


def small(out, **kw):
    args = dict(length=8192, num_samples=6, shard_size=2, out=str(out), seed=3)
    args.update(kw)
    return BuildConfig(**args)


def shard_hashes(manifest):
    return [(s["path"], s["sha256"]) for s in manifest["shards"]]


def records(out):
    for shard in sorted(Path(out, "shards").glob("*.tar")):
        for _, rec, members in iter_tar_samples(shard):
            yield rec, members


def run_cli(*args, check=False):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "small"
    return out, build(small(out), show_progress=False)


def test_every_sample_lies_in_its_bin_and_validates(built):
    out, manifest = built
    assert manifest["num_samples"] == 6
    for rec, _ in records(out):
        assert 7168 <= rec["meta"]["num_tokens"] <= 8192
    summary = validate_build(out)
    assert summary["samples"] == 6 and summary["recounted"] == 6


def test_the_target_carries_the_question_and_distractors_are_distinct_documents(built):
    out, _ = built
    for rec, members in records(out):
        meta = rec["meta"]
        roles = [s["role"] for s in meta["sources"]]
        assert roles.count("target") == 1 and roles.index("target") == meta["target_index"]
        docs = [s["doc_id"] for s in meta["sources"]]
        assert len(set(docs)) == len(docs)
        n = len(rec["images"])
        assert meta["depth"] == pytest.approx(meta["target_index"] / max(n - 1, 1))
        assert rec["conversations"][0]["value"].count("<image>") == n == len(members)
        assert rec["answer"] == rec["conversations"][1]["value"]


def test_same_seed_gives_identical_shards_with_one_or_two_workers(built, tmp_path):
    _, first = built
    again = build(small(tmp_path / "again"), show_progress=False)
    two = build(small(tmp_path / "two", workers=2), show_progress=False)
    assert shard_hashes(first) == shard_hashes(again) == shard_hashes(two)
    other_seed = build(small(tmp_path / "seed", seed=4, num_samples=2), show_progress=False)
    assert shard_hashes(other_seed)[0][1] != shard_hashes(first)[0][1]


def test_fixed_depth_places_the_target_first_or_last(tmp_path):
    for depth, where in ((0.0, 0), (1.0, -1)):
        out = tmp_path / f"d{depth}"
        build(small(out, depth=depth, num_samples=2), show_progress=False)
        for rec, _ in records(out):
            roles = [s["role"] for s in rec["meta"]["sources"]]
            assert roles[where] == "target"


def test_a_byte_cap_rolls_shards_into_parts(tmp_path):
    out = tmp_path / "bytes"
    manifest = build(small(out, shard_size=4, shard_bytes=1, num_samples=4), show_progress=False)
    assert [s["num_samples"] for s in manifest["shards"] if s["format"] == "wds"] == [1, 1, 1, 1]
    assert validate_build(out)["samples"] == 4


def test_a_killed_build_resumes_to_the_same_bytes_and_never_exposes_a_partial_shard(built, tmp_path):
    out = tmp_path / "killed"
    args = ["build", "long_vqa", "--len", "8192", "--num-samples", "6", "--shard-size", "2", "--seed", "3",
            "--out", str(out), "--quiet"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not any((out / DONE_DIR).glob("*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, reference = built
    expected = dict(shard_hashes(reference))
    from v2pe_data.writers.atomic import file_digest

    for shard in (out / "shards").glob("*.tar"):  # anything under a final name is complete
        assert file_digest(shard)[1] == expected[f"shards/{shard.name}"]
    assert not (out / "manifest.json").exists()
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    assert shard_hashes(resumed) == shard_hashes(reference)
    assert not list(out.rglob("*.tmp"))


def test_cli_builds_and_validates_a_64k_set_from_scratch(tmp_path):
    out = tmp_path / "64k"
    result = run_cli("build", "long_vqa", "--len", "64k", "--num-samples", "16", "--out", str(out), "-j", "2")
    assert result.returncode == 0, result.stderr
    result = run_cli("validate", str(out))
    assert result.returncode == 0, result.stderr
    assert "ok: 16 samples" in result.stdout
    for rec, _ in records(out):
        assert 56 * 1024 <= rec["meta"]["num_tokens"] <= 64 * 1024


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tokenizer", "/nonexistent/tok"], "tokenizer path '/nonexistent/tok'"),
        (["--len", "200"], "smaller than one image"),
        (["--len", "64q"], "not a token length"),
        (["--min-len", "9k", "--len", "8k"], "min_length"),
    ],
)
def test_bad_input_fails_with_one_line_naming_the_problem(tmp_path, args, message):
    out = tmp_path / "bad"
    result = run_cli("build", "long_vqa", "--num-samples", "1", "--out", str(out), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_an_output_folder_of_another_build_is_refused_untouched(built):
    out, manifest = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = run_cli("build", "long_vqa", "--len", "8192", "--num-samples", "6", "--shard-size", "2",
                     "--seed", "99", "--out", str(out))
    assert result.returncode == 2 and "holds another build" in result.stderr and "seed" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_non_empty_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("build", "long_vqa", "--len", "8k", "--num-samples", "1", "--out", str(tmp_path))
    assert result.returncode == 2 and "holds no v2pe build" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_validate_names_a_corrupt_shard(built, tmp_path):
    out, manifest = built
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match=shard.name):
        validate_build(copy)
    result = run_cli("validate", str(copy))
    assert result.returncode == 1 and shard.name in result.stderr  # damaged data: a runtime failure


def test_a_build_that_recorded_the_tokenizers_file_hash_is_still_recounted(built, tmp_path):
    """Builds before the content hash (issue 22) recorded sha256 over the tokenizer's files; validate still
    finds their tokenizer and recounts every sample instead of skipping the counts."""
    import json
    import shutil

    from v2pe_common.tokenizer import load_tokenizer

    out, _ = built
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = load_tokenizer().legacy_sha256
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert validate_build(copy)["recounted"] == 6


def test_recipes_load_with_cli_overrides_and_name_unknown_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: long_vqa\nlen: 32k\nnum_samples: 5\nshard_size: 64MB\n")
    cfg = BuildConfig.from_yaml(recipe, {"num_samples": 7})
    assert (cfg.length, cfg.min_length, cfg.num_samples, cfg.shard_bytes) == (32768, 28672, 7, 64_000_000)
    recipe.write_text("len: 32k\nnum_sample: 5\n")
    with pytest.raises(ConfigError, match="unknown key 'num_sample'"):
        BuildConfig.from_yaml(recipe)
    recipe.write_text("len: 32k\nworkers: two\n")
    with pytest.raises(ConfigError, match="workers"):
        BuildConfig.from_yaml(recipe)


def test_recipes_in_the_repo_are_valid():
    root = Path(__file__).resolve().parents[1] / "recipes"
    data_recipes = sorted(root.glob("long_*.yaml"))
    assert {p.name.split("_")[1] for p in data_recipes} == {"vqa", "mr"}
    for path in data_recipes:
        cfg = BuildConfig.from_yaml(path)
        if cfg.task == "long_mr":  # task options are checked by the task's own typed options
            from v2pe_data.tasks.long_mr import LongMROptions

            opts = LongMROptions.from_dict({**cfg.options, "depth": cfg.depth}, where=str(path))
            assert opts.subsets


def test_a_uniform_depth_puts_the_target_at_every_position_equally_often(tmp_path):
    """Ends of the sequence are drawn as often as any other position (rounding depth*(n-1) would halve them)."""
    from v2pe_data.build import Builder

    builder = Builder(small(tmp_path / "unused", length=16384, min_length=12288))
    ends = expected_uniform = expected_rounded = 0.0
    for i in range(240):
        meta = builder.plan(i).record["meta"]
        n, t = len(meta["tiles"]), meta["target_index"]
        if n < 3:
            continue
        ends += t in (0, n - 1)
        expected_uniform += 2 / n
        expected_rounded += 1 / (n - 1)
    assert expected_uniform - expected_rounded > 20  # the two hypotheses are well apart at this size
    assert abs(ends - expected_uniform) < abs(ends - expected_rounded), (ends, expected_uniform, expected_rounded)


@pytest.mark.parametrize("edit, says", [
    (lambda ident, tok: ident["tokenizer"].update(sha256=tok.legacy_sha256), "from before tokenizers were hashed"),
    (lambda ident, tok: ident["versions"].update(pillow="9.0.0"), "package versions differ: pillow 9.0.0 -> "),
])
def test_a_folder_whose_identity_differs_in_tokenizer_or_versions_says_which(built, tmp_path, edit, says):
    """Same arguments and sources, another recorded identity: the refusal names what differs instead of
    guessing (a build started by an older v2pe that recorded the tokenizer's file hash, other packages)."""
    import json
    import shutil

    from v2pe_common.tokenizer import load_tokenizer

    out, _ = built
    copy = tmp_path / "other"
    shutil.copytree(out, copy)
    ident = json.loads((copy / "build.json").read_text())
    edit(ident, load_tokenizer())
    ident["build_id"] = "0" * 16
    (copy / "build.json").write_text(json.dumps(ident))
    cfg = small(copy)
    with pytest.raises(BuildError, match="holds another build") as exc:
        build(cfg, show_progress=False)
    assert says in str(exc.value)
