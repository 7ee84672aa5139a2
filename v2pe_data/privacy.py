"""Local paths stay local: what a build publishes (build.json, manifest.json, the card) names sources, not folders.

A source path (`/home/ana/data/DocVQA`, `/mnt/lustre/obelics`) says who built where; it means nothing on the
Hub, and `push` publishes build.json and the manifest. So the build identity and everything derived from it
carry `local:NAME` (the source's name) in place of a local path, and file lists relative to the source's
root; Hub ids (`hub:ORG/NAME`) stay. The real paths are kept in `OUT/.v2pe/paths.json` (hidden: never
pushed), which `merge` and `validate` read to reopen the sources and the tokenizer. A recipe that wants
its paths published sets `publish_paths: true`.

The build identity no longer depends on where a source lies: the same data at another mount point is the
same build (the sources' file fingerprints, which are relative, still tell changed data apart).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from v2pe_common.buildfolder import PATHS_FILE
from v2pe_common.tokenizer import is_hub_id

PREFIX = "local:"


def _local(path) -> bool:
    return isinstance(path, str) and bool(path) and not path.startswith(("hub:", PREFIX))


def redact_args(args: dict) -> tuple[dict, dict]:
    """(the arguments with every local path replaced by `local:NAME`, {where: the real path}) for a build's
    identity arguments; `where` is 'sources.I', 'options.path', 'options.haystack' or 'tokenizer'."""
    public, private = copy.deepcopy(args), {}
    for i, entry in enumerate(public.get("sources") or []):
        if isinstance(entry, dict) and _local(entry.get("path")):
            private[f"sources.{i}"] = entry["path"]
            entry["path"] = PREFIX + str(entry.get("name") or entry.get("kind"))
    options = public.get("options")
    if isinstance(options, dict):
        if _local(options.get("path")):
            private["options.path"] = options["path"]
            options["path"] = PREFIX + str(public.get("task"))
        hay = options.get("haystack")
        if isinstance(hay, str) and "=" in hay and _local(hay.partition("=")[2].strip()):
            kind, _, path = hay.partition("=")
            private["options.haystack"] = path.strip()
            options["haystack"] = f"{kind.strip()}={PREFIX}{kind.strip()}"
        elif isinstance(hay, dict) and _local(hay.get("path")):
            private["options.haystack"] = hay["path"]
            hay["path"] = PREFIX + str(hay.get("name") or hay.get("kind"))
    tok = public.get("tokenizer")
    if _local(tok) and tok != "bundled" and not is_hub_id(tok):
        private["tokenizer"] = tok
        public["tokenizer"] = PREFIX + (Path(tok).name or "tokenizer")
    return public, private


def restore_args(args: dict, private: dict) -> dict:
    """The inverse of `redact_args`: `args` (from build.json) with the real paths put back."""
    out = copy.deepcopy(args)
    for where, path in (private or {}).items():
        head, _, rest = where.partition(".")
        if head == "sources":
            out["sources"][int(rest)]["path"] = path
        elif head == "tokenizer":
            out["tokenizer"] = path
        elif rest == "path":
            out["options"]["path"] = path
        else:
            hay = out["options"]["haystack"]
            if isinstance(hay, str):
                out["options"]["haystack"] = f"{hay.partition('=')[0]}={path}"
            else:
                hay["path"] = path
    return out


def public_path(path: str | None, name: str) -> str | None:
    """A source description's `path`, as published."""
    return PREFIX + name if _local(path) else path


def read_private(out: Path) -> dict:
    try:
        data = json.loads((Path(out) / PATHS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
