"""`eval` / `score` never report stale or wrong results: the eval folder's identity, strict `correct`, ids that
clash inside one input, resume after a cut inside a UTF-8 character, and `--limit`."""

import json
from functools import partial

import pytest

from tests.cli_invoke import invoke
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.cli import app
from v2pe_train.eval import run as er
from v2pe_train.eval.inputs import iter_items

cli = partial(invoke, app)


@pytest.fixture(scope="module")
def mr(tmp_path_factory):
    out = tmp_path_factory.mktemp("stale") / "mr"
    build(BuildConfig(task="long_mr", length=4096, min_length=3584, max_tiles=2, num_samples=3, shard_size=3,
                      split="val", formats=["wds", "mmniah"], out=str(out), seed=5,
                      options={"subset": ["text_retrieval"]}), show_progress=False)
    return out


def evaluate(mr, out, *extra):
    return cli("eval", "--model", "tiny", "--data", mr, "--out", out, "--max-new-tokens", "2", "-q", *extra)


@pytest.mark.parametrize("changed, key", [(("--mode", "teacher_forced"), "mode"), (("--style", "v2pe"), "style"),
                                          (("--max-new-tokens", "3"), "max_new_tokens")])
def test_resuming_into_a_folder_of_another_evaluation_is_refused_naming_the_key(mr, tmp_path, changed, key):
    out = tmp_path / "ev"
    code, text = evaluate(mr, out)
    assert code == 0, text
    before = (out / er.PREDICTIONS).read_bytes()
    code, text = evaluate(mr, out, *changed)
    assert code == 2 and f"{key}:" in text and "another evaluation" in text
    assert (out / er.PREDICTIONS).read_bytes() == before  # nothing reused, nothing appended


def test_another_model_is_refused_too(mr, tmp_path):
    identity = {"model": {"preset": "tiny"}, "mode": "generate", "max_new_tokens": 2, "style": "official",
                "max_tiles": 1, "template": "internlm2-chat"}
    er.check_identity(tmp_path, identity)
    (tmp_path / er.PREDICTIONS).write_text('{"id": "a", "stride": "default", "prediction": "x"}\n')
    er.check_identity(tmp_path, dict(identity))  # the same evaluation resumes
    with pytest.raises(er.EvalInputError, match=r"model: \{'preset': 'tiny'\} there, \{'weights'"):
        er.check_identity(tmp_path, {**identity, "model": {"weights": {"model.safetensors": "ab12"}}})
    (tmp_path / er.IDENTITY).unlink()  # predictions nobody can account for (a folder from before eval.json)
    with pytest.raises(er.EvalInputError, match="nothing says which model"):
        er.check_identity(tmp_path, identity)


def test_score_lists_every_correct_that_is_not_a_boolean_and_lines_missing_keys(mr, tmp_path):
    ids = [item.id for item in iter_items([mr], images=False)]
    assert len(ids) == 3
    pred = tmp_path / "p.jsonl"
    rows = [{"id": ids[0], "stride": "64", "prediction": "x", "correct": 7},
            {"id": ids[1], "stride": "64", "prediction": "x", "correct": "1"},
            {"id": ids[2], "stride": "64", "prediction": "x", "correct": None},
            {"id": ids[0], "stride": "16", "prediction": "x", "correct": True},
            {"id": ids[1], "stride": "16", "prediction": "x", "correct": False},
            {"id": ids[2], "stride": "16"}]
    text_lines = [json.dumps(r) for r in rows]
    text_lines.insert(3, '{"id": "%s", "stride": "32", "prediction": "x", "correct": NaN}' % ids[0])
    pred.write_text("\n".join(text_lines) + "\n")
    code, text = cli("score", pred, "--data", mr, "--out", tmp_path / "s")
    assert code == 1 and "Traceback" not in text
    for lineno, value in ((1, "7"), (2, "'1'"), (3, "None"), (4, "nan")):
        assert f"malformed: p.jsonl:{lineno}: correct is {value}; it must be true, false or absent" in text
    assert "malformed: p.jsonl:7: prediction is NoneType, not text" in text
    scores = {(json.loads(x)["id"], json.loads(x)["stride"]): json.loads(x)["score"]
              for x in (tmp_path / "s" / er.SCORES).read_text().splitlines()}
    assert scores == {(ids[0], "16"): 1.0, (ids[1], "16"): 0.0}  # a boolean verdict is taken as it is


