"""Tricky cases of the published scorers with hand-derived expectations (the reasoning is in the comments).

Kept apart from the tests so the same tables can be run beside the reference code outside the repo; the
tests never import any reference code.
"""

# MM-NIAH: (reply, answer, official, v2pe). official = MM-NIAH calculate_scores.py:is_correct,
# v2pe = V2PE eval/mm_niah/calculate_scores.py:is_correct.
MMNIAH = [
    ("B", 1, 1, 1), ("b", 1, 1, 1), ("B.", 1, 1, 1),
    ("The answer is B.", 1, 1, 1),  # "the answer is" dropped -> "b"
    ("**B**", 1, 1, 1), ("1", 1, 1, 1), ("01", 1, 1, 1),  # a digit reply compares as an int
    ("B, because", 1, 0, 0),  # no period: the comma stays, "b, because" is not one letter
    ("B. Because it is", 1, 1, 1),  # cut at the first period -> "b"
    ("left", 0, 0, 1), ("right", 1, 0, 1),  # only V2PE maps a bare left/right
    ("The camera is moving left.", 0, 1, 1), ("none", 0, 0, 0), ("", 0, 0, 0), ("A", 0, 1, 1), ("Z", 25, 1, 1),
    (" B", 1, 1, 1), ("B)", 1, 0, 0), ("Option B", 1, 0, 0),
    ("b.c", 1, 1, 1),  # cut at the period -> "b"
    ("...B...", 1, 1, 1), ("1.", 1, 1, 1),
    ("1.5", 1, 0, 0),  # not all digits; cut at "." -> "1", and ord("1") - ord("a") != 1
    ("[1, 2, 3]", [1, 2, 3], 1, 1), ("[1, 2]", [1, 2, 3], 2 / 3, 2 / 3), ("[1, 2, 3, 4]", [1, 2, 3], 1, 1),
    ("```json\n[1, 2, 3]\n```", [1, 2, 3], 1, 1), ('{"a": [1, 2], "b": [3]}', [1, 2, 3], 1, 1),
    ('{"a": 1, "b": 2, "c": 3}', [1, 2, 3], 0, 0),  # sum(values, start=[]) fails on ints: 0
    ("[true, 2, 3]", [1, 2, 3], 1, 1),  # True == 1 in Python
    ("[1.0, 2.0, 3.0]", [1, 2, 3], 1, 1), ('["1", "2", "3"]', [1, 2, 3], 0, 0), ("1, 2, 3", [1, 2, 3], 0, 0),
    ("[1, 2, 3].", [1, 2, 3], 1, 1), ("(1, 2, 3)", [1, 2, 3], 0, 0), ("[[1], 2, 3]", [1, 2, 3], 2 / 3, 2 / 3),
    ("[NaN, 2, 3]", [1, 2, 3], 2 / 3, 2 / 3), ("json [1, 2, 3]", [1, 2, 3], 1, 1), ("3", [1, 2, 3], 0, 0),
    ('{"a": []}', [1, 2, 3], 0, 0), ("[]", [1, 2, 3], 0, 0),
    ("3.7", "3.5", 0, 1),  # V2PE cuts both at "." -> "3" == "3"
    ("saffron", "saffron", 1, 1), ("The secret ingredient is saffron.", "saffron", 1, 1),
    ("saffrons", "saffron", 0, 0), ("Not mentioned.", "not mentioned", 1, 1), ("mentioned", "not mentioned", 0, 0),
    ("two", "2", 1, 1),
    ("anything", "the", 1, 1),  # the answer normalises to "": \b\b matches any word
    ("The", "the", 0, 1),  # both normalise to "": no word boundary in ""; V2PE's cut-compare says equal
    ("Zorvith's", "Zorvith", 1, 1), ("1,000", "1000", 1, 1), ("yes?", "yes", 1, 1),
    ("3.5 apples", "3.5", 1, 1), ("It is 3.50", "3.5", 0, 0), ("the answer is oak", "oak", 1, 1),
    ("Oak tree", "oak", 1, 1), ("oak-tree", "oak", 1, 1), ("Mr. Smith", "smith", 1, 1), ("3", "three", 1, 1),
    ("nineteen", "19", 1, 1), ("twenty one", "21", 0, 0), ("don't know", "dont know", 1, 1), ("A cat", "cat", 1, 1),
    ("none", "0", 0, 0), ("", "x", 0, 0),
    ("cat.dog", "cat", 0, 1),  # official: the period goes, "catdog"; V2PE: cut at "." -> "cat"
    ("3.7", "3.7", 1, 1), ("3.7.", "3.7", 1, 1), ("$5", "5", 1, 1),
]

