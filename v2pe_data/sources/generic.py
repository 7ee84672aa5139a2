"""Any local VQA set with one image per question: JSONL, parquet, a `datasets` imagefolder or save_to_disk.

`columns` maps our fields to the set's column names; defaults in brackets:

    question [question]   answers [answers] (a list of str or one str)   image [image; imagefolder: file_name]
    id [the row number]   doc_id [the image's path under the root, or its content hash]
    question_type [none]  split [none: the split comes from file or folder names]

Layouts, for split SPLIT (`val` also matches `validation`, `valid`, `dev`):

* JSONL: `ROOT/SPLIT.jsonl`, `ROOT/SPLIT-*.jsonl` (or under `ROOT/data/`), or ROOT itself a `.jsonl` file
  named after its split. One JSON object a line; the image is a path relative to the file's folder (or
  to ROOT), or an object {"path": ...}. A line that is not a JSON object is `bad_type`; a line holding a
  byte that is not UTF-8 is `bad_encoding`, located `FILE:LINE` (the other lines are kept).
* parquet / save_to_disk: as for the Hugging Face layouts (`ROOT/data/SPLIT-*.parquet`, ...); the image
  column may be a `datasets.Image` struct, raw bytes, or a path.
* imagefolder (as `datasets`' imagefolder builder reads it): `ROOT/SPLIT/metadata.jsonl`, each line with
  `file_name` (the image path relative to that folder) and the other columns.
* With a `split` column mapped, a single file (or every `*.jsonl` / `*.parquet` directly in ROOT, or
  ROOT/metadata.jsonl) holds all splits and rows are filtered by it (others counted in
  `rows_other_split`; a row without a split value is `missing_field`).

The source root, against which every image path must stay, is ROOT (the folder of ROOT when it is a file).
"""

from __future__ import annotations

from pathlib import Path

from .base import (DEFAULT_MAX_PIXELS, OnDisk, RealSource, Reject, Row, SourceError, image_from_cell,
                   need_answers, need_id, need_str, opt_id, opt_label, resolve_under, same_split, split_aliases, tagged)
from .layouts import Tables, tables_of, find_tables, image_locator, iter_rows, load_hub, row_where
from .text import jsonl_rows, need_text

KEYS = ("question", "answers", "image", "id", "doc_id", "question_type", "split")
REQUIRED = ("question", "answers", "image")


def _columns(columns: dict | None, imagefolder: bool) -> dict:
    if columns is not None and not isinstance(columns, dict):
        raise SourceError(f"generic: columns must be a mapping of {list(KEYS)} to column names, got {columns!r}")
    unknown = sorted(set(columns or {}) - set(KEYS))
    if unknown:
        raise SourceError(f"generic: unknown column mapping key {unknown[0]!r}; known keys: {list(KEYS)}")
    out = {"question": "question", "answers": "answers", "image": "file_name" if imagefolder else "image"}
    for key, value in (columns or {}).items():
        if not isinstance(value, str) or not value:
            raise SourceError(f"generic: columns.{key} must be a column name, got {value!r}")
        out[key] = value
    return out


def _split_named(path: Path, split: str) -> bool:
    stem = path.name.split(".")[0]
    return any(stem == a or stem.startswith(f"{a}-") for a in split_aliases(split))


def _find(root: Path, split: str, split_col: str | None, config: str | None):
    """-> (layout, jsonl files | Tables); raises SourceError if nothing fits."""
    aliases = split_aliases(split)
    if root.is_file():
        if split_col is None and not _split_named(root, split):
            raise SourceError(f"generic: cannot tell that {root} holds split {split!r}: name it {split}.jsonl / "
                              f"{split}-00000-of-00001.parquet, or map a 'split' column")
        if root.suffix == ".jsonl":
            return "jsonl", [root]
        if root.suffix == ".parquet":
            return "parquet", tables_of("parquet", "parquet", [root], split)
        raise SourceError(f"generic: {root}: expected a .jsonl or .parquet file, or a folder")
    if split_col is not None:
        for d in (root, root / "data"):
            if (d / "metadata.jsonl").is_file():
                return "imagefolder", [d / "metadata.jsonl"]
            if sorted(d.glob("*.jsonl")):
                return "jsonl", sorted(d.glob("*.jsonl"))
            if sorted(d.glob("*.parquet")):
                return "parquet", tables_of("parquet", "parquet", sorted(d.glob("*.parquet")), split)
    for alias in aliases:
        if (root / alias / "metadata.jsonl").is_file():
            return "imagefolder", [root / alias / "metadata.jsonl"]
    if (root / "metadata.jsonl").is_file() and root.name in aliases:
        return "imagefolder", [root / "metadata.jsonl"]
    for d in (root, root / "data"):
        for alias in aliases:
            files = ([d / f"{alias}.jsonl"] if (d / f"{alias}.jsonl").is_file() else []) + sorted(
                d.glob(f"{alias}-*.jsonl"))
            if files:
                return "jsonl", files
    tables = find_tables(root, split, config, "generic")
    if tables is not None:
        return tables.layout, tables
    raise SourceError(f"generic: no {split!r} split under {root}: looked for SPLIT/metadata.jsonl (imagefolder), "
                      f"SPLIT.jsonl, SPLIT-*.jsonl, SPLIT-*.parquet and save_to_disk folders")


