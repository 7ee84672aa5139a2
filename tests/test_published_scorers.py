"""The published scorers' behaviour, case by case: MM-NIAH (official and V2PE's fork), ChartQA relaxed accuracy
(both argument orders), Long-VQA's relaxed accuracy and per-source `rectify`, MileBench's option matcher.

Every expectation is derived by hand (the reasoning sits beside the case in `published_cases.py`); the same
tables were run beside the reference code outside this repository, with the counts in docs/evaluation.md.
"""

from __future__ import annotations

import pytest

from published_cases import CHARTQA, MILEBENCH, MMNIAH, RECTIFY
from v2pe_train.eval import milebench as mb
from v2pe_train.eval import mmniah
from v2pe_train.eval import scorers as sc
from v2pe_train.eval.lemma import noun_lemma
from v2pe_train.eval.rectify import clean_line, ing, normalise, rectify


def test_each_table_holds_at_least_30_cases_per_scorer_and_style():
    assert len(MMNIAH) >= 60 and len(CHARTQA) >= 30 and len(MILEBENCH) >= 30 and len(RECTIFY) >= 30
    assert sum(o != v for *_, o, v in MMNIAH) >= 5  # the two styles really differ somewhere
    assert sum(o != v for *_, o, v in CHARTQA) >= 3


@pytest.mark.parametrize("reply, answer, official, v2pe", MMNIAH)
def test_mmniah_is_correct_in_both_styles(reply, answer, official, v2pe):
    assert mmniah.score(reply, answer, "official") == pytest.approx(official)
    assert mmniah.score(reply, answer, "v2pe") == pytest.approx(v2pe)


def test_mmniah_departures_where_the_reference_crashes():
    assert mmniah.score("\u00b2", 2) == 0.0  # a digit int() cannot read: the reference raises
    assert mmniah.score("\u0661", 1) == 1.0  # an Arabic-Indic 1 is read as 1, as int() does
    with pytest.raises(ValueError, match="answer: an empty list"):
        mmniah.score("[]", [])  # the reference divides by zero
    with pytest.raises(ValueError, match=r"answer: .*\[0, 26\)"):
        mmniah.score("{", 26)  # the reference would take "{" for option 26
    with pytest.raises(ValueError, match="style"):
        mmniah.score("A", 0, "fancy")


@pytest.mark.parametrize("task, official, v2pe", [("counting-text", 32, 320), ("counting-image-rag-val", 32, 320),
                                                  ("retrieval-text", 16, 16), ("reasoning-image", 16, 16),
                                                  ("image_counting", 32, 320), ("image_reasoning_jigsaw", 16, 16)])
def test_mmniah_reply_budgets_go_by_the_task_name(task, official, v2pe):
    assert (mmniah.max_new_tokens(task), mmniah.max_new_tokens(task, "v2pe")) == (official, v2pe)


@pytest.mark.parametrize("prediction, answer, official, v2pe", CHARTQA)
def test_chartqa_relaxed_accuracy_in_both_argument_orders(prediction, answer, official, v2pe):
    assert sc.chartqa_relaxed(prediction, answer, "official") == official
    assert sc.chartqa_relaxed(prediction, answer, "v2pe") == v2pe
    # Long-VQA's copy differs only for a prediction of 0, which is never within 5 % of a non-zero target
    assert sc.longvqa_relaxed(prediction, answer) == official


@pytest.mark.parametrize("reply, choices, answer, expected", MILEBENCH)
def test_milebench_option_matching(reply, choices, answer, expected):
    assert mb.milebench_choice(reply, choices, answer) == expected


@pytest.mark.parametrize("index, letter", [(0, "A"), (25, "Z"), (26, "AA"), (51, "AZ"), (52, "BA"), (77, "BZ"),
                                           (78, "B["), (79, "B\\")])
def test_milebench_letters_as_its_char(index, letter):
    assert mb.option_letter(index) == letter


@pytest.mark.parametrize("source, text, expected", RECTIFY)
def test_longvqa_rectify_per_source(source, text, expected):
    assert rectify(source, text) == expected


def test_longvqa_line_clean_up_after_rectify():
    assert clean_line("a\nb.") == "ab" and clean_line("x..") == "x."
    assert normalise("docvqa", "New\nYork..") == "NewYork"


# WordNet 3.0 noun lemmas as NLTK's WordNetLemmatizer gives them: the word and its exception-list or detached
# forms that WordNet holds as nouns, the shortest (the first of equals) wins: "teeth" stays (itself a noun, as
# long as "tooth"), "species" -> "specie", "us" -> "u"
LEMMAS = [("apples", "apple"), ("geese", "goose"), ("data", "data"), ("kg", "kg"), ("children", "child"),
          ("buses", "bus"), ("was", "wa"), ("axes", "ax"), ("mice", "mouse"), ("glasses", "glass"),
          ("cities", "city"), ("wives", "wife"), ("boxes", "box"), ("churches", "church"), ("women", "woman"),
          ("teeth", "teeth"), ("analyses", "analysis"), ("criteria", "criterion"), ("is", "is"), ("news", "news"),
          ("species", "specie"), ("us", "u"), ("dollars", "dollar"), ("millions", "million"), ("xyzzys", "xyzzys"),
          ("", ""), ("running", "running"), ("better", "better")]


@pytest.mark.parametrize("word, lemma", LEMMAS)
def test_noun_lemmas_as_wordnet(word, lemma):
    assert noun_lemma(word) == lemma


# web2 roots, tried as the root, the root less a doubled letter, the root + "e": "hoping" -> "hop" (web2 has
# "hop"), "thing" -> "th" (and "th")
@pytest.mark.parametrize("text, expected", [("running", "run"), ("swimming", "swim"), ("making", "make"),
                                            ("sing", "sing"), ("ceiling", "ceil"), ("hoping", "hop"),
                                            ("thing", "th"), ("big running dogs", "big run dogs")])
def test_ing_words_cut_to_a_web2_root(text, expected):
    assert ing(text) == expected
