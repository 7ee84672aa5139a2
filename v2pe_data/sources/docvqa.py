"""DocVQA (single-page) and InfographicVQA, from the Hugging Face copy or the official release.

Hugging Face copy: `lmms-lab/DocVQA`, configs `DocVQA` and `InfographicVQA` (parquet at
`CONFIG/{split}-XXXXX-of-NNNNN.parquet`; splits `validation`, `test`, and `train` in some revisions), read
from a local copy of the repo (or of one config folder), from `save_to_disk` of `load_dataset(...)` (a
DatasetDict or one split), or with `hub:lmms-lab/DocVQA` (network needed).

* DocVQA columns: questionId (string), question, question_types (list), image (Image), docId (int64),
  ucsf_document_id, ucsf_document_page_no, answers (list; None on test), data_split.
* InfographicVQA columns: questionId (string), question, answers (list), answer_type (list), image (Image),
  image_url, operation/reasoning (list), ocr, data_split.

Official release (RRC "Document Visual Question Answering"), assumed layouts, all variants accepted:

* DocVQA: `{train,val,test}_v1.0[_withQT].json` anywhere up to two levels below the root (the current
  archive puts them in `spdocvqa_qas/`, the first release in `train/`, `val/`, `test/`), each
  `{"dataset_name", "dataset_split", "dataset_version", "data": [{"questionId" (int), "question",
  "question_types", "image": "documents/NAME.png", "docId", "ucsf_document_id", "ucsf_document_page_no",
  "answers", "data_split"}]}`. The image path is tried relative to the JSON's folder, its parent, the
  root and `spdocvqa_images/`, then by file name in `spdocvqa_images/`, `documents/` and `images/` (the
  images archive is found extracted both as `spdocvqa_images/NAME.png` and `spdocvqa_images/documents/`).
* InfographicVQA: `infographicsVQA_{train,val,test}_v1.0[_withQT].json` (any letter case; the release's
  train file is spelt `infographicVQA_train_v1.0.json`, also accepted) up to two levels below the root,
  `{"data": [{"questionId", "question", "image_local_name", "image_url", "answers", "answer_type",
  "operation/reasoning", ...}]}`; images by `image_local_name` in `infographicsvqa_images/`, `images/`,
  next to the JSON, or at the root.

Item fields: `id` = questionId; `doc_id` = docId for DocVQA (else ucsf_document_id + page, else the image
hash), image_url for InfographicVQA (else the image file name, else the image hash), so questions about
one image share a doc_id; `question_type` = question_types / answer_type joined with ','. Rows without
answers (the test split) are `missing_field`, whatever the split. A row of the official JSON holding a
byte that is not UTF-8 is `bad_encoding` (located `FILE data[I]`; the other rows are kept); JSON that does
not parse is a SourceError naming the file, line, column and byte offset.
"""

from __future__ import annotations

from pathlib import Path

from .base import (DEFAULT_MAX_PIXELS, RealSource, Reject, Row, SourceError, image_from_cell, need_answers,
                   need_id, need_str, opt_id, opt_label, resolve_under, split_aliases, tagged)
from .layouts import find_tables, image_locator, iter_rows, load_hub, require_columns, row_where
from .text import need_text, read_json

CONFIGS = {"docvqa": "DocVQA", "infovqa": "InfographicVQA"}
_COLUMNS = {
    "docvqa": ["questionId", "question", "answers", "image", "docId", "ucsf_document_id",
               "ucsf_document_page_no", "question_types"],
    "infovqa": ["questionId", "question", "answers", "image", "image_url", "answer_type"],
}
_REQUIRED = ["questionId", "question", "answers", "image"]


def _doc_id(row: dict, name: str) -> str | None:
    if name == "infovqa":
        return opt_id(row, "image_url") or opt_id(row, "image_local_name")
    doc = opt_id(row, "docId")
    if doc is None and opt_id(row, "ucsf_document_id"):
        doc = f"{row['ucsf_document_id']}_{opt_id(row, 'ucsf_document_page_no') or ''}"
    return doc


