"""The packages point one way, and no module imports itself back.

    balancing -> config -> discovery -> health | gateway -> simulate | proxy -> observe
              -> admin | control -> serve (the composition root) -> demo -> cli

A package may import the packages before it, never one after it, nor a peer on its own level
(health and gateway, simulate and proxy, admin and control know nothing of each other).
Discovery decides who is in a pool from the config alone: ``lbctl check`` (health) resolves
through it and the serve root runs it, while the data plane only applies the lists it is
handed, never importing it. ``control`` (pid file, sd_notify, finding a serve to signal) is
process control: only the serve root and the CLI use it, so nothing in the data plane or
below it may. Every import counts:
at module level, inside a function, and under ``if TYPE_CHECKING:`` (a lower package states
what it needs as a Protocol of its own instead). The modules at the top of ``lbctl``
(``units``, ``errors``, ``exitcodes``, ``uri``, ``files`` and the package's ``__init__``) are shared by
all and import no package. The files are read with ``ast``, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lbctl"

LEVELS = [
    ("balancing",), ("config",), ("discovery",), ("health", "gateway"), ("simulate", "proxy"),
    ("observe",), ("admin", "control"), ("serve",), ("demo",), ("cli",), ("__main__",),
]
RANK = {package: rank for rank, level in enumerate(LEVELS) for package in level}
SHARED = {"", "units", "errors", "exitcodes", "uri", "files"}    # "" is lbctl/__init__.py
ORDER = " -> ".join(" | ".join(level) for level in LEVELS[:-1])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The package (or shared module) a dotted ``lbctl`` module name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(source: str, module: str, is_package: bool):
    """(imported lbctl module, line, type-only) for every import in ``source``."""
    tree = ast.parse(source)
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                type_only.update(id(n) for n in ast.walk(child))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from lbctl.proxy import framing" imports the module lbctl.proxy.framing.
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                     for alias in node.names]
        for name in dict.fromkeys(names):
            if name == "lbctl" or name.startswith("lbctl."):
                yield name, node.lineno, id(node) in type_only


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def file_of(module: str) -> str:
    path = ROOT.parent.joinpath(*module.split("."))
    found = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    return str(found.relative_to(ROOT.parent))


def layer_violations(path: str, module: str, source: str, is_package: bool) -> list[str]:
    """Each import in ``source`` (the file ``path``) that points the wrong way."""
    out = []
    mine = part_of(module)
    for imported, line, type_only in imports(source, module, is_package):
        theirs = part_of(imported)
        if theirs == mine:
            continue
        what = "a type-only import of" if type_only else "an import of"
        if mine in SHARED:
            if theirs not in SHARED:
                out.append(f"{path}:{line}: {what} {imported} ({file_of(imported)}): the shared "
                           f"module {module} must not import the package {theirs}")
            continue
        if theirs in SHARED:
            continue
        if RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine]):
            relation = "a peer on its level" if RANK[theirs] == RANK[mine] else "a higher layer"
            out.append(f"{path}:{line}: {what} {imported} ({file_of(imported)}): {mine} must "
                       f"not depend on {theirs}, {relation} (order: {ORDER})")
    return out


def sources():
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path)
        yield str(path.relative_to(ROOT.parent)), module, path.read_text(), \
            path.name == "__init__.py"


def test_every_package_is_placed_in_the_order():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert packages - set(RANK) == set(), "a package missing from LEVELS"
    assert modules - SHARED - set(RANK) - {"__init__"} == set(), "a top-level module not placed"


def test_packages_only_import_the_layers_below_them():
    problems = [problem for args in sources() for problem in layer_violations(*args)]
    assert problems == [], "\n" + "\n".join(problems)


def test_no_module_imports_itself_back():
    """No cycle among modules through imports that run (type-only imports aside)."""
    graph: dict[str, set[str]] = {}
    for path, module, source, is_package in sources():
        graph[module] = {name for name, _, type_only in imports(source, module, is_package)
                         if not type_only and name != module}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == [], "\n" + "\n".join(cycles)


@pytest.mark.parametrize("module, source, blamed", [
    # a type-only import from a higher layer
    ("lbctl.balancing.pool",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lbctl.proxy.server import X\n",
     "lbctl/balancing/pool.py:3: a type-only import of lbctl.proxy.server "
     "(lbctl/proxy/server.py): balancing must not depend on proxy, a higher layer"),
    # a lazy import inside a function, of a package
    ("lbctl.health.passive", "def f():\n    import lbctl.proxy\n",
     "lbctl/health/passive.py:2: an import of lbctl.proxy (lbctl/proxy/__init__.py): health "
     "must not depend on proxy, a higher layer"),
    # a peer on the same level
    ("lbctl.gateway.policy", "from lbctl.health import active\n",
     "lbctl/gateway/policy.py:1: an import of lbctl.health.active (lbctl/health/active.py): "
     "gateway must not depend on health, a peer on its level"),
    # a relative import resolves like any other
    ("lbctl.config.loader", "from ..observe import snapshot\n",
     "lbctl/config/loader.py:1: an import of lbctl.observe.snapshot "
     "(lbctl/observe/snapshot.py): config must not depend on observe, a higher layer"),
])
def test_a_wrong_way_import_fails_naming_both_files(module, source, blamed):
    path = file_of(module)
    problems = layer_violations(path, module, source, False)
    assert len(problems) == 1 and problems[0].startswith(blamed), problems


def test_imports_the_right_way_pass():
    assert layer_violations("lbctl/proxy/x.py", "lbctl.proxy.x",
                            "from lbctl.balancing import Pool\nfrom lbctl.units import x\n"
                            "from lbctl.proxy import framing\n", False) == []
