"""`v2pe-data push`: publish a build folder to a Hugging Face dataset repo, in resumable chunks.

What goes up, as one config and split of the repo (`repocard`: under `NAME/`, so several builds share a
repo): the parquet shards, `manifest.json` and `build.json`, and the repo's card (`README.md`, the one the
repo holds merged with this build's entry); on request the tar shards (`wds`) and the InternVL / MM-NIAH
layouts. Exactly the files the manifest lists, each checked against its size and sha256 first; nothing
reached through a link. Files are committed in chunks of at most `max_files` files and `max_bytes` bytes,
one `create_commit` each, so an interrupted push keeps the chunks already committed; a rerun lists the repo
and skips every file whose content is already there (LFS files by sha256, small files by their git blob id).

The card and manifest go in the last chunk: a repo whose push was cut short does not yet advertise
configs whose files are missing. The token comes from where `huggingface_hub` looks (HF_TOKEN, the
saved login) and is never printed. Failures end in one `PushError` line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from v2pe_common.buildfolder import BUILD_FILE, MANIFEST_FILE
from v2pe_common.schema import load_manifest

from .card import CARD_FILE, config_name, regenerate
from .errors import V2PEDataError
from .repocard import check_config, merge_card, repo_path, stale_paths

# Layouts a push may add to the default (parquet + card); each is a folder of the build.
LAYOUTS = {"parquet": "parquet", "wds": "shards", "internvl": "internvl", "mmniah": "mmniah"}
DEFAULT_INCLUDE = ("parquet",)
METADATA_FILES = (BUILD_FILE, MANIFEST_FILE, CARD_FILE)  # committed last, in this order
DEFAULT_MAX_FILES = 100
DEFAULT_MAX_BYTES = 2 * 1024**3


class PushError(V2PEDataError, RuntimeError):
    """The push cannot start or continue; `usage` marks errors in the arguments (exit 2 rather than 1)."""

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class LocalFile:
    path_in_repo: str
    local: Path
    size: int
    sha256: str
    git_sha1: str  # the git blob id the Hub reports for a file stored without LFS


def hash_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) in one read: the Hub reports one or the other depending on LFS."""
    size = path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha256.update(block)
            sha1.update(block)
    return size, sha256.hexdigest(), sha1.hexdigest()


def parse_include(text: str | None) -> tuple[str, ...]:
    extra = [p.strip() for p in (text or "").split(",") if p.strip()]
    bad = [p for p in extra if p not in LAYOUTS]
    if bad:
        raise PushError(f"--include: unknown layout {bad[0]!r}; choose from {sorted(LAYOUTS)}", usage=True)
    return tuple(dict.fromkeys([*DEFAULT_INCLUDE, *extra]))


def local_files(out: Path, include: tuple[str, ...]) -> list[LocalFile]:
    """What is published: the manifest's shards of the included layouts, each verified against the manifest's
    size and sha256, then the metadata; never a file the build did not make, never through a link.

    A listed file that is missing, changed or a symbolic link refuses the push (exit 1, naming it); stray
    files beside the shards are not sent. The InternVL and MM-NIAH layouts also need their images and
    finalized files (meta.json, merged annotations), which the manifest does not hash: those are the files the
    layout's verified annotation lines name and its finalize step writes (`_layout_files`), nothing else in
    the folder; a link anywhere in the folder refuses the push.
    """
    out = Path(out)
    try:
        manifest = load_manifest(out / MANIFEST_FILE)  # only a finished, well-formed build is published
        if not (out / CARD_FILE).is_file():  # a build made before cards existed
            regenerate(out)
    except ValueError as exc:
        raise PushError(str(exc), usage=True) from None
    files: list[LocalFile] = []
    for layout in include:
        listed = [s for s in manifest["shards"] if s["format"] == layout]
        if layout == "parquet" and not listed:
            raise PushError(f"{out}: no parquet shards, so the Hub could not load this build; add them with "
                            f"`v2pe-data convert {out} --to parquet` or push --include wds",
                            usage=True)
        if not listed:
            raise PushError(f"{out}: --include {layout}: the build has no {LAYOUTS[layout]}/ shards", usage=True)
        for shard in listed:
            files.append(_verified(out, shard["path"], shard))
        if layout in ("internvl", "mmniah"):
            done = {f.path_in_repo for f in files}
            files.extend(_verified(out, rel, named_by=where) for rel, where in _layout_files(out, layout, listed)
                         if rel not in done)
    files.extend(_verified(out, name) for name in METADATA_FILES if (out / name).exists() or (out / name).is_symlink())
    return files


