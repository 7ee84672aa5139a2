"""Tasks are plug-ins: the builder knows a task only through `task_registry.TASKS`, and planning counts exactly."""

from types import SimpleNamespace

import pytest

from v2pe_common import encoding
from v2pe_common.recipe import ConfigError
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data import task_registry
from v2pe_data.build import BuildError, build
from v2pe_data.config import BuildConfig
from v2pe_data.plan import Accounting, Budget, SamplePlan, text_cost
from v2pe_data.tasks.base import Input, check_bin
from v2pe_data.tasks.long_vqa.concat import conversations

ACC = Accounting(load_tokenizer(None), get_template("internlm2-chat"), TilingConfig(max_tiles=12))


class EchoTask:
    """The smallest task: text-only samples asking to repeat a generated word."""

    name = "echo"

    def __init__(self, cfg, acc):
        self.cfg, self.acc = cfg, acc
        self.inputs = [Input({"name": "words", "kind": "synthetic"}, SimpleNamespace(split=cfg.split), "available")]

    @classmethod
    def open(cls, cfg, acc):
        return cls(cfg, acc)

    def check_feasible(self, min_len, max_len):
        check_bin(40, min_len, max_len, "an echo prompt")

    def plan(self, index):
        word = f"w{index:04d}"
        conv = [{"from": "human", "value": f"Repeat {word}."}, {"from": "gpt", "value": word}]
        counted = self.acc.count(conv, [])
        budget = Budget(self.cfg.min_length, self.cfg.length)
        meta = {"seed": self.cfg.seed, "sample_index": index, "target_len": budget.max_len,
                "min_len": budget.min_len, "len_bin": budget.len_bin, "num_tokens": counted.total,
                "text_tokens": counted.text, "image_tokens": 0, "tiles": [], "image_sizes": [], "sources": [],
                **self.acc.meta()}
        record = {"id": f"echo-{index:04d}", "task": "long_vqa", "subset": "echo", "images": [],
                  "conversations": conv, "answer": word, "meta": meta}
        return SamplePlan(record=record, items=[], rejected={})


def test_a_new_task_is_one_class_plus_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(task_registry.TASKS, "echo", lambda: EchoTask)
    out = tmp_path / "echo"
    manifest = build(BuildConfig(task="echo", length=256, min_length=0, num_samples=3, shard_size=2, out=str(out)),
                     show_progress=False)
    assert manifest["num_samples"] == 3 and manifest["task"] == "echo"
    assert [s["name"] for s in manifest["sources"]] == ["words"]
    from v2pe_data.validate import validate_build

    assert validate_build(out)["samples"] == 3


def test_an_unknown_task_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"task: unknown task 'nope'; choose one of \['long_vqa', 'long_mr', 'milebench'\]"):
        BuildConfig(task="nope")


def test_task_options_that_a_task_does_not_take_are_usage_errors(tmp_path):
    with pytest.raises(BuildError, match="long_vqa takes no task options") as err:
        build(BuildConfig(task="long_vqa", length=8192, num_samples=1, out=str(tmp_path / "a"),
                          options={"subset": "text_retrieval"}), show_progress=False)
    assert err.value.usage
    with pytest.raises(BuildError, match="not from sources") as err:
        build(BuildConfig(task="long_mr", length=32768, num_samples=1, out=str(tmp_path / "b"),
                          sources=["docvqa=/nowhere"]), show_progress=False)
    assert err.value.usage and not (tmp_path / "b").exists()


def test_task_options_from_the_command_line_are_read_as_yaml():
    from v2pe_data.config import parse_options

    got = parse_options(["subset=text_retrieval,image_counting", "num_needles=[2, 4]",
                         "haystack=interleaved=/data/obelics"])
    assert got == {"subset": "text_retrieval,image_counting", "num_needles": [2, 4],
                   "haystack": "interleaved=/data/obelics"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_options(["subset"])


def test_options_are_part_of_the_identity_only_when_given():
    assert "options" not in BuildConfig(task="long_vqa").identity()
    assert BuildConfig(task="long_mr", options={"subset": "text_retrieval"}).identity()["options"] == {
        "subset": "text_retrieval"}


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 99, 100, 120])
def test_planning_text_cost_is_the_exact_count_of_the_actual_pieces(n):
    """Labelled pages ("Image 10: <image>") are not affine in n: the cost is counted, not extrapolated."""
    make = lambda k: conversations("What is the total?", "42", k, 3)  # noqa: E731
    cost = text_cost(make, ACC)
    exact = encoding.count(make(n), [1] * n, ACC.tokenizer, ACC.template, ACC.tiling).text
    assert cost(n) == exact


def test_memoised_piece_counts_equal_fresh_counts_for_long_and_short_pieces():
    conv = [{"from": "human", "value": "Image 1: <image>\n" + "long text " * 100 + "<image>\nQ?"},
            {"from": "gpt", "value": "A"}]
    first, again = ACC.count(conv, [3, 5]), ACC.count(conv, [3, 5])
    fresh = encoding.count(conv, [3, 5], ACC.tokenizer, ACC.template, ACC.tiling)
    assert first == again == fresh


def test_an_option_on_the_command_line_overrides_one_key_of_the_recipes_options(tmp_path):
    """`--recipe r.yaml --option subset=X` keeps the recipe's other options (num_needles here)."""
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text("options: {subset: text_counting, num_needles: [3, 3]}\nmax_tiles: 2\n")
    out = tmp_path / "o"
    result = subprocess.run([sys.executable, "-m", "v2pe_data", "build", "long_mr", "--recipe", str(recipe),
                             "--option", "subset=text_reasoning", "--len", "4k", "-n", "1", "--out", str(out), "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    args = json.loads((out / "build.json").read_text())["args"]
    assert args["options"] == {"subset": "text_reasoning", "num_needles": [3, 3]}
