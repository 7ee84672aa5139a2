"""The train side's shape (issue 20): no import circles, no private names across modules, lower modules never
importing `train`, `export` or `eval`, and every error class of the package under `V2PETrainError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import v2pe_train
from v2pe_train.errors import V2PETrainError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_graph  # noqa: E402

TOP = ("v2pe_train.train", "v2pe_train.export", "v2pe_train.eval")  # what lower modules must not import
ABOVE = ("v2pe_train.cli", "v2pe_train.__main__", "v2pe_train.train", "v2pe_train.export", "v2pe_train.eval")


def _train_side(graph):
    return {name: targets for name, targets in graph.edges.items() if name.startswith("v2pe_train")}


def test_the_train_side_has_no_import_circle_and_imports_no_private_name_across_modules():
    graph = import_graph.build(ROOT)
    circles = [c for c in import_graph.circles(graph) if any(m.startswith("v2pe_train") for m in c)]
    assert circles == []
    assert [p for p in graph.private if p.startswith("v2pe_train")] == []


def test_lower_modules_never_import_train_export_or_eval():
    edges = _train_side(import_graph.build(ROOT))
    lower = {name: targets for name, targets in edges.items() if not name.startswith(ABOVE)}
    wrong = {name: sorted(t for t in targets if t.startswith(TOP)) for name, targets in lower.items()}
    assert {name: t for name, t in wrong.items() if t} == {}


def test_every_error_class_of_the_package_derives_from_one_base():
    errors = []
    for info in pkgutil.walk_packages(v2pe_train.__path__, "v2pe_train."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        errors += [cls for cls in vars(module).values()
                   if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == info.name]
    assert len(errors) >= 10
    assert [cls.__name__ for cls in errors if not issubclass(cls, V2PETrainError)] == []
    assert all(isinstance(cls.reason, str) and cls.reason for cls in errors if cls is not V2PETrainError)
