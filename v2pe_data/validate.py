"""Check a build folder: manifest schema, shard hashes, every record's schema and invariants, its images."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from v2pe_common import encoding, schema
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import BUNDLED, load_tokenizer

from .build import MANIFEST_FILE
from .writers.atomic import file_digest


class ValidationError(ValueError):
    pass


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict, dict[str, bytes]]]:
    """(key, record, {member suffix: bytes}) per sample, streaming one sample at a time."""
    key, record, members = None, None, {}
    with tarfile.open(path, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            k, _, suffix = info.name.partition(".")
            if k != key:
                if key is not None:
                    yield key, record, members
                key, record, members = k, None, {}
            data = tar.extractfile(info).read()
            if suffix == "json":
                record = json.loads(data)
            else:
                members[suffix] = data
    if key is not None:
        yield key, record, members


def _tokenizer_for(manifest: dict, tokenizer_path: str | None):
    name = manifest["tokenizer"]["name"]
    path = tokenizer_path or (BUNDLED if name == BUNDLED else name)
    try:
        tok = load_tokenizer(path)
    except ValueError:
        return None
    return tok if tok.sha256 == manifest["tokenizer"]["sha256"] else None


def validate_build(out: str | Path, tokenizer_path: str | None = None, check_images: bool = True) -> dict:
    """Raise ValidationError naming the first problem; return a summary when everything holds."""
    from PIL import Image

    out = Path(out)
    mpath = out / MANIFEST_FILE
    if not mpath.is_file():
        raise ValidationError(f"{mpath}: missing (an unfinished build? rerun the same build command)")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as exc:
        raise ValidationError(f"{mpath}: not valid JSON: {exc}") from None
    try:
        schema.validate(manifest, schema.MANIFEST, where=str(mpath))
    except schema.SchemaError as exc:
        raise ValidationError(str(exc)) from None
    tok = _tokenizer_for(manifest, tokenizer_path)
    template = get_template(manifest["template"])
    tiling = TilingConfig(**manifest["tiling"])
    seen_ids: set[str] = set()
    samples = recounted = 0
    for shard in manifest["shards"]:
        path = out / shard["path"]
        if not path.is_file():
            raise ValidationError(f"{path}: listed in the manifest but missing")
        size, digest = file_digest(path)
        if (size, digest) != (shard["bytes"], shard["sha256"]):
            raise ValidationError(f"{path}: bytes/sha256 differ from the manifest (corrupt or replaced shard)")
        count = 0
        for key, record, members in iter_tar_samples(path):
            where = f"{path.name}:{key}"
            if record is None:
                raise ValidationError(f"{where}: no {key}.json member")
            try:
                schema.validate(record, schema.SAMPLE, where=where)
                schema.check_counts(record)
            except schema.SchemaError as exc:
                raise ValidationError(str(exc)) from None
            if record["id"] != key:
                raise ValidationError(f"{where}: $.id {record['id']!r} differs from the tar key")
            if record["id"] in seen_ids:
                raise ValidationError(f"{where}: duplicate sample id")
            seen_ids.add(record["id"])
            split = manifest.get("split", manifest["args"].get("split"))
            crossed = [s for s in record["meta"]["sources"] + record["meta"].get("pasted", []) if s["split"] != split]
            if crossed:
                raise ValidationError(f"{where}: item {crossed[0]['id']!r} comes from split {crossed[0]['split']!r}, "
                                      f"the build is {split!r}")
            if sorted(members) != sorted(record["images"]):
                raise ValidationError(f"{where}: image members {sorted(members)} != $.images {record['images']}")
            if check_images:
                for name, wh in zip(record["images"], record["meta"]["image_sizes"]):
                    try:
                        with Image.open(io.BytesIO(members[name])) as im:
                            got = list(im.size)
                    except Exception as exc:
                        raise ValidationError(f"{where}: image {name} does not decode: {exc}") from None
                    if got != wh:
                        raise ValidationError(f"{where}: image {name} is {got}, $.meta.image_sizes says {wh}")
            if tok is not None:
                counted = encoding.count(record["conversations"], record["meta"]["tiles"], tok, template, tiling)
                if counted.total != record["meta"]["num_tokens"]:
                    raise ValidationError(
                        f"{where}: $.meta.num_tokens {record['meta']['num_tokens']} but the tokenizer counts {counted.total}"
                    )
                recounted += 1
            count += 1
        if count != shard["num_samples"]:
            raise ValidationError(f"{path}: {count} samples, the manifest says {shard['num_samples']}")
        samples += count
    if samples != manifest["num_samples"]:
        raise ValidationError(f"{out}: {samples} samples in shards, the manifest says {manifest['num_samples']}")
    return {"samples": samples, "shards": len(manifest["shards"]), "recounted": recounted,
            "tokens": manifest["token_stats"]}
