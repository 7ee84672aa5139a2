"""V2PE inference: greedy generation with a KV cache and teacher-forced scoring, on the seeded tiny model.

The tiny model is random, so its replies are gibberish; what is specified is the machinery: stock
transformers agreement at integer positions, the reference's position rule at fractional strides,
teacher forcing agreeing with generation, and cp = 2 agreeing with cp = 1.
"""

import math

import numpy as np
import pytest
import torch

from tests.distributed import run_distributed
from v2pe_common.encoding import count
from v2pe_common.formats import read_records
from v2pe_common.template import get_template
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.data.shards import iter_samples, resolve_sources
from v2pe_train.eval.inference import InferenceError, V2PEGenerator

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """(record, images) pairs of a tiny Long-VQA build: 1-tile images, prompts of a few hundred tokens."""
    out = tmp_path_factory.mktemp("inference") / "build"
    build(BuildConfig(length=1024, min_length=300, num_samples=2, shard_size=2, max_tiles=1, out=str(out), seed=1),
          show_progress=False)
    return [(rec, imgs) for _, rec, imgs in read_records(iter_samples(resolve_sources([str(out)])[0]))]


@pytest.fixture(scope="module")
def gen():
    return V2PEGenerator.load("tiny", seed=0)


def text_only(record: dict, tokenizer) -> dict:
    """The same question without its images: placeholders dropped, the meta counts recomputed."""
    convs = [{**t, "value": t["value"].replace("<image>\n", "").replace("<image>", "")}
             for t in record["conversations"]]
    meta = record["meta"]
    n = count(convs, [], tokenizer, get_template(meta["template"])).total
    meta = {**meta, "tiles": [], "image_sizes": [], "sources": [], "image_tokens": 0, "text_tokens": n,
            "num_tokens": n, "min_len": 0}
    return {**record, "id": record["id"] + "-text", "images": [], "conversations": convs, "meta": meta}


def with_images(records, n):
    return next((r, i) for r, i in records if len(r["images"]) == n)


def reference_positions(ids, tok, stride: int) -> list[float]:
    """The position rule (`v2pe_train/positions.py`) as the reference's loop: text +1, image tokens p + k*S/256, then
    ceil(...) + 1."""
    d = stride / 256
    pos, last, i = [], -1.0, 0
    while i < len(ids):
        if ids[i] == tok.img_context_id:
            p, k = pos[-1], 0  # the <img> token's position
            while ids[i] == tok.img_context_id:
                k += 1
                pos.append(p + k * d)
                i += 1
            last = float(math.ceil(p + k * d))
            continue
        last += 1
        pos.append(last)
        i += 1
    return pos


class PositionRecorder:
    """position_ids of every language-model call (prefill, then one per decoding step)."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.model.language_model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append(kwargs["position_ids"].detach().cpu().clone())

    def close(self):
        self.handle.remove()


def stock_generate(model, prompt, max_new_tokens, stop_ids):
    ids = torch.from_numpy(prompt.input_ids)[None]
    # transformers 5.24's generate runs the vision encoder on an explicit pixel_values=None: leave the key out
    pixels = {"pixel_values": prompt.pixel_values} if prompt.pixel_values.numel() else {}
    out = model.generate(input_ids=ids, **pixels, attention_mask=torch.ones_like(ids),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop_ids),
                         return_dict_in_generate=True, output_logits=True)
    return out.sequences[0, ids.shape[1]:].tolist(), torch.stack([lg[0] for lg in out.logits]).float()


@pytest.mark.parametrize("images", [0, 1])
def test_stride_256_generation_equals_stock_generate_token_for_token(gen, records, images):
    """With stride 256 (= default integer positions) our loop reproduces transformers' `generate`, logits too."""
    record, imgs = with_images(records, 1)
    if images == 0:
        record, imgs = text_only(record, gen.tokenizer), {}
    prompt = gen.prepare(record, imgs)
    assert len(prompt.tiles) == images
    stock_ids, stock_logits = stock_generate(gen.model, prompt, 12, gen.stop_ids)
    for stride in (256, "default"):
        ours = gen.generate(prompt, stride=stride, max_new_tokens=12, return_logits=True)[0]
        produced = ours.token_ids + ([stock_ids[-1]] if ours.stop == "end" else [])
        assert produced == stock_ids
        torch.testing.assert_close(ours.logits, stock_logits, **TOL)
    if images:  # the comparison sees positions: a fractional stride moves the logits well past the tolerance
        moved = gen.generate(prompt, stride=16, max_new_tokens=1, return_logits=True)[0].logits[0]
        assert (moved - stock_logits[0]).abs().max() > 100 * TOL["atol"]


