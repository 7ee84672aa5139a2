"""Finding a split's rows in the Hugging Face layouts, and reading them in bounded batches.

Layouts recognised, tried in this order under the source root ROOT (and first under ROOT/CONFIG when a
config such as `DocVQA` or `InfographicVQA` is given):

* `save_to_disk` of a DatasetDict: `dataset_dict.json` listing the splits, one folder per split holding
  `state.json`, `dataset_info.json` and `data-XXXXX-of-NNNNN.arrow` (Arrow IPC streams, memory-mapped).
* `save_to_disk` of one Dataset: `state.json` at ROOT. Its split is `state.json`'s `_split`, or the folder
  name when the parent holds `dataset_dict.json`; a folder whose split cannot be told is refused, so a
  validation build never silently reads training rows.
* parquet as on the Hub: `{split}-*.parquet` or `{split}.parquet` in ROOT/CONFIG, ROOT/data or ROOT, or
  `{split}/*.parquet` (the Hub's parquet conversion). A single `.parquet` file is accepted when its name
  starts with the split (`validation-00000-of-00001.parquet`).
* `hub:OWNER/NAME`: `datasets.load_dataset` (network needed), then its Arrow cache files as above.

Split spellings are matched through `split_aliases` (`val` also finds `validation`, `valid`, `dev`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import HubUnavailable, Reject, SourceError, split_aliases

BATCH_ROWS = 32  # rows (with their image bytes) held at once during the index pass


@dataclass(frozen=True)
class Tables:
    """A split stored as Arrow tables: where the files are and how they are laid out."""

    layout: str  # "save_to_disk" | "parquet" | "hub"
    fmt: str  # "arrow" (IPC stream) | "parquet"
    files: tuple[Path, ...]
    split_name: str  # the split's name on disk
    columns: tuple[str, ...]
    features: dict = field(default_factory=dict)  # datasets' features JSON when known

    def describe(self) -> dict:
        return {"split_on_disk": self.split_name, "files": [str(f) for f in self.files]}


def _schema_of(fmt: str, path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.ParquetFile(path).schema_arrow
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_stream(source).schema


def _features_of(schema) -> dict:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        return json.loads(meta).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def tables_of(layout: str, fmt: str, files: Sequence[Path], split_name: str) -> Tables:
    schema = _schema_of(fmt, files[0])
    return Tables(layout, fmt, tuple(files), split_name, tuple(schema.names), _features_of(schema))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())  # bytes: JSON's own encoding rules, not the locale's
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: unreadable ({exc})") from None


def _saved_dataset(folder: Path, split_name: str, who: str) -> Tables:
    state = _read_json(folder / "state.json")
    names = [f.get("filename") for f in state.get("_data_files", []) if isinstance(f, dict)]
    files = [folder / n for n in names if n] or sorted(folder.glob("data-*.arrow"))
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise SourceError(f"{who}: {folder} is a save_to_disk folder without its Arrow files {missing or ''}")
    return tables_of("save_to_disk", "arrow", files, split_name)


def find_saved(root: Path, split: str, who: str) -> Tables | None:
    aliases = split_aliases(split)
    if (root / "dataset_dict.json").is_file():
        splits = _read_json(root / "dataset_dict.json").get("splits", [])
        for alias in aliases:
            if alias in splits:
                return _saved_dataset(root / alias, alias, who)
        raise SourceError(f"{who}: {root} (save_to_disk) has no split {split!r}; it holds {splits}")
    if (root / "state.json").is_file():
        state = _read_json(root / "state.json")
        on_disk = state.get("_split")
        parent = root.parent / "dataset_dict.json"
        if on_disk is None and parent.is_file() and root.name in _read_json(parent).get("splits", []):
            on_disk = root.name
        if on_disk is None:
            raise SourceError(
                f"{who}: cannot tell which split {root} holds (its state.json has no _split); save a DatasetDict "
                f"or give the folder of one split")
        if on_disk not in aliases:
            raise SourceError(f"{who}: {root} holds split {on_disk!r}, not {split!r}")
        return _saved_dataset(root, on_disk, who)
    return None


def _split_of_name(name: str) -> str:
    return name.split(".")[0].split("-")[0]


def find_parquet(root: Path, split: str, config: str | None, who: str) -> Tables | None:
    aliases = split_aliases(split)
    if root.is_file():
        if root.suffix != ".parquet":
            return None
        on_disk = _split_of_name(root.name)
        if on_disk not in aliases:
            raise SourceError(f"{who}: cannot read {root} as split {split!r}: parquet files are named "
                              f"SPLIT-XXXXX-of-NNNNN.parquet and this one names {on_disk!r}")
        return tables_of("parquet", "parquet", [root], on_disk)
    dirs = ([root / config] if config else []) + [root / "data", root]
    seen: list[str] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for alias in aliases:
            files = sorted(d.glob(f"{alias}-*.parquet"))
            files += [d / f"{alias}.parquet"] if (d / f"{alias}.parquet").is_file() else []
            files += sorted((d / alias).glob("*.parquet")) if (d / alias).is_dir() else []
            if files:
                return tables_of("parquet", "parquet", files, alias)
        seen += [str(p.relative_to(root)) for p in sorted(d.glob("*.parquet"))]
    if seen:
        raise SourceError(f"{who}: no parquet files for split {split!r} under {root}; found {sorted(set(seen))[:8]}")
    return None


def find_tables(root: Path, split: str, config: str | None, who: str) -> Tables | None:
    """The split's tables in a save_to_disk folder or Hub-style parquet files, or None if neither is there."""
    if root.is_dir():
        for base in ([root / config] if config else []) + [root]:
            if base.is_dir():
                found = find_saved(base, split, who)
                if found:
                    return found
    return find_parquet(root, split, config, who)