def open_generic(path: str, split: str, *, columns: dict | None = None, name: str | None = None,
                 strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 config: str | None = None) -> RealSource:
    name = name or "generic"
    cols = _columns(columns, imagefolder=False)  # checks the mapping before anything is read
    if path.startswith("hub:"):
        layout, found = "hub", load_hub(path, split, config, name)
        root = found.files[0].parent
    else:
        target = Path(path).expanduser().resolve()
        if not target.exists():
            raise SourceError(f"{name}: no such file or folder: {target}")
        split_col = (columns or {}).get("split")
        layout, found = _find(target, split, split_col, config)
        cols = _columns(columns, imagefolder=layout == "imagefolder")
        root = target.parent if target.is_file() else target
    details = {"columns": cols}
    if isinstance(found, Tables):
        details.update(found.describe())
        missing = [cols[k] for k in REQUIRED if cols[k] not in found.columns]
        if missing:
            raise SourceError(f"{name}: {path} ({found.layout}) lacks columns {missing}; it has {list(found.columns)}")
    else:
        details["files"] = [str(f) for f in found]
    src = RealSource(name=name, kind="generic", path=path, split=split, layout=layout, strict=strict,
                     max_pixels=max_pixels, details=details)

    def parse(row: dict, rownum: int, image) -> Row:
        rid = need_id(row, cols["id"]) if "id" in cols else str(rownum)
        with tagged(rid):
            need_text(row)
            question = need_str(row, cols["question"])
            answers = need_answers(row, cols["answers"], allow_str=True)
            img = image(row)
            if "doc_id" in cols:
                doc = need_id(row, cols["doc_id"])
            elif isinstance(img, OnDisk):
                doc = img.path.relative_to(root.resolve()).as_posix()
            else:
                doc = None  # the content hash
            qtype = opt_label(row.get(cols["question_type"])) if "question_type" in cols else ""
            return Row(rid, question, answers, img, doc, qtype)

    def in_split(row: dict, rownum: int, where: str) -> bool:
        if "split" not in cols:
            return True
        value = row.get(cols["split"])
        if isinstance(value, str) and value.strip():
            if same_split(value, split):
                return True
            src.rows_other_split += 1
            return False
        rid = (opt_id(row, cols["id"]) if "id" in cols else None) or str(rownum)
        src.fail(rownum, Reject("missing_field", f"split column {cols['split']!r} is {value!r}", id=rid), where)
        return False

    if isinstance(found, Tables):
        for rownum, row, loc in iter_rows(found, list(cols.values())):
            if isinstance(row, Reject):
                src.fail(rownum, row, row_where(loc))
                continue
            if not in_split(row, rownum, row_where(loc)):
                continue

            def image(r, loc=loc):
                return image_from_cell(r.get(cols["image"]), image_locator(loc, cols["image"]), root,
                                       [Path(loc[1]).parent, root])
            src.consider(rownum, lambda: parse(row, rownum, image), where=row_where(loc))
        return src.finish()

    rownum = 0
    for jsonl in found:
        shown = jsonl.relative_to(root).as_posix() if jsonl.is_relative_to(root) else jsonl.name
        for row, lineno in jsonl_rows(jsonl):
            where = f"{shown}:{lineno}"
            if isinstance(row, Reject):
                src.fail(rownum, row, where)
                rownum += 1
                continue
            if in_split(row, rownum, where):
                def image(r, folder=jsonl.parent):
                    value = r.get(cols["image"])
                    if isinstance(value, dict):
                        value = value.get("path")
                    if value is None:
                        raise Reject("missing_image", f"{cols['image']} is missing" if cols["image"] not in r
                                     else f"{cols['image']} is null")
                    return resolve_under(root, value, [folder, root])
                src.consider(rownum, lambda: parse(row, rownum, image), where=where)
            rownum += 1
    return src.finish()
