"""JSON-Schema validation of sample records and manifests, with errors that name the field."""

from __future__ import annotations

import functools
import json
from importlib import resources

SAMPLE = "sample"
MANIFEST = "manifest"


class SchemaError(ValueError):
    """A record or manifest does not match its schema; the message names the field (JSON path)."""


@functools.lru_cache(maxsize=4)
def _validator(name: str):
    from jsonschema import Draft202012Validator

    text = resources.files("v2pe_common").joinpath("schemas", f"{name}.schema.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(obj: object, name: str = SAMPLE) -> list[str]:
    """All violations as 'path: message' strings, sorted by path; empty when valid."""
    out = []
    for err in _validator(name).iter_errors(obj):
        out.append(f"{err.json_path}: {err.message}")
    return sorted(out)


def validate(obj: object, name: str = SAMPLE, where: str = "") -> None:
    """Raise SchemaError naming the first offending field (and `where`, e.g. a shard and key)."""
    problems = errors(obj, name)
    if problems:
        prefix = f"{where}: " if where else ""
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SchemaError(f"{prefix}{name} record invalid at {problems[0]}{more}")


def check_counts(record: dict) -> None:
    """Cross-field invariants the schema language cannot state."""
    meta = record["meta"]
    rid = record.get("id", "?")
    if meta["num_tokens"] != meta["text_tokens"] + meta["image_tokens"]:
        raise SchemaError(f"{rid}: $.meta.num_tokens != text_tokens + image_tokens")
    n = len(record["images"])
    for key in ("tiles", "image_sizes", "sources"):
        if len(meta[key]) != n:
            raise SchemaError(f"{rid}: $.meta.{key} has {len(meta[key])} entries for {n} images")
    if not meta["min_len"] <= meta["num_tokens"] <= meta["target_len"]:
        raise SchemaError(
            f"{rid}: $.meta.num_tokens {meta['num_tokens']} outside its bin [{meta['min_len']}, {meta['target_len']}]"
        )


def load_manifest(path) -> dict:
    """Read and validate a build's manifest.json; ValueError naming the file (and field) otherwise."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: missing (not a v2pe-data build, or an unfinished one: rerun the same build)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    validate(manifest, MANIFEST, where=str(path))
    return manifest
