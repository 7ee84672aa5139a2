"""`v2pe-data build milebench`: MileBench's task folders become records whose prompts are MileBench's,
whose token counts are exact, and whose answers the MileBench scorer reads; bad rows cost only themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.milebench import COMBINED, write_milebench
from v2pe_common import encoding
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig, num_tiles
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import Builder, BuildError, build
from v2pe_data.config import BuildConfig
from v2pe_data.tasks.milebench.prompt import option_letter
from v2pe_train.eval import milebench as mb_rules
from v2pe_train.eval.tasks import score

REPO = Path(__file__).resolve().parents[1]
ALL = ["ALFRED", "ActionLocalization", "GPR1200", "MultiModalQA"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_milebench(tmp_path_factory.mktemp("mb"))


def config(fx, out="unused", *, tasks=None, length=16384, min_length=0, num_samples=None, **options) -> BuildConfig:
    opts = {"path": str(fx.root), **({"tasks": tasks} if tasks is not None else {}), **options}
    n = num_samples if num_samples is not None else sum(len(t.rows) for t in fx.tasks.values())
    return BuildConfig(task="milebench", length=length, min_length=min_length, num_samples=n, out=str(out),
                       options=opts)


def records(builder: Builder) -> list[dict]:
    return [builder.plan(i).record for i in range(len(builder.task.samples))]


def independent_count(record: dict, root: Path, max_tiles: int = 12) -> encoding.TokenCount:
    """Tokens counted from scratch: image sizes read from the files, tiles from the tiling rule."""
    tiling = TilingConfig(max_tiles=max_tiles)
    task_dir = root / record["subset"]
    tiles = []
    for src in record["meta"]["sources"]:
        with Image.open(task_dir / src["doc_id"]) as im:
            tiles.append(num_tiles(*im.size, tiling))
    return encoding.count(record["conversations"], tiles, load_tokenizer(None), get_template("internlm2-chat"), tiling)


def test_records_carry_milebench_prompts_answers_and_provenance_in_task_then_file_order(fx):
    got = records(Builder(config(fx)))
    want = [(task, row) for task in ALL for row in fx.tasks[task].rows]  # folders sorted by name, then file order
    assert [(r["subset"], r["meta"]["sample_id"]) for r in got] == [(t, row["sample_id"]) for t, row in want]
    for record, (task, row) in zip(got, want):
        assert record["task"] == "milebench" and record["id"] == f"milebench-{task}-{row['sample_id']}"
        assert record["conversations"] == [{"from": "human", "value": row["human"]},
                                           {"from": "gpt", "value": row["gpt"]}]
        assert record["answer"] == row["answer"] and record["meta"]["choices"] == row["choices"]
        assert record["meta"]["question_type"] == ("multi-choice" if row["choices"] else "open-ended")
        assert [s["doc_id"] for s in record["meta"]["sources"]] == row["images"]
        assert {(s["dataset"], s["id"], s["role"]) for s in record["meta"]["sources"]} == {
            (f"MileBench/{task}", row["sample_id"], "context")}
        assert record["meta"]["image_quantity_level"] == "Few"


def test_token_counts_equal_an_independent_count(fx):
    for record in records(Builder(config(fx))):
        counted = independent_count(record, fx.root)
        meta = record["meta"]
        assert (meta["num_tokens"], meta["text_tokens"], meta["image_tokens"]) == (
            counted.total, counted.text, counted.image), record["id"]


def test_tile_cap_changes_the_count_exactly(fx):
    b = Builder(BuildConfig(**{**_fields(config(fx, tasks=["MultiModalQA"], num_samples=1)), "max_tiles": 3}))
    record = b.plan(0).record
    assert max(record["meta"]["tiles"]) <= 4  # 3 tiles + the thumbnail
    assert record["meta"]["num_tokens"] == independent_count(record, fx.root, max_tiles=3).total


def _fields(cfg: BuildConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("task", "length", "min_length", "num_samples", "out", "options")}


def test_bad_rows_are_skipped_and_counted_by_reason_naming_task_id_and_file(fx):
    b = Builder(config(fx, tasks=["ActionLocalization"]))
    (inp,) = b.task.inputs
    rejected = inp.rejected()
    assert {r["id"]: r["reason"] for r in rejected} == fx.tasks["ActionLocalization"].bad
    file = "ActionLocalization/ActionLocalization.json data["
    assert all(r["task"] == "ActionLocalization" and r["where"].startswith(file) for r in rejected)
    counts = inp.describe()["rejected"]
    assert {k: v for k, v in counts.items() if v} == {r: 1 for r in fx.tasks["ActionLocalization"].bad.values()}
    assert [r["meta"]["sample_id"] for r in records(b)] == ["101", "102", "103"]  # nothing valid is lost


def test_strict_stops_at_the_first_bad_row_with_one_line(fx, tmp_path):
    cfg = config(fx, tmp_path / "o", tasks=["ActionLocalization"])
    cfg.strict = True
    with pytest.raises(BuildError) as err:
        build(cfg, show_progress=False)
    message = str(err.value)
    assert err.value.usage and "\n" not in message
    first_bad = "207"  # the fixture inserts the bad rows in front of one another: the last written comes first
    assert f"milebench ActionLocalization:{first_bad}: corrupt_image:" in message
    assert "ActionLocalization/ActionLocalization.json data[2]" in message


def test_samples_outside_the_bin_are_skipped_and_counted_never_replanned(fx):
    everything = records(Builder(config(fx)))
    sizes = sorted(r["meta"]["num_tokens"] for r in everything)
    lo, hi = sizes[1], sizes[-2]  # drops the shortest and the longest
    b = Builder(config(fx, min_length=lo, length=hi, num_samples=len(sizes) - 2))
    kept = records(b)
    assert sorted(r["meta"]["num_tokens"] for r in kept) == sizes[1:-1]
    assert all(r["meta"]["min_len"] == lo and r["meta"]["target_len"] == hi for r in kept)
    out_of_bin = [r for i in b.task.inputs for r in i.rejected() if r["reason"] == "out_of_bin"]
    assert len(out_of_bin) == 2 and all(f"outside the bin [{lo}, {hi}]" in r["detail"] for r in out_of_bin)


def test_asking_for_more_samples_than_fall_in_the_bin_names_how_many_there_are(fx, tmp_path):
    with pytest.raises(BuildError, match=r"--num-samples 99: only 10 MileBench samples .* use --num-samples 10") as err:
        build(config(fx, tmp_path / "o", num_samples=99), show_progress=False)
    assert err.value.usage and not (tmp_path / "o").exists()
    with pytest.raises(BuildError, match=r"no MileBench sample of \['GPR1200'\] can be built in \[0, 300\] tokens: 1 rows skipped \(out_of_bin 1\)"):
        build(config(fx, tmp_path / "p", tasks=["GPR1200"], length=300, num_samples=1), show_progress=False)


def test_the_tasks_option_selects_and_orders_tasks_and_builds_are_deterministic(fx):
    cfg = config(fx, tasks="MultiModalQA,GPR1200", num_samples=4)
    first, again = records(Builder(cfg)), records(Builder(cfg))
    assert first == again
    assert [r["subset"] for r in first] == ["MultiModalQA"] * 3 + ["GPR1200"]
    other_seed = Builder(BuildConfig(**{**_fields(cfg), "seed": 5})).plan(0).record
    assert other_seed["conversations"] == first[0]["conversations"] and other_seed["meta"]["seed"] == 5


def test_the_combined_variant_puts_the_grid_first_and_captions_the_placeholders(fx):
    b = Builder(config(fx, tasks=["ALFRED"], combined=COMBINED, num_samples=1))
    got = records(b)
    assert b.task.inputs[0].describe()["file"] == f"ALFRED_combined_{COMBINED}.json"
    # rows with two grids: both references assert one combined image a row
    assert [(r["id"], r["reason"]) for r in b.task.inputs[0].rejected()] == [("1", "placeholder_mismatch"),
                                                                             ("2", "placeholder_mismatch")]
    for record, row in zip(got, fx.tasks["ALFRED"].combined_rows, strict=True):
        assert record["conversations"][0]["value"] == row["human"]
        assert record["conversations"][1]["value"] == row["gpt"]
        assert [s["doc_id"] for s in record["meta"]["sources"]] == row["images"]
        assert record["meta"]["num_tokens"] == independent_count(record, fx.root).total


def test_multi_choice_records_are_scored_by_the_milebench_scorer(fx):
    by_id = {r["id"]: r for r in records(Builder(config(fx)))}
    jumping = by_id["milebench-ActionLocalization-101"]
    assert score(jumping, "B") == 1.0 and score(jumping, "A") == 0.0
    assert score(jumping, jumping["conversations"][1]["value"]) == 1.0  # the trained reply is a right reply
    assert score(by_id["milebench-ActionLocalization-103"], "A") == 1.0
    gpr = by_id["milebench-GPR1200-7"]
    assert score(gpr, gpr["conversations"][1]["value"]) == 1.0 and score(gpr, "bridge") == 0.0
    alfred = by_id["milebench-ALFRED-1"]
    assert score(alfred, alfred["conversations"][1]["value"]) == 1.0


def test_option_letters_are_the_ones_the_scorer_matches():
    assert [option_letter(i) for i in range(800)] == [mb_rules.option_letter(i) for i in range(800)]


@pytest.mark.parametrize("options, message", [
    ({"path": "/nowhere/MileBench"}, "path: /nowhere/MileBench is not a folder"),
    ({"tasks": ["ALFRED"]}, "path: milebench needs the MileBench root folder"),
    ({"path": ".", "combined": 0}, "combined: expected an int N in \\[1, 64\\]"),
    ({"path": ".", "subset": "x"}, "unknown key 'subset'"),
])
def test_bad_options_are_usage_errors_naming_the_key(options, message, tmp_path):
    with pytest.raises(BuildError, match=message) as err:
        build(BuildConfig(task="milebench", length=16384, num_samples=1, out=str(tmp_path / "o"), options=options),
              show_progress=False)
    assert err.value.usage


def test_a_missing_task_folder_is_reported_and_skipped_unless_strict(fx, tmp_path):
    b = Builder(config(fx, tasks=["GPR1200", "WebQA"], num_samples=1))
    assert [i.status for i in b.task.inputs] == ["available", f"unavailable: no {fx.root / 'WebQA' / 'WebQA.json'}"]
    cfg = config(fx, tmp_path / "o", tasks=["GPR1200", "WebQA"], num_samples=1)
    cfg.strict = True
    with pytest.raises(BuildError, match=r"milebench task 'WebQA': no .*WebQA.json \(--strict\)"):
        build(cfg, show_progress=False)


def test_recipes_name_milebench_task_folders_and_tile_caps():
    known = {"ALFRED", "ActionLocalization", "ActionPrediction", "ActionSequence", "CLEVR-Change", "CharacterOrder",
             "CounterfactualInference", "DocVQA", "EgocentricNavigation", "GPR1200", "IEdit", "ImageNeedleInAHaystack",
             "MMCoQA", "MovingAttribute", "MovingDirection", "MultiModalQA", "OCR-VQA", "ObjectExistence",
             "ObjectInteraction", "ObjectShuffle", "SceneTransition", "SlideVQA", "Spot-the-Diff", "StateChange",
             "TQA", "TextNeedleInAHaystack", "WebQA", "WikiVQA", "nuscenes"}  # MileBench's eval.sh
    caps = {}
    for name in ("milebench_16k", "milebench_nh_text", "milebench_nh_image"):
        cfg = BuildConfig.from_yaml(REPO / "recipes" / f"{name}.yaml")
        assert cfg.task == "milebench" and set(cfg.options["tasks"]) <= known
        caps[name] = cfg.max_tiles
    assert caps == {"milebench_16k": 12, "milebench_nh_text": 5, "milebench_nh_image": 3}


def test_cli_build_then_validate(fx, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "v2pe_data", "build", "milebench", "--option", f"path={fx.root}",
           "--option", "tasks=ALFRED,ActionLocalization", "--len", "16k", "--min-len", "1", "-n", "6",
           "--format", "wds,internvl", "--out", str(out), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "milebench" and manifest["num_samples"] == 6
    assert {k: v for k, v in manifest["rejected"]["counts"].items() if v} == {
        reason: 1 for reason in fx.tasks["ActionLocalization"].bad.values()}
    assert [s["name"] for s in manifest["sources"]] == ["ALFRED", "ActionLocalization"]
    done = subprocess.run([sys.executable, "-m", "v2pe_data", "validate", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 6 samples")


def test_duplicate_ids_literal_image_tags_and_a_damaged_file(tmp_path):
    """Rows MileBench could not render faithfully are rejected; a file that is not JSON is one usage error."""
    from tests.fixtures.sources import make_image

    task = tmp_path / "MileBench" / "IEdit"
    (task / "images").mkdir(parents=True)
    (task / "images" / "x.png").write_bytes(make_image("x", 32, 32))
    row = {"sample_id": 1, "task_instruction_id": 0, "response": "a cat",
           "task_instance": {"context": "Edit {image#1}", "images_path": ["x.png"]}}
    rows = [row, {**row, "response": "a dog"},  # the second sample_id 1
            {**row, "sample_id": 2, "task_instance": {"context": "<image> {image#1}", "images_path": ["x.png"]}},
            {**row, "sample_id": 3, "task_instruction_id": 4}]
    (task / "IEdit.json").write_text(json.dumps({"meta_data": {"task_instruction": ["Describe the edit."],
                                                               "question_type": "open-ended"}, "data": rows}))
    cfg = BuildConfig(task="milebench", length=4096, min_length=0, num_samples=1, out=str(tmp_path / "o"),
                      options={"path": str(tmp_path / "MileBench")})
    b = Builder(cfg)
    assert [(r["id"], r["reason"]) for r in b.task.inputs[0].rejected()] == [
        ("1", "duplicate_id"), ("2", "placeholder_mismatch"), ("3", "bad_type")]
    assert b.plan(0).record["conversations"][0]["value"] == "Describe the edit.\nEdit <image>"
    (task / "IEdit.json").write_text('{"meta_data": ')
    with pytest.raises(BuildError, match=r"milebench IEdit: .*IEdit.json: not JSON at line 1") as err:
        build(cfg, show_progress=False)
    assert err.value.usage


def test_records_say_they_come_from_the_milebench_test_set(fx):
    for record in records(Builder(config(fx, tasks=["GPR1200"], num_samples=1))):
        assert record["meta"]["eval_benchmark"] == "MileBench"
        assert all(s["split"] == "test" and s["benchmark"] == "MileBench" for s in record["meta"]["sources"])
    (inp,) = Builder(config(fx, tasks=["GPR1200"], num_samples=1)).task.inputs
    assert inp.describe()["eval_benchmark"] == "MileBench" and inp.describe()["split"] == "test"


def test_task_folders_whose_ids_collide_are_refused_naming_both(tmp_path):
    """'T.1' and 'T_1' both become key T_1: the build would say 2 samples and validate find 1."""
    from tests.fixtures.sources import make_image

    for name in ("T.1", "T_1"):
        task = tmp_path / "MileBench" / name
        (task / "images").mkdir(parents=True)
        (task / "images" / "x.png").write_bytes(make_image(name, 32, 32))
        rows = [{"sample_id": 1, "task_instruction_id": 0, "response": "a cat",
                 "task_instance": {"context": "Look {image#1}", "images_path": ["x.png"]}}]
        (task / f"{name}.json").write_text(json.dumps({"meta_data": {"task_instruction": ["Say."],
                                                                     "question_type": "open-ended"}, "data": rows}))
    cfg = BuildConfig(task="milebench", length=4096, min_length=0, num_samples=2, out=str(tmp_path / "o"),
                      options={"path": str(tmp_path / "MileBench")})
    with pytest.raises(BuildError, match=r"T_1:1 .* and T\.1:1 .* both become record id 'milebench-T_1-1'") as err:
        build(cfg, show_progress=False)
    assert err.value.usage and not (tmp_path / "o").exists()


def test_training_on_a_milebench_build_is_refused_unless_the_recipe_allows_it(fx, tmp_path):
    from v2pe_train.config import TrainConfig
    from v2pe_train.train import UsageError, preflight

    out = tmp_path / "mb"
    cfg = config(fx, out, tasks=["GPR1200"], num_samples=1)
    cfg.formats = ["wds", "internvl"]
    build(cfg, show_progress=False)
    with pytest.raises(UsageError, match=r"evaluation benchmark MileBench \(MileBench/GPR1200\).*allow_eval_data"):
        preflight(TrainConfig(model="tiny", data=[str(out)], out=str(tmp_path / "run")))
    with pytest.raises(UsageError, match="MileBench/GPR1200"):  # its InternVL copy too, through the build folder
        preflight(TrainConfig(model="tiny", datasets=[{"path": str(out / "internvl")}], out=str(tmp_path / "run")))
    preflight(TrainConfig(model="tiny", data=[str(out)], out=str(tmp_path / "run"), allow_eval_data=True))


def test_v2pe_style_evaluates_milebench_records_at_one_tile_an_image(fx, tmp_path):
    """V2PE's eval_milebench.py feeds one 448 px tile per image whatever the records were built with."""
    from v2pe_common.formats import read_records, wds
    from v2pe_train.eval.inference import V2PEGenerator
    from v2pe_train.eval.inputs import retile

    out = tmp_path / "mb"
    build(config(fx, out, tasks=["MultiModalQA"], num_samples=1), show_progress=False)
    ((key, record, images),) = list(read_records(wds.iter_samples(out / "shards" / "train-000000.tar")))
    assert max(record["meta"]["tiles"]) > 1
    gen = V2PEGenerator.load("tiny")
    one = retile(record, 1, gen.tokenizer)
    assert one["meta"]["tiles"] == [1, 1] and one["meta"]["tiling"]["max_tiles"] == 1
    assert one["meta"]["num_tokens"] < record["meta"]["num_tokens"]
    assert gen.prepare(one, images).tiles == [1, 1]  # the loader's own checks accept the recount


