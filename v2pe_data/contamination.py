"""`v2pe-data contamination BUILD --against PATH...`: what a build shares with evaluation data or other builds.

Each side is read as entries, one per sample: its images' sha256 (exact bytes) and its question and answer,
normalised (lowercase; placeholders `<image>`, `{image#k}`, `{table#k}`, `<Image k>` removed; every run of
characters that are not letters or digits one space). Two kinds of overlap are reported:

- **image**: a sha256 that both sides hold (a page of a DocVQA-built sample reused in an MM-NIAH haystack);
- **text**: equal normalised answers whose questions are equal, or where one question holds the other as whole
  words and the shorter has at least `MIN_WORDS` words (a build's prompt wraps the benchmark's question in its
  own context and instructions).

Readers: our build folders (`manifest.json`, tar shards: the human turns, `answer`), MM-NIAH folders
(`annotations/*.jsonl` + `images/`: `question`, `answer`, `images_list` and choice images) and MileBench folders
(`<Task>/<Task>.json` + `images/`: the context, `response`, `images_path`). An image that is missing, or whose
path leaves its root (never opened), or a row that is not an object is skipped and listed (`skipped`), so the
rest of the input is still compared; text that is not UTF-8 is read with replacement characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common import schema
from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.formats import BadMember, ShardReadError, read_records, wds
from v2pe_common.paths import PathEscape, resolve_inside

from .errors import V2PEDataError

MIN_WORDS = 4
_PLACEHOLDER = re.compile(r"<image>|\{(?:image|table)#\d+\}|<Image \d+>")
_NON_WORD = re.compile(r"[^0-9a-z]+")


class ContaminationError(V2PEDataError, ValueError):
    """An input that cannot be read as a build, an MM-NIAH folder or a MileBench folder."""


def normalise(text) -> str:
    return " ".join(_NON_WORD.sub(" ", _PLACEHOLDER.sub(" ", str(text)).lower()).split())


@dataclass
class Entry:
    where: str  # input-relative location: shard:key, file:line, task:sample_id
    images: list[str] = field(default_factory=list)  # sha256 of each image's bytes
    question: str = ""
    answer: str = ""
    skipped: list[str] = field(default_factory=list)  # why an image or the row could not be read


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kind_of(path: Path) -> str:
    if (path / MANIFEST_FILE).is_file():
        return "build"
    if (path / "annotations").is_dir():
        return "mmniah"
    if path.is_dir() and any(p.is_dir() and (p / f"{p.name}.json").is_file() for p in path.iterdir()):
        return "milebench"
    raise ContaminationError(f"{path}: neither a build (manifest.json), an MM-NIAH folder (annotations/) nor a "
                             "MileBench folder (<Task>/<Task>.json)")


def entries(path: str | Path) -> Iterator[Entry]:
    path = Path(path)
    if not path.is_dir():
        raise ContaminationError(f"{path}: not a folder")
    yield from {"build": _build, "mmniah": _mmniah, "milebench": _milebench}[kind_of(path)](path)


def _build(path: Path) -> Iterator[Entry]:
    try:
        manifest = schema.load_manifest(path / MANIFEST_FILE)
    except ValueError as exc:
        raise ContaminationError(str(exc)) from None
    for shard in manifest["shards"]:
        if shard["format"] != "wds":
            continue
        try:
            for key, record, images in read_records(wds.iter_samples(path / shard["path"])):
                if record is None:
                    continue
                human = [t.get("value", "") for t in record.get("conversations", []) if t.get("from") == "human"]
                yield Entry(f"{shard['path']}:{key}", [_sha(images[n]) for n in record.get("images", []) if n in images],
                            normalise(" ".join(human)), normalise(record.get("answer", "")))
        except (ShardReadError, BadMember, OSError) as exc:
            raise ContaminationError(f"{path / shard['path']}: unreadable shard: {exc}") from None


def _hashes(root: Path, paths: list, entry: Entry) -> Entry:
    for rel in paths:
        try:
            entry.images.append(_sha(resolve_inside(root, str(rel)).read_bytes()))
        except (PathEscape, ValueError, OSError) as exc:
            entry.skipped.append(f"{entry.where}: image {rel!r}: {exc}")
    return entry


def _mmniah(path: Path) -> Iterator[Entry]:
    root = (path / "images").resolve()
    for file in sorted((path / "annotations").glob("*.jsonl")):
        with open(file, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{file.name}:{lineno}"
                try:
                    line = json.loads(raw.decode("utf-8", errors="replace"))
                    meta = line.get("meta") or {}
                    paths = list(line.get("images_list") or []) + list(meta.get("choices_image_path") or [])
                    answer = line["answer"]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    yield Entry(where, skipped=[f"{where}: not an MM-NIAH line: {exc}"])
                    continue
                entry = Entry(where, question=normalise(line.get("question", "")),
                              answer=normalise(json.dumps(answer) if isinstance(answer, list) else answer))
                yield _hashes(root, paths, entry)


def _milebench(path: Path) -> Iterator[Entry]:
    for task in sorted(p for p in path.iterdir() if p.is_dir() and (p / f"{p.name}.json").is_file()):
        file = task / f"{task.name}.json"
        try:
            rows = json.loads(file.read_text(encoding="utf-8", errors="replace"))["data"]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ContaminationError(f"{file}: not a MileBench task file: {exc}") from None
        if not isinstance(rows, list):
            raise ContaminationError(f"{file}: not a MileBench task file: data is {type(rows).__name__}, not a list")
        root = (task / "images").resolve()
        for i, row in enumerate(rows):
            where = f"{task.name}/{task.name}.json data[{i}]"
            try:
                inst = row["task_instance"]
                paths, context = list(inst.get("images_path") or []), inst.get("context", "")
                answer = row.get("response", "")
            except (KeyError, TypeError, AttributeError) as exc:
                yield Entry(where, skipped=[f"{where}: not a MileBench row: {exc}"])
                continue
            yield _hashes(root, paths, Entry(where, question=normalise(context), answer=normalise(answer)))


def _contains(longer: str, shorter: str) -> bool:
    return f" {shorter} " in f" {longer} "


def _text_match(a: Entry, b: Entry) -> bool:
    if not a.answer or a.answer != b.answer or not a.question or not b.question:
        return False
    short, long_ = sorted((a.question, b.question), key=len)
    return short == long_ or (len(short.split()) >= MIN_WORDS and _contains(long_, short))


def compare(build: str | Path, against: list[str | Path], examples: int = 5) -> dict:
    """{"build": ..., "against": [{path, kind, entries, image_overlap, text_overlap, examples}]} where the
    overlaps count the build's samples sharing an image / a question and answer with that input."""
    mine = list(entries(build))
    by_image: dict[str, list[int]] = defaultdict(list)
    by_answer: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(mine):
        for h in set(e.images):
            by_image[h].append(i)
        by_answer[e.answer].append(i)
    report = {"build": str(build), "samples": len(mine), "against": []}
    for other_path in against:
        image_hits: dict[int, str] = {}
        text_hits: dict[int, str] = {}
        skipped: list[str] = []
        n = 0
        for other in entries(other_path):
            n += 1
            skipped.extend(other.skipped)
            for h in set(other.images):
                for i in by_image.get(h, ()):
                    image_hits.setdefault(i, other.where)
            for i in by_answer.get(other.answer, ()):
                if i not in text_hits and _text_match(mine[i], other):
                    text_hits[i] = other.where
        report["against"].append({
            "path": str(other_path), "kind": kind_of(Path(other_path)), "entries": n,
            "image_overlap": len(image_hits), "text_overlap": len(text_hits), "skipped": len(skipped),
            "skipped_examples": skipped[:examples],
            "examples": {"image": [[mine[i].where, w] for i, w in sorted(image_hits.items())[:examples]],
                         "text": [[mine[i].where, w] for i, w in sorted(text_hits.items())[:examples]]},
        })
    return report


def table(report: dict) -> str:
    lines = [f"{report['build']}: {report['samples']} samples",
             "| against | kind | entries | samples sharing an image | samples sharing a question + answer |",
             "| --- | --- | ---: | ---: | ---: |"]
    for a in report["against"]:
        lines.append(f"| {a['path']} | {a['kind']} | {a['entries']} | {a['image_overlap']} | {a['text_overlap']} |")
    for a in report["against"]:
        if a["skipped"]:
            lines.append(f"{a['path']}: {a['skipped']} image(s) or row(s) could not be read, e.g. "
                         + "; ".join(a["skipped_examples"]))
        for kind in ("image", "text"):
            for mine, theirs in a["examples"][kind]:
                lines.append(f"{kind} overlap: {mine} ~ {a['path']}: {theirs}")
    return "\n".join(lines)