def _verified(out: Path, rel: str, listed: dict | None = None, named_by: str = "the manifest") -> LocalFile:
    """A file to publish, hashed; refused when it is a link (or lies under one), or differs from `listed`."""
    path = out / rel
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise PushError(f"{out}: {named_by} names {rel!r}, which is not a path inside the build folder")
    for k in range(1, len(parts) + 1):
        if (out.joinpath(*parts[:k])).is_symlink():
            raise PushError(f"{out.joinpath(*parts[:k])} is a symbolic link: push never follows links (its target "
                            "may be any file); replace it with the file the build wrote")
    if not path.is_file():
        raise PushError(f"{path}: {'listed in' if listed is not None else 'named by'} {named_by} but missing; "
                        "rebuild it (rerun the build) before pushing")
    size, sha256, sha1 = hash_file(path)
    if listed is not None and (size, sha256) != (listed["bytes"], listed["sha256"]):
        raise PushError(f"{path}: differs from the manifest (size {size} vs {listed['bytes']}, or its sha256); "
                        "`v2pe-data validate` names what changed")
    return LocalFile(Path(rel).as_posix(), path, size, sha256, sha1)


def _layout_files(out: Path, layout: str, listed: list[dict]) -> list[tuple[str, str]]:
    """(path, who names it) of the InternVL / MM-NIAH layout's files beyond its listed annotation shards: every
    image their lines name, then what finalize wrote from them (internvl/meta.json and the merged annotation it
    names; mmniah/annotations/<file>). Refuses a link anywhere in the layout's folder."""
    import json

    folder = LAYOUTS[layout]
    _refuse_links(out / folder)
    named: dict[str, str] = {}
    for shard in listed:
        for lineno, raw in enumerate((out / shard["path"]).read_bytes().splitlines(), 1):
            where = f"{shard['path']}:{lineno}"
            try:
                line = json.loads(raw) if raw.strip() else {}
                if layout == "internvl":
                    images = [line["image"]] if isinstance(line.get("image"), str) else list(line.get("image") or [])
                    base = folder
                else:
                    choices = (line.get("meta") or {}).get("choices_image_path") or []
                    images, base = [*(line.get("images_list") or []), *choices], f"{folder}/images"
            except (ValueError, TypeError, AttributeError) as exc:
                raise PushError(f"{out / shard['path']}:{lineno}: not a line of the {layout} layout ({exc})") from None
            for image in images:
                named.setdefault(f"{base}/{image}", where)
    if layout == "internvl":
        named["internvl/meta.json"] = "the internvl layout"
        try:
            entries = json.loads((out / "internvl" / "meta.json").read_text()).values()
            merged = sorted({Path(e["annotation"]).name for e in entries})  # finalize writes it beside meta.json
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PushError(f"{out / 'internvl' / 'meta.json'}: unreadable ({exc}); rerun the build") from None
        named.update({f"internvl/{name}": "internvl/meta.json" for name in merged})
    else:
        named.update({f"mmniah/annotations/{Path(s['path']).name}": "the mmniah layout" for s in listed})
    return list(named.items())


