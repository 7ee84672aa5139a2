"""Long-VQA from real-format sources (fixtures in the published schemas): concat and paste, splits kept,
bad rows counted in the manifest by reason with their source id, --strict stops at the first."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.sources import write_chartqa_official, write_docvqa_hf
from v2pe_data.build import BuildError, build
from v2pe_data.config import BuildConfig
from v2pe_data.validate import iter_tar_samples, validate_build


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("src")
    return write_docvqa_hf(base, bad_rows=True), write_chartqa_official(base, bad_rows=True)


def records(out):
    for shard in sorted(Path(out, "shards").glob("*.tar")):
        yield from ((rec, members) for _, rec, members in iter_tar_samples(shard))


def make(out, docvqa, chartqa, split, **kw):
    cfg = dict(length=12288, min_length=3600, num_samples=6, shard_size=3, out=str(out), seed=7, split=split,
               paste_grid=1, sources=[{"kind": "docvqa", "path": str(docvqa)},
                                      {"kind": "chartqa", "path": str(chartqa), "mode": "paste"}])
    cfg.update(kw)
    return build(BuildConfig(**cfg), show_progress=False)


@pytest.mark.parametrize("split,disk_split", [("train", "train"), ("val", "validation")])
def test_long_vqa_from_real_sources_keeps_answers_depth_documents_and_splits(fixtures, tmp_path, split, disk_split):
    docvqa, chartqa = fixtures
    out = tmp_path / split
    manifest = make(out, docvqa, chartqa, split)
    assert validate_build(out)["samples"] == 6
    expected = {("docvqa", e.id): e for e in docvqa.expected[disk_split]}
    chart_split = "val" if split == "val" else "train"
    expected.update({("chartqa", e.id): e for e in chartqa.expected[chart_split]})
    modes = set()
    for rec, members in records(out):
        meta = rec["meta"]
        modes.add(meta["mode"])
        assert 3600 <= meta["num_tokens"] <= 12288
        items = meta["pasted"] if meta["mode"] == "paste" else meta["sources"]
        assert all(s["split"] == split for s in items + meta["sources"])
        target = next(s for s in items if s["role"] == "target")
        source = expected[(target["dataset"], target["id"])]
        assert rec["answer"] == source.answers[0] and source.question in rec["conversations"][0]["value"]
        assert all(s["doc_id"] != target["doc_id"] for s in items if s["role"] == "distractor")
        if meta["mode"] == "concat":
            # the target page is byte-for-byte the source image, at the recorded index and depth
            name = rec["images"][meta["target_index"]]
            assert members[name] == source.data
            n = len(rec["images"])
            assert meta["depth"] == pytest.approx(meta["target_index"] / max(n - 1, 1))
            assert f"Question about Image {meta['target_index'] + 1}:" in rec["conversations"][0]["value"]
        else:
            assert f"labelled {target['label']}:" in rec["conversations"][0]["value"]
            canvas = Image.open(io.BytesIO(members[rec["images"][meta["target_index"]]]))
            assert canvas.size == (448, 448)
    assert modes == {"concat", "paste"}
    # every bad fixture row is in the manifest with its reason and source id; every valid one survived
    rejected = {(e["source"], str(e["id"])): e["reason"] for e in manifest["rejected"]["examples"] if "source" in e}
    for bad_id, reason in docvqa.bad[disk_split].items():
        assert rejected[("docvqa", bad_id)] == reason
    described = {s["name"]: s for s in manifest["sources"]}
    assert described["docvqa"]["items_valid"] == len(docvqa.expected[disk_split])
    assert described["chartqa"]["items_valid"] == len(chartqa.expected[chart_split])


def test_strict_turns_the_first_bad_row_into_one_clear_error(fixtures, tmp_path):
    docvqa, chartqa = fixtures
    with pytest.raises(BuildError, match=r"docvqa:\d+: missing_field"):
        make(tmp_path / "strict", docvqa, chartqa, "train", strict=True)
    result = subprocess.run([sys.executable, "-m", "v2pe_data", "build", "long_vqa", "--len", "12k", "--min-len", "3600",
                             "-n", "2", "--source", f"docvqa={docvqa}", "--strict", "--out", str(tmp_path / "cli")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "missing_field" in result.stderr


def test_the_three_output_formats_hold_the_same_samples_and_validate(fixtures, tmp_path):
    docvqa, chartqa = fixtures
    out = tmp_path / "fmt"
    manifest = make(out, docvqa, chartqa, "val", num_samples=3, formats=["wds", "parquet", "internvl"])
    assert {s["format"] for s in manifest["shards"]} == {"wds", "parquet", "internvl"}
    summary = validate_build(out)  # re-reads parquet and InternVL copies against the tars, record and bytes
    assert summary["copies"] == ["internvl", "parquet"] and summary["samples"] == 3
    meta = json.loads((out / "internvl" / "meta.json").read_text())
    entry = meta["long_vqa_val"]
    assert entry["length"] == 3 and (out / "internvl" / entry["annotation"]).is_file()
    import datasets

    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in (out / "parquet").glob("*.parquet")),
                               split="train")
    assert len(ds) == 3 and ds[0]["images"][0].size[0] > 0