def test_fractional_stride_feeds_reference_positions_to_prompt_and_generated_tokens(gen, records):
    """Stride 16: the prompt gets the reference's V2PE positions, the k-th generated token last + k, float64."""
    record, imgs = with_images(records, 3)
    prompt = gen.prepare(record, imgs)
    rec = PositionRecorder(gen.model)
    try:
        out = gen.generate(prompt, stride=16, max_new_tokens=6)[0]
    finally:
        rec.close()
    expect_prompt = np.array(reference_positions(prompt.input_ids.tolist(), gen.tokenizer, 16))
    assert np.any(expect_prompt % 1 != 0)  # the image tokens really sit at fractional positions
    prefill, steps = rec.calls[0], rec.calls[1:]
    assert prefill.dtype == torch.float64
    np.testing.assert_array_equal(prefill[0].numpy(), expect_prompt)
    np.testing.assert_array_equal(out.prompt_positions, expect_prompt)
    n = len(out.token_ids)
    assert out.stop == "length" and n == 6 and len(steps) == n - 1  # the last token is chosen, never fed
    last = expect_prompt[-1]
    assert [s.shape for s in steps] == [(1, 1)] * (n - 1)
    assert [float(s) for s in steps] == [last + k for k in range(1, n)]
    np.testing.assert_array_equal(out.generated_positions, last + np.arange(1, n + 1))


def test_batched_generation_with_left_padding_equals_one_prompt_at_a_time(gen, records):
    """Rows of different lengths (text-only and 3 images), per-row budgets: each row as if it ran alone."""
    text = text_only(records[0][0], gen.tokenizer)
    prompts = [gen.prepare(text, {}), gen.prepare(*with_images(records, 3)), gen.prepare(*with_images(records, 1))]
    budgets = [5, 9, 7]
    batched = gen.generate(prompts, stride=16, max_new_tokens=budgets, return_logits=True)
    split = gen.generate(prompts, stride=16, max_new_tokens=budgets, return_logits=True, max_batch_tokens=1)
    for p, b, one, two in zip(prompts, budgets, batched, split):
        alone = gen.generate(p, stride=16, max_new_tokens=b, return_logits=True)[0]
        assert one.id == p.id and one.token_ids == alone.token_ids == two.token_ids
        assert len(one.token_ids) <= b
        torch.testing.assert_close(one.logits, alone.logits, **TOL)
        np.testing.assert_array_equal(one.generated_positions, alone.generated_positions)


def test_teacher_forced_verdict_is_true_exactly_for_the_greedy_reply(gen, records):
    """Forcing the greedy reply reproduces it (argmax and logits); any other answer is judged wrong."""
    prompt = gen.prepare(*with_images(records, 1))
    out = gen.generate(prompt, stride=16, max_new_tokens=8, return_logits=True)[0]
    forced = gen.teacher_forced(prompt, stride=16, answer=out.token_ids, return_logits=True)
    assert forced.correct and forced.predicted_ids == out.token_ids
    torch.testing.assert_close(forced.logits, out.logits[: len(out.token_ids)], **TOL)
    assert forced.nll == pytest.approx(float(torch.nn.functional.cross_entropy(
        forced.logits, torch.tensor(out.token_ids), reduction="sum")), rel=1e-6)
    other = list(out.token_ids)
    other[-1] = next(t for t in range(100, 200) if t != other[-1])
    wrong = gen.teacher_forced(prompt, stride=16, answer=other)
    assert not wrong.correct and wrong.predicted_ids == out.token_ids
    reference = gen.teacher_forced(prompt, stride=16)  # the record's own answer, which the random model misses
    assert reference.answer_ids == prompt.answer_ids.tolist() and not reference.correct
    if gen.tokenizer.encode(out.text) == out.token_ids:  # a string answer goes through the template's tokenisation
        assert gen.teacher_forced(prompt, stride=16, answer=out.text).correct