def _refuse_links(folder: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk never descends into linked folders
        for name in dirnames + filenames:
            if Path(dirpath, name).is_symlink():
                raise PushError(f"{Path(dirpath, name)} is a symbolic link: push never follows links (its target may "
                                "be any file); replace it with the file the build wrote")


def chunk(files: list[LocalFile], max_files: int, max_bytes: int) -> list[list[LocalFile]]:
    """Consecutive runs of at most `max_files` files and `max_bytes` bytes (a larger file goes alone)."""
    if max_files < 1 or max_bytes < 1:
        raise PushError("--chunk-files and --chunk-bytes must be positive", usage=True)
    chunks: list[list[LocalFile]] = []
    size = 0
    for f in files:
        if not chunks or len(chunks[-1]) >= max_files or (chunks[-1] and size + f.size > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(f)
        size += f.size
    return chunks


def already_there(remote, f: LocalFile) -> bool:
    """True when the repo's entry for the path holds the same bytes (LFS: sha256; plain git: blob id)."""
    if remote is None or getattr(remote, "size", None) != f.size:
        return False
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == f.sha256
    return getattr(remote, "blob_id", None) == f.git_sha1


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def describe_plan(chunks: list[list[LocalFile]], skipped: int) -> list[str]:
    lines = [f"{sum(len(c) for c in chunks)} file(s) in {len(chunks)} commit(s)"
             + (f"; {skipped} file(s) already in the repo skipped" if skipped else "")]
    for i, c in enumerate(chunks, 1):
        lines.append(f"commit {i}/{len(chunks)}: {len(c)} file(s), {_human(sum(f.size for f in c))}")
        lines.extend(f"  {f.path_in_repo} ({_human(f.size)}, sha256 {f.sha256[:12]})" for f in c)
    return lines


def _hub_error(exc: BaseException, repo_id: str) -> PushError:
    """One line for what went wrong talking to the Hub; never the token (the Hub's messages carry none)."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError)

    if isinstance(exc, OfflineModeIsEnabled):
        return PushError("cannot push: HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) is set; unset it to publish")
    if isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
        return PushError(f"{repo_id}: repository not found or not writable with this token")
    if isinstance(exc, HfHubHTTPError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PushError(f"{repo_id}: the Hub refused the request: {first}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PushError(f"cannot reach the Hugging Face Hub ({type(exc).__name__}: {first}); check the network")


class _Placed:
    """The build's files at their places in the repo (`repocard.repo_path`), and the repo card merged with
    the card the repo holds (written to a temporary file, so it is hashed and sent like any other file)."""

    def __init__(self, out: Path, files: list[LocalFile], config: str | None, tmp: Path):
        self.manifest = load_manifest(out / MANIFEST_FILE)
        try:
            self.identity = json.loads((out / BUILD_FILE).read_text()) if (out / BUILD_FILE).is_file() else None
        except ValueError as exc:
            raise PushError(f"{out / BUILD_FILE}: not valid JSON ({exc})", usage=True) from None
        self.name = config or config_name(self.manifest)
        if why := check_config(self.name):
            raise PushError(why, usage=True)
        split = self.manifest["split"]
        self.files = [dataclasses.replace(f, path_in_repo=repo_path(f.path_in_repo, self.name, split))
                      for f in files if f.path_in_repo != CARD_FILE]
        self.card = tmp / CARD_FILE

    def with_card(self, old_card: str | None) -> list[LocalFile]:
        self.card.write_text(merge_card(old_card, self.manifest, self.identity, self.name), encoding="utf-8")
        return [*self.files, LocalFile(CARD_FILE, self.card, *hash_file(self.card))]


def _remote_card(repo_id: str, revision: str | None, token: str) -> str:
    """The README.md the repo holds now (the caller knows it exists)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    response = get_session().get(hf_hub_url(repo_id, CARD_FILE, repo_type="dataset", revision=revision),
                                 headers=build_hf_headers(token=token), follow_redirects=True)
    hf_raise_for_status(response)
    return response.content.decode("utf-8", errors="replace")


def push(out: Path, repo_id: str, *, include: tuple[str, ...] = DEFAULT_INCLUDE, private: bool = False,
         revision: str | None = None, dry_run: bool = False, max_files: int = DEFAULT_MAX_FILES,
         max_bytes: int = DEFAULT_MAX_BYTES, echo: Callable[[str], None] = print, api=None,
         config: str | None = None) -> dict:
    """Publish `out` to the dataset repo `repo_id` as config `config` (default: task and length bin, see
    `repocard`); returns {"committed": [paths], "skipped": [paths], "commits": n}.

    `dry_run` prints the plan for an empty repo and touches no network (not even the token lookup).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"--repo-id: {exc}".splitlines()[0], usage=True) from None
    if "/" not in repo_id:
        raise PushError(f"--repo-id: expected ORG/NAME, got {repo_id!r}", usage=True)
    with tempfile.TemporaryDirectory(prefix="v2pe-push-") as tmp:
        try:
            placed = _Placed(Path(out), local_files(Path(out), include), config, Path(tmp))
        except OSError as exc:
            raise PushError(f"cannot read {exc.filename or out}: {exc.strerror or exc}") from None
        return _push(placed, repo_id, private=private, revision=revision, dry_run=dry_run, max_files=max_files,
                     max_bytes=max_bytes, echo=echo, api=api, out=out)


def _push(placed: _Placed, repo_id: str, *, private: bool, revision: str | None, dry_run: bool, max_files: int,
          max_bytes: int, echo: Callable[[str], None], api, out) -> dict:
    if dry_run:
        files = placed.with_card(None)
        plan = chunk(files, max_files, max_bytes)
        for line in [f"dry run: would push {out} to datasets/{repo_id} as config {placed.name}, split "
                     f"{placed.manifest['split']}" + (f" (revision {revision})" if revision else "")
                     + (" as a private repo" if private else "")
                     + f"; {CARD_FILE} is merged with the repo's card when pushed",
                     *describe_plan(plan, 0)]:
            echo(line)
        return {"committed": [], "skipped": [], "commits": 0, "plan": [[f.path_in_repo for f in c] for c in plan]}

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token

    if constants.is_offline_mode():
        raise _hub_error(_offline(), repo_id)
    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        remote = {getattr(e, "path", None): e for e in
                  api.list_repo_tree(repo_id, recursive=True, expand=True, revision=revision, repo_type="dataset")}
        files = placed.with_card(_remote_card(repo_id, revision, token) if CARD_FILE in remote else None)
        todo = [f for f in files if not already_there(remote.get(f.path_in_repo), f)]
        skipped = [f.path_in_repo for f in files if f not in todo]
        stale = stale_paths(remote, placed.name, placed.manifest["split"], [f.path_in_repo for f in files])
        plan = chunk(todo, max_files, max_bytes) if todo else ([[]] if stale else [])
        for line in describe_plan(plan, len(skipped)):
            echo(line)
        if stale:
            echo(f"deleting {len(stale)} file(s) of {placed.name}/{placed.manifest['split']} this build does not "
                 "hold (an earlier push's), with the last commit")
        committed = []
        for i, c in enumerate(plan, 1):
            ops = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in c]
            if i == len(plan):  # with the card and manifest: the split changes build in one commit
                ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
            api.create_commit(repo_id, repo_type="dataset", revision=revision, operations=ops,
                              commit_message=f"v2pe push: part {i}/{len(plan)} ({len(c)} files)")
            committed.extend(f.path_in_repo for f in c)
            echo(f"committed {i}/{len(plan)}")
    except PushError:
        raise
    except OSError as exc:  # ConnectionError (offline mode, no network) and local read errors alike
        if exc.filename:
            raise PushError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
        raise _hub_error(exc, repo_id) from None
    except ValueError as exc:  # how huggingface_hub reports a card whose metadata the Hub rejects
        raise PushError(f"{repo_id}: the Hub rejected the commit: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # httpx transport errors and the Hub's HTTP errors
        if type(exc).__module__.split(".")[0] not in ("huggingface_hub", "httpx", "httpx2", "httpcore"):
            raise
        raise _hub_error(exc, repo_id) from None
    return {"committed": committed, "skipped": skipped, "commits": len(plan), "deleted": stale}


def _offline():
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("offline mode is enabled")


def use_timeout(seconds: float) -> None:
    """Give every Hub request a timeout (huggingface_hub's default client waits forever on a silent network).

    This swaps huggingface_hub's process-wide HTTP client, so only the CLI calls it: the process is its own.
    """
    from huggingface_hub.utils import _http, set_client_factory

    # Wrap the factory in place rather than the default one: a client configured before (a proxy, a
    # test's transport) keeps its settings and only gains the timeout.
    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def factory():
        client = previous()
        client.timeout = seconds
        return client

    set_client_factory(factory)
