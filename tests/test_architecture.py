"""The package's layers (docs/architecture.md): imports point down, never up, and never in a circle.

Every module under ``geofm_hf/`` is parsed with ``ast``; every import counts, at module level or
inside a function (a lazy import is still a dependency, only a later one), with relative imports
resolved. A module may import its own layer's packages and lower layers; an upward import fails
naming ``file:line``. The package ``__init__.py`` is the public API (it re-exports every layer)
and sits above them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geofm_hf"

# One table: the layer of every top-level module or subpackage of geofm_hf. Lower layers know
# nothing of higher ones: config/bands -> model/processor -> data and tools -> training and
# recipes -> inference.
LAYERS: dict[str, int] = {
    # 0: band tables, the config, atomic writes -- no other geofm_hf import
    "_atomic": 0,
    "_errors": 0,
    "_version": 0,
    "bands": 0,
    "configuration_geofm": 0,
    "templates": 0,  # package data (the model card template); no code
    # 1: the model and its processor (remote code: the model stays one file; the processor's
    # file imports its two helpers relatively, and transformers copies and loads them with it)
    "modeling_geofm": 1,
    "image_processing_geofm": 1,
    "image_processing_geofm_bands": 1,
    "image_processing_geofm_inputs": 1,
    "pipeline_geofm": 1,
    # 2: data (shards, streaming), the model card, Hub pushes, the planner, metrics
    "data": 2,
    "model_card": 2,
    "hub": 2,
    "planner": 2,
    "metrics": 2,
    # 3: pretraining machinery and the downstream recipes built on it; checkpoint conversion
    "training": 3,
    "classification": 3,
    "segmentation": 3,
    "convert": 3,
    # 4: whole-scene inference (embed, segment, search) and other toolkits (TerraTorch) on
    # trained checkpoints
    "inference": 4,
    "interop": 4,
    # 5: the public API (geofm_hf/__init__.py)
    "__init__": 5,
}

# Upward imports that are allowed, with the reason: (importing module, imported module) -> why.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, module: str | None, level: int) -> str:
    """Absolute dotted name of a ``from`` import's base (``level`` dots, then ``module``)."""
    if level == 0:
        return module or ""
    # Dropping the last part gives the package: a module's parent, or (``pkg.__init__``) itself.
    base = importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _target(name: str) -> str | None:
    """The module file ``name`` lands on: ``a.b`` is ``a/b.py`` or ``a/b/__init__.py``."""
    if name in MODULES:
        return name
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return None


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``: annotations, never executed."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(id(n) for n in ast.walk(child))
    return out


_REEXPORTS: dict[str, dict[str, str]] = {}


def _reexports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` imports from elsewhere -> the module they come from."""
    if package not in _REEXPORTS:
        _REEXPORTS[package] = {}
        tree = ast.parse(MODULES[package].read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                base = _resolve(package, node.module, node.level)
                for alias in node.names:
                    owner = _owner(base, alias.name)
                    if owner and owner != package:
                        _REEXPORTS[package][alias.asname or alias.name] = owner
    return _REEXPORTS[package]


def _owner(base: str, name: str) -> str | None:
    """The module that ``from base import name`` depends on: the submodule ``base.name``; for a
    name a package re-exports (``from geofm_hf import GeoViTMAEConfig``), the module defining
    it, since a package ``__init__`` is a facade; else ``base`` itself."""
    if base.split(".")[0] != "geofm_hf":
        return None
    sub = _target(f"{base}.{name}")
    if sub:
        return sub
    target = _target(base)
    if target and target.endswith(".__init__"):
        return _reexports(target).get(name, target)
    return target


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported geofm_hf module, line, only under TYPE_CHECKING) for every import in ``path``.

    ``import geofm_hf`` (a package) is charged with what the file reads from it:
    ``geofm_hf.__version__`` depends on the module that defines ``__version__``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = _type_checking_nodes(tree)
    out = []
    packages: dict[str, tuple[int, bool]] = {}  # local name of an imported package -> line
    for node in ast.walk(tree):
        only = id(node) in typing_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _target(alias.name) if alias.name.startswith("geofm_hf") else None
                if target is None:
                    continue
                if target.endswith(".__init__") and alias.asname is None and "." not in alias.name:
                    packages[alias.name] = (node.lineno, only)
                else:
                    out.append((target, node.lineno, only))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node.module, node.level)
            for alias in node.names:
                target = _owner(base, alias.name)
                if target:
                    out.append((target, node.lineno, only))
    for local, (line, only) in packages.items():
        used = {
            (n.attr, n.lineno)
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id == local
        }
        if not used:
            out.append((_target(local), line, only))
        for attr, attr_line in sorted(used):
            out.append((_owner(local, attr), attr_line, only))
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_has_a_layer():
    missing = sorted({_layer_key(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"geofm_hf/{missing}: add them to LAYERS in {Path(__file__).name}"


def test_no_module_imports_from_a_higher_layer():
    problems = []
    for importer, imports in GRAPH.items():
        mine = LAYERS.get(_layer_key(importer))
        for imported, line, _ in imports:
            theirs = LAYERS.get(_layer_key(imported))
            if mine is None or theirs is None or theirs <= mine:
                continue
            if (importer, imported) in ALLOWED_UPWARD:
                continue
            where = MODULES[importer].relative_to(ROOT)
            problems.append(
                f"{where}:{line}: {importer} (layer {mine}, {_layer_key(importer)}) imports "
                f"{imported} (layer {theirs}, {_layer_key(imported)})"
            )
    assert not problems, "upward imports (see docs/architecture.md):\n" + "\n".join(problems)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules():
    # Imports under TYPE_CHECKING are left out: annotations never run, and a type named in both
    # directions is no tangle of behaviour.
    graph = {
        m: {t for t, _, only in imports if t != m and not only} for m, imports in GRAPH.items()
    }
    cycles = _cycles(graph)
    lines = []
    for component in cycles:
        members = set(component)
        for m in component:
            for t, line, only in sorted(set(GRAPH[m])):
                if t in members and t != m and not only:
                    lines.append(f"  {MODULES[m].relative_to(ROOT)}:{line}: imports {t}")
        lines.append("")
    assert not cycles, "import cycles:\n" + "\n".join(lines)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..data.writer import write_shards", "geofm_hf.data.writer"),
        ("from ..data import writer", "geofm_hf.data.writer"),
        ("from .. import bands", "geofm_hf.bands"),
        ("from . import cost_model", "geofm_hf.planner.cost_model"),
        ("import geofm_hf.hub", "geofm_hf.hub"),
        ("def f():\n    from ..inference.embed import embed", "geofm_hf.inference.embed"),
        ("from geofm_hf import GeoViTMAEConfig", "geofm_hf.configuration_geofm"),
        ("from ..data import make_pretrain_dataloader", "geofm_hf.data.loader"),
        ("import geofm_hf\nv = geofm_hf.__version__", "geofm_hf._version"),
        ("import geofm_hf", "geofm_hf.__init__"),
    ],
)
def test_imports_are_resolved(tmp_path, source, expected):
    # The checker itself: relative, package and function-level imports land on the right file.
    path = tmp_path / "x.py"
    path.write_text(source)
    importer = "geofm_hf.planner.x" if "cost_model" in source else "geofm_hf.inference.x"
    assert [t for t, _, _ in _imports(importer, path)] == [expected]


def test_cycle_finder_and_type_checking_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    path = tmp_path / "x.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cog import x\n")
    assert _imports("geofm_hf.inference.x", path) == [("geofm_hf.inference.cog", 3, True)]
