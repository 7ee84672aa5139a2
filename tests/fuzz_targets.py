"""Fuzz targets for every parser of untrusted input (issue 21), shared by `tests/test_fuzz.py` (a seeded short
run inside `make test`) and `bench/fuzz.py --minutes N` (long runs).

The property, for each target: every input ends in a record, a counted rejection with a reason, or a
one-line error of the parser's own error class; never another exception (a traceback), never a hang (each
case runs under a deadline), and never a lost valid row (each generated file also holds a known good row,
which must come out).
"""

from __future__ import annotations

import json
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

from hypothesis import strategies as st

CASE_DEADLINE = 30  # seconds one case may take (a loaded machine included); a case past it is a hang
NASTY = ["<IMG_CONTEXT>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<image>", "\ud800", "\udcff", "\x00",
         "../x.png", "/etc/passwd", "~nobody-here-21/x", "{image#1}", "{image#2}", "", " ", "1e309", "NaN", "é", "\n"]

text = st.one_of(st.text(max_size=12), st.sampled_from(NASTY))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), text)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                           max_leaves=10)


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int = CASE_DEADLINE):
    """A case that outlives `seconds` raises Hang (SIGALRM: the main thread only, as pytest runs tests)."""
    def on_alarm(signum, frame):
        raise Hang(f"a case ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _dump(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _png(folder: Path) -> str:
    from tests.fixtures.sources import make_image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(make_image("fuzz", 40, 30))
    return "a.png"


# ------------------------------------------------------------------------------------------ targets


def interleaved_rows(rows: list, raw_lines: list[bytes]) -> None:
    from v2pe_data.sources.base import SourceError
    from v2pe_data.sources.interleaved import open_interleaved

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        img = "img/" + _png(root / "img")
        good = {"id": "good", "texts": ["kept words", None], "images": [None, img]}
        lines = [_dump(r) for r in rows] + raw_lines + [_dump(good)]
        (root / "train.jsonl").write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
        try:
            src = open_interleaved(root, "train")
        except SourceError:
            return
        ids = [src._entries[i].id for i in range(len(src))]
        assert "good" in ids or any(i.startswith("good@") for i in ids), "the valid row was lost"
        assert len(src) + len(src.rejected) == src.rows_seen
        json.dumps(src.rejected, ensure_ascii=False).encode("utf-8")


def milebench_rows(meta, rows: list) -> None:
    from v2pe_data.sources.base import SourceError
    from v2pe_data.tasks.milebench.reader import read_task

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = _png(root / "T" / "images")
        good = {"sample_id": "good", "task_instruction_id": 0, "response": "yes",
                "task_instance": {"context": "look {image#1}", "images_path": [name]}}
        doc = {"meta_data": meta, "data": [*rows, good]}
        (root / "T" / "T.json").write_bytes(_dump(doc))
        try:
            src = read_task(root, "T", split="test", max_pixels=10**7)
        except SourceError:
            return
        assert any(r.sample_id == "good" for r in src.rows), "the valid row was lost"
        assert len(src.rows) + len(src.rejected) == src.rows_seen
        json.dumps(src.rejected, ensure_ascii=False).encode("utf-8")


def internvl_meta(meta) -> None:
    from v2pe_common.formats.internvl import meta_entry_options

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.json"
        path.write_bytes(_dump(meta))
        try:
            meta_entry_options(path)
        except ValueError:
            pass


def internvl_lines(lines: list) -> None:
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.data import LoaderConfig, PackedLoader

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        img = "images/" + _png(root / "images")
        good = {"id": "good", "image": img, "conversations": [{"from": "human", "value": "<image>\nwhat?"},
                                                             {"from": "gpt", "value": "noise"}]}
        (root / "a.jsonl").write_bytes(b"".join(_dump(x).replace(b"\n", b" ") + b"\n" for x in [*lines, good]))
        (root / "meta.json").write_text(json.dumps({"x": {"root": str(root), "annotation": "a.jsonl"}}))
        loader = PackedLoader(LoaderConfig(paths=[str(root / "meta.json")], shuffle=False, pixel_dtype="fp32"),
                              load_tokenizer())
        ids = [i for b in loader for i in b.ids]
        assert "good" in ids, "the valid line was lost"


def mmniah_lines(lines: list) -> None:
    from v2pe_common.template import get_template
    from v2pe_common.tiling import TilingConfig
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.eval.inputs import EvalInputError, mmniah_items

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _png(root / "images")
        path = root / "retrieval-image-val.jsonl"
        path.write_bytes(b"".join(_dump(x).replace(b"\n", b" ") + b"\n" for x in lines))
        try:
            list(mmniah_items(path, root / "images", load_tokenizer(), get_template("internlm2-chat"), TilingConfig()))
        except EvalInputError:
            pass


def prediction_lines(lines: list, raw_lines: list[bytes]) -> None:
    from v2pe_train.eval.run import Problems, read_predictions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m_retrieval-text-val.jsonl"
        good = {"id": "good", "stride": "default", "prediction": "A"}
        body = [_dump(x).replace(b"\n", b" ") for x in [*lines, good]] + [r.replace(b"\n", b" ") for r in raw_lines]
        path.write_bytes(b"\n".join(body) + b"\n")
        problems = Problems()
        rows = read_predictions([path], problems)
        assert ("good", "default") in rows or any("good" in d for d in problems.duplicated), "the valid row was lost"
        "\n".join(problems.lines()).encode("utf-8", "backslashreplace")


def recipes(raw) -> None:
    from v2pe_common.recipe import ConfigError
    from v2pe_data.config import BuildConfig

    if not isinstance(raw, dict):
        raw = {"options": raw}
    try:
        cfg = BuildConfig.from_dict(raw)
    except ConfigError:
        return
    cfg.identity()


def long_mr_options(raw) -> None:
    from v2pe_common.recipe import ConfigError
    from v2pe_data.tasks.long_mr.options import LongMROptions

    try:
        opts = LongMROptions.from_dict(raw if isinstance(raw, dict) else {"depth": raw})
    except ConfigError:
        return
    opts.depth_for(7)


def shard_markers(marker) -> None:
    from v2pe_data.markers import marker_problem

    with tempfile.TemporaryDirectory() as tmp:
        why = marker_problem(Path(tmp), marker, {"index": 0, "start": 0, "stop": 2}, ["wds"], {})
        assert why is None or isinstance(why, str)


def contamination_inputs(data, rows: list, lines: list) -> None:
    """`v2pe-data contamination` reads MileBench and MM-NIAH folders it did not make: every entry comes out or
    is skipped with a reason, a whole file that is no task file is one ContaminationError."""
    from v2pe_data.contamination import ContaminationError, entries

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = _png(root / "mb" / "T" / "images")
        good = {"sample_id": "good", "response": "yes", "task_instance": {"context": "look", "images_path": [name]}}
        (root / "mb" / "T" / "T.json").write_bytes(_dump({"meta_data": {}, "data": data if data is not None
                                                          else [*rows, good]}))
        (root / "mm" / "annotations").mkdir(parents=True)
        _png(root / "mm" / "images")
        good_line = {"id": 9, "images_list": ["a.png"], "question": "q", "answer": "yes"}
        (root / "mm" / "annotations" / "a.jsonl").write_bytes(
            b"".join(_dump(x).replace(b"\n", b" ") + b"\n" for x in [*lines, good_line]))
        for folder, where in ((root / "mb", "T/T.json data["), (root / "mm", "a.jsonl:")):
            try:
                found = list(entries(folder))
            except ContaminationError:
                assert data is not None and folder.name == "mb", "a valid file was refused whole"
                continue
            kept = [e for e in found if not e.skipped]
            assert all(e.where.startswith(where) for e in found)
            if data is None or folder.name == "mm":
                assert any(len(e.images) == 1 and e.answer == "yes" for e in kept), "the valid row was lost"


# The strategy of each target's arguments: fields a parser reads, filled with anything.
def _obj(keys: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, json_values) for k, v in keys.items()})


