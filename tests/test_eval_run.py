"""`v2pe-train eval` / `score` end to end on the tiny model: stride sweeps, resumable predictions, the report,
MM-NIAH inputs and submissions, and every prediction line that cannot be scored reported one by one."""

import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from tests.cli_invoke import invoke
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.cli import app
from v2pe_train.eval import run as er
from v2pe_train.eval.inputs import iter_items


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalbuilds")
    mr = root / "mr"
    build(BuildConfig(task="long_mr", length=4096, min_length=3584, max_tiles=2, num_samples=4, shard_size=4,
                      split="val", depth="0:1:0.5", formats=["wds", "mmniah"], out=str(mr), seed=3,
                      options={"subset": ["text_retrieval", "image_retrieval"]}), show_progress=False)
    vqa = root / "vqa"
    build(BuildConfig(length=4096, min_length=2048, max_tiles=2, num_samples=2, shard_size=2, split="val",
                      out=str(vqa), seed=4), show_progress=False)
    return mr, vqa


cli = partial(invoke, app)  # exit code, and stdout with stderr as a terminal shows them


def test_eval_sweeps_strides_writes_report_and_a_rerun_skips_finished_predictions(builds, tmp_path):
    mr, vqa = builds
    out = tmp_path / "ev"
    code, text = cli("eval", "--model", "tiny", "--data", mr, "--data", vqa, "--out", out, "--stride", "16,default",
                     "--max-new-tokens", "4", "-q")
    assert code == 0, text
    lines = (out / er.PREDICTIONS).read_text().splitlines()
    assert len(lines) == 2 * 6 and {json.loads(x)["stride"] for x in lines} == {"16", "default"}
    md = (out / "REPORT.md").read_text()
    assert "| 16 | long_mr | text_retrieval |" in md and "| default | long_vqa |" in md
    for name in ("heatmap_16.png", "heatmap_default.png"):
        assert np.asarray(Image.open(out / name).convert("L")).std() > 10
    scores = [json.loads(x) for x in (out / er.SCORES).read_text().splitlines()]
    assert len(scores) == 12 and all(0.0 <= s["score"] <= 1.0 for s in scores)

    # a kill mid-write leaves half a line: it is dropped and its item predicted again; nothing else reruns
    with open(out / er.PREDICTIONS, "a") as fh:
        fh.write('{"id": "long_mr-val-0000')
    before = lines[:-1]
    (out / er.PREDICTIONS).write_text("\n".join(before) + '\n{"id": "long_mr-val-0000')
    code, text = cli("eval", "--model", "tiny", "--data", mr, "--data", vqa, "--out", out, "--stride", "16,default",
                     "--max-new-tokens", "4", "-q")
    assert code == 0, text
    after = (out / er.PREDICTIONS).read_text().splitlines()
    assert after[:-1] == before and len(after) == 12 and json.loads(after[-1])["id"] == json.loads(lines[-1])["id"]


def test_teacher_forced_mode_scores_by_its_verdict(builds, tmp_path):
    mr, _ = builds
    code, text = cli("eval", "--model", "tiny", "--data", mr, "--out", tmp_path / "tf", "--mode", "teacher_forced",
                     "--stride", "64", "-q")
    assert code == 0, text
    rows = [json.loads(x) for x in (tmp_path / "tf" / er.PREDICTIONS).read_text().splitlines()]
    scores = {json.loads(x)["id"]: json.loads(x)["score"]
              for x in (tmp_path / "tf" / er.SCORES).read_text().splitlines()}
    assert len(rows) == 4 and all(scores[r["id"]] == float(r["correct"]) for r in rows)


def test_score_reports_malformed_duplicated_unknown_and_missing_lines_precisely(builds, tmp_path):
    mr, _ = builds
    ids = [item.id for item in iter_items([mr], images=False)]
    pred = tmp_path / "p.jsonl"
    lines = [json.dumps({"id": i, "stride": "64", "prediction": "not mentioned"}) for i in ids[:-1]]
    lines += [json.dumps({"id": ids[0], "stride": "64", "prediction": "again"}), "{oops",
              json.dumps({"id": "ghost", "stride": "64", "prediction": "x"}),
              json.dumps({"id": ids[1], "stride": "64", "prediction": 7})]
    pred.write_text("\n".join(lines) + "\n")
    code, text = cli("score", pred, "--data", mr, "--out", tmp_path / "s")
    assert code == 1
    warnings = [x for x in text.splitlines() if x.startswith("warning: ")]
    assert f"warning: duplicated: p.jsonl:{len(ids)}: {ids[0]} @ stride 64 (first in p.jsonl:1)" in warnings
    assert any(w.startswith(f"warning: malformed: p.jsonl:{len(ids) + 1}: not JSON") for w in warnings)
    assert any(w.startswith(f"warning: malformed: p.jsonl:{len(ids) + 3}: prediction is int") for w in warnings)
    assert "warning: unknown id: ghost" in warnings and f"warning: missing: {ids[-1]} @ stride 64" in warnings
    assert len(warnings) == 5
    assert len((tmp_path / "s" / er.SCORES).read_text().splitlines()) == len(ids) - 1


