"""The data side's import graph (`scripts/import_graph.py`, function-local imports included): no circles among
v2pe_data and v2pe_common modules, no private name imported across them, and the layering the design asks
for: the config and the writers import no task, the executors not the builder, v2pe_common no other package."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("import_graph", import_graph)  # its dataclasses look their module up there
_spec.loader.exec_module(import_graph)
GRAPH = import_graph.build(ROOT)
DATA_SIDE = ("v2pe_data", "v2pe_common")


def _data_side(name: str) -> bool:
    return name.split(".")[0] in DATA_SIDE


def test_no_circle_on_the_data_side():
    assert [c for c in import_graph.circles(GRAPH) if any(_data_side(m) for m in c)] == []


def test_no_private_name_imported_across_data_side_modules():
    assert [p for p in GRAPH.private if _data_side(p.split(":")[0])] == []


def test_the_layers_point_one_way():
    def imports(module: str, prefix: str) -> list[str]:
        return sorted(t for t in GRAPH.edges[module] if t == prefix or t.startswith(prefix + "."))

    assert imports("v2pe_data.config", "v2pe_data.tasks") == []
    assert imports("v2pe_data.executors", "v2pe_data.build") == []
    for name in GRAPH.edges:
        if name.startswith("v2pe_data.writers"):
            assert imports(name, "v2pe_data.tasks") == [], name
        if name.startswith("v2pe_data.tasks"):
            assert imports(name, "v2pe_data.config") == [], name
        if name.startswith("v2pe_common"):
            assert imports(name, "v2pe_data") == imports(name, "v2pe_train") == [], name
