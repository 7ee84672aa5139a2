"""`v2pe-data push`: what would be committed to the Hub, in which chunks, and what a rerun skips. Offline.

The Hub's HTTP layer is replaced by an in-process fake (`FakeHub`, an httpx MockTransport installed with
`huggingface_hub.set_client_factory`): the real `HfApi` builds every request, and the fake keeps the
repo's files from the commit payloads and answers tree listings from them (parquet/tar files as LFS
entries with their sha256, small files as git blobs), so resume-by-hash is checked end to end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import unquote

import httpx2
import pytest
import yaml
from huggingface_hub import constants
from huggingface_hub.utils import _http, set_client_factory
from typer.testing import CliRunner

from v2pe_data.build import build
from v2pe_data.card import CARD_FILE
from v2pe_data.cli import app
from v2pe_data.config import BuildConfig
from v2pe_data.hub import PushError, push
from tests.deadline import CLI_DEADLINE

TOKEN = "hf_v2peTestTokenThatMustNeverBePrinted"
REPO = "v2pe-org/long-vqa"
RUNNER = CliRunner()


class FakeHub:
    """Just enough of the Hub's API for create_repo, create_branch, list_repo_tree and create_commit."""

    def __init__(self):
        self.files: dict[str, dict[str, bytes]] = {}  # revision -> path -> bytes
        self.commits: list[dict] = []
        self.created: list[dict] = []
        self.auth: set[str | None] = set()
        self.fail_commit: int | None = None  # 1-based commit number that loses the network
        self.read: list[str] = []  # files downloaded

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.auth.add(request.headers.get("authorization"))
        path = unquote(request.url.path)
        if path == "/api/repos/create":
            self.created.append(json.loads(request.content))
            return httpx2.Response(200, json={"url": f"https://huggingface.co/datasets/{REPO}"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        resolve = f"/datasets/{REPO}/resolve/"
        if path.startswith(resolve):  # the repo card, read before it is merged
            revision, _, name = path[len(resolve):].partition("/")
            data = self.files.get(revision, {}).get(name)
            self.read.append(name)
            return httpx2.Response(200, content=data) if data is not None else httpx2.Response(404)
        prefix = f"/api/datasets/{REPO}/"
        assert path.startswith(prefix), path
        verb, _, rest = path[len(prefix):].partition("/")
        if verb == "branch":
            self.files.setdefault(rest, dict(self.files.get("main", {})))
            return httpx2.Response(200, json={})
        if verb == "tree":
            return httpx2.Response(200, json=[self.entry(p, b) for p, b in sorted(self.files.get(rest, {}).items())])
        if verb == "preupload":
            names = [f["path"] for f in json.loads(request.content)["files"]]
            return httpx2.Response(200, json={"files": [{"path": n, "uploadMode": "regular", "shouldIgnore": False}
                                                        for n in names]})
        if verb == "commit":
            if self.fail_commit == len(self.commits) + 1:
                self.fail_commit = None
                raise httpx2.ConnectError("connection reset by peer", request=request)
            lines = [json.loads(line) for line in request.content.decode().splitlines()]
            added = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in lines if v["key"] == "file"}
            self.files.setdefault(rest, {}).update(added)
            deleted = [v["value"]["path"] for v in lines if v["key"] == "deletedFile"]
            for gone in deleted:
                self.files[rest].pop(gone)
            self.commits.append({"revision": rest, "paths": list(added), "deleted": deleted,
                                 "message": next(v["value"]["summary"] for v in lines if v["key"] == "header")})
            return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/datasets/{REPO}/commit/{'a' * 40}",
                                              "commitOid": "a" * 40})
        return httpx2.Response(404, json={"error": f"fake hub: no route {path}"})

    @staticmethod
    def entry(path: str, data: bytes) -> dict:
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out = {"type": "file", "path": path, "size": len(data), "oid": blob}
        if path.endswith((".parquet", ".tar")):  # what the Hub stores through LFS reports its sha256
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
        return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "b"
    build(BuildConfig(length=4096, min_length=1024, num_samples=4, shard_size=1, seed=11, out=str(out),
                      formats=["wds", "parquet", "internvl"]), show_progress=False)
    return out


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()

    def factory():
        default = _http.default_client_factory()  # keeps huggingface_hub's request hooks (offline check)
        return httpx2.Client(transport=httpx2.MockTransport(fake.handler), event_hooks=default.event_hooks)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    set_client_factory(factory)
    yield fake
    set_client_factory(_http.default_client_factory)


