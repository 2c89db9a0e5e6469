"""The package's layers: every import (also inside functions) points to the same layer or a lower one, no cycles.

The order is ``docs/layout.md``'s: shared basics, then ``data`` -> ``synth`` -> ``models`` -> ``objectives``
-> ``datasets`` -> ``backbones`` -> ``curate`` -> ``train`` -> ``evaluation`` -> ``vlm`` -> ``demo`` -> ``cli``.
The graph is read from the source text with :mod:`ast`, so an import nobody executes in the tests still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unisurg

PACKAGE = Path(unisurg.__file__).resolve().parent
# Lowest first. A module may import its own layer's modules and those of lower layers only.
LAYERS = [
    {"_version", "atomic_files", "typed_config", "strict_yaml", "device", "rank_exit"},
    {"data"},
    {"synth"},
    {"models"},
    {"objectives"},
    {"datasets"},
    {"backbones"},
    {"curate"},
    {"train"},
    {"evaluation"},
    {"vlm"},
    {"demo", "demo_seeds"},
    {"cli"},
    {"__init__"},  # the package root: the public facade (load_encoder), above everything
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_files() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("unisurg",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Internal modules that ``name`` imports anywhere in its source (module level, functions, branches)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LEVEL:
        raise AssertionError(f"{module}: its top-level name {key!r} has no layer in tests/test_import_graph.py")
    return LEVEL[key]


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {m: imported_modules(m, p, known) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_known_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_upward_imports():
    upward = []
    for mod, targets in graph().items():
        own = layer_of(mod)
        for t in targets:
            if layer_of(t) > own:
                upward.append(f"{mod} (layer {own}) imports {t} (layer {layer_of(t)})")
    assert not upward, "imports that point to a higher layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("low", ["data", "models", "objectives"])
def test_foundations_import_no_pipeline_stage(low):
    forbidden = ("datasets", "backbones", "curate", "train", "evaluation", "vlm", "demo", "cli")
    bad = sorted(f"{m} -> {t}" for m, ts in graph().items() if m.split(".")[1:2] == [low]
                 for t in ts if t.split(".")[1] in forbidden)
    assert not bad, bad
