"""Estructura del paquete daemon/: ningún ciclo de importación y ningún módulo de más de 400 líneas.

Las importaciones se leen con ``ast`` (sin ejecutar nada): cuentan también las perezosas dentro
de funciones (un ciclo escondido en una función sigue siendo un ciclo), no las de un bloque
``if TYPE_CHECKING:`` (no se ejecutan). ``from paquete import submódulo`` apunta al submódulo.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "daemon"
MAX_LINES = 400

# Módulos que pasan de MAX_LINES con permiso (hoy ninguno), cada uno con el motivo; una entrada que
# ya no hace falta (archivo más corto, movido o renombrado) también hace fallar la prueba.
OVER_THE_LIMIT_ALLOWED: dict[str, str] = {}


def module_files(package: Path) -> dict[str, Path]:
    """Nombre con puntos de cada módulo del paquete -> su archivo (``__init__`` es el paquete)."""
    modules: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    """El nombre absoluto de ``from .x import`` (importaciones relativas)."""
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Los módulos del paquete que ``name`` importa (en cualquier sitio salvo ``if TYPE_CHECKING``)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name in modules)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child.module or "", child.level, name, is_package)
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        found.add(submodule)
                    elif base in modules:
                        found.add(base)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(name)
    return found


def import_cycles(package: Path) -> list[list[str]]:
    """Cada ciclo (componente fuertemente conexo de más de un módulo, o un módulo que se importa a
    sí mismo), como un camino ``a -> b -> ... -> a`` legible."""
    modules = module_files(package)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; el paquete es pequeño, la recursión basta
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(_cycle_path(sorted(component), graph))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return components


def _cycle_path(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """Un camino cerrado concreto dentro de la componente, para el mensaje de error."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    node = start
    while True:
        targets = sorted(graph[node] & members)
        back = [t for t in targets if t == start]
        if back and len(path) > 1:
            return [*path, start]
        fresh = [t for t in targets if t not in seen]
        if not fresh:
            return [*path, targets[0]] if targets else path
        node = fresh[0]
        path.append(node)
        seen.add(node)


# --- las pruebas -----------------------------------------------------------------------------
def test_no_import_cycle_among_daemon_modules() -> None:
    cycles = import_cycles(PACKAGE)
    assert not cycles, "import cycles in daemon/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_over_the_line_limit() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
               for path in PACKAGE.rglob("*.py")}
    over = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in OVER_THE_LIMIT_ALLOWED}
    assert not over, f"modules over {MAX_LINES} lines (split them, one concept each): {over}"
    stale = {name for name in OVER_THE_LIMIT_ALLOWED if lengths.get(name, 0) <= MAX_LINES}
    assert not stale, f"allow-listed but no longer over {MAX_LINES} lines (or gone): remove {sorted(stale)}"


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_the_checker_finds_cycles_even_through_lazy_and_relative_imports(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import thing\n",
        "b.py": "def later():\n    from pkg import c\n    return c\n",  # perezosa, dentro de una función
        "c.py": "from .a import x\n",  # relativa
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "import pkg.d\n",
        "sub/__init__.py": "from . import inner\n",
        "sub/inner.py": "import os\n",
    })
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_checker_reads_from_package_import_submodule(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "__init__.py": "", "x.py": "from pkg import y\n", "y.py": "from pkg import x as again\n",
    })
    assert import_cycles(package) == [["pkg.x", "pkg.y", "pkg.x"]]
    modules = module_files(package)
    assert imports_of("pkg.x", modules["pkg.x"], modules) == {"pkg.y"}


@pytest.mark.parametrize(("module", "level", "current", "is_package", "expected"), [
    ("a", 1, "pkg.b", False, "pkg.a"),
    ("", 1, "pkg.sub", True, "pkg.sub"),
    ("a", 2, "pkg.sub.inner", False, "pkg.a"),
    ("pkg.a", 0, "pkg.b", False, "pkg.a"),
])
def test_relative_imports_resolve(module: str, level: int, current: str, is_package: bool, expected: str) -> None:
    assert _resolve(module, level, current, is_package) == expected