CONFIG = "long_vqa_4k"  # the default config: task and length bin


def in_repo(rel, config=CONFIG, split="train"):
    """Where a push puts the build file `rel`: parquet shards at CONFIG/, the rest under CONFIG/SPLIT/."""
    return f"{config}/{rel.split('/', 1)[1]}" if rel.startswith("parquet/") else f"{config}/{split}/{rel}"


def local(out, path_in_repo):
    """The local bytes of a file the push put at `path_in_repo` (the card is the repo's own, merged)."""
    rest = path_in_repo.split("/", 1)[1]
    return (out / (rest.removeprefix("train/") if rest.startswith("train/") else f"parquet/{rest}")).read_bytes()


def test_default_push_commits_the_parquet_shards_then_manifest_and_card_last(built, hub):
    lines = []
    result = push(built, REPO, private=True, echo=lines.append)
    parquet = sorted(in_repo(p.relative_to(built).as_posix()) for p in (built / "parquet").glob("*.parquet"))
    assert len(parquet) == 4 and parquet[0] == f"{CONFIG}/train-000000.parquet"
    metadata = [f"{CONFIG}/train/build.json", f"{CONFIG}/train/manifest.json", CARD_FILE]
    assert sorted(hub.files["main"]) == sorted([*parquet, *metadata])
    for rel, data in hub.files["main"].items():
        assert rel == CARD_FILE or data == local(built, rel)
    card = yaml.safe_load(hub.files["main"][CARD_FILE].decode().split("---\n")[1])
    assert card["configs"] == [{"config_name": CONFIG, "data_files": [{"split": "train",
                                                                       "path": f"{CONFIG}/train-*.parquet"}],
                                "default": True}]
    assert [c["paths"] for c in hub.commits] == [[*parquet, *metadata]]
    assert hub.created == [{"name": "long-vqa", "organization": "v2pe-org", "visibility": "private", "type": "dataset"}]
    assert result["commits"] == 1 and not result["skipped"]
    assert f"Bearer {TOKEN}" in hub.auth <= {f"Bearer {TOKEN}", None}  # the token went to the Hub, only there
    assert TOKEN not in "\n".join(lines)


def test_large_folders_are_committed_in_chunks_of_files_and_bytes(built, hub):
    push(built, REPO, max_files=2, echo=lambda s: None)
    assert [len(c["paths"]) for c in hub.commits] == [2, 2, 2, 1]
    assert hub.commits[-1]["paths"] == [CARD_FILE]
    hub2 = FakeHub()
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub2.handler)))
    sizes = {rel: len(data) for rel, data in hub.files["main"].items()}
    cap = max(sizes.values()) - 1  # the largest file cannot share a commit, and goes alone
    push(built, REPO, max_bytes=cap, echo=lambda s: None)
    for commit in hub2.commits:
        total = sum(sizes[p] for p in commit["paths"])
        assert total <= cap or len(commit["paths"]) == 1
    assert sorted(p for c in hub2.commits for p in c["paths"]) == sorted(sizes)


def test_an_interrupted_push_resumes_and_skips_what_the_repo_already_holds(built, hub):
    hub.fail_commit = 2
    with pytest.raises(PushError) as err:
        push(built, REPO, max_files=2, echo=lambda s: None)
    assert "cannot reach the Hugging Face Hub" in str(err.value) and "\n" not in str(err.value)
    first = hub.commits[0]["paths"]
    assert len(hub.commits) == 1 and CARD_FILE not in hub.files["main"]  # no card before its data

    lines = []
    again = push(built, REPO, max_files=2, echo=lines.append)
    assert again["skipped"] == first
    assert set(again["committed"]).isdisjoint(first) and CARD_FILE in again["committed"]
    assert "2 file(s) already in the repo skipped" in lines[0]

    card = hub.files["main"][CARD_FILE]
    # same path, other bytes (v2pe's own part edited): merged and pushed again
    hub.files["main"][CARD_FILE] = card.replace(b"# v2pe long-context", b"# an older v2pe card")
    third = push(built, REPO, echo=lambda s: None)
    assert third["committed"] == [CARD_FILE]
    assert hub.files["main"][CARD_FILE] == card
    assert push(built, REPO, echo=lambda s: None)["commits"] == 0  # the card merged with itself is itself