# ChartQA relaxed accuracy: (prediction, answer(s), official, v2pe). official = relaxed_correctness(target,
# prediction) of the ChartQA reference (pix2struct metrics.py); v2pe = the same called with the prediction first
# (InternVL / V2PE eval/vqa/evaluate_vqa.py).
CHARTQA = [
    ("12", "12", 1, 1), ("12.5", "12", 1, 1),  # 0.5/12 = 4.2 %; 0.5/12.5 = 4 %
    ("95.2", "100", 1, 0),  # 4.8/100 = 4.8 %; 4.8/95.2 = 5.04 %
    ("105", "100", 1, 1), ("104.9", "100", 1, 1), ("94.9", "100", 0, 0),
    ("1,200", "1200", 0, 0), ("$12", "12", 0, 0), ("12 kg", "12", 0, 0),  # float() refuses them: strings
    ("nan", "nan", 0, 0), ("inf", "inf", 0, 0), ("inf", "100", 0, 0),  # numbers, but never within 5 %
    ("45%", "0.45", 1, 1), ("45", "45%", 0, 0), ("0", "0", 1, 1),  # a zero target: string equality
    ("0.0", "0", 0, 0), ("0.001", "0", 0, 0), ("Yes", "yes", 1, 1), ("yes", "no", 0, 0), (" 12 ", "12", 1, 1),
    ("1_000", "1000", 1, 1), ("1e3", "1000", 1, 1), ("12%", "12%", 1, 1), ("-104", "-100", 1, 1),
    ("-95", "-100", 1, 0), ("100", "95.2", 0, 1), ("", "12", 0, 0), ("Twelve", "12", 0, 0), ("12.0", "12", 1, 1),
    ("\u0661\u0662", "12", 1, 1),  # Arabic-Indic digits: float() reads 12
    ("12 %", "12%", 1, 1), ("5%", "5", 0, 0), ("0", "5", 0, 0), ("5", "0", 0, 0), ("NaN", "5", 0, 0),
    ("Infinity", "infinity", 0, 0),  # both inf: inf - inf is NaN, never the string comparison
    ("1.05e2", "100", 1, 1), ("7", ["seven", "7.2"], 1, 1), ("abc", "ABC", 1, 1),
]

# MileBench multi-choice: (reply, choices, answer, score) as evaluate.py:Eval.match_choice / judge_multi_choice.
ANIMALS = ["cat", "dog", "bird", "fish"]
CUPS = ["1.5 cups", "2.5 cups", "3 cups", "4 cups"]
ITEMS = [f"item {i}" for i in range(30)]
MILEBENCH = [
    ("B. dog", ANIMALS, "dog", 1), ("I think it is a dog", ANIMALS, "dog", 1), ("B", ANIMALS, "dog", 1),
    ("b.", ANIMALS, "dog", 1), ("option b", ANIMALS, "dog", 1),
    ("it is a cat, not a dog", ANIMALS, "cat", 1),  # "a cat" reads as option A + its text
    ("", ANIMALS, "bird", 1),  # an empty reply picks C
    ("", ANIMALS, "dog", 0), ("C", ANIMALS, "dog", 0),
    ("The answer is D", ANIMALS, "fish", 0),  # step 4 collects "A" (from "answer") and "D": "AD"
    ("D", ANIMALS, "fish", 1), ("dog and cat", ANIMALS, "dog", 1), ("cat and dog", ANIMALS, "dog", 0),
    ("2.5 cups", CUPS, "2.5 cups", 0),  # step 2 compares with the escaped "2\.5cups": falls to step 4 -> "C"
    ("3 cups", CUPS, "3 cups", 1), ("B", CUPS, "2.5 cups", 1), ("2.5 cups", CUPS, "3 cups", 1),
    ("AB", ITEMS, "item 27", 1),
    ("AB. item 27", ITEMS, "item 27", 0),  # step 1 returns the match's first character, "A"
    ("item 27", ITEMS, "item 27", 0),  # step 2's leftmost alternative "item2" wins -> "C"
    ("dog", ["", "dog"], "dog", 0),  # an empty option matches any reply in step 2
    ("a+b", ["a+b", "c+d"], "a+b", 1), ("$10", ["$5", "$10"], "$10", 0), ("Answer: B", ANIMALS, "dog", 0),
    ("(B)", ANIMALS, "dog", 1), ("b) dog", ANIMALS, "dog", 1), ("Bird", ANIMALS, "bird", 1),
    ("A bird", ANIMALS, "bird", 1), ("a fish", ANIMALS, "fish", 1), ("no idea", ANIMALS, "dog", 0),
    ("category", ["cat", "category"], "category", 0),  # "cat" is tried first and matches
]

# Long-VQA rectify (V2PE eval/longvqa/rectify.py:rectify): (source, text, normalised)
RECTIFY = [
    ("chartqa", "Yes, it is.", "yes"), ("chartqa", "No one", "no"), ("chartqa", "Nothing", "no"),
    ("chartqa", "25 kg", "25"), ("chartqa", "1,234", "1234"), ("chartqa", "45%", "45"), ("chartqa", "45 %", "45"),
    ("chartqa", "three", "3"), ("chartqa", "twenty-five", "twenty-five"), ("chartqa", "1/4", "0.25"),
    ("chartqa", "3:2", "1.5"), ("chartqa", "1/0", "1/0"), ("chartqa", "(12)", "12"), ("chartqa", "[a]", "a"),
    ("chartqa", "Red Apples.", "red apple"), ("chartqa", "running", "run"), ("chartqa", "making", "make"),
    ("chartqa", "sing", "sing"), ("chartqa", "was", "wa"), ("chartqa", "geese", "goose"),
    ("chartqa", "glasses", "glass"), ("chartqa", "2.50", "2.50"), ("chartqa", "$5", "$5"),
    ("chartqa", "12 apples", "12"), ("chartqa", "12.5 million dollars", "12.5"),
    ("chartqa", "one hundred", "1"),  # "1 hundred": then "<number> <letters>" drops the unit word
    ("chartqa", "Buses", "bus"),
    ("docvqa", "25 kg", "25 kg"), ("docvqa", " New York. ", "New York"), ("textvqa", "Yes.", "Yes"),
    ("svqa", "B. red", "B"), ("svqa", "b", "b"), ("svqa", "E", "E"), ("tabfact", "yes, refuted", "Yes"),
    ("tabfact", "Nope", "No"), ("tabfact", "true", "true"), ("synthetic", "..12 kg..", "12 kg"),
]
