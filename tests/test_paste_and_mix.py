"""Paste mode (labelled canvases) and source mixes: the target is where meta says, bins hold, splits never cross."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from v2pe_data.build import build
from v2pe_data.config import BuildConfig, ConfigError
from v2pe_data.validate import ValidationError, iter_tar_samples, validate_build

CHARTS = {"kind": "synthetic", "mode": "paste", "kinds": ["bar_chart", "line_chart", "pie_chart", "table"]}


def records(out):
    for shard in sorted(Path(out, "shards").glob("*.tar")):
        yield from ((rec, members) for _, rec, members in iter_tar_samples(shard))


@pytest.fixture(scope="module")
def pasted(tmp_path_factory):
    out = tmp_path_factory.mktemp("paste") / "p"
    manifest = build(BuildConfig(length=8192, min_length=4096, num_samples=3, shard_size=3, paste_grid=2,
                                 sources=[CHARTS], out=str(out), seed=4), show_progress=False)
    return out, manifest


def test_paste_samples_validate_and_lie_in_their_bin(pasted):
    out, manifest = pasted
    assert validate_build(out)["samples"] == 3
    for rec, _ in records(out):
        assert 4096 <= rec["meta"]["num_tokens"] <= 8192
        assert rec["subset"] == "synthetic_paste" and rec["meta"]["mode"] == "paste"


def test_the_question_names_the_target_label_and_the_target_is_pasted_there(pasted):
    from v2pe_data.sources.synthetic import SyntheticSource

    out, _ = pasted
    source = SyntheticSource(split="train", seed=4, kinds=CHARTS["kinds"])
    for rec, members in records(out):
        meta = rec["meta"]
        target = [p for p in meta["pasted"] if p["role"] == "target"]
        assert len(target) == 1
        target = target[0]
        assert f"labelled {target['label']}:" in rec["conversations"][0]["value"]
        assert (target["canvas"], target["cell"], target["label"]) == (
            meta["target_index"], meta["target_cell"], meta["target_label"])
        assert all(p["doc_id"] != target["doc_id"] for p in meta["pasted"] if p["role"] == "distractor")
        # the target's own picture is visibly in its box: the box region differs from a blank canvas
        index = int(target["id"].rsplit("-", 1)[1])
        item = source.item(index)
        assert rec["answer"] == item.answers[0] and item.question in rec["conversations"][0]["value"]
        canvas = Image.open(io.BytesIO(members[rec["images"][meta["target_index"]]])).convert("L")
        x0, y0, x1, y1 = target["box"]
        region = canvas.crop((x0, y0, x1, y1))
        assert region.getextrema()[0] < 200  # something dark (the chart) is drawn inside the box
        assert canvas.size == (meta["canvas"]["size"],) * 2


def test_a_mix_draws_every_source_and_reports_missing_ones(tmp_path):
    out = tmp_path / "mix"
    manifest = build(BuildConfig(length=8192, num_samples=8, shard_size=4, out=str(out), seed=1,
                                 sources=[{"kind": "synthetic", "share": 1}, {**CHARTS, "share": 1, "name": "charts"},
                                          {"kind": "docvqa", "path": str(tmp_path / "absent")}]), show_progress=False)
    subsets = {rec["subset"] for rec, _ in records(out)}
    assert subsets == {"synthetic_concat", "synthetic_paste"}
    status = {s["name"]: s["status"] for s in manifest["sources"]}
    assert status["docvqa"].startswith("unavailable") and status["charts"] == "available"
    with pytest.raises(Exception, match="no local copy"):
        build(BuildConfig(length=8192, num_samples=1, out=str(tmp_path / "strict"), strict=True,
                          sources=[{"kind": "synthetic"}, {"kind": "docvqa", "path": str(tmp_path / "absent")}]),
              show_progress=False)


def test_validate_rejects_an_item_from_another_split(pasted, tmp_path):
    out, manifest = pasted
    import shutil
    import tarfile

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / manifest["shards"][0]["path"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            if m.name.endswith(".json"):
                rec = json.loads(data)
                rec["meta"]["pasted"][0]["split"] = "val"
                data = json.dumps(rec).encode()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    manifest["shards"][0]["sha256"], manifest["shards"][0]["bytes"] = _digest(shard)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValidationError, match="from split 'val'"):
        validate_build(copy)


def _digest(path):
    from v2pe_data.writers.atomic import file_digest

    size, sha = file_digest(path)
    return sha, size


def test_source_entries_are_checked_key_by_key():
    with pytest.raises(ConfigError, match=r"sources\[0\]\.path"):
        BuildConfig(sources=[{"kind": "docvqa"}])
    with pytest.raises(ConfigError, match=r"sources\[1\]\.kind"):
        BuildConfig(sources=["synthetic", {"kind": "coco"}])
    with pytest.raises(ConfigError, match=r"sources\[0\]: unknown key 'weight'"):
        BuildConfig(sources=[{"kind": "synthetic", "weight": 2}])
    with pytest.raises(ConfigError, match=r"sources\[0\]\.share"):
        BuildConfig(sources=[{"kind": "synthetic", "share": 0}])
    assert BuildConfig(sources=["chartqa=/x"]).sources[0]["mode"] == "paste"