def test_mmniah_files_evaluate_and_their_submission_format_scores(builds, tmp_path):
    """Our build's MM-NIAH copy is read the way MM-NIAH's evaluation reads it (prompt built from the line,
    images relative to the images root), and MM-NIAH submission files (id per task file + response) score."""
    mr, _ = builds
    folder = mr / "mmniah"
    items = list(iter_items([folder], **er.accounting(load_tokenizer(None), "internlm2-chat", 2)))
    assert len(items) == 4 and {i.task for i in items} == {"mm_niah"}
    code, text = cli("eval", "--model", "tiny", "--data", folder, "--out", tmp_path / "mm", "--max-tiles", "2",
                     "--max-new-tokens", "3", "-q")
    assert code == 0, text
    # MM-NIAH's answer files (<model>_<task>.jsonl as its eval_internvl.py writes them) answer line ids of one
    # task file with the benchmark's own answers: all correct
    for f in sorted((folder / "annotations").glob("*.jsonl")):
        sub = tmp_path / f"my_model_{f.stem}-val.jsonl"
        with open(sub, "w") as fh:
            for raw in f.read_text().splitlines():
                line = json.loads(raw)
                ans = line["answer"]
                reply = chr(ord("A") + ans) if isinstance(ans, int) else (json.dumps(ans) if isinstance(ans, list)
                                                                          else ans)
                fh.write(json.dumps({"question_id": line["id"], "question": line["question"], "answer": ans,
                                     "response": reply, "context_length": line["meta"]["context_length"],
                                     "placed_depth": line["meta"]["placed_depth"]}) + "\n")
    subs = sorted(tmp_path.glob("my_model_*.jsonl"))
    code, text = cli("score", *subs, "--data", folder, "--out", tmp_path / "subscore", "--max-tiles", "2")
    assert code == 0, text
    scores = [json.loads(x)["score"] for x in (tmp_path / "subscore" / er.SCORES).read_text().splitlines()]
    assert len(scores) == 4 and all(s == 1.0 for s in scores)
    # and alone, as MM-NIAH's calculate_scores.py reads them: the model is "my_model", two task files, no overall
    code, text = cli("score", *subs, "--out", tmp_path / "alone")
    assert code == 0, text
    assert "is not equal to 6, the overall score will be ignored" in text
    saved = json.loads((tmp_path / "alone" / "mmniah" / "my_model" / "scores_val.json").read_text())
    assert set(saved) == {"retrieval-text-val", "retrieval-image-val", "context_ranges"}
    assert saved["context_ranges"][0] == "1k" and len(saved["retrieval-text-val"]) == 11


def test_eval_takes_a_training_run_and_uses_its_latest_checkpoint(builds, tmp_path):
    from v2pe_train.config import TrainConfig
    from v2pe_train.train import train

    mr, _ = builds
    run = tmp_path / "run"
    train(TrainConfig(model="tiny", data=[str(mr)], out=str(run), max_seq_len=4096, max_steps=1, save_every=1,
                      warmup_ratio=0.0, precision="fp32", lr=1e-3), progress=False)
    gen = er.load_generator(run)
    trained = dict(gen.model.named_parameters())
    fresh = dict(er.load_generator("tiny").model.named_parameters())
    assert any(not (trained[k] == fresh[k]).all() for k in trained)  # the checkpoint's weights, not a fresh init


@pytest.mark.parametrize("text,message", [("3", "'3' is neither"), ("16,x", "'x' is neither"), ("", "neither")])
def test_bad_strides_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        er.parse_strides(text)


def test_a_stride_sweep_keeps_its_order_and_drops_repeats():
    assert er.parse_strides("64,1,default,64") == [64, 1, "default"]


def test_inputs_whose_item_ids_clash_are_refused_naming_both(builds, tmp_path):
    """Two builds of one task and split number their samples alike; predictions keyed by id would mix them."""
    mr, _ = builds
    twin = tmp_path / "mr_seed9"
    build(BuildConfig(task="long_mr", length=4096, min_length=3584, max_tiles=2, num_samples=2, shard_size=2,
                      split="val", out=str(twin), seed=9, options={"subset": ["text_retrieval"]}), show_progress=False)
    code, text = cli("eval", "--model", "tiny", "--data", mr, "--data", twin, "--out", tmp_path / "ev",
                     "--max-new-tokens", "2", "-q")
    assert code == 2
    assert "long_mr-val-00000000" in text and str(mr) in text and str(twin) in text and "separate --out" in text
