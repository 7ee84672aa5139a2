"""The shape of the code, held: no import circles, no private names imported across modules, each training
config key declared once, and a Trainer whose set-up reads as a list of steps (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.build(ROOT)


def test_no_module_imports_one_that_imports_it_back_even_from_inside_a_function():
    module, graph = _graph()
    assert module.circles(graph) == []


def test_no_module_imports_another_module_s_private_name():
    _, graph = _graph()
    assert graph.private == []


def test_every_training_key_is_declared_once():
    from v2pe_train.config import SECTIONS, TOP_KEYS, TrainConfig
    from v2pe_train.data.loader import LoaderConfig
    from v2pe_train.data.options import DataConfig, SampleConfig

    names = [name for section in SECTIONS.values() for name in section.model_fields] + list(TOP_KEYS)
    assert len(names) == len(set(names))  # `data.seed` beside `seed` would be two answers to one question
    # the loader's config is the data and sample sections plus the run's layout, not a copy of them
    for section in (DataConfig, SampleConfig):
        assert issubclass(LoaderConfig, section)
        assert not set(section.model_fields) & set(LoaderConfig.__annotations__)
    assert set(TrainConfig.model_fields) == set(SECTIONS) | set(TOP_KEYS)


def test_the_trainer_sets_up_in_under_40_lines():
    from v2pe_train.train import Trainer

    body = ast.parse(textwrap.dedent(inspect.getsource(Trainer.__init__))).body[0]
    lines = body.end_lineno - body.lineno + 1
    assert lines < 40, f"Trainer.__init__ is {lines} lines"