def load_hub(spec: str, split: str, config: str | None, who: str) -> Tables:
    """`hub:OWNER/NAME` -> the split downloaded with `datasets.load_dataset` (Arrow cache files)."""
    repo = spec[len("hub:"):].strip()
    if not repo:
        raise SourceError(f"{who}: empty Hub id in {spec!r}")
    import datasets

    errors = []
    for alias in split_aliases(split):
        try:
            ds = datasets.load_dataset(repo, config, split=alias)
        except ValueError as exc:  # unknown split name: try the next spelling
            if "split" in str(exc).lower():
                errors.append(str(exc))
                continue
            raise SourceError(f"{who}: cannot load {spec} (config {config!r}, split {alias!r}): {exc}") from None
        except Exception as exc:
            raise HubUnavailable(
                f"{who}: cannot load {spec} (config {config!r}) from the Hugging Face Hub: {type(exc).__name__}: "
                f"{exc}. Without a network, fetch it on a connected machine (its parquet files, or "
                f"datasets.load_dataset(...).save_to_disk(DIR)) and pass the local folder instead") from None
        files = [Path(f["filename"]) for f in ds.cache_files]
        if not files:
            raise SourceError(f"{who}: {spec} loaded in memory only; save_to_disk it and pass the folder")
        return tables_of("hub", "arrow", files, alias)
    raise SourceError(f"{who}: {spec} has no split {split!r}: {'; '.join(errors)[:400]}")


def _pylist(batch) -> list[dict | Reject]:
    """A batch's rows; a row whose string cell is not UTF-8 (Arrow does not check what other writers
    stored) comes as a Reject instead of failing the batch."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    rows: list[dict | Reject] = []
    for i in range(batch.num_rows):
        row: dict | Reject = {}
        for name in batch.column_names:
            try:
                row[name] = batch.column(name).slice(i, 1).to_pylist()[0]
            except UnicodeDecodeError as exc:
                byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
                row = Reject("bad_encoding", f"column {name} holds byte 0x{byte:02X}, which is not UTF-8")
                break
        rows.append(row)
    return rows


def row_where(prefix: tuple) -> str:
    """Where a row of a locator prefix is, for people: `FILE row N` (N counted in that file)."""
    if prefix[0] == "parquet":
        _, path, group, offset = prefix
        return f"{Path(path).name} row group {group} row {offset}"
    _, path, row = prefix
    return f"{Path(path).name} row {row}"


def iter_rows(tables: Tables, columns: Sequence[str]) -> Iterator[tuple[int, dict | Reject, tuple]]:
    """(row number, {column: value}, locator prefix) for every row, `BATCH_ROWS` rows in memory at a time;
    a row that cannot be read as text comes as a Reject (`bad_encoding`) in place of its dict.

    The locator prefix plus an image column name gives `read_bytes` what it needs to re-read the cell:
    ("arrow", file, COLUMN, row) or ("parquet", file, COLUMN, row_group, offset).
    """
    import pyarrow.parquet as pq

    from .imagebytes import arrow_table

    cols = [c for c in dict.fromkeys(columns) if c in tables.columns]
    rownum = 0
    for path in tables.files:
        if tables.fmt == "parquet":
            pf = pq.ParquetFile(path)
            for group in range(pf.metadata.num_row_groups):
                offset = 0
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=cols):
                    for row in _pylist(batch):
                        yield rownum, row, ("parquet", str(path), group, offset)
                        rownum += 1
                        offset += 1
        else:
            table = arrow_table(str(path)).select(cols)
            for start in range(0, table.num_rows, BATCH_ROWS):
                for i, row in enumerate(_pylist(table.slice(start, BATCH_ROWS))):
                    yield rownum, row, ("arrow", str(path), start + i)
                    rownum += 1


def image_locator(prefix: tuple, column: str) -> tuple:
    kind, path, *pos = prefix
    return (kind, path, column, *pos)


def require_columns(tables: Tables, needed: Sequence[str], who: str, root) -> None:
    missing = [c for c in needed if c not in tables.columns]
    if missing:
        raise SourceError(f"{who}: {root} ({tables.layout}, split {tables.split_name!r}) lacks columns {missing}; "
                          f"it has {list(tables.columns)}")
