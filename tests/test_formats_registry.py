"""The output formats as registry entries, and one reader per format for every side.

Each format is one `writers.formats.SPECS` entry: where a shard lies, how it is opened, finalized and
read back. The builder's outputs, `validate`, `stats` and the trainer's loader read a tar through the
same reader (`v2pe_common.formats.wds`). Byte-capped parts are cut on the tar's size whatever order the
formats are listed in.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import Builder, build
from v2pe_data.config import BuildConfig
from v2pe_data.plan import Accounting, Budget
from v2pe_data.distributions import summarize
from v2pe_common.formats import mmniah
from v2pe_data.tasks.long_mr import LongMROptions, LongMRTask
from v2pe_data.writers.atomic import file_digest
from v2pe_data.writers.base import FormatOutput, ShardOutputs
from v2pe_data.writers.formats import FORMATS, SPECS, finalize_all, formats_for, shard_relpath, task_format_error

VQA = dict(length=8192, num_samples=4, seed=23)


@pytest.fixture(scope="module")
def vqa_samples(tmp_path_factory):
    """4 planned Long-VQA samples: [(record, [image bytes])]."""
    builder = Builder(BuildConfig.from_dict({**VQA, "out": str(tmp_path_factory.mktemp("unused"))}))
    return [(p.record, [it.load() for it in p.items]) for p in map(builder.plan, range(VQA["num_samples"]))]


@pytest.fixture(scope="module")
def mr_plans():
    """6 Long-MR plans at 8K over three subsets (text needles, image choices, counts)."""
    acc = Accounting(load_tokenizer(None), get_template("internlm2-chat"), TilingConfig(max_tiles=12))
    task = LongMRTask(LongMROptions.from_dict({"subset": ["text_counting", "image_retrieval", "text_retrieval"]}),
                      split="train", seed=0, budget=Budget(4096, 8192), acc=acc)
    return [task.plan(i) for i in range(6)]


def tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def test_byte_capped_parts_roll_over_on_the_tar_whatever_order_the_formats_are_listed(vqa_samples, tmp_path):
    """`--format parquet,wds` with a byte cap gives the tars of `wds,parquet`: parts end where the tar reaches the cap."""
    probe = ShardOutputs(["wds", "parquet"], tmp_path / "probe", "train", 0)
    sizes = []
    for record, images in vqa_samples[:-1]:
        probe.write(record, images)
        sizes.append((probe.size("wds"), probe.size("parquet")))
    probe.abort()
    # a cap that exactly one of the two files has reached after some sample: the measured one decides the cut
    cap = next(max(t, p) for t, p in sizes if t != p)
    first_part = next(k + 1 for k, (t, _) in enumerate(sizes) if t >= cap)
    built = {}
    for order in (["wds", "parquet"], ["parquet", "wds"]):
        out = tmp_path / "_".join(order)
        manifest = build(BuildConfig.from_dict({**VQA, "formats": order, "shard_size": f"{cap}b", "out": str(out)}),
                         show_progress=False)
        built[tuple(order)] = (tars(out), manifest)
    (tars_a, manifest_a), (tars_b, manifest_b) = built.values()
    assert tars_a == tars_b and len(tars_a) > 1
    for manifest in (manifest_a, manifest_b):
        counts = {fmt: [s["num_samples"] for s in manifest["shards"] if s["format"] == fmt] for fmt in ("wds", "parquet")}
        assert counts["wds"][0] == first_part and counts["parquet"] == counts["wds"]  # the parquet parts follow the tars
    lone = ShardOutputs(["parquet"], tmp_path / "lone", "train", 0)
    with pytest.raises(ValueError, match="no 'wds' output to measure"):  # never silently another format's size
        lone.size()
    lone.abort()


@pytest.mark.parametrize("fmt", formats_for("long_vqa"))
def test_a_record_format_reads_back_through_its_entry_what_was_written(fmt, vqa_samples, tmp_path):
    out = FormatOutput(fmt, tmp_path, "val", 7, 2)
    for record, images in vqa_samples:
        out.write(record, images)
    [entry] = out.commit()
    assert entry["path"] == shard_relpath(fmt, "val", 7, 2) == SPECS[fmt].relpath("val", 7, 2)
    assert "val-000007-002" in entry["path"] and entry["num_samples"] == len(vqa_samples)
    assert (entry["bytes"], entry["sha256"]) == file_digest(tmp_path / entry["path"])
    assert SPECS[fmt].records and SPECS[fmt].tasks is None
    expect = [(record, dict(zip(record["images"], images))) for record, images in vqa_samples]
    assert list(SPECS[fmt].read_back(tmp_path, entry)) == expect


def test_a_format_for_one_task_is_refused_for_another_naming_both():
    assert set(FORMATS) == {"wds", "parquet", "internvl", "mmniah"}
    assert formats_for("long_vqa") == ("wds", "parquet", "internvl")
    assert formats_for("long_mr") == FORMATS
    assert task_format_error(["wds", "parquet"], "long_vqa") is None
    assert task_format_error(["wds", "mmniah"], "long_mr") is None
    why = task_format_error(["wds", "mmniah"], "long_vqa")
    assert "'mmniah'" in why and "long_mr" in why and "'long_vqa'" in why and "\n" not in why


def test_mmniah_parts_are_hashed_per_file_read_back_as_lines_and_finalized_into_mm_niahs_layout(mr_plans, tmp_path):
    entries = []
    for k, plans in enumerate((mr_plans[:3], mr_plans[3:])):  # two shard tasks, each its own part
        outs = ShardOutputs(["wds", "mmniah"], tmp_path, "train", k)
        for plan in plans:
            outs.write(plan.record, [it.load() for it in plan.items])
        entries += outs.commit()
    parts = [e for e in entries if e["format"] == "mmniah"]
    files = Counter(mmniah.file_name(p.record) for p in mr_plans)
    # one manifest entry per MM-NIAH file of each part, under the part's folder, hashed like any shard
    assert {Path(e["path"]).parent.as_posix() for e in parts} == {shard_relpath("mmniah", "train", k) for k in (0, 1)}
    assert {Path(e["path"]).name for e in parts} == set(files)
    assert sum(e["num_samples"] for e in parts) == len(mr_plans)
    assert sum(e["num_samples"] for e in entries if e["format"] == "wds") == len(mr_plans)
    assert sum(e["num_tokens"] for e in parts) == sum(p.record["meta"]["num_tokens"] for p in mr_plans)
    for e in parts:
        assert (e["bytes"], e["sha256"]) == file_digest(tmp_path / e["path"])
    # read back: MM-NIAH lines with their images (context, then choice images), one per sample
    lines = {line["question"]: images for e in parts for line, images in SPECS["mmniah"].read_back(tmp_path, e)}
    assert not SPECS["mmniah"].records and len(lines) == len(mr_plans)
    for plan in mr_plans:
        assert list(lines[plan.record["meta"]["question"]].values()) == [it.load() for it in plan.items]
    # finalize: the parts merged in shard order into MM-NIAH's annotations, ids from 0 in each file
    finalize_all(tmp_path, "long_mr_train", ["wds", "mmniah"], entries, None)
    back = list(mmniah.read(tmp_path / "mmniah"))
    assert Counter(s.file for s in back) == files and max(files.values()) > 1
    for name in files:
        assert [s.line["id"] for s in back if s.file == name] == list(range(files[name]))
    assert [s.line["question"] for s in back] == [p.record["meta"]["question"] for p in
                                                  sorted(mr_plans, key=lambda p: mmniah.file_name(p.record))]


def test_a_broken_mmniah_line_is_named_by_file_line_and_field(mr_plans, tmp_path):
    outs = ShardOutputs(["wds", "mmniah"], tmp_path, "train", 0)
    plan = next(p for p in mr_plans if p.record["subset"] == "image_retrieval")
    outs.write(plan.record, [it.load() for it in plan.items])
    entry = next(e for e in outs.commit() if e["format"] == "mmniah")
    path = tmp_path / entry["path"]
    line = json.loads(path.read_text())
    line["images_list"].pop()
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(mmniah.MMNIAHError, match=f"^{Path(entry['path']).name}:1: images_list: "):
        list(SPECS["mmniah"].read_back(tmp_path, entry))


def test_stats_never_reads_a_tar_cut_at_a_zeroed_header_as_a_smaller_build(tmp_path):
    """tarfile alone ends quietly at a zeroed member header; the one tar reader calls the shard damaged."""
    out = tmp_path / "b"
    build(BuildConfig.from_dict({**VQA, "num_samples": 2, "out": str(out)}), show_progress=False)
    assert summarize(out)["samples"] == 2
    shard = out / "shards" / "train-000000.tar"
    with tarfile.open(shard) as tar:
        second = next(m for m in tar.getmembers() if m.name.endswith("1.json"))  # the second sample's record
    blob = bytearray(shard.read_bytes())
    blob[second.offset:second.offset + 512] = bytes(512)
    shard.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"train-000000\.tar \(after \S+00000\): damaged shard: .*header"):
        summarize(out)
