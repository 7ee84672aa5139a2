"""Piecewise encoding equals tokenizing the whole expanded string, also for an InternLM2-style sentencepiece.

InternLM2's tokenizer is a sentencepiece BPE with a dummy prefix and byte fallback, its chat tags added as
special tokens. A tiny model of that kind is trained here (no download) and loaded the two ways a user's
folder can behave: the dummy prefix on every span between added tokens (InternLM2's own tokenizer, Llama
`legacy`), or only at the very start of the input (Llama `legacy=False`, what `v2pe-train convert` writes).
"""

import io
import json
import random

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from v2pe_common import encoding
from v2pe_common.template import TEMPLATES, get_template
from v2pe_common.tiling import IMG_CONTEXT, IMG_END, IMG_START
from v2pe_common.tokenizer import load_tokenizer

SPECIALS = ["<|im_start|>", "<|im_end|>", IMG_START, IMG_END, IMG_CONTEXT]
WORDS = ("the a of is what answer image chart total amount due user assistant system hello world picture "
         "shows left right 12 345 2024 0.5 , . ; : ! ? ( ) - 你好 中文 图片").split()


def _train_model() -> bytes:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(1500)]
    lines += ["user\nWhat is it?", "assistant\n 42", "\n.", "\n12", "x\n\ny"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=320,
        add_dummy_prefix=True, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    return _train_model()


def sp_folder(sp_model: bytes, folder, every_span: bool):
    """A Hugging Face tokenizer folder around the model, InternLM2's chat and image tags added as specials."""
    (folder / "tokenizer.model").write_bytes(sp_model)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": every_span, "add_prefix_space": True,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "additional_special_tokens": SPECIALS,
    }))
    return str(folder)


@pytest.fixture(scope="module", params=[True, False], ids=["prefix-every-span", "prefix-input-start"])
def sp_tok(request, sp_model, tmp_path_factory):
    return load_tokenizer(sp_folder(sp_model, tmp_path_factory.mktemp("sp"), every_span=request.param))


@pytest.fixture(scope="module")
def all_toks(sp_model, tmp_path_factory):
    return [load_tokenizer()] + [load_tokenizer(sp_folder(sp_model, tmp_path_factory.mktemp("sp"), every_span))
                                 for every_span in (True, False)]


def whole_string_ids(conversations, tiles, tok, template) -> list[int]:
    """The reference: expand each <image> into its tags and context tokens, tokenize the string at once."""
    text = "".join(piece for piece, _ in template.pieces(encoding.normalize_conversations(conversations, len(tiles))))
    for n in tiles:
        text = text.replace("<image>", IMG_START + IMG_CONTEXT * (256 * n) + IMG_END, 1)
    bos = [tok.bos_id] if template.add_bos and tok.bos_id is not None else []
    return bos + tok.hf.encode(text, add_special_tokens=False)


def turns(*values):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


SAMPLES = [
    (turns("<image>\nWhat is the total?", " 345"), [2]),
    (turns("<image>\nWhat is the total?", "345 dollars"), [1]),
    (turns("What is it?", ". right"), []),
    (turns("What is it?", "(a) the chart"), []),
    (turns("Left <image> and right <image> pictures.", "  two spaces", "And <image>?", "12"), [1, 3, 2]),
    (turns("<image><image>Compare.", "\nthe left", "Why?", "; because"), [1, 1]),
    (turns("hello", "你好 world", "what is 0.5?", "0.5 is a half"), []),
    (turns("Describe.", "the answer <image> shows it"), [1]),  # an image inside an answer
    (turns("Describe this picture.", "A chart."), [1]),  # placeholder added by the InternVL rule
]


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("conversations,tiles", SAMPLES)
def test_encoding_equals_the_whole_string_for_an_internlm2_style_sentencepiece(sp_tok, template, conversations,
                                                                               tiles):
    """Ids equal the whole string's; the count equals their number; each answer's end of turn is supervised."""
    t = get_template(template)
    enc = encoding.encode(conversations, tiles, sp_tok, t)
    want = whole_string_ids(conversations, tiles, sp_tok, t)
    assert enc.input_ids.tolist() == want
    counted = encoding.count(conversations, tiles, sp_tok, t)
    assert (counted.total, counted.text, counted.image) == (len(want), enc.num_text_tokens, enc.num_image_tokens)
    supervised = enc.labels != encoding.IGNORE_INDEX
    assert np.array_equal(enc.labels[supervised], enc.input_ids[supervised])
    end_of_turn = sp_tok.hf.convert_tokens_to_ids("<|im_end|>")
    answers = sum(1 for turn in conversations if turn["from"] == "gpt")
    assert np.count_nonzero(enc.input_ids[supervised] == end_of_turn) == answers
    assert np.count_nonzero(enc.input_ids[~supervised] == end_of_turn) == len(conversations) - answers + bool(t.system)


ANSWER_TEXT = st.text(alphabet=st.sampled_from(list("ab 1.,;:!?()-\n") + ["中", "文", "🙂", "é", "\t"]),
                      min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)
@given(question=ANSWER_TEXT, answers=st.lists(ANSWER_TEXT, min_size=1, max_size=3),
       tiles=st.lists(st.integers(1, 3), max_size=2), template=st.sampled_from(sorted(TEMPLATES)))
def test_any_answer_start_encodes_as_in_the_whole_string(all_toks, question, answers, tiles, template):
    """Answers starting with spaces, digits, punctuation, newlines or bytes outside the vocabulary, for both
    dummy-prefix behaviours and the bundled BPE: the piecewise ids and count equal the whole string's."""
    conversations = turns("<image>" * len(tiles) + question, *sum(([a, question] for a in answers), [])[:-1])
    t = get_template(template)
    for tok in all_toks:
        want = whole_string_ids(conversations, tiles, tok, t)
        assert encoding.encode(conversations, tiles, tok, t).input_ids.tolist() == want
        assert encoding.count(conversations, tiles, tok, t).total == len(want)


@pytest.mark.parametrize("every_span", [True, False])
def test_only_a_tokenizer_prefixing_every_span_encodes_text_after_an_added_token_alone(sp_model, tmp_path,
                                                                                      every_span):
    tok = load_tokenizer(sp_folder(sp_model, tmp_path, every_span))
    assert tok.restarts_after_added_tokens is every_span
    assert load_tokenizer().restarts_after_added_tokens is True


def test_a_token_spanning_a_piece_cut_goes_to_the_answer_as_in_the_whole_string(tmp_path):
    """A BPE that merges "\\n" with the next letter (no pre-splitting): an answer starting "b" shares a token
    with the "assistant\\n" before it. The ids stay the whole string's, the shared token supervised."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("assistantuserbecaWhy?\n"))
    vocab = {c: i for i, c in enumerate(chars)} | {"\nb": len(chars)}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "b")]))
    PreTrainedTokenizerFast(tokenizer_object=raw, additional_special_tokens=SPECIALS).save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    t = get_template("chatml")
    conversations = turns("Why?", "because", "Why?", "be")
    enc = encoding.encode(conversations, [], tok, t)
    assert enc.input_ids.tolist() == whole_string_ids(conversations, [], tok, t)
    assert encoding.count(conversations, [], tok, t).total == len(enc)
    supervised = (enc.labels != encoding.IGNORE_INDEX).astype(int)
    answer_starts = np.flatnonzero(np.diff(supervised) == 1) + 1
    assert [enc.labels[i] for i in answer_starts] == [vocab["\nb"]] * 2