def _cp_teacher_forced(rank, world, group, record, images, answers):
    gen = V2PEGenerator.load("tiny", seed=0)
    prompt = gen.prepare(record, images)
    results = [gen.teacher_forced(prompt, stride=16, answer=a, return_logits=True, group=group, rank=rank,
                                  world=world, backend="torch") for a in answers]
    # the generator's model is handed back on its own attention: generation still works after a cp pass
    assert gen.model.config.text_config._attn_implementation == "sdpa"
    gen.generate(prompt, stride=16, max_new_tokens=1)
    return [(r.correct, r.predicted_ids, r.logits, r.nll) for r in results]


def test_teacher_forced_with_cp2_over_gloo_equals_cp1(gen, records):
    """Zigzag ring over 2 gloo ranks, 3 tiles split over them: same verdicts, logits within 1e-5, on both ranks."""
    record, images = with_images(records, 3)
    prompt = gen.prepare(record, images)
    greedy = gen.generate(prompt, stride=16, max_new_tokens=6)[0].token_ids
    answers = [greedy, None]  # one right (the greedy reply), one wrong (the record's answer)
    single = [gen.teacher_forced(prompt, stride=16, answer=a, return_logits=True) for a in answers]
    assert [s.correct for s in single] == [True, False]
    per_rank = run_distributed(_cp_teacher_forced, world=2, args=(record, images, answers), timeout=120)
    for ranked in per_rank:
        for one, (correct, predicted, logits, nll) in zip(single, ranked):
            assert correct == one.correct and predicted == one.predicted_ids
            torch.testing.assert_close(logits, one.logits, **TOL)
            assert nll == pytest.approx(one.nll, rel=1e-5)


def test_bad_records_and_settings_fail_with_one_line_naming_the_cause(gen, records):
    """A missing or undecodable image, a record without its answer turn, a bad stride or budget, an empty answer."""
    record, images = with_images(records, 1)
    with pytest.raises(InferenceError, match=r"record .*: image '0.jpg' \(\$.images\[0\]\) was not given"):
        gen.prepare(record, {})
    question_only = {**record, "conversations": record["conversations"][:1]}
    why = r"conversations\[-1\].from is 'human'; the final turn must be the assistant"
    with pytest.raises(InferenceError, match=why):
        gen.prepare(question_only, images)
    with pytest.raises(InferenceError, match="bad_image: image 0.jpg does not decode"):
        gen.prepare(record, {"0.jpg": b"not an image"})
    prompt = gen.prepare(record, images)
    with pytest.raises(ValueError, match="stride in"):
        gen.generate(prompt, stride=3)
    with pytest.raises(InferenceError, match="max_new_tokens"):
        gen.generate([prompt, prompt], max_new_tokens=[4])
    with pytest.raises(InferenceError, match="the answer is empty"):
        gen.teacher_forced(prompt, answer=[])


def reference_greedy(model, prompt, positions, steps):
    """The step-by-step loop generation used to be: forward() with explicit float64 positions, a DynamicCache
    and an all-ones mask, argmax each step, the k-th generated token fed at last prompt position + k."""
    from transformers import DynamicCache

    ids = torch.from_numpy(prompt.input_ids)[None]
    pos = torch.from_numpy(positions)[None]
    cache = DynamicCache(config=model.config.get_text_config())
    pixels = prompt.pixel_values if prompt.pixel_values.numel() else None
    tokens, logits = [], []
    with torch.no_grad():
        for k in range(steps):
            out = model(input_ids=ids, pixel_values=pixels if k == 0 else None, position_ids=pos, cache=cache,
                        attention_mask=torch.ones((1, cache.get_seq_length() + ids.shape[1]), dtype=torch.long),
                        use_cache=True, logits_to_keep=1)
            logits.append(out.logits[0, -1].float())
            tokens.append(int(out.logits[0, -1].argmax()))
            ids, pos = torch.tensor([[tokens[-1]]]), torch.tensor([[positions[-1] + k + 1]], dtype=torch.float64)
    return tokens, torch.stack(logits)


