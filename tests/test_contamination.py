"""`v2pe-data contamination`: a build's overlap with MM-NIAH folders, MileBench folders and other builds, by
exact image hash and by normalised question + answer."""

import json
import shutil
from functools import partial

import pytest

from tests.cli_invoke import invoke
from tests.fixtures.milebench import write_milebench
from tests.fixtures.sources import write_docvqa_official
from v2pe_data.build import build
from v2pe_data.cli import app
from v2pe_data.config import BuildConfig
from v2pe_data.contamination import ContaminationError, compare, normalise

cli = partial(invoke, app)


@pytest.fixture(scope="module")
def docvqa_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("contam")
    docvqa = write_docvqa_official(base, splits=("val",))
    out = base / "dv"
    build(BuildConfig(length=12288, min_length=3600, num_samples=2, shard_size=2, out=str(out), seed=7, split="val",
                      sources=[{"kind": "docvqa", "path": str(docvqa.root)}]), show_progress=False)
    return base, docvqa, out


def mmniah_copy(folder, image_bytes: list[bytes]):
    """An MM-NIAH folder whose haystack reuses the given images (as MM-NIAH's own haystacks reuse web images)."""
    (folder / "annotations").mkdir(parents=True)
    (folder / "images" / "hay").mkdir(parents=True)
    for i, data in enumerate(image_bytes):
        (folder / "images" / "hay" / f"{i}.png").write_bytes(data)
    line = {"id": 0, "images_list": [f"hay/{i}.png" for i in range(len(image_bytes))],
            "context": "<image>" * len(image_bytes), "question": "Which picture shows a cat?", "answer": 1,
            "meta": {"placed_depth": 0.5, "context_length": 2000, "choices": None, "choices_image_path": None}}
    (folder / "annotations" / "retrieval-image.jsonl").write_text(json.dumps(line) + "\n")
    return folder


def test_normalisation_drops_placeholders_case_and_punctuation():
    assert normalise("Step {image#2}: What's <image> the <Image 3> TOTAL?") == "step what s the total"


def test_a_docvqa_val_build_and_an_mmniah_copy_reusing_its_images_overlap(docvqa_build, tmp_path):
    base, docvqa, out = docvqa_build
    used = [e.data for e in docvqa.expected["val"]][:2]
    mm = mmniah_copy(tmp_path / "mm_niah_val", used)
    report = compare(out, [mm])
    (against,) = report["against"]
    assert against["kind"] == "mmniah" and against["entries"] == 1
    assert against["image_overlap"] >= 1 and against["text_overlap"] == 0
    assert all(theirs == "retrieval-image.jsonl:1" for _, theirs in against["examples"]["image"])
    clean = mmniah_copy(tmp_path / "clean", [b"not one of its images"])
    assert compare(out, [clean])["against"][0]["image_overlap"] == 0


def test_cli_table_json_and_fail_on_overlap(docvqa_build, tmp_path):
    base, docvqa, out = docvqa_build
    mm = mmniah_copy(tmp_path / "mm", [e.data for e in docvqa.expected["val"]])
    code, text = cli("contamination", out, "--against", mm, "--json", tmp_path / "c.json")
    assert code == 0, text
    assert "| against | kind | entries |" in text and f"| {mm} | mmniah | 1 |" in text
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["against"][0]["image_overlap"] >= 1
    code, text = cli("contamination", out, "--against", mm, "--fail-on-overlap")
    assert code == 1 and "overlap found" in text
    clean = mmniah_copy(tmp_path / "clean", [b"unrelated"])
    code, text = cli("contamination", out, "--against", clean, "--fail-on-overlap")
    assert code == 0, text


def test_a_milebench_build_overlaps_milebench_by_image_and_by_question_and_answer(tmp_path):
    fx = write_milebench(tmp_path)
    out = tmp_path / "mb"
    build(BuildConfig(task="milebench", length=16384, min_length=0, num_samples=3, out=str(out),
                      options={"path": str(fx.root), "tasks": ["MultiModalQA"]}), show_progress=False)
    (against,) = compare(out, [fx.root])["against"]
    # every sample reuses MileBench's images; by text, the two whose context has at least 4 words are found inside
    # our prompts ("Who won? {image#1}" is too short to count as contained)
    assert against["kind"] == "milebench" and against["image_overlap"] == 3 and against["text_overlap"] == 2
    # another build of the same rows: every sample overlaps; a build of other rows shares nothing
    assert compare(out, [out])["against"][0]["text_overlap"] == 3
    other = tmp_path / "gpr"
    build(BuildConfig(task="milebench", length=16384, min_length=0, num_samples=1, out=str(other),
                      options={"path": str(fx.root), "tasks": ["GPR1200"]}), show_progress=False)
    none = compare(out, [other])["against"][0]
    assert (none["image_overlap"], none["text_overlap"]) == (0, 0)


def test_unreadable_inputs_and_escaping_paths_are_named(docvqa_build, tmp_path):
    _, _, out = docvqa_build
    with pytest.raises(ContaminationError, match="neither a build"):
        compare(out, [tmp_path])
    mm = mmniah_copy(tmp_path / "esc", [b"x"])
    line = json.loads((mm / "annotations" / "retrieval-image.jsonl").read_text())
    line["images_list"] = ["../../outside.png"]
    (mm / "annotations" / "retrieval-image.jsonl").write_text(json.dumps(line) + "\n")
    (against,) = compare(out, [mm])["against"]
    assert against["skipped"] == 1 and "retrieval-image.jsonl:1: image '../../outside.png'" in \
        against["skipped_examples"][0] and "escapes" in against["skipped_examples"][0]
    shutil.rmtree(mm)


def test_a_milebench_task_file_whose_data_is_no_list_is_one_line(docvqa_build, tmp_path):
    """Found by the contamination_inputs fuzz target: `"data": 5` raised TypeError from the row loop."""
    _, _, out = docvqa_build
    (tmp_path / "mb" / "T").mkdir(parents=True)
    (tmp_path / "mb" / "T" / "T.json").write_text(json.dumps({"meta_data": {}, "data": 5}))
    code, text = cli("contamination", out, "--against", tmp_path / "mb")
    assert code == 1 and "Traceback" not in text
    assert "T.json: not a MileBench task file: data is int, not a list" in text
