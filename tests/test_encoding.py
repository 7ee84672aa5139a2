"""The count written into a sample's meta is the length of the sequence the loader encodes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2pe_common import encoding
from v2pe_common.template import TEMPLATES, get_template
from v2pe_common.tokenizer import load_tokenizer

TOK = load_tokenizer()


def conv(n_images: int, question="What is the total amount due?", answer="1,234.50"):
    return [{"from": "human", "value": "<image>\n" * n_images + question}, {"from": "gpt", "value": answer}]


@settings(max_examples=40, deadline=None)
@given(
    tiles=st.lists(st.integers(1, 13), min_size=0, max_size=6),
    question=st.text(min_size=0, max_size=40),
    answer=st.text(min_size=1, max_size=20),
    template=st.sampled_from(sorted(TEMPLATES)),
)
def test_count_equals_the_length_of_the_encoded_sequence(tiles, question, answer, template):
    c = conv(len(tiles), question.replace("<image>", ""), answer.replace("<image>", ""))
    t = get_template(template)
    counted = encoding.count(c, tiles, TOK, t)
    enc = encoding.encode(c, tiles, TOK, t)
    assert counted.total == len(enc)
    assert counted.text == enc.num_text_tokens
    assert counted.image == enc.num_image_tokens == sum(n * 256 + 2 for n in tiles)


def test_each_image_is_img_then_256_context_tokens_a_tile_then_end_tag():
    enc = encoding.encode(conv(2), [3, 1], TOK, get_template("internlm2-chat"))
    ids = enc.input_ids
    for start, n in zip(enc.image_starts, enc.tiles):
        assert ids[start] == TOK.img_start_id
        assert np.all(ids[start + 1 : start + 1 + 256 * n] == TOK.img_context_id)
        assert ids[start + 1 + 256 * n] == TOK.img_end_id


def test_only_the_answer_and_its_end_of_turn_are_supervised():
    enc = encoding.encode(conv(1, answer="Coffee"), [2], TOK, get_template("internlm2-chat"))
    supervised = enc.labels != encoding.IGNORE_INDEX
    assert TOK.hf.decode(enc.input_ids[supervised]) == "Coffee<|im_end|>"
    assert np.array_equal(enc.labels[supervised], enc.input_ids[supervised])


def test_supervise_prompt_makes_every_text_token_a_target_but_no_image_token_nor_bos():
    t = get_template("internlm2-chat")
    plain = encoding.encode(conv(2, answer="Coffee"), [1, 2], TOK, t)
    enc = encoding.encode(conv(2, answer="Coffee"), [1, 2], TOK, t, supervise_prompt=True)
    assert np.array_equal(enc.input_ids, plain.input_ids)
    image = np.zeros(len(enc), dtype=bool)
    for start, n in zip(enc.image_starts, enc.tiles):
        image[start : start + 256 * n + 2] = True
    supervised = enc.labels != encoding.IGNORE_INDEX
    assert enc.input_ids[0] == TOK.bos_id and not supervised[0]
    assert np.array_equal(supervised[1:], ~image[1:])
    assert np.array_equal(enc.labels[supervised], enc.input_ids[supervised])
    # the reply is still a target, and more than the reply is now
    assert np.all(supervised[plain.labels != encoding.IGNORE_INDEX]) and supervised.sum() > 50


def test_encoding_matches_tokenizing_the_expanded_string_at_once():
    """Piecewise encoding (what makes counting cheap) equals the reference: expand <image>, tokenize whole."""
    t = get_template("chatml")
    enc = encoding.encode(conv(2), [1, 2], TOK, t)
    text = "".join(p for p, _ in t.pieces(conv(2)))
    for n in (1, 2):
        text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (256 * n) + "</img>", 1)
    whole = TOK.hf.encode(text, add_special_tokens=False)
    assert list(enc.input_ids) == whole


def test_internlm2_template_has_no_newline_after_end_of_turn_and_a_bos():
    pieces = "".join(p for p, _ in get_template("internlm2-chat").pieces(conv(0)))
    assert "<|im_end|>\n" not in pieces
    enc = encoding.encode(conv(0), [], TOK, get_template("internlm2-chat"))
    assert enc.input_ids[0] == TOK.bos_id


def test_placeholder_count_must_match_the_images():
    with pytest.raises(ValueError, match="2 '<image>' placeholders but 3 images"):
        encoding.count(conv(2), [1, 1, 1], TOK, get_template("chatml"))


def test_a_single_image_without_placeholder_gets_one_prepended():
    c = [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "A chart."}]
    enc = encoding.encode(c, [1], TOK, get_template("chatml"))
    assert len(enc.image_starts) == 1


def test_unknown_roles_name_the_turn():
    with pytest.raises(ValueError, match=r"conversations\[1\]\.from"):
        encoding.count([{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}], [], TOK, get_template("chatml"))
