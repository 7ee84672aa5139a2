"""ChartQA, from either Hugging Face copy or the official release folder.

Hugging Face copies (parquet `data/{split}-*.parquet`, splits `train`, `val`, `test`; a local copy of the
repo, `save_to_disk` of `load_dataset(...)`, or `hub:ID` with a network):

* `HuggingFaceM4/ChartQA`: image (Image), query, label (list of str), human_or_machine (ClassLabel:
  0 = human, 1 = machine).
* `ahmed-masry/ChartQA`: imgname, query, label (str), type ("human" | "augmented"), image (binary: the
  encoded PNG bytes, not an Image struct).
* `lmms-lab/ChartQA` (test only) is read too: question, answer (str), type, image (Image).

Official release (`ChartQA Dataset.zip`, assumed layout): `ChartQA Dataset/{train,val,test}/` holding
`{split}_human.json` and `{split}_augmented.json` (each a list of `{"imgname", "query", "label"}`) and the
charts in `png/IMGNAME`; the root may be the folder above `ChartQA Dataset` or that folder itself. Human
rows are read before augmented ones.

Item fields: `doc_id` = imgname, or the image's content hash where the layout has no file name
(HuggingFaceM4), so the questions about one chart share it; `id` = `DOC_ID#K`, K counting that chart's
rows in file order (rejected rows included, so ids do not shift when a bad row is dropped); rows whose
image is absent are named `#ROW`. `question_type` = "human" / "augmented" / "machine" when the layout
says. `answers` = the label, one string or a list. A row of the official JSON holding a byte that is not
UTF-8 is `bad_encoding` (located `FILE[I]`; the other rows are kept); JSON that does not parse is a
SourceError naming the file, line, column and byte offset.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .base import (DEFAULT_MAX_PIXELS, Embedded, RealSource, Reject, Row, SourceError, content_doc_id,
                   image_from_cell, need_answers, need_str, resolve_under, split_aliases, tagged)
from .layouts import find_tables, image_locator, iter_rows, load_hub, row_where
from .text import need_text, read_json

NAME = "chartqa"
_OFFICIAL_KINDS = ("human", "augmented")


class _Ids:
    """`DOC_ID#K` ids: K counts rows seen per chart."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def next(self, doc_id: str) -> str:
        k = self.counts[doc_id]
        self.counts[doc_id] += 1
        return f"{doc_id}#{k}"


def _imgname(row: dict) -> str | None:
    value = row.get("imgname")
    if value is None:
        return None
    if not isinstance(value, str):
        raise Reject("bad_type", f"imgname is {type(value).__name__}, not str")
    if not value.strip():
        raise Reject("missing_field", "imgname is empty")
    return value


def _parse(row, ids: _Ids, qkey: str, akey: str, image, kind: str, by_name: bool = False) -> Row:
    if not isinstance(row, dict):
        raise Reject("bad_type", f"row is {type(row).__name__}, not an object")
    name = _imgname(row)
    img = None
    if name is None:  # no file name: the chart is named by its content, so its bytes are needed first
        if by_name:
            raise Reject("missing_field", "imgname is missing" if "imgname" not in row else "imgname is null")
        img = image(row)
        if not isinstance(img, Embedded):
            raise Reject("missing_field", "imgname is missing and the image is not embedded")
        name = content_doc_id(img.data)
    rid = ids.next(name)
    with tagged(rid):
        need_text(row)
        question = need_str(row, qkey)
        answers = need_answers(row, akey, allow_str=True)
        img = img or image(row)
        return Row(rid, question, answers, img, name, kind)


def _kind_of(row: dict, names: list[str]) -> str:
    value = row.get("type")
    if isinstance(value, str):
        return value
    value = row.get("human_or_machine")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return ""


def _official_dir(root: Path, split: str) -> Path | None:
    for base in (root / "ChartQA Dataset", root):
        for alias in split_aliases(split):
            d = base / alias
            if any((d / f"{alias}_{k}.json").is_file() for k in _OFFICIAL_KINDS):
                return d
    return None


def open_chartqa(path: str, split: str, *, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 config: str | None = None) -> RealSource:
    if path.startswith("hub:"):
        tables = load_hub(path, split, config, NAME)
        root = tables.files[0].parent
    else:
        root = Path(path).expanduser().resolve()
        if not root.exists():
            raise SourceError(f"{NAME}: no such file or folder: {root}")
        tables = find_tables(root, split, config, NAME)
    ids = _Ids()
    if tables is not None:
        cols = tables.columns
        qkey = "query" if "query" in cols else "question"
        akey = "label" if "label" in cols else "answer"
        missing = [c for c in ("image", qkey, akey) if c not in cols]
        if missing:
            raise SourceError(f"{NAME}: {path} ({tables.layout}) lacks columns {missing}; it has {list(cols)}")
        names = (tables.features.get("human_or_machine") or {}).get("names") or ["human", "machine"]
        src = RealSource(name=NAME, kind=NAME, path=path, split=split, layout=tables.layout, strict=strict,
                         max_pixels=max_pixels,
                         details={"variant": "imgname" if "imgname" in cols else "content-hash", **tables.describe()})
        for rownum, row, loc in iter_rows(tables, ["imgname", qkey, akey, "type", "human_or_machine", "image"]):
            if isinstance(row, Reject):
                src.fail(rownum, row, row_where(loc))
                continue

            def image(r, loc=loc):
                return image_from_cell(r.get("image"), image_locator(loc, "image"), root)
            src.consider(rownum, lambda: _parse(row, ids, qkey, akey, image, _kind_of(row, names)),
                         where=row_where(loc))
        return src.finish()
    folder = _official_dir(root, split) if root.is_dir() else None
    if folder is None:
        raise SourceError(
            f"{NAME}: no {split!r} split under {root}: looked for a save_to_disk folder, parquet files "
            f"(data/SPLIT-*.parquet) and the official 'ChartQA Dataset/SPLIT/SPLIT_human.json'")
    files = [folder / f"{folder.name}_{k}.json" for k in _OFFICIAL_KINDS]
    src = RealSource(name=NAME, kind=NAME, path=path, split=split, layout="official", strict=strict,
                     max_pixels=max_pixels, details={"annotations": [str(f) for f in files if f.is_file()]})
    rownum = 0
    for kind, qas in zip(_OFFICIAL_KINDS, files):
        if not qas.is_file():
            continue
        rows = read_json(qas, NAME)
        if not isinstance(rows, list):
            raise SourceError(f"{NAME}: {qas}: expected a list of {{imgname, query, label}}")

        def image(r):
            return resolve_under(root, r["imgname"], [folder / "png"])
        for i, row in enumerate(rows):
            src.consider(rownum, lambda: _parse(row, ids, "query", "label", image, kind, by_name=True),
                         where=f"{qas.name}[{i}]")
            rownum += 1
    return src.finish()