def test_stride_16_generation_equals_the_step_by_step_reference_loop(gen, records):
    """transformers' generate() with our float64 positions chooses what the explicit-position loop chooses."""
    prompt = gen.prepare(*with_images(records, 3))
    out = gen.generate(prompt, stride=16, max_new_tokens=8, return_logits=True)[0]
    tokens, logits = reference_greedy(gen.model, prompt, out.prompt_positions, 8)
    stop = next((i for i, t in enumerate(tokens) if t in gen.stop_ids), len(tokens))
    assert out.token_ids == tokens[:stop]
    torch.testing.assert_close(out.logits, logits[:len(out.logits)], **TOL)


def test_seeded_sampling_is_reproducible_and_runs_at_v2pe_positions(gen, records):
    """do_sample=True with a seed: the same tokens twice, other seeds other tokens, the caller's RNG untouched,
    and the prompt still fed at stride 16's fractional positions, generated tokens at last + k."""
    prompt = gen.prepare(*with_images(records, 1))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    rec = PositionRecorder(gen.model)
    try:
        first = gen.generate(prompt, stride=16, max_new_tokens=6, do_sample=True, temperature=1.5, seed=7)[0]
    finally:
        rec.close()
    assert torch.equal(torch.get_rng_state(), before)
    again = gen.generate(prompt, stride=16, max_new_tokens=6, do_sample=True, temperature=1.5, seed=7)[0]
    assert first.token_ids == again.token_ids and len(first.token_ids) >= 1
    others = [gen.generate(prompt, stride=16, max_new_tokens=6, do_sample=True, temperature=1.5, seed=s)[0].token_ids
              for s in (8, 9, 10)]
    assert any(o != first.token_ids for o in others)
    greedy = gen.generate(prompt, stride=16, max_new_tokens=6)[0]
    assert first.token_ids != greedy.token_ids  # it really sampled
    expect = np.array(reference_positions(prompt.input_ids.tolist(), gen.tokenizer, 16))
    np.testing.assert_array_equal(rec.calls[0][0].numpy(), expect)
    assert [float(s) for s in rec.calls[1:]] == [expect[-1] + k for k in range(1, len(rec.calls))]


def test_beam_search_keeps_each_prompts_images_with_its_beams(gen, records):
    """Beams of a batch of multi-image prompts: one new token by beam search is the greedy token of each prompt
    (pixel_values interleaved tile by tile would give a beam another prompt's or tile's features)."""
    prompts = [gen.prepare(*with_images(records, 3)), gen.prepare(*with_images(records, 1))]
    beams = gen.generate(prompts, stride=16, max_new_tokens=1, num_beams=3)
    greedy = gen.generate(prompts, stride=16, max_new_tokens=1, return_logits=True)
    for b, g in zip(beams, greedy):
        assert int(g.logits[0].argmax()) == (b.token_ids or [None])[0] or b.stop == "end"
        assert b.token_ids == g.token_ids
    longer = gen.generate(prompts[0], stride=16, max_new_tokens=5, num_beams=3)[0]
    assert 1 <= len(longer.token_ids) <= 5
    with pytest.raises(InferenceError, match="beam search has no per-token logits"):
        gen.generate(prompts[0], num_beams=2, return_logits=True)


