"""Which rule scores a record (or an MM-NIAH line), and how many tokens its reply may take: one table.

What is looked up, per kind of input:

- our Long-VQA records (`task: long_vqa`, `subset: <source>_concat | <source>_paste`): by source name,
  V2PE's Long-VQA metric for that dataset, reply and answers normalised per source as V2PE's `rectify`
  does (`rectify.py`), best over `meta.answers` (else `answer`); a source name V2PE does not list (a
  `generic` source named by the user, our `synthetic`) gets V2PE's default: relaxed accuracy, strip only.
- our Long-MR records (`task: long_mr`): MM-NIAH's rule for the answer's type (an int is an option
  letter, A = 0; a list a JSON list; a str normalised containment), in the chosen style.
- MM-NIAH lines (no `task`; `images_list`, `context`, `question`, `answer`, `meta`) and MM-NIAH answer
  files' lines: by answer type; a counting file's answer stored as a JSON string is parsed first (as
  MM-NIAH's scorer does), which needs the file's task name (`mmniah_task="counting-text"`).
- MileBench records (`task: milebench`, `subset`: the MileBench task name, `answer`: its `response`,
  `meta.question_type`: "open-ended" | "multi-choice", `meta.choices`: the choice list): needle tasks and
  MMCoQA by name, the rest by question type.
- single-image DocVQA / InfoVQA / ChartQA (`task: vqa`, `subset: docvqa | infovqa | chartqa`): the official
  ANLS and ChartQA's relaxed accuracy on the raw reply (argument order by style), 100 new tokens.

`style` (`official` | `v2pe`) picks between a benchmark's own code and V2PE's fork of it where they differ:
MM-NIAH's str rule and reply budgets (`mmniah.py`) and the ChartQA argument order. Token budgets: Long-VQA
per dataset as V2PE's `eval_longvqa.py`; MM-NIAH and Long-MR 16, counting 32 (official) or 320 (v2pe);
MileBench 32.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from v2pe_common.formats.mmniah import CONTEXT_SEP, question_tail
from v2pe_common.tiling import IMAGE_PLACEHOLDER

from . import milebench as mb
from . import mmniah
from . import scorers as sc
from .rectify import normalise

STYLES = mmniah.STYLES
MAX_CHOICES = 26  # MM-NIAH letters options chr(ord('A') + i): past Z it would print "[", "\\", ...
MILEBENCH_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Rule:
    """A table row: the reported name, the scoring function (input, cleaned reply, style) -> [0, 1], and
    the reply budget (None: decided by the MM-NIAH task name and style). `fn` is None for a published
    metric we do not implement (named in `name`)."""

    name: str
    fn: Callable[[dict, str, str], float] | None
    max_new_tokens: int | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A rule bound to one input: `score(reply)` cleans the raw reply and scores it."""

    name: str
    max_new_tokens: int
    score: Callable[[str], float]


def _accepted(record: dict) -> list[str]:
    answers = (record.get("meta") or {}).get("answers")
    return [str(a) for a in answers] if isinstance(answers, list) and answers else [str(record["answer"])]


def _longvqa(metric: Callable, source: str) -> Callable[[dict, str, str], float]:
    return lambda record, reply, style: metric(normalise(source, reply),
                                               [normalise(source, a) for a in _accepted(record)])


def _raw(metric: Callable) -> Callable[[dict, str, str], float]:
    return lambda record, reply, style: metric(reply, _accepted(record))


def _answer_rule(metric: Callable) -> Callable[[dict, str, str], float]:
    return lambda record, reply, style: metric(reply, record["answer"])


def _mmniah(record: dict, reply: str, style: str) -> float:
    return mmniah.score(reply, record["answer"], style)


def _chartqa(record: dict, reply: str, style: str) -> float:
    return sc.chartqa_relaxed(reply, _accepted(record), style)


def _milebench_choice(record: dict, reply: str, style: str) -> float:
    choices = (record.get("meta") or {}).get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("meta.choices: a multi-choice MileBench record needs its choice list")
    return mb.milebench_choice(reply, choices, str(record["answer"]))


DEFAULT_SOURCE = "*"
MMNIAH_RULES = {t: Rule(f"mmniah_{n}", _mmniah, None) for t, n in (("int", "option"), ("list", "list"), ("str", "text"))}
LONG_MR_ANSWERS = {"text_retrieval": str, "text_retrieval_fake": str, "text_reasoning": str, "image_retrieval": int,
                   "image_reasoning_colour_pair": int, "text_counting": list, "image_counting": list,
                   "image_reasoning_jigsaw": list}
