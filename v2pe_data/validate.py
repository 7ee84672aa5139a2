"""Check a build folder: manifest schema, shard hashes, every record's schema and invariants, its images.

The tars are read with the loader's own reader (`v2pe_common.formats.wds`); every other format is read
back through its registry entry (`writers.formats`) and must hold exactly the tars' records and image
bytes, or, for a format of its own lines (MM-NIAH), lines that meet its invariants.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from v2pe_common import encoding, schema
from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.control import ControlTokenError, control_tokens
from v2pe_common.formats import BadMember, ShardReadError, read_records, wds
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import BUNDLED, load_tokenizer

from .errors import V2PEDataError
from .progress import progress_bar
from .writers.atomic import file_digest
from .writers.formats import spec

log = logging.getLogger(__name__)


class ValidationError(V2PEDataError, ValueError):
    """A build folder that does not hold what its manifest and the schemas say."""


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict | None, dict[str, bytes]]]:
    """(key, record, {image name: bytes}) per sample of a tar, streaming one sample at a time.

    `record` is None for a sample without a KEY.json member. Raises ShardReadError for a shard that
    cannot be read to its end, BadMember for a record that is not JSON.
    """
    return read_records(wds.iter_samples(Path(path)))


def _tar_samples(path: Path) -> Iterator[tuple[str, dict | None, dict[str, bytes]]]:
    try:
        yield from iter_tar_samples(path)
    except (ShardReadError, BadMember) as exc:
        raise ValidationError(f"{path}: unreadable wds shard: {exc}") from None


def _fingerprint(record: dict, members: dict[str, bytes]) -> str:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for name in record["images"]:
        digest.update(hashlib.sha256(members.get(name, b"")).digest())
    return digest.hexdigest()


def _check_copy(out: Path, shard: dict, reference: dict[str, str]) -> None:
    """A shard of another format must hold exactly the records and image bytes of the tars (or, for a
    format of its own lines, lines its reader accepts), as many as the manifest says."""
    path = out / shard["path"]
    fmt = spec(shard["format"])
    count = 0
    try:
        for record, members in fmt.read_back(out, shard):
            if fmt.records:
                rid = record.get("id")
                if reference.get(rid) != _fingerprint(record, members):
                    raise ValidationError(f"{path.name}:{rid}: differs from the wds shard's record or image bytes")
            count += 1
    except ValidationError:
        raise
    except (ShardReadError, BadMember, OSError, ValueError, KeyError) as exc:
        raise ValidationError(f"{path}: unreadable or invalid {shard['format']} shard: {exc}") from None
    if count != shard["num_samples"]:
        raise ValidationError(f"{path}: {count} samples, the manifest says {shard['num_samples']}")


def _tokenizer_for(manifest: dict, tokenizer_path: str | None):
    name = manifest["tokenizer"]["name"]
    path = tokenizer_path or (BUNDLED if name == BUNDLED else name)
    try:
        tok = load_tokenizer(path)
    except ValueError:
        return None
    return tok if tok.matches(manifest["tokenizer"]["sha256"]) else None  # a build before the content hash too


def _check_sample(where: str, key: str, record: dict | None, members: dict, seen: dict, split: str,
                  check_images: bool, control, counting) -> bool:
    """Check one tar sample against the schemas, its key, the build's split, its images and (with a tokenizer,
    `counting` = (tok, template, tiling)) its token count; record its fingerprint in `seen`. Whether it was
    recounted."""
    from PIL import Image

    tok, template, tiling = counting
    if record is None:
        raise ValidationError(f"{where}: no {key}.json member")
    try:
        schema.validate(record, schema.SAMPLE, where=where)
        schema.check_counts(record)
    except schema.SchemaError as exc:
        raise ValidationError(str(exc)) from None
    if record["id"] != key:
        raise ValidationError(f"{where}: $.id {record['id']!r} differs from the tar key")
    if record["id"] in seen:
        raise ValidationError(f"{where}: duplicate sample id")
    seen[record["id"]] = _fingerprint(record, members)
    # an evaluation benchmark's items (MileBench) declare their benchmark and test split on purpose
    crossed = [s for s in record["meta"]["sources"] + record["meta"].get("pasted", [])
               if s["split"] != split and "benchmark" not in s]
    if crossed:
        raise ValidationError(f"{where}: item {crossed[0]['id']!r} comes from split "
                              f"{crossed[0]['split']!r}, the build is {split!r}")
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
    if control is not None:
        try:
            control.apply_turns(record["conversations"], "$.conversations")
        except ControlTokenError as exc:
            raise ValidationError(f"{where}: {exc}") from None
    if tok is not None:
        counted = encoding.count(record["conversations"], record["meta"]["tiles"], tok, template, tiling)
        if counted.total != record["meta"]["num_tokens"]:
            raise ValidationError(f"{where}: $.meta.num_tokens {record['meta']['num_tokens']} but the "
                                  f"tokenizer counts {counted.total}")
        return True
    return False


def validate_build(out: str | Path, tokenizer_path: str | None = None, check_images: bool = True,
                   show_progress: bool | None = False) -> dict:
    """Raise ValidationError naming the first problem; return a summary when everything holds.

    `show_progress`: bars on stderr for the hashing and the sample checks (None: only on a terminal)."""
    out = Path(out)
    try:
        manifest = schema.load_manifest(out / MANIFEST_FILE)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    from .privacy import read_private

    tok = _tokenizer_for(manifest, tokenizer_path or read_private(out).get("tokenizer"))
    control = control_tokens(tok) if tok is not None else None
    template = get_template(manifest["template"])
    tiling = TilingConfig(**manifest["tiling"])
    seen: dict[str, str] = {}  # sample id -> fingerprint of its record and image bytes, from the tars
    samples = recounted = 0
    shards = manifest["shards"]
    split = manifest.get("split", manifest["args"].get("split"))
    log.info("hashing %d shard file(s)", len(shards))
    with progress_bar(len(shards), "validate: hashes", "shard", show_progress) as bar:
        for shard in shards:
            path = out / shard["path"]
            if not path.is_file():
                raise ValidationError(f"{path}: listed in the manifest but missing")
            size, digest = file_digest(path)
            if (size, digest) != (shard["bytes"], shard["sha256"]):
                raise ValidationError(f"{path}: bytes/sha256 differ from the manifest (corrupt or replaced shard)")
            bar.update(1)
    log.info("checking %d samples%s", manifest["num_samples"],
             f" and recounting their tokens with {tok.identity['name']}" if tok is not None else "")
    with progress_bar(manifest["num_samples"], "validate: samples", "sample", show_progress) as bar:
        for shard in (s for s in shards if s["format"] == "wds"):
            path = out / shard["path"]
            count = 0
            for key, record, members in _tar_samples(path):
                recounted += _check_sample(f"{path.name}:{key}", key, record, members, seen, split, check_images,
                                           control, (tok, template, tiling))
                count += 1
                bar.update(1)
            if count != shard["num_samples"]:
                raise ValidationError(f"{path}: {count} samples, the manifest says {shard['num_samples']}")
            samples += count
    for shard in (s for s in shards if s["format"] != "wds"):
        log.info("comparing %s with the tars", shard["path"])
        _check_copy(out, shard, seen)
    if samples != manifest["num_samples"]:
        raise ValidationError(f"{out}: {samples} samples in shards, the manifest says {manifest['num_samples']}")
    return {"samples": samples, "shards": sum(1 for s in shards if s["format"] == "wds"),
            "copies": sorted({s["format"] for s in shards} - {"wds"}), "recounted": recounted,
            "tokens": manifest["token_stats"], "warnings": version_warnings(manifest.get("versions", {}))}


def version_warnings(recorded: dict) -> list[str]:
    """One line per package whose version differs between the build (`recorded`) and this environment: a
    rebuild here may not give the same bytes (encoders, the tokenizer library)."""
    from .build import versions

    now = versions()
    return [f"the build was made with {pkg} {recorded[pkg]}, this environment has {now.get(pkg, 'absent')}: a "
            f"rebuild here may differ in its bytes (install from constraints.txt to match)"
            for pkg in sorted(recorded) if recorded[pkg] != now.get(pkg, "absent")]
