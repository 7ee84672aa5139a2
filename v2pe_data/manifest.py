"""The manifest: what a build folder holds, how it was made, and what was rejected."""

from __future__ import annotations

import statistics
from pathlib import Path

from .config import BuildConfig
from .plan import Accounting
from .privacy import public_path


def public_source(desc: dict) -> dict:
    """A source's description as published: its path as `local:NAME`, its files relative to its root."""
    out = dict(desc)
    if "path" in out:
        out["path"] = public_path(out["path"], str(out.get("name") or out.get("dataset") or out.get("kind")))
    if isinstance(out.get("files"), list) and out["files"] and out.get("path") != desc.get("path"):
        root = Path(str(desc["path"])).expanduser()
        root = root.parent if root.suffix else root
        out["files"] = [_relative(f, root) for f in out["files"]]
    return out


def _relative(file: str, root: Path) -> str:
    try:
        return Path(file).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return Path(file).name


def token_stats(rows: list[list[int]]) -> dict:
    """rows: [num_tokens, text_tokens, image_tokens, num_images] per sample."""
    totals = [r[0] for r in rows]
    return {
        "count": len(totals),
        "min": min(totals) if totals else None,
        "max": max(totals) if totals else None,
        "mean": statistics.fmean(totals) if totals else None,
        "p50": statistics.median(totals) if totals else None,
        "total": sum(totals),
        "text_total": sum(r[1] for r in rows),
        "image_total": sum(r[2] for r in rows),
        "images_total": sum(r[3] for r in rows),
    }


def make_manifest(identity: dict, cfg: BuildConfig, acc: Accounting, markers: list[dict],
                  source_report: tuple[list[dict], dict, list[dict]] = ([], {}, [])) -> dict:
    sources, counts, examples = source_report
    counts, examples = dict(counts), list(examples)
    shards, rows = [], []
    for marker in sorted(markers, key=lambda m: m["task"]["index"]):
        shards.extend(marker["files"])
        rows.extend(marker["tokens"])
        for reason, n in marker["rejected"]["counts"].items():
            counts[reason] = counts.get(reason, 0) + n
        examples.extend(marker["rejected"]["examples"])
    return {
        "format_version": 1,
        "task": cfg.task,
        "build_id": identity["build_id"],
        "args": identity["args"],
        "seed": cfg.seed,
        "versions": identity["versions"],
        "tokenizer": identity["tokenizer"],
        "template": acc.template.name,
        "tiling": acc.tiling.to_dict(),
        "num_samples": len(rows),
        "split": cfg.split,
        "sources": sources if cfg.publish_paths else [public_source(s) for s in sources],
        "formats": cfg.formats,
        "shards": shards,
        "token_stats": token_stats(rows),
        "rejected": {"counts": counts, "examples": examples[:100]},
    }