_LONGVQA = (
    # V2PE's metric and max_new_tokens per dataset (`calculate_scores.py:decide_metric`, `eval_longvqa.py`)
    *((s, "relaxed_accuracy", sc.longvqa_relaxed, n) for s, n in (("chartqa", 32), ("clevr", 8), ("dvqa", 8),
                                                                   ("gqa", 8), ("ocrvqa", 128))),
    *((s, "exact_match", sc.exact_match, 8) for s in ("svqa", "tabfact")),
    *((s, "anls_longvqa", sc.anls_longvqa, 32) for s in ("docvqa", "infovqa")),
    *((s, "vqa_accuracy", sc.vqa_accuracy, n) for s, n in (("okvqa", 16), ("textvqa", 64), ("vizwiz", 32))),
    # sources V2PE does not list: its default metric (relaxed accuracy) after a strip-only rectify
    ("synthetic", "relaxed_accuracy", sc.longvqa_relaxed, 32), (DEFAULT_SOURCE, "relaxed_accuracy", sc.longvqa_relaxed, 32),
)

TABLE: dict[tuple[str, str], Rule] = {
    **{("long_vqa", s): Rule(name, _longvqa(metric, s), n) for s, name, metric, n in _LONGVQA},
    **{("long_vqa", s): Rule(m, None, n)
       for s, m, n in (("deepform", "DUE F1", 32), ("kleistercharity", "DUE F1", 32), ("textcaps", "BLEU-4", 64),
                       ("visualmrc", "BLEU-4", 256), ("wikitablequestions", "WTQ accuracy", 128))},
    **{("long_mr", s): MMNIAH_RULES[t.__name__] for s, t in LONG_MR_ANSWERS.items()},
    **{("mmniah", t): rule for t, rule in MMNIAH_RULES.items()},
    # MileBench, by task name then question type
    ("milebench", "needle"): Rule("milebench_needle", _answer_rule(mb.milebench_needle), MILEBENCH_TOKENS),
    ("milebench", "substring"): Rule("milebench_substring", _answer_rule(mb.milebench_substring), MILEBENCH_TOKENS),
    ("milebench", "open-ended"): Rule("rouge_l", _answer_rule(mb.milebench_rouge), MILEBENCH_TOKENS),
    ("milebench", "multi-choice"): Rule("milebench_choice", _milebench_choice, MILEBENCH_TOKENS),
    # single-image benchmarks (`eval/vqa`)
    ("vqa", "docvqa"): Rule("anls_official", _raw(sc.anls_official), 100),
    ("vqa", "infovqa"): Rule("anls_official", _raw(sc.anls_official), 100),
    ("vqa", "chartqa"): Rule("relaxed_accuracy", _chartqa, 100),
}


def _type_name(answer) -> str:
    if isinstance(answer, bool):
        return "bool"
    return {int: "int", list: "list", str: "str"}.get(type(answer), type(answer).__name__)


