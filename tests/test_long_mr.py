"""Long-MR: every needle is where meta says, answers follow from the needles, counts are exact and in bin.

Oracles read only `meta.needles` and the question (never the planner's internals); image needles are
checked on the pixels of the loaded images.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from v2pe_common import encoding, schema
from v2pe_common.recipe import ConfigError
from v2pe_common.template import get_template
from v2pe_common.tiling import IMAGE_PLACEHOLDER, TilingConfig
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.plan import Accounting, Budget, PlanError
from v2pe_data.tasks.long_mr import SUBSETS, LongMROptions, LongMRTask
from v2pe_common.formats import mmniah
from v2pe_data.writers import mmniah as mmniah_writer
from v2pe_data.tasks.long_mr.haystack import SHAPE_KEYS, SyntheticHaystack
from v2pe_data.tasks.long_mr.needles import FACTS, NAMES, NOT_MENTIONED
from v2pe_data.tasks.long_mr.pictures import COLOURS, SHAPES, Picture, draw

K32 = Budget(16 * 1024, 32 * 1024)
SAMPLES = 3  # per subset at 32K


@pytest.fixture(scope="module")
def acc() -> Accounting:
    return Accounting(load_tokenizer(None), get_template("internlm2-chat"), TilingConfig(max_tiles=12))


def task(acc, budget=K32, seed=0, **options) -> LongMRTask:
    return LongMRTask(LongMROptions.from_dict(options), split="train", seed=seed, budget=budget, acc=acc)


@pytest.fixture(scope="module")
def plans(acc) -> dict:
    return {s: [task(acc, subset=s).plan(i) for i in range(SAMPLES)] for s in SUBSETS}


def human(record) -> str:
    return record["conversations"][0]["value"]


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def pasted_ok(plan, needle) -> bool:
    """The recorded box of the loaded image shows the named picture: closer to it than to any other picture."""
    x0, y0, x1, y1 = needle["box"]
    crop = rgb(plan.items[needle["image"]].load())[y0:y1, x0:x1]
    diffs = {p: np.abs(crop - np.asarray(draw(p, x1 - x0), dtype=np.int16)).mean()
             for p in (Picture(s, c) for s in SHAPES for c in COLOURS)}
    named = Picture(needle["shape"], needle["colour"])
    return diffs[named] < 6 and min(diffs, key=diffs.get) == named


# ------------------------------------------------------------------------------------------ oracles


def oracle(record) -> object:
    """The answer from meta.needles and the question alone."""
    meta, subset = record["meta"], record["subset"]
    needles, question = meta["needles"], meta["question"]
    texts = [n["text"] for n in needles if n["kind"] == "text"]
    if subset == "text_retrieval":
        for fact in FACTS:
            name = re.escape(needles[0]["key"])
            if fact.question.format(name=needles[0]["key"]) in question:
                pattern = re.escape(fact.sentence).replace(r"\{name\}", name).replace(r"\{value\}", "(.+)")
                return re.fullmatch(pattern, texts[0]).group(1)
    if subset == "text_retrieval_fake":
        asked = next(n for n in NAMES if n in question)
        return NOT_MENTIONED if all(n["key"] != asked for n in needles) else None
    if subset == "text_counting":
        return [int(re.match(r"There are (\d+) ", t).group(1)) for t in texts]
    if subset == "text_reasoning":
        held = {m.group(1): int(m.group(2)) for m in (re.match(r"(\w+) has (\d+) ", t) for t in texts)}
        return str(sum(held.values())) if "in total" in question else max(held, key=held.get)
    if subset == "image_counting":
        return list(Counter(n["image"] for n in needles).values())
    if subset == "image_reasoning_jigsaw":
        return [n["piece"] for n in needles]
    if subset == "image_reasoning_colour_pair":
        by_colour = Counter(n["colour"] for n in needles)
        pair = [n["shape"] for n in needles if by_colour[n["colour"]] == 2]
        return meta["choices"].index(f"the {pair[0]} and the {pair[1]}")
    raise AssertionError(subset)


@pytest.mark.parametrize("subset", SUBSETS)
def test_each_needle_is_where_meta_says_and_an_oracle_of_the_needles_gives_the_answer(plans, subset):
    for plan in plans[subset]:
        record, meta = plan.record, plan.record["meta"]
        text = human(record)
        for n in meta["needles"]:
            if n["kind"] == "text":
                assert text[n["offset"]:n["offset"] + len(n["text"])] == n["text"]
                context = text[:meta["question_offset"]]
                assert context.count(n["key"]) == sum(m.get("key") == n["key"] for m in meta["needles"])
            elif n["kind"] == "pasted":
                assert meta["sources"][n["image"]]["role"] == "needle"
                assert pasted_ok(plan, n), n
        if subset == "image_retrieval":
            (n,) = meta["needles"]
            name = n["description"]
            picture = Picture(*reversed(name.split(" ")))
            if n["kind"] == "image":  # inserted on its own: the whole image is the picture
                assert np.abs(rgb(plan.items[n["image"]].load()) - np.asarray(draw(picture, 224))).mean() < 1
            # the oracle matches the needle's picture against the choice images' pixels
            choices = [rgb(plan.items[i].load()) for i in meta["choice_images"]]
            want = np.asarray(draw(picture, 224), dtype=np.int16)
            assert int(np.argmin([np.abs(c - want).mean() for c in choices])) == record["answer"]
        else:
            assert oracle(record) == record["answer"]
        assert record["conversations"][1]["value"] == (
            "ABCD"[record["answer"]] if meta["choices"] or meta["choice_images"]
            else json.dumps(record["answer"]) if isinstance(record["answer"], list) else record["answer"])


def test_jigsaw_pieces_are_the_strips_of_their_source_picture(plans):
    for plan in plans["image_reasoning_jigsaw"]:
        needles = plan.record["meta"]["needles"]
        source = None
        for n in needles:
            item = plan.items[n["image"]]
            source = source if source is not None else rgb(item.load.args[0]())  # the picture that was cut
            x0, y0, x1, y1 = n["source_box"]
            assert np.abs(rgb(item.load()) - source[y0:y1, x0:x1]).mean() < 3
        boxes = sorted(n["source_box"][1] for n in needles)
        assert boxes[0] == 0 and len(set(boxes)) == len(needles)


def test_fake_negatives_contain_no_needle_and_the_asked_name_nowhere(acc):
    t = task(acc, subset="text_retrieval_fake")
    kinds = Counter()
    for i in range(8):
        record = t.plan(i).record
        kinds[record["meta"]["design"]["fake_kind"]] += 1
        asked = next(n for n in NAMES if n in record["meta"]["question"])
        context = human(record)[:record["meta"]["question_offset"]]
        assert asked not in context and record["answer"] == NOT_MENTIONED
        if record["meta"]["design"]["fake_kind"] == "absent":
            assert record["meta"]["needles"] == []
            assert not any(name in context for name in NAMES)
    assert kinds["absent"] and kinds["near_miss"]


def test_the_haystack_prose_never_contains_a_needle_name():
    from v2pe_data.sources.synthetic import text

    vocabulary = " ".join(w for v in vars(text).values() if isinstance(v, tuple) for w in v if isinstance(w, str))
    hay = SyntheticHaystack("train", 0)
    prose = " ".join(b for i in range(300) for b in hay.document(i).blocks if isinstance(b, str))
    for blob in (vocabulary.lower(), prose.lower()):
        assert not [n for n in NAMES if n.lower() in blob]


def write_haystack(root, docs: int = 40, extra: str = ""):
    """An OBELICS-style JSONL haystack: each document two paragraphs around one 320x240 photo."""
    from tests.fixtures.sources import make_image

    (root / "img").mkdir(parents=True)
    lines = []
    for d in range(docs):
        (root / "img" / f"{d}.jpg").write_bytes(make_image(f"hay{d}", 320, 240, "JPEG"))
        texts = [f"Document {d} opens with ordinary words about gardens and rivers.{extra}", None,
                 f"Document {d} closes with a remark on the weather."]
        lines.append(json.dumps({"id": f"doc{d}", "texts": texts, "images": [None, f"img/{d}.jpg", None]}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("subset", ["text_reasoning", "image_counting", "image_reasoning_jigsaw"])
def test_needles_in_a_real_interleaved_haystack_never_come_from_its_own_documents(acc, tmp_path, subset):
    from v2pe_data.sources.interleaved import open_interleaved

    hay = open_interleaved(write_haystack(tmp_path / "hay"), "train")
    budget = K32  # a 320x240 photo is upscaled to 12 tiles + thumbnail: about 7 documents per sample
    t = LongMRTask(LongMROptions.from_dict({"subset": subset, "needles": "haystack", "num_needles": [2, 3]}),
                   split="train", seed=0, budget=budget, acc=acc, haystack=hay)
    for i in range(3):
        plan = t.plan(i)
        record, meta = plan.record, plan.record["meta"]
        assert budget.contains(meta["num_tokens"]) and oracle(record) == record["answer"]
        haystack_docs = {s["doc_id"] for s in meta["sources"] if s["role"] == "haystack"}
        assert haystack_docs and all(d.startswith("interleaved:doc") for d in haystack_docs)
        for n in meta["needles"]:
            if n["kind"] == "pasted":
                assert pasted_ok(plan, n)
            if n["kind"] == "image":  # a jigsaw piece: cut from a document the haystack does not use
                assert meta["sources"][n["image"]]["doc_id"] not in haystack_docs


def test_a_haystack_that_contains_the_needle_keys_is_replanned_never_emitted(acc, tmp_path):
    from v2pe_data.sources.interleaved import open_interleaved

    hay = open_interleaved(write_haystack(tmp_path / "hay", extra=" " + " ".join(NAMES)), "train")
    t = LongMRTask(LongMROptions.from_dict({"subset": "text_retrieval"}), split="train", seed=0,
                   budget=K32, acc=acc, haystack=hay)
    with pytest.raises(PlanError, match="replanned_needle_collision: 16"):
        t.plan(0)


# ------------------------------------------------------------------------------------------ counts and depth


def independent_context_length(record, acc) -> tuple[int, int]:
    context = human(record)[:record["meta"]["question_offset"] - 1]
    text = sum(len(acc.tokenizer.encode(p)) for p in context.split(IMAGE_PLACEHOLDER))
    n = context.count(IMAGE_PLACEHOLDER)
    return text, sum(t * 256 + 2 for t in record["meta"]["tiles"][:n])


@pytest.mark.parametrize("subset", SUBSETS)
def test_token_counts_are_exact_in_bin_and_valid_records(plans, acc, subset):
    for plan in plans[subset]:
        record, meta = plan.record, plan.record["meta"]
        schema.validate(record, schema.SAMPLE)
        schema.check_counts(record)
        assert json.loads(json.dumps(record)) == record
        counted = encoding.count(record["conversations"], meta["tiles"], acc.tokenizer, acc.template, acc.tiling)
        assert (counted.total, counted.text, counted.image) == (meta["num_tokens"], meta["text_tokens"],
                                                                meta["image_tokens"])
        assert K32.contains(meta["num_tokens"])
        assert independent_context_length(record, acc) == (meta["context_length_text"], meta["context_length_image"])
        assert [it.width for it in plan.items] == [w for w, _ in meta["image_sizes"]]
        assert meta["num_images"] + len(meta["choice_images"] or []) == len(record["images"])


def test_a_128k_sample_is_in_bin_with_an_exact_count(acc):
    budget = Budget(64 * 1024, 128 * 1024)
    record = task(acc, budget, subset="text_counting").plan(0).record
    counted = encoding.count(record["conversations"], record["meta"]["tiles"], acc.tokenizer, acc.template,
                             acc.tiling)
    assert budget.contains(counted.total) and counted.total == record["meta"]["num_tokens"]


def test_placed_depth_is_the_needles_first_token_over_the_context_length(plans, acc):
    for plan in plans["text_counting"]:
        record, meta = plan.record, plan.record["meta"]
        context = human(record)
        for n, depth in zip(meta["needles"], meta["placed_depth"]):
            before = context[:n["offset"]]
            pieces = before.split(IMAGE_PLACEHOLDER)
            tokens = sum(len(acc.tokenizer.encode(p)) for p in pieces)
            tokens += sum(t * 256 + 2 for t in meta["tiles"][:len(pieces) - 1])
            assert depth == tokens / meta["context_length"]


def test_the_depth_grid_is_covered_and_honoured(acc):
    grid = [0.0, 0.5, 1.0]
    seen = Counter()
    for subset in ("text_retrieval", "image_counting"):
        t = task(acc, subset=subset, depth="0:1:0.5")
        for i in range(6):
            meta = t.plan(i).record["meta"]
            depths = meta["placed_depth"] if isinstance(meta["placed_depth"], list) else [meta["placed_depth"]]
            assert meta["target_depth"] == grid[i % 3]
            # a needle lands on a block boundary, at most one image's tokens from its target; pictures pasted
            # into g distinct images need g images, which may stretch the group that far
            carriers = len(set(meta["target_index"] or [0]))
            slack = carriers * max(meta["tiles"]) * 256 / meta["context_length"] + 0.02
            assert abs(np.mean(depths) - meta["target_depth"]) <= slack
            seen[meta["target_depth"]] += 1
    assert set(seen) == set(grid) and len(set(seen.values())) == 1


# ------------------------------------------------------------------------------------------ determinism, streaming


def test_same_seed_same_record_and_same_image_bytes(acc):
    for subset in ("image_counting", "image_reasoning_jigsaw"):
        a, b = task(acc, subset=subset).plan(5), task(acc, subset=subset).plan(5)
        assert a.record == b.record
        carrier = a.record["meta"]["needles"][0]["image"]
        assert a.items[carrier].load() == b.items[carrier].load()
    assert task(acc, subset="image_counting", seed=1).plan(5).record != a.record


def test_planning_touches_no_pixels_and_items_pickle(acc, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("planning decoded an image")

    t = task(acc, subset="image_retrieval")
    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(Image, "new", refuse)
    plan = t.plan(2)
    monkeypatch.undo()
    items = pickle.loads(pickle.dumps(plan.items))
    carrier = plan.record["meta"]["needles"][0]["image"]
    assert items[carrier].load() == plan.items[carrier].load()


def test_a_bin_below_the_prompt_is_a_clear_plan_error(acc):
    t = task(acc, Budget(100, 400), subset="image_retrieval")
    assert t.min_tokens() > 400
    with pytest.raises(PlanError, match=r"long_mr sample 0 \(image_retrieval\): no plan fits \[100, 400\]"):
        t.plan(0)


def test_options_are_validated_with_errors_naming_the_key():
    opts = LongMROptions.from_dict({"subset": {"text_counting": 2, "image_counting": 1}, "depth": "0:1:0.25",
                                    "num_needles": [2, 3]})
    assert opts.grid == (0.0, 0.25, 0.5, 0.75, 1.0) and opts.depth_for(7) == 0.5
    for raw, key in [({"subset": "text_sorting"}, "subset"), ({"depth": 1.5}, "depth"), ({"depth": "1:0:0.1"}, "depth"),
                     ({"num_needles": [3, 1]}, "num_needles"), ({"haystack": "interleaved"}, "haystack.path"),
                     ({"needles": "web"}, "needles"), ({"colour": 1}, "'colour'"),
                     ({"haystack": {"kind": "synthetic", "root": "x"}}, "haystack")]:
        with pytest.raises(ConfigError, match=f"^recipe.yaml: {re.escape(key)}|^recipe.yaml: unknown key {key}"):
            LongMROptions.from_dict(raw, where="recipe.yaml")


def test_the_synthetic_haystack_takes_a_document_shape_and_records_it():
    """paragraphs / sentences / images per document: e.g. an image-dominated haystack for position studies."""
    opts = LongMROptions.from_dict({"haystack": {"kind": "synthetic", "paragraphs": [1, 1], "sentences": [1, 1],
                                                 "images": [2, 4]}})
    hay = SyntheticHaystack("train", 0, **{k: tuple(opts.haystack[k]) for k in SHAPE_KEYS})
    for i in range(50):
        blocks = hay.document(i).blocks
        texts = [b for b in blocks if isinstance(b, str)]
        assert len(texts) == 1 and texts[0].count(".") == 1 and 2 <= len(blocks) - 1 <= 4
    assert hay.describe()["images"] == [2, 4]
    assert "images" not in SyntheticHaystack("train", 0).describe()  # the default shape keeps its identity
    for raw, key in [({"images": [0, 9]}, "haystack.images"), ({"paragraphs": [0, 2]}, "haystack.paragraphs"),
                     ({"sentences": [3, 2]}, "haystack.sentences"), ({"sentences": "1"}, "haystack.sentences")]:
        with pytest.raises(ConfigError, match=f"^recipe.yaml: {re.escape(key)}"):
            LongMROptions.from_dict({"haystack": {"kind": "synthetic", **raw}}, where="recipe.yaml")
    with pytest.raises(ConfigError, match="haystack.images: only the synthetic"):
        LongMROptions.from_dict({"haystack": {"kind": "interleaved", "path": "x", "images": [1, 2]}})


# ------------------------------------------------------------------------------------------ MM-NIAH


@pytest.fixture(scope="module")
def mixed(acc) -> list:
    """Samples of a build over all subsets (one task, shares equal), until each subset has one."""
    t, out, seen = task(acc), [], set()
    for i in range(200):
        if t.subset_for(i) not in seen:
            seen.add(t.subset_for(i))
            out.append(t.plan(i))
        if len(seen) == len(SUBSETS):
            return out
    raise AssertionError(f"subsets drawn: {sorted(seen)}")


def test_mmniah_lines_round_trip_through_the_writer_and_read_back_as_the_evaluation_does(mixed, tmp_path):
    writer = mmniah_writer.MMNIAHWriter(tmp_path / "mm")
    written = []
    for plan in mixed:
        writer.begin(plan.record)
        for name, item in zip(plan.record["images"], plan.items):
            writer.add_image(name, item.load())
        writer.end()
        written.append(plan)
    with pytest.raises(mmniah_writer.WriterError, match="written twice"):
        writer.begin(mixed[0].record)
    files = writer.close()
    assert sorted(p.name for p in files) == sorted(f"{t}-{k}.jsonl" for t in ("retrieval", "counting", "reasoning")
                                                   for k in ("text", "image"))
    back = list(mmniah.read(tmp_path / "mm"))
    assert len(back) == len(SUBSETS)
    ids = Counter(s.file for s in back)
    assert ids["retrieval-text.jsonl"] == 2 and ids["reasoning-image.jsonl"] == 2
    by_question = {s.line["question"]: s for s in back}
    for plan in written:
        record, meta = plan.record, plan.record["meta"]
        s = by_question[meta["question"]]
        line = s.line
        assert s.file == mmniah.file_name(record)
        assert line["context"] + "\n" == human(record)[:meta["question_offset"]]
        assert line["answer"] == record["answer"] and line["meta"]["placed_depth"] == meta["placed_depth"]
        assert line["meta"]["context_length"] == meta["context_length"]
        n_ctx = meta["num_images"]
        assert [p.read_bytes() for p in s.images] == [it.load() for it in plan.items[:n_ctx]]
        assert [p.read_bytes() for p in s.choice_images] == [it.load() for it in plan.items[n_ctx:]]
        assert (line["meta"]["choices"] is None) or (line["meta"]["choices_image_path"] is None)
    for name in ids:  # ids count from 0 in each task file
        assert sorted(s.line["id"] for s in back if s.file == name) == list(range(ids[name]))


def test_mmniah_validator_names_the_broken_invariant(plans):
    record = plans["image_retrieval"][0].record
    line = mmniah.to_line(record, 0)
    broken = json.loads(json.dumps(line))
    broken["images_list"].pop()
    with pytest.raises(mmniah.MMNIAHError, match="x: images_list: .* placeholders"):
        mmniah.check_line(broken, "x")
    both = json.loads(json.dumps(line))
    both["meta"]["choices"] = ["a", "b", "c", "d"]
    with pytest.raises(mmniah.MMNIAHError, match="both set"):
        mmniah.check_line(both, "x")


def test_mmniah_parts_merge_with_ids_renumbered_per_file(plans, tmp_path):
    for part, k in (("p0", 0), ("p1", 1)):  # one sample per part, both into counting-text.jsonl
        w = mmniah_writer.MMNIAHWriter(tmp_path, part)
        plan = plans["text_counting"][k]
        w.begin(plan.record)
        for name, item in zip(plan.record["images"], plan.items):
            w.add_image(name, item.load())
        w.end()
        w.close()
    mmniah_writer.merge_parts(tmp_path, ["p0", "p1"])
    lines = [s.line for s in mmniah.read(tmp_path)]
    assert [x["id"] for x in lines] == [0, 1]
    assert [x["answer"] for x in lines] == [plans["text_counting"][k].record["answer"] for k in (0, 1)]


def test_a_haystack_without_valid_documents_is_a_clear_source_error(acc, tmp_path):
    from v2pe_data.sources.base import SourceError
    from v2pe_data.sources.interleaved import open_interleaved

    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "e", "texts": [" "], "images": [None]}) + "\n")
    with pytest.raises(SourceError, match=r"haystack 'interleaved' has no valid train documents \(1 rows rejected\)"):
        LongMRTask(LongMROptions(), split="train", seed=0, budget=K32, acc=acc,
                   haystack=open_interleaved(tmp_path, "train"))


def test_an_aborted_mmniah_writer_leaves_no_line_and_no_image(plans, tmp_path):
    w = mmniah_writer.MMNIAHWriter(tmp_path)
    plan = plans["image_counting"][0]
    w.begin(plan.record)
    for name, item in zip(plan.record["images"], plan.items):
        w.add_image(name, item.load())
    w.end()
    w.abort()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_image_counting_questions_use_an_before_a_vowel_sound():
    """'a small framed picture of an orange triangle', never 'a orange'."""
    import random

    from v2pe_data.tasks.long_mr.subsets import DesignContext, image_counting

    ctx = DesignContext("s", "train", (2, 3), needle_image=lambda rng: None)
    questions = {}
    for seed in range(200):
        design = image_counting(random.Random(seed), ctx, None)
        questions[design.extra["picture"].split(" ")[0]] = design.question
    assert set(questions) == set(COLOURS)
    assert "of an orange " in questions["orange"]
    assert all(f"of a {c} " in questions[c] for c in COLOURS if c != "orange")
    assert Picture("star", "orange").with_article == "an orange star"
