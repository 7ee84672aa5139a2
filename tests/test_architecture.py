"""The shape of the code, held (docs/ARCHITECTURE.md): no import circles and no private names imported across
modules (`scripts/import_graph.py`, function-local imports included), layers that point one way, each training
key declared once, and a Trainer whose set-up reads as its steps."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import textwrap
from pathlib import Path

import pytest

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
    top = ("v2pe_train.train", "v2pe_train.export", "v2pe_train.eval")  # what lower modules must not import
    above = ("v2pe_train.cli", "v2pe_train.__main__", *top)
    for name in GRAPH.edges:
        if name.startswith("v2pe_data.writers"):
            assert _imports(name, "v2pe_data.tasks") == [], name
        if name.startswith("v2pe_data.tasks"):
            assert _imports(name, "v2pe_data.config") == [], name
        if name.startswith("v2pe_common"):
            assert _imports(name, "v2pe_data") == _imports(name, "v2pe_train") == [], name
        if name.startswith("v2pe_train") and not name.startswith(above):
            assert [t for p in top for t in _imports(name, p)] == [], name


# Signals that never leave their reader (a row skipped and counted) and an internal invariant (a bug).
INTERNAL = {"v2pe_data.sources.errors.Reject", "v2pe_data.sources.errors.BadRow",
            "v2pe_data.sources.synthetic.pen.LayoutError"}


@pytest.mark.parametrize("package,base", [("v2pe_data", "v2pe_data.errors.V2PEDataError"),
                                          ("v2pe_train", "v2pe_train.errors.V2PETrainError")])
def test_every_error_of_a_package_derives_from_its_one_base_with_a_reason(package, base):
    module_name, _, base_name = base.rpartition(".")
    root = getattr(importlib.import_module(module_name), base_name)
    errors = []
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        errors += [cls for cls in vars(module).values() if inspect.isclass(cls) and issubclass(cls, Exception)
                   and cls.__module__ == info.name and f"{info.name}.{cls.__name__}" not in INTERNAL]
    assert len(errors) >= 10
    assert [cls.__name__ for cls in errors if not issubclass(cls, root)] == []
    assert all(isinstance(cls.reason, str) and cls.reason for cls in errors if cls is not root)


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
