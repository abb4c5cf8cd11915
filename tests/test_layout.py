"""The package's layout: each stage imports only what stands below it, and no module imports
another that (directly or not) imports it back. Read from the source with ``ast``; nothing runs.

Stages, bottom to top (a module may import its own stage and those below):

0. base: ``keras bridge devices datasets zoo memory costs cache format``
1. ``compression``   2. ``exits``   3. ``conversion``   4. ``runtime``   5. ``targets``
6. ``energy``   7. ``demo``   8. ``cli commands``
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freeml_keras"
STAGES = [("keras", "bridge", "devices", "datasets", "zoo", "memory", "costs", "cache", "format"),
          ("compression",), ("exits",), ("conversion",), ("runtime",), ("targets",), ("energy",),
          ("demo",), ("cli", "commands")]
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "tflm_port" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports anywhere (top level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("freeml_keras"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("freeml_keras"):
                continue
            out.add(mod)
            for a in node.names:                # `from pkg import submodule`
                if f"{mod}.{a.name}" in known:
                    out.add(f"{mod}.{a.name}")
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    full = set()
    for m in out:
        parts = m.split(".")
        full.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    # a module's own packages are already being imported when it runs: not a dependency
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in full if m in known and m != name and m not in ancestors}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _stage(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_stage():
    missing = sorted(m for m in _modules() if m != "freeml_keras" and _stage(m) is None)
    assert not missing, f"modules outside the layout (add them to STAGES): {missing}"


def test_no_import_runs_back_up_a_stage():
    bad = []
    for mod, deps in _graph().items():
        s = _stage(mod)
        for d in deps:
            if s is not None and _stage(d) is not None and _stage(d) > s:
                bad.append(f"{mod} (stage {s}) imports {d} (stage {_stage(d)})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # Tarjan's strongly connected components: any component of more than one module is a cycle
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in comps if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_walk_sees_imports_inside_functions():
    """The checks above would pass vacuously if the walker missed imports: it must see the ones
    written inside functions and through package ``__init__`` files."""
    g = _graph()
    assert "freeml_keras.format.tflite" in g["freeml_keras.format.metadata"]
    assert "freeml_keras.targets.runs" in g["freeml_keras.targets"]
    assert "freeml_keras.targets" in g["freeml_keras.commands.convert"]     # imported in a function