def test_stop_strings_and_streamers_pass_through_to_generate(gen, records):
    """A stop string ends the reply right after it; a streamer sees the prompt, then every reply token."""
    from transformers.generation.streamers import BaseStreamer

    prompt = gen.prepare(*with_images(records, 1))
    full = gen.generate(prompt, stride=16, max_new_tokens=8)[0]
    assert len(full.token_ids) >= 3, "the tiny model stopped early; pick another record"
    stop = gen.tokenizer.hf.decode(full.token_ids[2:3])
    cut = gen.generate(prompt, stride=16, max_new_tokens=8, stop_strings=[stop])[0]
    assert cut.stop == "end" and cut.token_ids == full.token_ids[:len(cut.token_ids)]
    assert gen.tokenizer.hf.decode(cut.token_ids).endswith(stop) and len(cut.token_ids) <= 3

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.chunks.append("end")

    streamer = Collect()
    streamed = gen.generate(prompt, stride=16, max_new_tokens=8, streamer=streamer)[0]
    assert streamer.chunks[0] == prompt.input_ids.tolist() and streamer.chunks[-1] == "end"
    assert sum(streamer.chunks[1:-1], [])[:len(streamed.token_ids)] == streamed.token_ids == full.token_ids


def test_a_new_question_about_images_given_as_paths_bytes_or_pil(gen, records, tmp_path):
    """prepare_question: the record's own question over its image (as a path, bytes or a PIL image) is the
    prompt `prepare` makes of the record; without `<image>` the images go first; bad input is named."""
    import io

    from PIL import Image

    record, images = with_images(records, 1)
    question = record["conversations"][0]["value"]
    expected = gen.prepare(record, images)
    data = images[record["images"][0]]
    (tmp_path / "page.jpg").write_bytes(data)
    pil = Image.open(io.BytesIO(data))
    for image in (data, tmp_path / "page.jpg", str(tmp_path / "page.jpg")):
        asked = gen.prepare_question(question, images=[image], max_tiles=1)
        np.testing.assert_array_equal(asked.input_ids, expected.input_ids)
        torch.testing.assert_close(asked.pixel_values, expected.pixel_values, rtol=0, atol=0)
        assert asked.tiles == expected.tiles and asked.answer_ids.size == 0
    as_pil = gen.prepare_question(question, images=[pil], max_tiles=1)  # pixels kept: re-encoded losslessly
    torch.testing.assert_close(as_pil.pixel_values, expected.pixel_values, rtol=0, atol=0)
    bare = question.replace("<image>\n", "").replace("<image>", "")
    np.testing.assert_array_equal(gen.prepare_question(bare, images=[data], max_tiles=1).input_ids,
                                  expected.input_ids if question.startswith("<image>\n") else
                                  gen.prepare_question("<image>\n" + bare, images=[data], max_tiles=1).input_ids)
    text = gen.prepare_question("How many pages are there?")
    assert not text.tiles and gen.generate(text, max_new_tokens=2)[0].token_ids
    with pytest.raises(InferenceError, match="question q1: need a non-empty string"):
        gen.prepare_question("  ", id="q1")
    with pytest.raises(InferenceError, match=r"images\[0\]: cannot read"):
        gen.prepare_question("What?", images=[tmp_path / "missing.png"])
    with pytest.raises(InferenceError, match=r"images\[1\]: not a readable image"):
        gen.prepare_question("What?", images=[data, b"not an image"])
    with pytest.raises(InferenceError, match="2 '<image>' placeholders but 1 images"):
        gen.prepare_question("<image> and <image>?", images=[data])


def test_v2pe_position_ids_of_left_padded_token_ids_are_the_generators(gen, records):
    """A plain transformers batch (left padding, a mask) gets, row by row, the positions `generate` feeds."""
    from v2pe_train.eval.inference import v2pe_position_ids

    prompts = [gen.prepare(*with_images(records, 3)), gen.prepare(text_only(records[0][0], gen.tokenizer), {})]
    width = max(len(p) for p in prompts)
    ids = torch.full((2, width), gen.pad_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):], mask[r, width - len(p):] = torch.from_numpy(p.input_ids), 1
    pos = v2pe_position_ids(ids, gen.tokenizer.hf, stride=16, attention_mask=mask)
    assert pos.dtype == torch.float64
    for r, p in enumerate(prompts):
        expect = gen.generate(p, stride=16, max_new_tokens=1)[0].prompt_positions
        np.testing.assert_array_equal(pos[r, width - len(p):].numpy(), expect)
        assert not pos[r, :width - len(p)].any()