def _question_type(row: dict, name: str) -> str:
    return opt_label(row.get("answer_type" if name == "infovqa" else "question_types"))


def _parse(row, name: str, image) -> Row:
    if not isinstance(row, dict):
        raise Reject("bad_type", f"row is {type(row).__name__}, not an object")
    rid = need_id(row, "questionId")
    with tagged(rid):
        need_text(row)
        question = need_str(row, "question")
        answers = need_answers(row, "answers")
        return Row(rid, question, answers, image(row), _doc_id(row, name), _question_type(row, name))


# ------------------------------------------------------------------------------------------ official release


def _find_json(root: Path, name: str, split: str) -> Path | None:
    prefixes = ("infographicsvqa_", "infographicvqa_") if name == "infovqa" else ("",)
    found = []
    for depth in ("*.json", "*/*.json", "*/*/*.json"):
        for path in root.glob(depth):
            low = path.name.lower()
            for rank, alias in enumerate(split_aliases(split)):
                if any(low.startswith(f"{p}{alias.lower()}_v1.0") for p in prefixes):
                    found.append((rank, "withqt" not in low, len(path.parts), str(path)))
    return Path(min(found)[3]) if found else None


def _official(src: RealSource, root: Path, qas: Path, name: str) -> None:
    blob = read_json(qas, name)
    rows = blob.get("data") if isinstance(blob, dict) else None
    if not isinstance(rows, list):
        raise SourceError(f"{name}: {qas}: expected {{\"data\": [...]}}")
    here = qas.parent
    if name == "docvqa":
        key, bases = "image", [here, here.parent, root, root / "spdocvqa_images"]
        fallbacks = [root / "spdocvqa_images", root / "documents", root / "images", here / "documents"]
    else:
        key, bases = "image_local_name", [root / "infographicsvqa_images", root / "images", here, root]
        fallbacks = [root / "infographicsVQA_images"]

    def image(row: dict):
        value = row.get(key)
        if value is None:
            raise Reject("missing_image", f"{key} is missing" if key not in row else f"{key} is null")
        return resolve_under(root, value, bases, fallbacks)

    for rownum, row in enumerate(rows):
        src.consider(rownum, lambda: _parse(row, name, image), where=f"{qas.name} data[{rownum}]")


# ------------------------------------------------------------------------------------------ entry point


def open_docvqa(path: str, split: str, *, infographic: bool = False, strict: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS, config: str | None = None) -> RealSource:
    name = "infovqa" if infographic else "docvqa"
    config = config or CONFIGS[name]
    if path.startswith("hub:"):
        tables = load_hub(path, split, config, name)
        root = tables.files[0].parent
    else:
        root = Path(path).expanduser().resolve()
        if not root.exists():
            raise SourceError(f"{name}: no such file or folder: {root}")
        tables = find_tables(root, split, config, name)
    if tables is not None:
        require_columns(tables, _REQUIRED, name, path)
        src = RealSource(name=name, kind=name, path=path, split=split, layout=tables.layout, strict=strict,
                         max_pixels=max_pixels, details={"config": config, **tables.describe()})
        for rownum, row, loc in iter_rows(tables, _COLUMNS[name]):
            if isinstance(row, Reject):
                src.fail(rownum, row, row_where(loc))
                continue

            def image(r, loc=loc):
                return image_from_cell(r.get("image"), image_locator(loc, "image"), root)
            src.consider(rownum, lambda: _parse(row, name, image), where=row_where(loc))
        return src.finish()
    qas = _find_json(root, name, split) if root.is_dir() else None
    if qas is None:
        pattern = "infographicsVQA_SPLIT_v1.0*.json" if infographic else "SPLIT_v1.0*.json"
        raise SourceError(
            f"{name}: no {split!r} split under {root}: looked for a save_to_disk folder, parquet files "
            f"({config}/SPLIT-*.parquet, data/SPLIT-*.parquet) and the official {pattern}")
    src = RealSource(name=name, kind=name, path=path, split=split, layout="official", strict=strict,
                     max_pixels=max_pixels, details={"annotations": str(qas)})
    _official(src, root, qas, name)
    return src.finish()