_turns = st.lists(_obj({"from": st.sampled_from(["human", "gpt", "system", "user"]), "value": text}), max_size=3)
TARGETS = {
    "interleaved_rows": (interleaved_rows, dict(
        rows=st.lists(_obj({"id": text, "texts": st.lists(st.one_of(st.none(), text), max_size=3),
                            "images": st.lists(st.one_of(st.none(), st.just("img/a.png"), text), max_size=3)}),
                      max_size=3),
        raw_lines=st.lists(st.binary(max_size=20), max_size=2))),
    "milebench_rows": (milebench_rows, dict(
        meta=st.one_of(st.just({"task_instruction": ["Do it."], "question_type": "open-ended"}),
                       _obj({"task_instruction": st.lists(text, max_size=2), "question_type": text})),
        rows=st.lists(_obj({"sample_id": text, "task_instruction_id": st.integers(-1, 2), "response": text,
                            "task_instance": _obj({"context": text, "images_path": st.lists(text, max_size=2),
                                                   "choice_list": st.lists(text, max_size=2)})}), max_size=3))),
    "internvl_meta": (internvl_meta, dict(meta=st.dictionaries(text, _obj({
        "root": text, "annotation": text, "repeat_time": st.floats(allow_nan=True),
        "max_dynamic_patch": st.integers(-5, 10**6)}), max_size=2))),
    "internvl_lines": (internvl_lines, dict(lines=st.lists(_obj({
        "id": text, "image": st.one_of(text, st.lists(text, max_size=2)), "conversations": _turns}), max_size=2))),
    "mmniah_lines": (mmniah_lines, dict(lines=st.lists(_obj({
        "id": st.integers(0, 5), "images_list": st.lists(st.one_of(text, st.just("a.png")), max_size=2),
        "context": text, "question": text, "answer": json_values,
        "meta": _obj({"choices": st.lists(text, max_size=2), "choices_image_path": st.lists(text, max_size=2),
                      "placed_depth": json_values})}), max_size=3))),
    "prediction_lines": (prediction_lines, dict(
        lines=st.lists(_obj({"id": json_values, "stride": json_values, "prediction": text, "response": text}),
                       max_size=3),
        raw_lines=st.lists(st.binary(max_size=20), max_size=2))),
    "recipes": (recipes, dict(raw=_obj({
        "task": st.sampled_from(["long_vqa", "long_mr", "milebench", "x"]), "len": st.one_of(text, st.integers()),
        "num_samples": st.integers(-1, 2**65), "seed": st.integers(-1, 2**65), "depth": st.one_of(text, st.floats()),
        "shard_size": st.one_of(text, st.integers(-1, 2**40)), "workers": st.integers(-1, 10**7),
        "formats": st.lists(text, max_size=2), "sources": st.lists(json_values, max_size=2),
        "control_tokens": text, "max_tiles": st.integers(-1, 100)}))),
    "long_mr_options": (long_mr_options, dict(raw=_obj({
        "depth": st.one_of(text, st.floats(), st.builds(lambda a, b, c: f"{a}:{b}:{c}", st.floats(), st.floats(),
                                                        st.floats())),
        "num_needles": json_values, "subset": json_values,
        "haystack": st.one_of(text, _obj({"kind": st.just("synthetic"), "paragraphs": st.lists(
            st.integers(-1, 2**40), min_size=2, max_size=2)}))}))),
    "contamination_inputs": (contamination_inputs, dict(
        data=st.one_of(st.none(), json_values),
        rows=st.lists(st.one_of(json_values, _obj({"sample_id": text, "response": json_values, "task_instance": _obj(
            {"context": json_values, "images_path": st.lists(st.one_of(text, st.just("a.png")), max_size=2)})})),
            max_size=3),
        lines=st.lists(st.one_of(json_values, _obj({"id": json_values, "question": json_values, "answer": json_values,
                                                    "images_list": st.lists(text, max_size=2),
                                                    "meta": _obj({"choices_image_path": st.lists(text, max_size=2)})})),
                       max_size=3))),
    "shard_markers": (shard_markers, dict(marker=st.one_of(json_values, _obj({
        "task": st.just({"index": 0, "start": 0, "stop": 2}), "files": st.lists(json_values, max_size=2),
        "tokens": st.lists(st.lists(st.integers(-1, 5), max_size=4), max_size=3),
        "rejected": st.just({"counts": {}, "examples": []})})))),
}


def _warm() -> None:
    import v2pe_data.build  # noqa: F401
    import v2pe_train.data  # noqa: F401
    import v2pe_train.eval.inputs  # noqa: F401
    import v2pe_train.eval.run  # noqa: F401
    from v2pe_common.tokenizer import load_tokenizer

    load_tokenizer().restarts_after_added_tokens  # noqa: B018  (its probes tokenize: done once, here)


def run_target(name: str, max_examples: int, *, seed: int | None = 0, counter: list | None = None) -> None:
    """Run target `name` for `max_examples` cases (seeded and derandomised when `seed` is given)."""
    from hypothesis import HealthCheck, given, seed as hyp_seed, settings

    fn, strategies = TARGETS[name]
    _warm()  # imports happen outside the deadline: an alarm inside an import would leave it half done

    @settings(max_examples=max_examples, deadline=None, derandomize=seed is not None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(**strategies)
    def case(**kwargs):
        if counter is not None:
            counter[0] += 1
        with deadline():
            fn(**kwargs)

    if seed is not None:
        case = hyp_seed(seed)(case)
    case()
