"""Fails (exit 1) when modules of albert_jax import each other in a circle; prints one cycle per knot.

The graph is grimp's (the one import-linter checks): every import statement, function-level ones included.
Importing `a.b.c` also runs the packages `a.b` and `a`, so an import from outside a package counts as an
import of the package's `__init__` as well: `pretrained -> convert.hf` plus `convert -> convert.cli ->
pretrained` is a cycle. A package's own modules importing their parent are the ordinary case and do not.
import-linter's `acyclic_siblings` contract works on packages, not modules (it would flag the allowed
chain convert.cli -> pretrained -> convert.hf), hence this check. Run from the repository root.
"""

import sys
from collections import deque

import grimp

PACKAGE = "albert_jax"


def import_graph(package: str) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """Module -> imported modules, and for each edge where it comes from ('l.12' or the implicit import)."""
    sys.path.insert(0, ".")
    graph = grimp.build_graph(package, cache_dir=None)
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    why: dict[tuple[str, str], str] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
            edges[importer].add(imported)
            why.setdefault((importer, imported), "l." + ",".join(map(str, lines)))
            parts = imported.split(".")
            for i in range(len(parts) - 1, 1, -1):  # packages above `imported`, below the root package
                parent = ".".join(parts[:i])
                if importer != parent and not importer.startswith(parent + "."):
                    edges[importer].add(parent)
                    init = parent.replace(".", "/") + "/__init__.py"
                    why.setdefault((importer, parent), f"implicit: importing {imported} runs {init}")
    return edges, why


def knots(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(start: str, members: set[str], edges: dict[str, set[str]]) -> list[str]:
    """start -> ... -> start, within one knot (breadth-first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError("a knot without a cycle")


def main() -> int:
    sys.setrecursionlimit(10_000)
    edges, why = import_graph(PACKAGE)
    found = knots(edges)
    for component in found:
        cycle = shortest_cycle(component[0], set(component), edges)
        print(f"Import cycle among {', '.join(component)}:")
        for a, b in zip(cycle, cycle[1:], strict=False):
            print(f"  {a} -> {b} ({why[(a, b)]})")
    print(f"{PACKAGE}: {len(edges)} modules, {len(found)} import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
