"""`v2pe-data show`: a preview of one sample of a build, as a PNG contact sheet or a self-contained HTML page.

The sample's images are drawn in order as thumbnails, with what the question is about marked on them: the
Long-VQA target image (concat) or target cell (paste), the Long-MR image needles' boxes. The header holds
the question, the answer, the depth(s) and the text needles with their depths.

Images are streamed from the shard one at a time and JPEGs are decoded at reduced size (`draft`), so a
1M-token sample with hundreds of pages never holds more than one decoded image beside the thumbnails. The
HTML page is written as the images come: each thumbnail links to a larger copy (up to ENLARGED px, enough
to read a document page) embedded in the page and shown over it on a click, by CSS alone.
The sample is found by id across the manifest's wds shards through the shared readers (`v2pe_common.formats`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from pathlib import Path

from PIL.Image import DecompressionBombError

from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.choices import option_letter
from v2pe_common.formats import BadMember, ShardReadError, iter_samples
from v2pe_common.images import to_rgb

from .errors import V2PEDataError

MARK = (220, 20, 60)  # crimson: visible on documents, charts and photos alike
LABEL = 18  # pixels under each thumbnail for its index and tags
GAP = 6
MAX_COLUMNS = 12
HEADER_CHARS = 110  # wrap width of the header text, in characters
THUMB = 320  # default thumbnail side: a document page's layout and headings stay legible
ENLARGED = 1600  # side of the HTML page's click-to-enlarge copy: a document page's body text reads at this size


class ShowError(V2PEDataError, RuntimeError):
    """The preview cannot be made; `usage` is True for a bad argument (unknown id, folder, output suffix)."""

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def find_sample(out: Path, sample_id: str):
    """(shard path, the sample's streamed `TarSample`, its record) for `sample_id`; the caller reads images next.

    Only keys are compared while scanning: the records and images of other samples are skipped unread.
    """
    manifest_path = out / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        shards = [s["path"] for s in manifest["shards"] if s["format"] == "wds"]
    except FileNotFoundError:
        raise ShowError(f"{manifest_path} does not exist: {out} is not a finished build", usage=True) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShowError(f"{manifest_path} is unreadable: {exc}") from None
    for rel in shards:
        try:
            for sample in iter_samples("wds", out / rel):
                if sample.key != sample_id:
                    continue
                members = sample.members()
                first = next(members, None)
                if first is None or first.suffix != "json":
                    raise ShowError(f"{out / rel}: sample {sample_id!r} has no record member first")
                yield out / rel, json.loads(first.read()), members
                return
        except (ShardReadError, BadMember) as exc:
            raise ShowError(f"{out / rel}: {exc}") from None
    raise ShowError(f"sample {sample_id!r} is not in {out} (searched {len(shards)} wds shard(s) of its manifest)",
                    usage=True)


def marks(record: dict) -> dict[int, list]:
    """Per image index, what to draw: ("image", tag) for a whole image, ("box", (x0, y0, x1, y1), tag)."""
    meta = record.get("meta") or {}
    found: dict[int, list] = {}
    if meta.get("pasted"):  # paste canvases: the target cell's box on its canvas
        for cell in meta["pasted"]:
            if cell.get("role") == "target":
                found.setdefault(cell["canvas"], []).append(("box", tuple(cell["box"]), f"target {cell.get('label', '')}"))
    elif meta.get("needles") is not None:  # Long-MR: image needles, boxed where pasted, whole when standalone
        for i, needle in enumerate(meta["needles"]):
            if needle.get("image") is None:
                continue
            tag = f"needle {i + 1}"
            mark = ("box", tuple(needle["box"]), tag) if needle.get("box") else ("image", tag)
            found.setdefault(needle["image"], []).append(mark)
    else:  # Long-VQA concat: the target page(s)
        targets = meta.get("target_index")
        for t in targets if isinstance(targets, list) else [] if targets is None else [targets]:
            found.setdefault(t, []).append(("image", "target"))
    return found


def answer_text(record: dict) -> str:
    """The answer as the model is trained to give it: an option's letter for a multiple-choice record (its
    stored 0-based index beside it), else the answer as stored."""
    answer, meta = record.get("answer"), record.get("meta") or {}
    if isinstance(answer, int) and not isinstance(answer, bool) and (meta.get("choices") or meta.get("choice_images")):
        return f"{option_letter(answer)} (option {answer})"
    return str(answer)


def choice_labels(record: dict) -> dict[int, str]:
    """{image index: its option letter} for a record whose options are images (Long-MR image choices)."""
    return {int(i): option_letter(k) for k, i in enumerate((record.get("meta") or {}).get("choice_images") or [])}


def header_lines(record: dict) -> list[str]:
    """Question, answer, depth(s) and the text needles with their depth, wrapped for the sheet."""
    meta = record.get("meta") or {}
    question = meta.get("question")
    if not question:  # Long-VQA keeps it in the prompt only: its last paragraph after the images
        question = record["conversations"][0]["value"].rsplit("<image>", 1)[-1].strip()
    depth = meta.get("depth")
    depths = depth if isinstance(depth, list) else None
    lines = [f"{record['id']}  ({record.get('task', '')}/{record.get('subset', '')}, {meta.get('num_tokens')} tokens, "
             f"{len(record['images'])} images)", f"Q: {question}"]
    if meta.get("choices"):
        lines.append("choices: " + "  ".join(f"{option_letter(i)}. {c}" for i, c in enumerate(meta["choices"])))
    lines.append(f"A: {answer_text(record)}")
    if depth is not None:
        lines.append("depth: " + (", ".join(f"{d:.3f}" for d in depths) if depths else f"{depth:.3f}"))
    for i, needle in enumerate(meta.get("needles") or []):
        at = f" at depth {depths[i]:.3f}" if depths and i < len(depths) else ""
        if needle.get("kind") == "text":
            lines.append(f"needle {i + 1} (text{at}): {needle.get('text')}")
        elif needle.get("image") is not None:
            lines.append(f"needle {i + 1} ({needle.get('kind')}, image {needle['image']}{at}): "
                         f"{needle.get('description', '')}")
    return [part for line in lines for part in textwrap.wrap(line, HEADER_CHARS) or [""]]


def thumbnail(data: bytes, side: int, drawn: list):
    """The image fitted in side x side with its marks drawn, decoded at reduced size when it is a JPEG."""
    return thumbnails(data, (side,), drawn)[0]


def thumbnails(data: bytes, sides: tuple[int, ...], drawn: list) -> list:
    """The image fitted in each side x side (largest first decoded, the others scaled from it), marks drawn on
    each at its own scale; a JPEG is decoded at reduced size."""
    from PIL import Image

    largest = max(sides)
    with Image.open(io.BytesIO(data)) as im:
        full = im.size
        im.draft("RGB", (largest, largest))  # JPEG: decode at 1/2..1/8 scale, never the full page
        decoded = to_rgb(im)
        decoded.thumbnail((largest, largest))  # inside: the decode reads from the still-open buffer
        decoded.load()  # an image already small enough is not resized, so not yet decoded
    fitted = []
    for side in sides:
        image = decoded.copy()
        image.thumbnail((side, side))
        fitted.append(_draw_marks(image, full, drawn))
    return fitted


def _draw_marks(image, full: tuple[int, int], drawn: list):
    from PIL import ImageDraw

    sx, sy = image.width / full[0], image.height / full[1]
    draw = ImageDraw.Draw(image)
    for mark in drawn:
        if mark[0] == "box":
            x0, y0, x1, y1 = mark[1]
            draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=MARK, width=3)
        else:
            draw.rectangle((0, 0, image.width - 1, image.height - 1), outline=MARK, width=4)
    return image


def show(out: str | Path, sample_id: str, dest: str | Path, thumb: int = THUMB) -> dict:
    """Write the preview of `sample_id` to `dest` (.png or .html); return its layout.

    The layout: {"format", "width", "height", "header": [lines], "cells": [{"index", "image", "xy", "size",
    "marks": [tags]}]} with one cell per image, in the record's order; an HTML cell also has "enlarged", the
    size of its click-to-enlarge copy.
    """
    dest = Path(dest)
    kind = dest.suffix.lower().lstrip(".")
    if kind not in ("png", "html"):
        raise ShowError(f"--out {dest}: choose a .png or .html file", usage=True)
    if not 16 <= thumb <= 1024:
        raise ShowError(f"--thumb {thumb}: must lie in [16, 1024] pixels", usage=True)
    out = Path(out)
    found = find_sample(out, sample_id)
    try:
        shard, record, members = next(found)
        return _render(shard, record, members, dest, kind, thumb)
    finally:
        found.close()  # closes the shard


def _render(shard: Path, record: dict, members, dest: Path, kind: str, thumb: int) -> dict:
    sample_id = record["id"]
    names = list(record["images"])
    drawn = marks(record)
    header = header_lines(record)
    columns = max(1, min(MAX_COLUMNS, math.ceil(math.sqrt(len(names)))))
    rows = math.ceil(len(names) / columns)
    top = GAP + 14 * len(header) + GAP
    layout = {"format": kind, "width": GAP + columns * (thumb + GAP), "height": top + rows * (thumb + LABEL + GAP),
              "header": header, "cells": []}
    sheet = _sheet(layout, header) if kind == "png" else None
    page = None if sheet is not None else _HtmlPage(dest, record["id"], header, thumb)
    seen: set[str] = set()
    choices = choice_labels(record)
    try:
        for member in members:  # streamed in tar order: one image in memory at a time
            if member.suffix not in names or member.suffix in seen:
                continue
            seen.add(member.suffix)
            index = names.index(member.suffix)
            sides = (thumb,) if page is None else (thumb, max(thumb, ENLARGED))
            image, *large = thumbnails(member.read(), sides, drawn.get(index, []))
            row, col = divmod(index, columns)
            xy = (GAP + col * (thumb + GAP), top + row * (thumb + LABEL + GAP))
            tags = [m[-1] for m in drawn.get(index, [])]
            layout["cells"].append({"index": index, "image": member.suffix, "xy": xy, "size": image.size,
                                    "marks": tags})
            choice = choices.get(index)
            if choice:
                layout["cells"][-1]["choice"] = choice
            caption = f"#{index} {' '.join(tags)}{f' choice {choice}' if choice else ''}".strip()
            if sheet is not None:
                _paste(sheet, image, xy, caption, thumb)
            else:
                layout["cells"][-1]["enlarged"] = large[0].size
                page.add(index, image, large[0], caption, bool(tags))
        missing = [n for n in names if n not in seen]
        if missing:
            raise ShowError(f"{shard}: sample {sample_id!r} lacks image member(s) {missing[:5]}")
        layout["cells"].sort(key=lambda c: c["index"])
        if sheet is not None:
            sheet.save(dest, format="PNG")
        else:
            page.finish()
    except (ShardReadError, BadMember) as exc:
        raise ShowError(f"{shard}: {exc}") from None
    except (OSError, ValueError, SyntaxError, DecompressionBombError) as exc:  # Pillow's undecodable images
        raise ShowError(f"{shard}: sample {sample_id!r}: an image cannot be decoded: "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        if page is not None:
            page.discard()  # after finish() there is nothing left to discard
    return layout


def _sheet(layout: dict, header: list[str]):
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (max(layout["width"], 8 * HEADER_CHARS), layout["height"]), "white")
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(header):
        draw.text((GAP, GAP + 14 * i), line, fill="black")
    layout["width"] = sheet.width
    return sheet


def _paste(sheet, image, xy: tuple[int, int], caption: str, side: int) -> None:
    from PIL import ImageDraw

    sheet.paste(image, xy)  # captions on one line per row, whatever each thumbnail's height
    ImageDraw.Draw(sheet).text((xy[0], xy[1] + side + 2), caption, fill=MARK if " " in caption else "black")


def _jpeg_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _HtmlPage:
    """The self-contained HTML preview, written figure by figure to a temporary file renamed into place at the
    end: memory holds one image's thumbnail and enlarged copy, never the page, and a failure leaves no file."""

    def __init__(self, dest: Path, sample_id: str, header: list[str], thumb: int):
        self.dest, self.tmp = dest, dest.with_name(f".{dest.name}.tmp")
        # A click on a thumbnail targets its overlay (`:target` shows it over the page); a click on the overlay
        # goes back to the page.
        style = (f"body{{font-family:sans-serif;margin:1em}}pre{{white-space:pre-wrap}}"
                 f"figure{{display:inline-block;margin:4px;width:{thumb}px;vertical-align:top}}"
                 f"figure img{{cursor:zoom-in}}figcaption{{font-size:12px}}"
                 f".marked figcaption{{color:rgb{MARK};font-weight:bold}}"
                 f".enlarged{{display:none}}.enlarged:target{{display:flex;position:fixed;inset:0;z-index:1;"
                 f"align-items:center;justify-content:center;background:rgba(0,0,0,.85);cursor:zoom-out}}"
                 f".enlarged img{{max-width:98vw;max-height:98vh}}")
        self.file = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 -- closed by finish() or discard()
        self.file.write(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(sample_id)}</title>"
                        f"<style>{style}</style></head><body>\n<pre>{html.escape(chr(10).join(header))}</pre>\n")

    def add(self, index: int, thumb, large, caption: str, marked: bool) -> None:
        cls = ' class="marked"' if marked else ""
        alt = html.escape(caption)
        self.file.write(f'<figure{cls}><a href="#image-{index}"><img src="{_jpeg_uri(thumb)}" alt="{alt}"></a>'
                        f"<figcaption>{alt}</figcaption></figure>"
                        f'<a class="enlarged" id="image-{index}" href="#"><img src="{_jpeg_uri(large)}" '
                        f'alt="{alt} (enlarged)"></a>\n')

    def finish(self) -> None:
        self.file.write("</body></html>\n")
        self.file.close()
        self.tmp.replace(self.dest)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
