"""Each package's public surface is exactly what it means to export."""

from __future__ import annotations
import __future__

import ast
import importlib
import types
from pathlib import Path

import pytest

PACKAGES = ["attestation", "audit", "engine", "sdk"]


def public_names(module: types.ModuleType) -> set[str]:
    """What ``module`` makes public by having it: names without a leading underscore
    that are not submodules and not ``from __future__`` features."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_exactly_what_the_package_holds(package: str) -> None:
    """``__all__`` names only what the package defines (nothing from elsewhere passed
    off as its own), once, and everything public in it is in ``__all__``: the surface
    is derived from the code, not repeated here (ruff's RUF022 keeps it sorted)."""
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    for name in exported:  # a package may import its names on first use (PEP 562)
        getattr(module, name)
    assert set(exported) == public_names(module)
    for name in exported:
        value = getattr(module, name)
        owner = getattr(value, "__module__", None)
        if owner is not None and not isinstance(value, str | int | tuple | frozenset):
            assert owner.startswith(package), f"{package}.{name} comes from {owner}"


def test_engine_uses_attestation_through_its_public_api() -> None:
    """``engine`` imports ``attestation`` only as ``from attestation import …``."""
    root = Path(__file__).resolve().parents[1] / "engine"
    private = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("attestation._"):
                private.append(f"{path.relative_to(root)}:{node.lineno}: {node.module}")
    assert not private, private


MAY_IMPORT = {
    "engine": {"attestation", "audit", "sdk"},
    "attestation": {"audit"},
    "audit": set(),
    "sdk": set(),
}
"""Imports only point down: engine → attestation → audit; sdk alone (the wire contract)."""


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (an import inside a function too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_only_point_down(package: str) -> None:
    """Each package imports only the packages below it, and those only through their
    public modules (``audit``, ``audit.cli``, ``audit.note``, never ``audit._store``);
    a client install (sdk) never imports cedarpy. Read from the source, so an import
    that a lazily loaded package would make only on first use is caught too."""
    root = Path(__file__).resolve().parents[1] / package
    wrong = []
    for path in root.rglob("*.py"):
        if "v1" in path.relative_to(root).parts:
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            private = any(part.startswith("_") for part in module.split(".")[1:])
            if top == package:
                continue
            if top in PACKAGES and (top not in MAY_IMPORT[package] or private):
                wrong.append(f"{path.relative_to(root.parent)}:{line}: {module}")
            if package == "sdk" and top == "cedarpy":
                wrong.append(f"{path.relative_to(root.parent)}:{line}: {module}")
    assert not wrong, wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exception_lives_in_its_package_errors_module(package: str) -> None:
    """One exception tree per package, drawn in its ``_errors.py``: none is defined
    anywhere else (private helpers and click's exit exceptions of a CLI aside)."""
    import pkgutil

    root = importlib.import_module(package)
    stray = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.startswith("sdk.v1") or ".templates" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
                and not info.name.endswith("._errors")
                and not (info.name.endswith("cli") or ".cli." in info.name)
            ):
                stray.append(f"{info.name}.{name}")
    assert not stray, stray
