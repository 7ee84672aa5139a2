"""The card of a Hub repo that holds several builds: `v2pe-data push OUT --config NAME`.

Each push puts its build under `NAME/` in the repo (`repo_path`): the parquet shards as
`NAME/<split>-NNNNNN.parquet`, everything else (build.json, manifest.json, other layouts) under
`NAME/<split>/`. A config is one task and length bin (default `card.config_name`, e.g. `long_vqa_64k`) and
its splits are the builds' `--split`s, so a train build and a val build pushed under one config are two
splits of it, and a 32K and a 64K build are two configs.

The repo's README.md is merged, never overwritten (`merge_card`): its YAML `configs:` and `dataset_info`
keep every other config's and split's entry and gain or replace this build's; its body keeps one section per
(config, split), between `<!-- v2pe:begin NAME/SPLIT ... -->` and `<!-- v2pe:end NAME/SPLIT -->` markers,
and cites the union of what the sections cite. Text of the card outside v2pe's markers (its owner's) is kept,
above v2pe's part; a card pushed by v2pe before configs existed has no markers and is kept whole that way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

import yaml

from .card import CARD_FILE, card_body, card_metadata, config_name, hf_split, size_category
from .citations import citation_block, cite_keys
from .errors import V2PEDataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_SECTION = re.compile(r"<!-- v2pe:begin (\S+) cite=(\S*) -->\n(.*?)<!-- v2pe:end \1 -->\n", re.DOTALL)
# What v2pe writes around the sections (the index table, the citations); anything else in a repo card's body is
# its owner's and is kept, above v2pe's part.
_GENERATED = re.compile(r"<!-- v2pe:(index|citations) -->\n.*?<!-- v2pe:\1 end -->\n", re.DOTALL)
LIST_KEYS = ("language", "task_categories", "tags")


class CardError(V2PEDataError):
    """The repo's card cannot be merged."""

    reason = "card"


def check_config(name: str) -> str | None:
    """Why `name` cannot name a config (and the repo folder holding it), or None."""
    if not _NAME.match(name) or name in ("README.md", "data"):
        return f"--config: {name!r} must be letters, digits, '_', '.', '-' (not README.md or data)"
    return None


def repo_path(rel: str, name: str, split: str) -> str:
    """Where the build file `rel` goes in the repo: `NAME/<file>` for a parquet shard, else `NAME/<split>/rel`."""
    parts = PurePosixPath(rel).parts
    if len(parts) == 2 and parts[0] == "parquet":
        return f"{name}/{parts[1]}"
    return f"{name}/{split}/{rel}"


def stale_paths(remote: Iterable[str], name: str, split: str, pushed: Iterable[str]) -> list[str]:
    """Files of config `name`, split `split` in the repo that this push does not hold: a build pushed again
    with fewer shards would otherwise leave old shards that `NAME/<split>-*.parquet` still matches."""
    keep = set(pushed)
    return sorted(p for p in remote if p and p not in keep and (
        (p.startswith(f"{name}/{split}-") and p.endswith(".parquet")) or p.startswith(f"{name}/{split}/")))


def split_card(text: str | None) -> tuple[dict, str]:
    """(YAML header, body) of a README.md; a card without a header is all body."""
    text = text.replace("\r\n", "\n") if text else text  # a card saved with Windows line ends
    if not text or not text.startswith("---\n"):
        return {}, text or ""
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        return {}, text
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as exc:
        raise CardError(f"the repo's {CARD_FILE} has a YAML header that cannot be read ({' '.join(str(exc).split())}); "
                        "fix or delete it, then push again") from None
    return (meta if isinstance(meta, dict) else {}), body


def _by_name(entries, key: str) -> dict:
    """{name: entry} of a card's `configs` or `dataset_info`: a list of entries, or one mapping (the usual form
    for one config); an entry without a name is Hugging Face's "default" config."""
    if isinstance(entries, dict):
        entries = [entries]
    named = [{**e, key: e.get(key) or "default"} for e in entries or [] if isinstance(e, dict)]
    return {e[key]: e for e in named}


