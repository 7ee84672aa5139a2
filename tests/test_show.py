"""`v2pe-data show OUT ID`: one sample as a PNG contact sheet or a self-contained HTML page, its images in
order with the target (Long-VQA image or pasted cell) or needles (Long-MR boxes, text needles with depth)
marked; an unknown id or a bad --out is one line and exit status 2.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2pe_common.formats import iter_samples, read_records
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_data.show import MARK, ShowError, show, thumbnail
from tests.deadline import run_with_deadline

DEADLINE = 60  # seconds for one CLI call: a hang fails its test instead of stalling the suite


def records(out: Path, images: bool = False) -> list:
    """Every record of a build's tars in order; with `images`, (record, {image name: bytes}) pairs."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = [(rec, imgs) for s in manifest["shards"] if s["format"] == "wds"
             for _, rec, imgs in read_records(iter_samples("wds", out / s["path"]), images=images)]
    return found if images else [rec for rec, _ in found]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Small builds, one sample per shard so a lookup crosses shards: Long-VQA concat and paste, Long-MR
    (seed 5: sample 0 has pasted image needles, sample 1 text needles)."""
    root = tmp_path_factory.mktemp("show")
    cfgs = {
        "long_vqa": dict(length=8192, num_samples=2, shard_size=1, seed=3),
        "paste": dict(length=8192, num_samples=1, seed=3, mode="paste"),
        "long_mr": dict(task="long_mr", length=4096, max_tiles=2, num_samples=2, shard_size=1, seed=5),
    }
    for name, kw in cfgs.items():
        build(BuildConfig(out=str(root / name), **kw), show_progress=False)
    return {name: root / name for name in cfgs}


def marked_pixels(drawn: Image.Image, plain: Image.Image) -> np.ndarray:
    """The pixels where a sheet's thumbnail differs from the same thumbnail without marks; each must be MARK."""
    a, b = np.asarray(drawn.convert("RGB")), np.asarray(plain.convert("RGB"))
    changed = (a != b).any(axis=-1)
    assert (a[changed] == MARK).all(), "only mark-coloured lines may be drawn over an image"
    return changed


def non_blank(im: Image.Image) -> bool:
    lo, hi = im.convert("L").getextrema()
    return hi - lo >= 64  # ink on a page, even a thumbnail's grey ink: not one flat colour


def cell_image(sheet: Image.Image, cell: dict) -> Image.Image:
    (x, y), (w, h) = cell["xy"], cell["size"]
    return sheet.crop((x, y, x + w, y + h))


@pytest.mark.parametrize("name,index", [("long_vqa", 1), ("paste", 0), ("long_mr", 0), ("long_mr", 1)])
def test_the_png_sheet_holds_every_image_in_order_with_the_targets_marked(builds, tmp_path, name, index):
    rec, images = records(builds[name], images=True)[index]
    dest = tmp_path / "sheet.png"
    layout = show(builds[name], rec["id"], dest, thumb=96)
    sheet = Image.open(dest)
    assert sheet.size == (layout["width"], layout["height"]) and layout["format"] == "png"
    assert [c["image"] for c in layout["cells"]] == rec["images"]  # one thumbnail per image, in order
    assert all(max(c["size"]) == 96 for c in layout["cells"])
    meta = rec["meta"]
    if name == "long_mr":
        expected = {n["image"] for n in meta["needles"] if n.get("image") is not None}
    elif name == "paste":
        expected = {p["canvas"] for p in meta["pasted"] if p["role"] == "target"}
    else:
        expected = {meta["target_index"]}
    assert {c["index"] for c in layout["cells"] if c["marks"]} == expected
    for cell in layout["cells"]:
        thumb = cell_image(sheet, cell)
        assert non_blank(thumb), cell
        changed = marked_pixels(thumb, thumbnail(images[cell["image"]], 96, []))
        assert changed.any() == bool(cell["marks"]), cell  # a box drawn exactly where marked
        if name == "long_mr" and cell["marks"]:  # the needle's box, scaled onto the thumbnail
            x0, y0, x1, y1 = next(n["box"] for n in meta["needles"] if n.get("image") == cell["index"])
            width = meta["image_sizes"][cell["index"]][0]
            ys, xs = np.nonzero(changed)
            scale = thumb.width / width
            assert abs(xs.min() - x0 * scale) <= 2 and abs(xs.max() - x1 * scale) <= 3, (xs.min(), xs.max())
    options = meta.get("choices") or meta.get("choice_images")
    letter = f"{chr(65 + rec['answer'])} (option {rec['answer']})" if options and isinstance(rec["answer"], int) \
        else rec["answer"]
    assert f"A: {letter}" in layout["header"]  # the letter the model is trained to answer, not the index
    labelled = {c["index"]: c["choice"] for c in layout["cells"] if "choice" in c}
    assert labelled == {i: chr(65 + k) for k, i in enumerate(meta.get("choice_images") or [])}