def test_include_adds_the_tar_shards_and_the_internvl_layout_on_a_branch(built, hub):
    push(built, REPO, include=("parquet", "wds", "internvl"), revision="v1", echo=lambda s: None)
    paths = set(hub.files["v1"])
    assert {in_repo(p.relative_to(built).as_posix()) for p in (built / "shards").glob("*.tar")} <= paths
    assert f"{CONFIG}/train/internvl/meta.json" in paths
    assert any(p.startswith(f"{CONFIG}/train/internvl/images/") for p in paths)
    assert not any("/." in p or p.startswith(".") for p in paths)  # no temporaries, no .v2pe/
    assert {c["revision"] for c in hub.commits} == {"v1"} and "main" not in hub.files


def test_dry_run_prints_the_plan_and_touches_no_network(built, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    set_client_factory(lambda: pytest.fail("dry run made a request"))
    try:
        result = RUNNER.invoke(app, ["push", str(built), "--repo-id", REPO, "--dry-run", "--chunk-files", "3",
                                     "--include", "wds"])
    finally:
        set_client_factory(_http.default_client_factory)
    assert result.exit_code == 0, result.output
    # 4 parquet shards, 4 tar shards, build.json, manifest.json, README.md: 3 + 3 + 3 + 2
    assert "would push" in result.output and "11 file(s) in 4 commit(s)" in result.output
    assert f"{CONFIG}/train/shards/train-000000.tar" in result.output and "commit 4/4: 2 file(s)" in result.output
    assert f"as config {CONFIG}, split train" in result.output


def test_the_token_never_appears_in_output_or_logs(built, hub, caplog):
    caplog.set_level(logging.DEBUG)
    result = RUNNER.invoke(app, ["push", str(built), "--repo-id", REPO, "--chunk-files", "4"])
    assert result.exit_code == 0, result.output
    assert len(hub.commits) == 2 and f"Bearer {TOKEN}" in hub.auth
    assert TOKEN not in result.output and TOKEN not in caplog.text


def test_bad_arguments_are_usage_errors_and_a_build_without_parquet_is_refused(built, tmp_path):
    for args, words in ((["--repo-id", "no-slash"], "ORG/NAME"), (["--repo-id", REPO, "--include", "zip"], "'zip'"),
                        (["--repo-id", REPO, "--chunk-bytes", "lots"], "--chunk-bytes")):
        result = RUNNER.invoke(app, ["push", str(built), *args, "--dry-run"])
        assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1
    out = tmp_path / "wds_only"
    build(BuildConfig(length=4096, min_length=1024, num_samples=1, out=str(out), formats=["wds"]), show_progress=False)
    result = RUNNER.invoke(app, ["push", str(out), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and "no parquet shards" in result.output
    result = RUNNER.invoke(app, ["push", str(tmp_path), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and f"{tmp_path / 'manifest.json'}: missing" in result.output


def run_cli(args, env, timeout):
    env = {**os.environ, "HF_TOKEN": TOKEN, **env}
    return subprocess.run([sys.executable, "-m", "v2pe_data", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_offline_mode_is_a_one_line_error_not_a_hang(built):
    result = run_cli(["push", str(built), "--repo-id", REPO], {"HF_HUB_OFFLINE": "1"}, timeout=CLI_DEADLINE)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot push: HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) is set; unset it to publish"]
    assert TOKEN not in result.stdout + result.stderr


def test_a_hub_that_never_answers_times_out_with_one_line(built):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    stop = threading.Event()

    def accept():  # accepts connections and never answers them
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
               "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        result = run_cli(["push", str(built), "--repo-id", REPO, "--timeout", "1"], env, timeout=CLI_DEADLINE)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Hugging Face Hub" in lines[0] and "timed out" in lines[0]
    assert TOKEN not in result.stdout + result.stderr


# ---------------------------------------------------------------------------------- what push trusts (issue 21)


@pytest.fixture
def copy_of_built(built, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(built, out, symlinks=True)
    return out


def test_push_sends_exactly_the_manifests_files_verified(copy_of_built, hub):
    out = copy_of_built
    (out / "parquet" / "train-999999.parquet").write_bytes(b"stray")  # never built: never published
    push(out, REPO, echo=lambda s: None)
    manifest = json.loads((out / "manifest.json").read_text())
    listed = sorted(in_repo(s["path"]) for s in manifest["shards"] if s["format"] == "parquet")
    assert sorted(hub.files["main"]) == sorted([*listed, in_repo("build.json"), in_repo("manifest.json"), CARD_FILE])


def test_push_refuses_a_listed_shard_missing_or_changed(copy_of_built, hub):
    out = copy_of_built
    shard = sorted((out / "parquet").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(PushError, match=f"{shard.name}: differs from the manifest"):
        push(out, REPO, echo=lambda s: None)
    shard.unlink()
    with pytest.raises(PushError, match=f"{shard.name}: listed in the manifest but missing"):
        push(out, REPO, echo=lambda s: None)
    assert not hub.commits


def test_push_never_follows_a_link_in_the_build_folder(copy_of_built, hub, tmp_path):
    out = copy_of_built
    secret = tmp_path / "token"
    secret.write_text("hf_secret")
    images = next(p for p in (out / "internvl" / "images").iterdir() if p.is_dir())
    (images / "9.jpg").symlink_to(secret)
    with pytest.raises(PushError, match="9.jpg is a symbolic link"):
        push(out, REPO, include=("parquet", "internvl"), echo=lambda s: None)
    shard = sorted((out / "parquet").glob("*.parquet"))[0]
    real = shard.with_name("real.bin")
    shard.rename(real)
    shard.symlink_to(real)
    with pytest.raises(PushError, match="is a symbolic link"):
        push(out, REPO, echo=lambda s: None)
    assert not hub.commits and all(b"hf_secret" not in d for d in hub.files.get("main", {}).values())


def test_push_of_the_internvl_and_mmniah_layouts_sends_what_their_lines_name_not_stray_files(copy_of_built, tmp_path):
    """The layouts' images are not hashed in the manifest: they are the files the layout's verified annotation
    lines name (plus its meta.json and merged annotations), never whatever else lies in the folder."""
    from v2pe_data.hub import local_files

    out = copy_of_built
    image = next(p for p in (out / "internvl" / "images").rglob("*") if p.is_file())
    (out / "internvl" / "hf_token").write_text("hf_secret")
    (image.parent / "99.jpg").write_bytes(image.read_bytes())
    names = {f.path_in_repo for f in local_files(out, ("parquet", "internvl"))}
    lines = [json.loads(x) for p in (out / "internvl" / "annotations").glob("*.jsonl") for x in p.read_text().splitlines()]
    named = {f"internvl/{i}" for line in lines for i in ([line["image"]] if isinstance(line["image"], str)
                                                           else line["image"])}
    assert named and named <= names
    assert {"internvl/meta.json", "internvl/long_vqa_train.jsonl"} <= names
    assert not {n for n in names if n.startswith("internvl/")} - named - {"internvl/meta.json",
                                                                          "internvl/long_vqa_train.jsonl"} - {
        f"internvl/annotations/{p.name}" for p in (out / "internvl" / "annotations").glob("*.jsonl")}
    image.unlink()
    with pytest.raises(PushError, match=f"{image.name}: named by .* but missing"):
        local_files(out, ("parquet", "internvl"))

    mm = tmp_path / "mm"
    build(BuildConfig(task="long_mr", length=4096, min_length=3584, max_tiles=2, num_samples=2, shard_size=2, seed=5,
                      formats=["wds", "parquet", "mmniah"], out=str(mm), options={"subset": ["image_retrieval"]}),
          show_progress=False)
    (mm / "mmniah" / "images" / "stray.png").write_bytes(b"x")
    names = {f.path_in_repo for f in local_files(mm, ("parquet", "mmniah"))}
    assert "mmniah/images/stray.png" not in names
    assert any(n.startswith("mmniah/annotations/") for n in names) and any(n.startswith("mmniah/images/")
                                                                          for n in names)


# ------------------------------------------------------------------------- many builds, one repo (issue 22)


@pytest.fixture(scope="module")
def other_builds(tmp_path_factory):
    """A build of another length bin (config long_vqa_3k) and a val build of the `built` fixture's config."""
    root = tmp_path_factory.mktemp("hub_more")
    short, val = root / "short", root / "val"
    build(BuildConfig(length=3072, min_length=1024, num_samples=2, seed=12, out=str(short)), show_progress=False)
    build(BuildConfig(length=4096, min_length=1024, num_samples=3, seed=13, split="val", out=str(val)),
          show_progress=False)
    return short, val


def sample_ids(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return sorted(f"{manifest['task']}-{manifest['split']}-{i:08d}" for i in range(manifest["num_samples"]))


def test_builds_pushed_as_configs_and_splits_keep_each_others_files_and_card_entries(built, other_builds, hub):
    short, val = other_builds
    push(built, REPO, echo=lambda s: None)
    first = dict(hub.files["main"])
    push(short, REPO, echo=lambda s: None)
    push(val, REPO, echo=lambda s: None)
    files = hub.files["main"]
    assert hub.read == [CARD_FILE, CARD_FILE]  # each later push read the card it merged into
    assert all(files[p] == data for p, data in first.items() if p != CARD_FILE)  # nothing overwritten
    assert {"long_vqa_3k/train-000000.parquet", "long_vqa_4k/val-000000.parquet", "long_vqa_4k/val/manifest.json",
            "long_vqa_3k/train/build.json"} <= set(files)
    meta = yaml.safe_load(files[CARD_FILE].decode().split("---\n")[1])
    assert meta["configs"] == [
        {"config_name": "long_vqa_3k", "data_files": [{"split": "train", "path": "long_vqa_3k/train-*.parquet"}]},
        {"config_name": "long_vqa_4k", "default": True,
         "data_files": [{"split": "train", "path": "long_vqa_4k/train-*.parquet"},
                        {"split": "validation", "path": "long_vqa_4k/val-*.parquet"}]}]
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    splits = {s["name"]: s for s in infos["long_vqa_4k"]["splits"]}
    val_parquet = [s for s in json.loads((val / "manifest.json").read_text())["shards"] if s["format"] == "parquet"]
    assert splits["validation"] == {"name": "validation", "num_bytes": sum(s["bytes"] for s in val_parquet),
                                    "num_examples": 3}
    assert infos["long_vqa_4k"]["dataset_size"] == splits["train"]["num_bytes"] + splits["validation"]["num_bytes"]
    body = files[CARD_FILE].decode()
    for key in ("long_vqa_3k/train", "long_vqa_4k/train", "long_vqa_4k/val"):
        assert body.count(f"<!-- v2pe:begin {key} ") == 1
    assert body.count("@inproceedings{ge2025v2pe") == 1
    push(short, REPO, echo=lambda s: None)  # pushing a build again changes nothing
    assert hub.files["main"] == files


def test_load_dataset_reads_each_config_and_split_of_a_repo_holding_several_builds(built, other_builds, hub,
                                                                                      tmp_path):
    """The repo after three pushes, laid out in a local folder: `load_dataset(folder, CONFIG, split=...)`
    gives exactly each build's samples."""
    import datasets

    short, val = other_builds
    for out in (built, short, val):
        push(out, REPO, echo=lambda s: None)
    repo = tmp_path / "repo"
    for path, data in hub.files["main"].items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    cache = str(tmp_path / "cache")
    for config, split, out in (("long_vqa_4k", "train", built), ("long_vqa_3k", "train", short),
                               ("long_vqa_4k", "validation", val)):
        ds = datasets.load_dataset(str(repo), config, split=split, cache_dir=cache)
        assert sorted(ds["id"]) == sample_ids(out), (config, split)
    assert sorted(datasets.load_dataset(str(repo), split="validation", cache_dir=cache)["id"]) == sample_ids(val)


def test_config_names_a_folder_in_the_repo(built, hub):
    push(built, REPO, config="docs-4k.v1", echo=lambda s: None)
    assert "docs-4k.v1/train-000000.parquet" in hub.files["main"]
    result = RUNNER.invoke(app, ["push", str(built), "--repo-id", REPO, "--config", "../up", "--dry-run"])
    assert result.exit_code == 2 and "--config" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_repo_card_whose_yaml_cannot_be_read_is_named_not_overwritten(built, hub):
    hub.files["main"] = {CARD_FILE: b"---\nconfigs: [unclosed\n---\nhand-written notes\n"}
    result = RUNNER.invoke(app, ["push", str(built), "--repo-id", REPO])
    assert result.exit_code == 1 and "the repo's README.md has a YAML header that cannot be read" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert hub.files["main"][CARD_FILE].endswith(b"hand-written notes\n") and not hub.commits


def test_the_repo_owners_own_card_text_is_kept_above_v2pes_part_push_after_push(built, other_builds, hub):
    """A repo whose card someone wrote by hand keeps that text (once) and its YAML keys; v2pe's index, sections
    and citations are replaced, never repeated."""
    short, _ = other_builds
    hub.files["main"] = {CARD_FILE: b"---\nlicense: cc-by-4.0\npretty_name: My long data\n---\n\n"
                                    b"# My long data\n\nHand-written notes about this repo.\n"}
    push(built, REPO, echo=lambda s: None)
    push(short, REPO, echo=lambda s: None)
    card = hub.files["main"][CARD_FILE].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pretty_name"] == "My long data" and {c["config_name"] for c in meta["configs"]} == {
        "long_vqa_3k", "long_vqa_4k"}
    assert card.count("Hand-written notes about this repo.") == 1
    assert card.index("Hand-written notes") < card.index("<!-- v2pe:index -->")
    assert card.count("# v2pe long-context multimodal data") == 1 and card.count("## Citation") == 1


@pytest.mark.parametrize("owner_yaml, kept", [
    # the usual one-config card: dataset_info a mapping, a config entry without a name ("default"); kept as is
    ("configs:\n- data_files:\n  - split: train\n    path: data/train-*.parquet\ndataset_info:\n  splits:\n"
     "  - name: train\n    num_examples: 10\n",
     {"default": [{"split": "train", "path": "data/train-*.parquet"}]}),
    # data_files as a {split: pattern} mapping, under the config name v2pe pushes to: its test split stays
    ("configs:\n- config_name: long_vqa_4k\n  data_files:\n    test: mine/test-*.parquet\n",
     {"long_vqa_4k": [{"split": "test", "path": "mine/test-*.parquet"},
                      {"split": "train", "path": "long_vqa_4k/train-*.parquet"}]}),
    # another config's bare pattern: not v2pe's to rewrite
    ("configs:\n- config_name: mine\n  data_files: mine/*.parquet\n", {"mine": "mine/*.parquet"}),
])
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_an_owners_card_in_any_form_the_hub_reads_keeps_its_configs(built, owner_yaml, kept, line_end):
    from v2pe_data.repocard import merge_card, split_card

    manifest = json.loads((built / "manifest.json").read_text())
    card = f"---\n{owner_yaml}---\n\nOwner text.\n".replace("\n", line_end)
    meta, body = split_card(merge_card(card, manifest, None))
    files = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert {name: files[name] for name in kept} == kept and "long_vqa_4k" in files
    assert body.count("Owner text.") == 1 and "config_name" not in body


def test_a_build_pushed_again_with_fewer_shards_leaves_none_of_the_old_ones(built, hub, tmp_path):
    """The second push to config/split long_vqa_4k/train holds 2 shards where the first held 4: the other two
    go in the last commit, beside the new card."""
    push(built, REPO, echo=lambda s: None)
    smaller = tmp_path / "s"
    build(BuildConfig(length=4096, min_length=1024, num_samples=2, shard_size=1, seed=99, out=str(smaller)),
          show_progress=False)
    result = push(smaller, REPO, echo=lambda s: None)
    files = hub.files["main"]
    shards = sorted(p for p in files if p.startswith("long_vqa_4k/train-") and p.endswith(".parquet"))
    assert shards == ["long_vqa_4k/train-000000.parquet", "long_vqa_4k/train-000001.parquet"]
    assert result["deleted"] == ["long_vqa_4k/train-000002.parquet", "long_vqa_4k/train-000003.parquet",
                                 *sorted(p for p in result["deleted"] if p.startswith("long_vqa_4k/train/"))]
    assert hub.commits[-1]["deleted"] == result["deleted"] and CARD_FILE in hub.commits[-1]["paths"]
    meta = yaml.safe_load(files[CARD_FILE].decode().split("---\n")[1])
    assert [s["num_examples"] for i in meta["dataset_info"] for s in i["splits"]] == [2]