def test_two_lines_of_one_mmniah_file_with_the_same_id_are_refused_naming_both(mr, tmp_path):
    ann = tmp_path / "mm" / "annotations"
    ann.mkdir(parents=True)
    lines = (mr / "mmniah" / "annotations" / "retrieval-text.jsonl").read_text().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    first["id"], second["id"] = 1, "1"
    (ann / "retrieval-text.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    code, text = evaluate(tmp_path / "mm", tmp_path / "ev", "--images", mr / "mmniah" / "images")
    assert code == 2
    assert "mmniah-retrieval-text-1" in text and "retrieval-text.jsonl:1" in text and "retrieval-text.jsonl:2" in text


def test_the_same_folder_given_twice_is_refused(mr, tmp_path):
    code, text = evaluate(mr, tmp_path / "ev", "--data", mr)
    assert code == 2 and "is also that of" in text


def test_a_cut_inside_a_utf8_character_resumes_and_the_file_is_rewritten(mr, tmp_path):
    out = tmp_path / "ev"
    code, text = evaluate(mr, out)
    assert code == 0, text
    path = out / er.PREDICTIONS
    good = path.read_bytes().splitlines()
    cut = json.dumps({"id": "x", "stride": "default", "prediction": "caf\u00e9"}, ensure_ascii=False).encode()
    path.write_bytes(b"\n".join(good[:-1]) + b"\n" + cut[: cut.index(b"\xc3") + 1])  # half of "é"
    for _ in range(2):  # the old code failed here on every rerun ("can't decode byte 0xc3")
        code, text = evaluate(mr, out)
        assert code == 0, text
    lines = path.read_bytes().splitlines()
    assert lines[:-1] == good[:-1] and len(lines) == len(good)
    assert not list(out.glob(".predictions.jsonl.*"))  # the atomic rewrite leaves no temporary file



def test_a_last_line_without_its_newline_is_not_glued_to_the_next(mr, tmp_path):
    """A kill between a reply's text and its newline, or an editor saving without a final newline, leaves a whole
    last line without "\n": the next reply appended after it must still be a line of its own."""
    out = tmp_path / "ev"
    code, text = evaluate(mr, out, "--limit", "2")
    assert code == 0, text
    path = out / er.PREDICTIONS
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    code, text = evaluate(mr, out)  # the third item's reply goes after the second's
    assert code == 0 and "malformed" not in text, text
    rows = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3

def test_limit_scores_the_evaluated_items_and_exits_0(mr, tmp_path):
    out = tmp_path / "ev"
    code, text = evaluate(mr, out, "--limit", "2", "--stride", "16,default")
    assert code == 0, text
    assert "missing" not in text
    assert len((out / er.SCORES).read_text().splitlines()) == 4
    code, text = cli("score", out / er.PREDICTIONS, "--data", mr, "--limit", "2", "--out", tmp_path / "s")
    assert code == 0, text
    code, text = cli("score", out / er.PREDICTIONS, "--data", mr, "--out", tmp_path / "s2")
    assert code == 1 and text.count("missing:") == 2  # without --limit, the third item is missing at both strides


def test_model_identity_names_a_preset_a_run_step_or_the_weights(tmp_path):
    from v2pe_train.eval.inputs import EvalInputError

    assert er.model_identity("tiny") == {"preset": "tiny"}
    ckpt = tmp_path / "run" / "checkpoints" / "step_5"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"run_id": "abc", "step": 5}))
    (ckpt / "model.safetensors").write_bytes(b"w")
    assert er.model_identity(ckpt) == {"run_id": "abc", "step": 5}
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model-00001.safetensors").write_bytes(b"a")
    (folder / "config.json").write_text("{}")
    assert er.model_identity(folder) == {"weights": {
        "model-00001.safetensors": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}}
    for bad in ("{not json", "[1, 2]"):
        (ckpt / "meta.json").write_text(bad)
        with pytest.raises(EvalInputError, match=r"step_5/meta\.json"):
            er.model_identity(ckpt)