def data_image(src: str) -> Image.Image:
    head, data = src.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_html_page_inlines_every_image_and_lists_text_needles_with_their_depth(builds, tmp_path):
    for name, index in (("long_vqa", 0), ("long_mr", 1)):
        rec = records(builds[name])[index]
        dest = tmp_path / f"{name}.html"
        layout = show(builds[name], rec["id"], dest)
        page = dest.read_text()
        thumbs = re.findall(r'<figure[^>]*><a href="#image-(\d+)"><img src="([^"]+)"', page)
        enlarged = dict(re.findall(r'<a class="enlarged" id="image-(\d+)" href="#"><img src="([^"]+)"', page))
        assert len(re.findall(r"<img\b", page)) == 2 * len(thumbs)  # a thumbnail and its enlarged copy, no more
        indices = sorted(int(i) for i, _ in thumbs)
        assert indices == list(range(len(rec["images"]))) == [c["index"] for c in layout["cells"]]
        for i, src in thumbs:  # self-contained: every image a data URI that decodes to a non-blank picture
            assert non_blank(data_image(src)) and non_blank(data_image(enlarged[i]))
        assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
        assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary, renamed into place
    needles = rec["meta"]["needles"]
    assert needles and all(n["kind"] == "text" for n in needles)
    for needle, depth in zip(needles, rec["meta"]["depth"]):
        assert f"at depth {depth:.3f}): {needle['text']}" in page


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_with_deadline([sys.executable, "-m", "v2pe_data", *args], DEADLINE, what=" ".join(args), cwd=cwd)


def test_the_cli_writes_id_png_by_default(builds, tmp_path):
    rec = records(builds["long_mr"])[1]
    done = cli("show", str(builds["long_mr"]), rec["id"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / f"{rec['id']}.png").format == "PNG"


@pytest.mark.parametrize("args,says", [
    (["long_vqa-train-99999999"], "sample 'long_vqa-train-99999999' is not in"),
    (["long_vqa-train-00000000", "--out", "x.gif"], "choose a .png or .html file"),
])
def test_an_unknown_id_or_output_type_is_one_line_and_exit_2_writing_nothing(builds, tmp_path, args, says):
    done = cli("show", str(builds["long_vqa"]), *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_a_manifest_is_a_usage_error(tmp_path):
    with pytest.raises(ShowError, match="manifest.json does not exist") as err:
        show(tmp_path, "x", tmp_path / "x.png")
    assert err.value.usage


def test_a_multiple_choice_answer_shows_its_letter_and_image_options_are_labelled():
    from v2pe_data.show import answer_text, choice_labels, header_lines

    text = {"id": "s", "task": "long_mr", "images": [], "answer": 2, "conversations": [{"value": "q"}],
            "meta": {"question": "Which?", "choices": ["red", "green", "blue"]}}
    assert answer_text(text) == "C (option 2)" and "choices: A. red  B. green  C. blue" in header_lines(text)
    pictures = {**text, "meta": {"question": "Which?", "choice_images": [7, 8, 9, 10]}, "answer": 3}
    assert answer_text(pictures) == "D (option 3)"
    assert choice_labels(pictures) == {7: "A", 8: "B", 9: "C", 10: "D"}
    for plain in ({**text, "meta": {}}, {**text, "answer": [1, 2]}, {**text, "answer": "7"}):
        assert answer_text(plain) == str(plain["answer"])  # a count, a list or a word stays as stored


def test_html_thumbnails_are_readable_and_a_click_enlarges_them(builds, tmp_path):
    """Thumbnails default to THUMB px (>= 320) on their long side; each is a link to its own copy of up to
    ENLARGED px (>= 1200, a page's body text reads), shown over the page by CSS alone (`:target`)."""
    from v2pe_data.show import ENLARGED, THUMB

    assert THUMB >= 320 and ENLARGED >= 1200
    rec = records(builds["long_vqa"])[0]
    dest = tmp_path / "s.html"
    layout = show(builds["long_vqa"], rec["id"], dest)
    page = dest.read_text()
    assert ".enlarged:target{display:flex" in page and "<script" not in page
    links = re.findall(r'<a href="#image-(\d+)"><img src="([^"]+)"', page)
    enlarged = dict(re.findall(r'id="image-(\d+)" href="#"><img src="([^"]+)"', page))
    sizes = dict(zip(rec["images"], rec["meta"]["image_sizes"]))
    for (i, thumb), cell in zip(links, layout["cells"]):
        full = sizes[rec["images"][int(i)]]
        small, large = data_image(thumb).size, data_image(enlarged[i]).size
        assert max(small) == min(THUMB, max(full)) and small == tuple(cell["size"])
        assert max(large) == min(ENLARGED, max(full)) and large == tuple(cell["enlarged"])

