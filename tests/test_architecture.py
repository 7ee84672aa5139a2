"""The shape of the code, held (docs/ARCHITECTURE.md): no import circles and no private names imported across
modules (`scripts/import_graph.py`, function-local imports included), layers that point one way, each training
key declared once, and a Trainer whose set-up reads as its steps."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("import_graph", import_graph)  # its dataclasses look their module up there
_spec.loader.exec_module(import_graph)
GRAPH = import_graph.build(ROOT)


def _imports(module: str, prefix: str) -> list[str]:
    return sorted(t for t in GRAPH.edges[module] if t == prefix or t.startswith(prefix + "."))


def test_no_module_imports_one_that_imports_it_back():
    assert import_graph.circles(GRAPH) == []


def test_no_module_imports_another_module_s_private_name():
    assert GRAPH.private == []


def test_the_layers_point_one_way():
    assert _imports("v2pe_data.config", "v2pe_data.tasks") == []
    assert _imports("v2pe_data.executors", "v2pe_data.build") == []
    top = ("v2pe_train.train", "v2pe_train.export", "v2pe_train.eval", "v2pe_train.cli")
    for name in GRAPH.edges:
        if name.startswith("v2pe_data.writers"):
            assert _imports(name, "v2pe_data.tasks") == [], name
        if name.startswith("v2pe_data.tasks"):
            assert _imports(name, "v2pe_data.config") == [], name
        if name.startswith("v2pe_common"):
            assert _imports(name, "v2pe_data") == _imports(name, "v2pe_train") == [], name
        if name.startswith(("v2pe_train.data", "v2pe_train.parallel", "v2pe_train.ring", "v2pe_train.model",
                            "v2pe_train.checkpoint", "v2pe_train.config")):
            assert [t for p in top for t in _imports(name, p)] == [], name


def test_every_training_key_is_declared_once():
    from v2pe_train.config import SECTIONS, TOP_KEYS, TrainConfig
    from v2pe_train.data.loader import LoaderConfig
    from v2pe_train.data.options import DataConfig, SampleConfig

    names = [name for section in SECTIONS.values() for name in section.model_fields] + list(TOP_KEYS)
    assert len(names) == len(set(names))  # `data.seed` beside `seed` would be two answers to one question
    assert set(TrainConfig.model_fields) == set(SECTIONS) | set(TOP_KEYS)
    # the loader's config is the data and sample sections plus the run's layout, not a copy of them
    for section in (DataConfig, SampleConfig):
        assert issubclass(LoaderConfig, section)
        assert not set(section.model_fields) & set(LoaderConfig.__annotations__)


def test_the_trainer_sets_up_in_under_40_lines():
    from v2pe_train.train import Trainer

    body = ast.parse(textwrap.dedent(inspect.getsource(Trainer.__init__))).body[0]
    assert body.end_lineno - body.lineno + 1 < 40
