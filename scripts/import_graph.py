"""The project's import graph: circles between modules and private names imported across modules.

Every import counts, the ones inside functions included: a function-local import hides a circle from the
interpreter, not from the design. `python scripts/import_graph.py` prints the figures; the architecture test
(tests/test_architecture.py) holds them at zero.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("v2pe_common", "v2pe_data", "v2pe_train")


@dataclass
class Graph:
    edges: dict[str, set[str]] = field(default_factory=dict)
    private: list[str] = field(default_factory=list)  # "importer: module.name"
    local_imports: int = 0
    lines: dict[str, int] = field(default_factory=dict)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def build(root: Path) -> Graph:
    graph = Graph()
    files = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    known = set(files)
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph.lines[name] = len(path.read_text().splitlines())
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        function_nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(n) for f in function_nodes for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                found = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:  # `from . import module`
                        found.append(sub)
                        continue
                    found.append(base)
                    if alias.name.startswith("_") and base in known and base != name:
                        graph.private.append(f"{name}: {base}.{alias.name}")
            else:
                continue
            if id(node) in inside and any(f.split(".")[0] in PACKAGES for f in found):
                graph.local_imports += 1
            for target in found:
                # `import a.b.c` or a name from a package: the deepest module the project has
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph.edges[name] = targets
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph.edges):
        if v not in index:
            visit(v)
    return sorted(found, key=len, reverse=True)


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    graph = build(root)
    found = circles(graph)
    print(f"modules: {len(graph.edges)}  lines: {sum(graph.lines.values())}  "
          f"function-local project imports: {graph.local_imports}")
    print(f"circles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print(f"private names imported across modules: {len(graph.private)}")
    for item in graph.private:
        print("  " + item)
    if "--lines" in sys.argv:
        for name, n in sorted(graph.lines.items(), key=lambda kv: -kv[1]):
            print(f"{n:6d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