def _data_files(value) -> list[dict]:
    """A config's `data_files` in the list-of-{split, path} form, from any form the Hub reads: a path or a list
    of paths (the train split), a {split: path(s)} mapping, or a list of entries (one without split: train)."""
    if isinstance(value, (str, list)) and not (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
        return [{"split": "train", "path": value}] if value else []
    if isinstance(value, dict):
        return [{"split": str(k), "path": v} for k, v in value.items()]
    return [{**v, "split": v.get("split") or "train"} for v in value or [] if isinstance(v, dict)]


def merge_metadata(old: dict, manifest: dict, name: str) -> dict:
    """The repo card's YAML: `old` with this build's config/split entry added or replaced, the rest kept."""
    new = card_metadata(manifest, name, data_dir=name)
    split = hf_split(manifest)
    meta = {k: v for k, v in old.items() if k not in ("configs", "dataset_info")}
    meta["license"] = new["license"] if old.get("license", new["license"]) == new["license"] else "other"
    for key in LIST_KEYS:
        meta[key] = list(dict.fromkeys([*(old.get(key) or []), *new[key]]))
    meta.setdefault("pretty_name", "v2pe long-context multimodal data")
    configs = _by_name(old.get("configs"), "config_name")
    entry = configs.setdefault(name, {"config_name": name, "data_files": []})
    files = [f for f in _data_files(entry.get("data_files")) if f["split"] != split]
    entry["data_files"] = sorted([*files, *new["configs"][0]["data_files"]], key=lambda f: f["split"])
    if not any(c.get("default") for c in configs.values()):
        entry["default"] = True
    infos = _by_name(old.get("dataset_info"), "config_name")
    info = infos.setdefault(name, new["dataset_info"])
    splits = {s.get("name") or "train": s for s in info.get("splits") or [] if isinstance(s, dict)}
    splits[split] = new["dataset_info"]["splits"][0]
    info.update(features=new["dataset_info"]["features"], splits=[splits[k] for k in sorted(splits)])
    info["download_size"] = info["dataset_size"] = sum(s.get("num_bytes", 0) for s in info["splits"])
    rows = sum(s.get("num_examples", 0) for i in infos.values() for s in i.get("splits") or [])
    meta["size_categories"] = [size_category(rows)]
    meta["configs"] = [configs[k] for k in sorted(configs)]
    meta["dataset_info"] = [infos[k] for k in sorted(infos)]
    return meta


def _demoted(lines: list[str]) -> list[str]:
    """Headings one level down (a build's card becomes a section of the repo's), code blocks untouched."""
    out, code = [], False
    for line in lines:
        if line.startswith("```"):
            code = not code
        out.append("#" + line if line.startswith("#") and not code else line)
    return out


def merge_card(old_text: str | None, manifest: dict, identity: dict | None, name: str | None = None) -> str:
    """The repo's README.md after pushing this build as config `name` (default `config_name`)."""
    name = name or config_name(manifest)
    old, body = split_card(old_text)
    try:
        meta = merge_metadata(old, manifest, name)
    except (TypeError, KeyError, AttributeError) as exc:  # the owner's YAML: any shape YAML can hold
        raise CardError(f"the repo's {CARD_FILE} has `configs` / `dataset_info` of a shape v2pe cannot merge "
                        f"({type(exc).__name__}: {exc}); fix or delete them, then push again") from None
    sections = {key: (cites.split(",") if cites else [], text) for key, cites, text in _SECTION.findall(body)}
    key = f"{name}/{manifest['split']}"
    own = "\n".join(_demoted(card_body(manifest, identity, name))).rstrip("\n") + "\n"
    sections[key] = (cite_keys(manifest), own)
    rows = [(c["config_name"], s["name"], s.get("num_examples", ""), s.get("num_bytes", ""))
            for c in meta["dataset_info"] for s in c.get("splits", [])]
    theirs = _GENERATED.sub("", _SECTION.sub("", body)).strip("\n")
    out = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           *([theirs, ""] if theirs else []),
           "<!-- v2pe:index -->", "# v2pe long-context multimodal data", "",
           "Each config is one task and length bin, each split one build (`v2pe-data push --config`):", "",
           "| config | split | samples | parquet bytes |", "|---|---|---|---|",
           *[f"| {c} | {s} | {n} | {b} |" for c, s, n, b in rows], "",
           "```python", "import datasets", "",
           f'ds = datasets.load_dataset("REPO_ID", "{rows[0][0]}", split="{rows[0][1]}")', "```", "",
           "A build's parquet shards are `CONFIG/SPLIT-*.parquet`; its `build.json`, `manifest.json` and any other "
           "layout pushed lie under `CONFIG/SPLIT/`.", "<!-- v2pe:index end -->", ""]
    for k in sorted(sections):
        cites, text = sections[k]
        out += [f"<!-- v2pe:begin {k} cite={','.join(cites)} -->", text.rstrip("\n"), f"<!-- v2pe:end {k} -->", ""]
    keys = sorted({c for cites, _ in sections.values() for c in cites})
    return "\n".join(out + ["<!-- v2pe:citations -->", *citation_block(keys), "<!-- v2pe:citations end -->", ""])
