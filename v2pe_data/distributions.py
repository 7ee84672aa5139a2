"""What a build holds, at a glance: length, depth, tiles and subset distributions, printed and plotted."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from v2pe_common import schema
from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.formats import BadMember, ShardReadError, read_records, wds

from .errors import FolderError
from .progress import progress_bar


def iter_records(out: Path, show_progress: bool | None = False) -> Iterator[dict]:
    """Every sample record of a build's tar shards, reading only the JSON members (image bytes are skipped);
    `show_progress` draws a bar on stderr (None: on a terminal only).

    A damaged build (a shard missing, cut short or garbled, a record that is not JSON) raises FolderError
    naming the shard and, where known, the last good sample: `v2pe-data validate` tells the whole story.
    """
    try:
        manifest = schema.load_manifest(Path(out) / MANIFEST_FILE)
    except ValueError as exc:  # missing, not JSON, or not a manifest
        raise FolderError(str(exc)) from None
    with progress_bar(manifest["num_samples"], "stats", "sample", show_progress) as bar:
        for shard in manifest["shards"]:
            if shard["format"] != "wds":
                continue
            path = Path(out) / shard["path"]
            last = None
            try:
                for key, record, _ in read_records(wds.iter_samples(path), images=False):
                    if record is None:
                        raise BadMember("schema", f"sample {key} has no {key}.json member")
                    yield record
                    last = key
                    bar.update(1)
            except (ShardReadError, BadMember) as exc:
                where = f"{path}" + (f" (after {last})" if last else "")
                raise FolderError(f"{where}: damaged shard: {exc}; run `v2pe-data validate {out}`") from None


def summarize(out: Path, show_progress: bool | None = False) -> dict:
    lengths, depths, tiles, images = [], [], [], []
    subsets: Counter = Counter()
    for rec in iter_records(out, show_progress):
        meta = rec["meta"]
        lengths.append(meta["num_tokens"])
        depth = meta.get("depth")
        if isinstance(depth, list) and depth:  # several needles: each is a placed depth of its own
            depths.extend(float(d) for d in depth)
        elif isinstance(depth, (int, float)):
            depths.append(float(depth))
        tiles.extend(meta["tiles"])
        images.append(len(rec["images"]))
        subsets[rec["subset"]] += 1
    if not lengths:
        return {"samples": 0}
    return {
        "samples": len(lengths),
        "tokens": {"min": min(lengths), "p50": statistics.median(lengths), "max": max(lengths), "total": sum(lengths)},
        "images_per_sample": {"min": min(images), "mean": round(statistics.fmean(images), 2), "max": max(images)},
        "tiles_per_image": dict(sorted(Counter(tiles).items())),
        "depth_deciles": [sum(1 for d in depths if i / 10 <= d < (i + 1) / 10 or (i == 9 and d == 1.0))
                          for i in range(10)],
        "subsets": dict(sorted(subsets.items())),
        "_raw": {"lengths": lengths, "depths": depths, "tiles": tiles},
    }


def plot(summary: dict, path: Path) -> Path:
    """Three panels: token lengths, target depths, tiles per image."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend and figures are left alone

    raw = summary["_raw"]
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].hist(raw["lengths"], bins=30, color="#3b6ea8")
    axes[0].set(title="tokens per sample", xlabel="tokens", ylabel="samples")
    axes[1].hist(raw["depths"], bins=10, range=(0, 1), color="#c0504d")
    axes[1].set(title="target / needle depth", xlabel="relative depth", ylabel="targets and needles")
    counts = summary["tiles_per_image"]
    axes[2].bar([str(k) for k in counts], list(counts.values()), color="#4f8f4f")
    axes[2].set(title="tiles per image (thumbnail included)", xlabel="tiles", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