def test_milebench_records_are_refused_however_the_trainer_is_pointed_at_them(fx, tmp_path):
    """The InternVL copy's own annotation files, and a copy of that folder away from its build (no manifest to
    read), are refused too: the preflight finds the build three levels up, the loader refuses each record that
    says it comes from an evaluation benchmark, unless the recipe allows it."""
    import shutil

    import torch

    from v2pe_train.config import TrainConfig
    from v2pe_train.data import LoaderError, PackedLoader
    from v2pe_train.parallel.mesh import Topology
    from v2pe_train.train import UsageError, loader_config, preflight

    out = tmp_path / "mb"
    cfg = config(fx, out, tasks=["GPR1200"], num_samples=1)
    cfg.formats = ["wds", "internvl"]
    build(cfg, show_progress=False)
    glob = str(out / "internvl" / "annotations" / "*.jsonl")
    with pytest.raises(UsageError, match="MileBench/GPR1200"):
        preflight(TrainConfig(model="tiny", datasets=[{"path": glob}], out=str(tmp_path / "run")))
    shutil.copytree(out / "internvl", tmp_path / "copy")
    topo, cpu = Topology(rank=0, world=1, cp=1), torch.device("cpu")
    for allow in (False, True):
        train = TrainConfig(model="tiny", datasets=[{"path": str(tmp_path / "copy" / "meta.json")}],
                            out=str(tmp_path / "run"), allow_eval_data=allow)
        preflight(train)  # nothing above the copy says where it came from
        loader = PackedLoader(loader_config(train, topo, cpu).model_copy(update={"num_epochs": 1}), None)
        if allow:
            assert sum(b.num_samples for b in loader) == 1
        else:
            with pytest.raises(LoaderError, match=r"milebench-GPR1200-.*evaluation benchmark MileBench.*allow_eval_data"):
                list(loader)
