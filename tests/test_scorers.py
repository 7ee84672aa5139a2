"""The published scorers: each rule's edges against hand-computed values, and the table that picks them.

Every expected number below is worked out by hand in the test's comment or name; none is read back from
the code under test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2pe_data.config import MODES, SOURCE_KINDS
from v2pe_data.tasks.long_mr import SUBSETS
from v2pe_common.formats.mmniah import CONTEXT_SEP, question_tail
from v2pe_data.tasks.long_mr.prompt import answer_text
from v2pe_train.eval import milebench as mb
from v2pe_train.eval import mmniah
from v2pe_train.eval import scorers as sc
from v2pe_train.eval.normalize import MMNIAH_NUMBERS, milebench_normalize, vqa_normalize
from v2pe_train.eval.tasks import LONG_MR_ANSWERS, lookup, max_new_tokens, mmniah_prompt, score, scorer_for


def test_reply_is_cut_at_end_of_turn_and_stripped():
    assert sc.clean_reply("  B <|im_end|>\nmore text<|im_end|>") == "B"
    assert sc.clean_reply("\n yes \t") == "yes"


# ------------------------------------------------------------------------------------------ ANLS


class TestANLS:
    def test_nld_exactly_one_half_is_zero_for_long_vqa_and_one_half_for_official(self):
        # "ab" -> "ax": one substitution over length 2, nld = 0.5
        assert sc.anls_longvqa("ax", "ab") == 0.0
        assert sc.anls_official("ax", "ab") == 0.5
        # "abcd" -> "abxy": 2 / 4
        assert sc.anls_longvqa("abxy", ["abcd"]) == 0.0
        assert sc.anls_official("abxy", ["abcd"]) == 0.5

    def test_below_one_half_both_variants_give_one_minus_nld(self):
        # "abc" -> "abx": 1 / 3
        assert sc.anls_longvqa("abx", "abc") == pytest.approx(2 / 3)
        assert sc.anls_official("abx", "abc") == pytest.approx(2 / 3)

    def test_above_one_half_both_variants_give_zero(self):
        assert sc.anls_longvqa("axy", "abc") == 0.0  # 2 / 3
        assert sc.anls_official("axy", "abc") == 0.0

    def test_best_over_several_answers_and_case_insensitive(self):
        # "hellp" vs "hello": 1 / 5 -> 0.8; "world" is far
        assert sc.anls_longvqa("HELLP", ["world", "hello"]) == pytest.approx(0.8)
        assert sc.anls_official("HELLP", ["world", "hello"]) == pytest.approx(0.8)

    def test_official_collapses_whitespace_long_vqa_does_not(self):
        # collapsed, "new   york" equals "new york"; uncollapsed it is 2 deletions over 10 characters
        assert sc.anls_official("new   york", "New York") == 1.0
        assert sc.anls_longvqa("new   york", "New York") == pytest.approx(0.8)

    def test_empty_strings(self):
        assert sc.anls_longvqa("", "") == 1.0
        assert sc.anls_official("", "") == 1.0
        assert sc.anls_longvqa("", "abc") == 0.0
        assert sc.anls_official("", "abc") == 0.0

    def test_no_answer_at_all_is_an_error_not_a_zero(self):
        with pytest.raises(ValueError, match="answers"):
            sc.anls_longvqa("x", [])


# ------------------------------------------------------------------------------------------ accuracy


def test_exact_match_is_exact():
    assert sc.exact_match("yes", ["no", "yes"]) == 1.0
    assert sc.exact_match("Yes", "yes") == 0.0


class TestVQAAccuracy:
    @pytest.mark.parametrize("hits, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
    def test_ten_human_answers_averaged_over_the_ten_leave_one_out_subsets(self, hits, expected):
        # k matches: leaving out a match leaves k - 1, leaving out another leaves k; each min(n / 3, 1).
        # k = 3: (3 * 2/3 + 7 * 1) / 10 = 0.9; k = 1: (1 * 0 + 9 * 1/3) / 10 = 0.3
        answers = ["2"] * hits + ["3"] * (10 - hits)
        assert sc.vqa_accuracy("Two.", answers) == pytest.approx(expected)

    def test_single_answer_is_normalised_equality(self):
        assert sc.vqa_accuracy("The dog", "dog") == 1.0
        assert sc.vqa_accuracy("cat", "dog") == 0.0


# ------------------------------------------------------------------------------------------ normalisation


class TestNormalisation:
    def test_vqa_rules(self):
        assert vqa_normalize("Dont know, it's THE two dogs!") == "don't know it's 2 dogs"
        assert vqa_normalize("1,000 dogs") == "1000 dogs"  # a digit comma: every mark deleted
        assert vqa_normalize("a-b") == "b"  # "-" touching no space becomes a space, then the article goes
        assert vqa_normalize("It costs 3.5.") == "it costs 3.5"
        assert vqa_normalize("none") == "0" and vqa_normalize("none", MMNIAH_NUMBERS) == "none"
        assert vqa_normalize("forty", MMNIAH_NUMBERS) == "40" and vqa_normalize("forty") == "forty"

    def test_milebench_process(self):
        assert milebench_normalize(' "A. Cat"\n') == "a cat"
        assert milebench_normalize("The\tDog!") == "the dog"

ANIMALS = ["cat", "dog", "bird", "fish"]


@settings(max_examples=60, deadline=None)
@given(reply=st.text(max_size=40))
def test_every_rule_scores_any_reply_within_0_and_1(reply):
    values = [sc.anls_longvqa(reply, ["abc", ""]), sc.anls_official(reply, "abc"), sc.chartqa_relaxed(reply, "12"),
              sc.chartqa_relaxed(reply, "12", "v2pe"), sc.longvqa_relaxed(reply, "12"),
              sc.vqa_accuracy(reply, ["a", "b", "a"]), mmniah.score(reply, 2), mmniah.score(reply, [1, 2]),
              mmniah.score(reply, "not mentioned"), mmniah.score(reply, "not mentioned", "v2pe"),
              mb.milebench_choice(reply, ANIMALS, "fish"), mb.milebench_needle(reply, "x"),
              mb.milebench_rouge(reply, "the cat")]
    assert all(0.0 <= v <= 1.0 for v in values)


# ------------------------------------------------------------------------------------------ the table


def long_mr_record(subset: str, answer) -> dict:
    return {"id": f"lmr-{subset}", "task": "long_mr", "subset": subset, "answer": answer, "meta": {}}


GOLD = {str: "not mentioned", int: 2, list: [3, 1, 2]}


class TestTable:
    def test_every_long_mr_subset_has_a_rule_and_the_builders_answer_turn_scores_1(self):
        assert set(LONG_MR_ANSWERS) == set(SUBSETS)
        for subset in SUBSETS:
            answer = GOLD[LONG_MR_ANSWERS[subset]]
            record = long_mr_record(subset, answer)
            name, fn = scorer_for(record)
            assert name.startswith("mmniah_")
            assert fn(answer_text(answer, isinstance(answer, int)) + "<|im_end|>") == 1.0

    def test_long_mr_answer_of_the_wrong_type_names_record_and_field(self):
        with pytest.raises(ValueError, match=r"lmr-text_counting: answer: .*list"):
            scorer_for(long_mr_record("text_counting", "3"))

    @pytest.mark.parametrize("kind", SOURCE_KINDS)
    @pytest.mark.parametrize("mode", MODES)
    def test_every_long_vqa_source_and_mode_has_a_rule(self, kind, mode):
        name, _ = scorer_for({"id": "x", "task": "long_vqa", "subset": f"{kind}_{mode}", "answer": "1"})
        expected = {"docvqa": "anls_longvqa", "infovqa": "anls_longvqa"}.get(kind, "relaxed_accuracy")
        assert name == expected

    def test_long_vqa_rule_per_dataset_and_budget(self):
        def entry(subset):
            return lookup({"id": "x", "task": "long_vqa", "subset": subset, "answer": "1"})

        assert (entry("tabfact_concat").name, entry("tabfact_concat").max_new_tokens) == ("exact_match", 8)
        assert (entry("textvqa_paste").name, entry("textvqa_paste").max_new_tokens) == ("vqa_accuracy", 64)
        assert (entry("ocrvqa_concat").name, entry("ocrvqa_concat").max_new_tokens) == ("relaxed_accuracy", 128)
        assert entry("my_docs_concat").name == "relaxed_accuracy"  # a user-named generic source: the default
        with pytest.raises(ValueError, match="BLEU-4.*not implemented"):
            entry("textcaps_concat")
        with pytest.raises(ValueError, match="subset"):
            entry("docvqa")

    def test_long_vqa_scores_rectified_reply_against_every_accepted_answer(self):
        chart = {"id": "c", "task": "long_vqa", "subset": "chartqa_paste", "answer": "45", "meta": {"answers": ["45"]}}
        assert score(chart, "45%<|im_end|>") == 1.0  # chartqa's rectify drops a final "%"
        assert score(chart, "46") == 1.0  # 1 / 45 = 2.2 %
        assert score(chart, "forty-six") == 0.0  # only space-separated number words are converted
        doc = {"id": "d", "task": "long_vqa", "subset": "docvqa_concat", "answer": "New York",
               "meta": {"answers": ["New York", "NYC"]}}
        assert score(doc, "nyc.") == 1.0

    def test_mmniah_lines_by_answer_type_and_budgets(self):
        line = {"id": 3, "images_list": [], "context": "", "question": "", "meta": {}}
        assert lookup({**line, "answer": 1}).name == "mmniah_option"
        # the budget goes by the task's name, as eval_internvl.py (16, counting 32) and V2PE (16, counting 320)
        assert lookup({**line, "answer": [1]}, mmniah_task="counting-text").max_new_tokens == 32
        assert lookup({**line, "answer": [1]}, mmniah_task="counting-text", style="v2pe").max_new_tokens == 320
        assert lookup({**line, "answer": "x"}, mmniah_task="retrieval-text", style="v2pe").max_new_tokens == 16
        assert max_new_tokens(long_mr_record("text_retrieval", "x")) == 16
        assert max_new_tokens(long_mr_record("image_counting", [1])) == 32
        assert max_new_tokens(long_mr_record("image_counting", [1]), style="v2pe") == 320

    def test_counting_file_answer_stored_as_json_string_is_parsed(self):
        line = {"id": 7, "images_list": [], "context": "", "question": "", "meta": {}, "answer": "[1, 2]"}
        assert score(line, "[1, 2]", mmniah_task="counting-text") == 1.0
        assert lookup(line).name == "mmniah_text"
        with pytest.raises(ValueError, match="7: answer"):
            lookup({**line, "answer": "two"}, mmniah_task="counting-image")

    def test_milebench_by_name_then_question_type(self):
        def rec(subset, **meta):
            return {"id": "m", "task": "milebench", "subset": subset, "answer": "dog", "meta": meta}

        assert lookup(rec("TextNeedleInAHaystack")).name == "milebench_needle"
        assert lookup(rec("MMCoQA")).name == "milebench_substring"
        assert lookup(rec("ALFRED", question_type="open-ended")).name == "rouge_l"
        assert score(rec("CLEVR-Change", question_type="multi-choice", choices=ANIMALS), "B") == 1.0
        with pytest.raises(ValueError, match="m: meta.choices"):
            score(rec("CLEVR-Change", question_type="multi-choice"), "B")
        with pytest.raises(ValueError, match="meta.question_type"):
            lookup(rec("ALFRED"))

    def test_single_image_docvqa_uses_the_official_anls(self):
        rec = {"id": "v", "task": "vqa", "subset": "docvqa", "answer": "ab", "meta": {"answers": ["ab"]}}
        assert (score(rec, "ax"), max_new_tokens(rec)) == (0.5, 100)

    def test_unscorable_inputs_name_what_is_wrong(self):
        with pytest.raises(ValueError, match="task"):
            lookup({"id": "z", "task": "nope", "answer": "x"})
        with pytest.raises(ValueError, match="images_list"):
            lookup({"id": "z", "answer": "x"})
        with pytest.raises(ValueError, match="answer: missing"):
            lookup({"id": "z", "task": "long_vqa", "subset": "docvqa_concat"})
        with pytest.raises(ValueError, match="style"):
            lookup(long_mr_record("text_retrieval", "x"), style="fancy")
        with pytest.raises(ValueError, match="lmr-text_retrieval: prediction: .*NoneType"):
            score(long_mr_record("text_retrieval", "x"), None)
        with pytest.raises(ValueError, match="3: answer: .*26"):  # the rule's error, prefixed with the line id
            score({"id": 3, "images_list": [], "answer": 30}, "A")


# ------------------------------------------------------------------------------------------ MM-NIAH prompt


def mm_line(answer, choices=None, choice_paths=None) -> dict:
    return {"id": 4, "images_list": ["a/0.jpg", "a/1.jpg"], "context": "Doc <image> text <image> end.",
            "question": "Which one?", "answer": answer,
            "meta": {"choices": choices, "choices_image_path": choice_paths}}


class TestMMNIAHPrompt:
    @pytest.mark.parametrize("answer, choices, paths", [
        ("saffron", None, None), ([1, 2], None, None), (1, ["the cube and the cone", "the star and the ring"], None),
        (2, None, ["c/0.png", "c/1.png", "c/2.png"])])
    def test_official_prompt_is_our_long_mr_human_turn(self, answer, choices, paths):
        line = mm_line(answer, choices, paths)
        text, images = mmniah_prompt(line)
        assert text == line["context"] + CONTEXT_SEP + question_tail(line["question"], choices, len(paths or []))
        assert images == ["a/0.jpg", "a/1.jpg", *(paths or [])]
        assert text.count("<image>") == len(images)

    def test_v2pe_prompt_has_no_separator_and_no_instruction_for_counting(self):
        assert mmniah_prompt(mm_line([1, 2]), style="v2pe")[0] == "Doc <image> text <image> end.Which one?"
        assert mmniah_prompt(mm_line("x"), style="v2pe")[0].endswith(
            "end.Which one?\nAnswer the question using a single word or phrase.")

    def test_bad_lines_are_refused_with_the_field(self):
        with pytest.raises(ValueError, match="4: meta.choices: 27 options"):
            mmniah_prompt(mm_line(0, [str(i) for i in range(27)]))
        with pytest.raises(ValueError, match="4: images_list: 1 paths for 2"):
            mmniah_prompt({**mm_line("x"), "images_list": ["a/0.jpg"]})
        with pytest.raises(ValueError, match="both set"):
            mmniah_prompt(mm_line(0, ["x"], ["c/0.png"]))
        with pytest.raises(ValueError, match="4: context"):
            mmniah_prompt({**mm_line("x"), "context": None})


def test_v2pe_train_eval_does_not_import_v2pe_data():
    code = ("import sys, v2pe_train.eval.tasks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'v2pe_data'); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