def _key(obj: dict) -> tuple[tuple[str, str], str]:
    """(table key, where): `where` names the input in error messages."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a record or an MM-NIAH line (a JSON object), got {type(obj).__name__}")
    where = str(obj.get("id", "?"))
    if "answer" not in obj:
        raise ValueError(f"{where}: answer: missing")
    task = obj.get("task")
    if task is None:
        if "images_list" not in obj:
            raise ValueError(f"{where}: neither a record (no 'task') nor an MM-NIAH line (no 'images_list')")
        kind = _type_name(obj["answer"])
        if kind not in ("int", "list", "str"):
            raise ValueError(f"{where}: answer: expected int, list or str, got {kind}")
        return ("mmniah", kind), where
    subset = str(obj.get("subset", ""))
    if task == "long_vqa":
        source, _, mode = subset.rpartition("_")
        if not source or mode not in ("concat", "paste"):
            raise ValueError(f"{where}: subset: long_vqa subsets are <source>_concat or <source>_paste, got {subset!r}")
        source = source.lower()
        return ("long_vqa", source if ("long_vqa", source) in TABLE else DEFAULT_SOURCE), where
    if task == "long_mr":
        if subset not in LONG_MR_ANSWERS:
            raise ValueError(f"{where}: subset: unknown long_mr subset {subset!r}; known: {sorted(LONG_MR_ANSWERS)}")
        expected, answer = LONG_MR_ANSWERS[subset], obj["answer"]
        if isinstance(answer, bool) or not isinstance(answer, expected):
            raise ValueError(f"{where}: answer: long_mr subset {subset} has {expected.__name__} answers, "
                             f"got {_type_name(answer)}")
        return ("long_mr", subset), where
    if task == "milebench":
        if "NeedleInAHaystack" in subset:
            return ("milebench", "needle"), where
        if "MMCoQA" in subset:
            return ("milebench", "substring"), where
        qtype = (obj.get("meta") or {}).get("question_type")
        if qtype not in ("open-ended", "multi-choice"):
            raise ValueError(f"{where}: meta.question_type: MileBench task {subset!r} needs 'open-ended' or "
                             f"'multi-choice', got {qtype!r}")
        return ("milebench", qtype), where
    if task == "vqa":
        if ("vqa", subset) not in TABLE:
            raise ValueError(f"{where}: subset: no single-image scorer for {subset!r}; known: docvqa, infovqa, chartqa")
        return ("vqa", subset), where
    raise ValueError(f"{where}: task: unknown task {task!r}; known: long_vqa, long_mr, milebench, vqa")


def _mmniah_answer(line: dict, mmniah_task: str | None, where: str) -> dict:
    """MM-NIAH's scorer parses a counting file's answer when it is stored as a JSON string."""
    answer = line["answer"]
    if mmniah_task and "counting" in mmniah_task and isinstance(answer, str):
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list):
            raise ValueError(f"{where}: answer: a {mmniah_task} answer must be a list (or a JSON list), got {answer!r}")
        return {**line, "answer": parsed}
    return line


def lookup(obj: dict, *, style: str = "official", mmniah_task: str | None = None) -> Entry:
    """The rule for `obj` (a record or an MM-NIAH line), bound to it. ValueError, naming the input's id and
    the field, when `obj` has no rule or its answer cannot be scored. `mmniah_task` is an MM-NIAH line's
    task file name ("counting-text"): it decides the counting budget and the parsing of string answers."""
    if style not in STYLES:
        raise ValueError(f"style: choose one of {list(STYLES)}, got {style!r}")
    key, where = _key(obj)
    rule = TABLE[key]
    if rule.fn is None:
        raise ValueError(f"{where}: subset {obj.get('subset')!r}: its published metric ({rule.name}) is not "
                         f"implemented")
    if key[0] == "mmniah":
        obj = _mmniah_answer(obj, mmniah_task, where)
        rule = TABLE[("mmniah", _type_name(obj["answer"]))]
    tokens = rule.max_new_tokens
    if tokens is None:  # MM-NIAH's budget goes by the task's name: its file, or our Long-MR subset
        tokens = mmniah.max_new_tokens(mmniah_task or str(obj.get("subset", "")), style)
    fn = rule.fn

    def score(reply: str) -> float:
        if not isinstance(reply, str):
            raise ValueError(f"{where}: prediction: expected the reply text, got {type(reply).__name__}")
        try:
            return fn(obj, sc.clean_reply(reply), style)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    return Entry(rule.name, tokens, score)


def scorer_for(obj: dict, **kwargs) -> tuple[str, Callable[[str], float]]:
    """(rule name, fn): fn(raw reply) -> score in [0, 1] for this record or line."""
    entry = lookup(obj, **kwargs)
    return entry.name, entry.score


def score(obj: dict, prediction: str, **kwargs) -> float:
    return lookup(obj, **kwargs).score(prediction)


def max_new_tokens(obj: dict, **kwargs) -> int:
    return lookup(obj, **kwargs).max_new_tokens


# ------------------------------------------------------------------------------------------ MM-NIAH prompt


def mmniah_prompt(line: dict, style: str = "official") -> tuple[str, list[str]]:
    """(prompt text with `<image>` placeholders, image paths in placeholder order) of an MM-NIAH line.

    `official` (MM-NIAH's repo, and the human turn of our Long-MR records): context + "\\n" + question;
    text choices append "\\nA. c0"..., image choices "\\nA. <image>"... (their paths after the context's),
    then the choice instruction; any other question gets the single-word instruction, counting included.
    `v2pe` (V2PE's `eval/mm_niah`): no separator, and no instruction for a list (counting) answer.
    Paths are as in the line (relative to the images root). ValueError naming the line's id and field.
    """
    if style not in STYLES:
        raise ValueError(f"style: choose one of {list(STYLES)}, got {style!r}")
    where = str(line.get("id", "?")) if isinstance(line, dict) else "?"
    if not isinstance(line, dict):
        raise ValueError(f"expected an MM-NIAH line (a JSON object), got {type(line).__name__}")
    for key, kind in (("context", str), ("question", str), ("images_list", list), ("meta", dict)):
        if not isinstance(line.get(key), kind):
            raise ValueError(f"{where}: {key}: expected {kind.__name__}, got {type(line.get(key)).__name__}")
    context, question, images = line["context"], line["question"], list(line["images_list"])
    found = context.count(IMAGE_PLACEHOLDER) + question.count(IMAGE_PLACEHOLDER)
    if found != len(images):
        raise ValueError(f"{where}: images_list: {len(images)} paths for {found} {IMAGE_PLACEHOLDER} placeholders")
    choices, choice_images = line["meta"].get("choices"), line["meta"].get("choices_image_path")
    for key, values in (("images_list", images), ("meta.choices", choices), ("meta.choices_image_path", choice_images)):
        if values is not None and (not isinstance(values, list)
                                   or any(not isinstance(v, str) or not v for v in values)):
            raise ValueError(f"{where}: {key}: expected a list of non-empty str, got {values!r:.80}")
    if choices and choice_images:
        raise ValueError(f"{where}: meta.choices: choices and choices_image_path are both set; at most one may be")
    options = choices or choice_images or []
    if len(options) > MAX_CHOICES:
        raise ValueError(f"{where}: meta.{'choices' if choices else 'choices_image_path'}: {len(options)} options; "
                         f"MM-NIAH's letters stop at Z ({MAX_CHOICES})")
    images += list(choice_images or [])
    if not options and isinstance(line.get("answer"), list) and style == "v2pe":
        tail = question
    else:  # the turn our Long-MR records hold after their context (v2pe_common.formats.mmniah)
        tail = question_tail(question, choices, len(choice_images or []))
    return context + (CONTEXT_SEP if style == "official" else "") + tail, images
