"""`open_real_source`: one entry point for the real-data adapters (DocVQA, InfoVQA, ChartQA, generic).

Each adapter lives in its own module (`docvqa`, `chartqa`, `generic`), shares the index pass and bad-row
accounting of `base.RealSource`, and finds Hugging Face layouts through `layouts`. See those modules'
docstrings for the layouts read and the assumptions made about the official releases.
"""

from __future__ import annotations

import os

from .base import DEFAULT_MAX_PIXELS, REASONS, HubUnavailable, RealSource, SourceError

KINDS = ("docvqa", "infovqa", "chartqa", "generic")

__all__ = ["KINDS", "REASONS", "DEFAULT_MAX_PIXELS", "HubUnavailable", "RealSource", "SourceError",
           "open_real_source"]


def open_real_source(kind: str, path, split: str, *, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                     columns: dict | None = None, config: str | None = None,
                     name: str | None = None) -> RealSource:
    """Open split `split` of a local copy at `path` (a folder or file), or of `hub:OWNER/NAME`.

    Every row is validated at open; `len()` counts the valid ones, `item(i)` returns them in file order,
    `rejected` lists the others with reason and id, `describe()` summarises both for the manifest.
    `strict=True` raises `SourceError` ("SOURCE:ID: reason: detail") at the first bad row. A Hub id that
    cannot be fetched raises `HubUnavailable` (a `SourceError` and a `ConnectionError`).

    kind: docvqa | infovqa | chartqa | generic. `config`: the Hub config / sub-folder (DocVQA default
    `DocVQA`, InfoVQA `InfographicVQA`; kind `docvqa` with config `InfographicVQA` reads InfoVQA).
    `columns` is for `generic` only (its column mapping); so is `name`, the `dataset` of generic items
    (default "generic"); the named adapters ignore it, their items carry their dataset's name.
    """
    path = os.fspath(path)
    if not isinstance(split, str) or not split:
        raise SourceError(f"{kind}: split must be a non-empty str, got {split!r}")
    if kind not in KINDS:
        raise SourceError(f"unknown real source kind {kind!r}; choose one of {list(KINDS)}")
    if kind != "generic" and columns:
        raise SourceError(f"{kind}: a column mapping applies to kind 'generic' only")
    if kind in ("docvqa", "infovqa"):
        from .docvqa import open_docvqa

        infographic = kind == "infovqa" or (config or "").lower() in ("infographicvqa", "infovqa")
        if infographic and (config or "").lower() == "infovqa":
            config = None
        return open_docvqa(path, split, infographic=infographic, strict=strict, max_pixels=max_pixels,
                           config=config)
    if kind == "chartqa":
        from .chartqa import open_chartqa

        return open_chartqa(path, split, strict=strict, max_pixels=max_pixels, config=config)
    from .generic import open_generic

    return open_generic(path, split, columns=columns, name=name, strict=strict, max_pixels=max_pixels,
                        config=config)
