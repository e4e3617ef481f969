"""engine/ is laid out by role, and imports only point down:

    cli → _runtime → _adapters → _service → _core (and _errors, beside _core)

A module may import its own room and the rooms below it, never one above: the core
knows nothing of services, a service nothing of gRPC, an adapter nothing of the
process. Every room says in its docstring what it holds and may import, and no module
is named after one of the packages beside ``engine`` (``_attestation.py`` next to
``attestation/`` was how it read before)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
ROOMS = {"_core": 0, "_errors": 0, "_service": 1, "_adapters": 2, "_runtime": 3, "cli": 4}
PACKAGES = {"engine", "attestation", "audit", "sdk"}


def room(module: str) -> str | None:
    """``engine._service.decisions`` → ``_service``; None for ``engine`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "engine" else None


def imports(path: Path) -> list[tuple[int, str]]:
    """Every ``engine.…`` module ``path`` imports, with its line, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] == "engine"]


MODULES = sorted(p for p in ENGINE.rglob("*.py") if p.parent != ENGINE or p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_imports_only_point_down(path: Path) -> None:
    own = path.relative_to(ENGINE).parts[0].removesuffix(".py")
    assert own in ROOMS, f"{path}: engine/ holds only {sorted(ROOMS)} (and __init__.py)"
    upward = [
        f"line {line}: {name}"
        for line, name in imports(path)
        if (target := room(name)) is not None and ROOMS.get(target, 99) > ROOMS[own]
    ]
    assert not upward, f"{path.relative_to(ENGINE)} imports a room above its own: {upward}"


def test_every_room_says_what_it_holds_and_may_import() -> None:
    for name in ROOMS:
        init = ENGINE / name / "__init__.py"
        if name == "_errors":
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init} needs a docstring"
        assert "import" in docstring.lower(), f"{init}: say what it may import"


def test_no_module_is_named_after_a_package() -> None:
    for path in ENGINE.rglob("*.py"):
        stem = path.stem.lstrip("_")
        assert stem not in PACKAGES, f"{path}: the name repeats the package {stem!r}"
