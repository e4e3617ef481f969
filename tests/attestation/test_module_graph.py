"""The modules of ``attestation`` import each other without a cycle.

Every import counts, ``if TYPE_CHECKING:`` ones included: a cycle hidden from the
interpreter is still two modules that cannot be read (or changed) one without the other.
The posture has its own module (``_posture``) so that the reference values and the
verifier need not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ATTESTATION = Path(__file__).resolve().parents[2] / "attestation"


def module_name(path: Path) -> str:
    parts = path.relative_to(ATTESTATION.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str]) -> set[str]:
    """The ``attestation`` modules ``path`` imports, at any depth (the package's own
    ``__init__`` excluded: it only names what the others define)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != "attestation")
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ATTESTATION.rglob("*.py")}
    known = set(paths)
    return {name: imported(path, known) - {name} for name, path in paths.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it (first = last), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(edges.get(name, ())):
            found = visit(target, [*path, name])
            if found is not None:
                return found
        done.add(name)
        return None

    for start in sorted(edges):
        found = visit(start, [])
        if found is not None:
            return found
    return None


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        pytest.param({"a": {"b"}, "b": set()}, None, id="a-line"),
        pytest.param({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"], id="two"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"], id="below"),
    ],
)
def test_cycle_finds_a_cycle(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert cycle(edges) == expected


def test_the_graph_sees_the_verifier_and_its_imports() -> None:
    edges = graph()
    assert "attestation._tpm" in edges["attestation._verifier"]
    assert "attestation._errors" in edges["attestation._reference"]


def test_no_two_attestation_modules_import_each_other() -> None:
    found = cycle(graph())
    assert found is None, "attestation modules import in a cycle: " + " → ".join(found or [])


def test_reference_values_do_not_import_the_verifier() -> None:
    """The verifier appraises against reference values; reference values know the posture
    they fill in (``_posture``), not the verifier."""
    edges = graph()
    assert "attestation._verifier" not in edges["attestation._reference"]
    assert "attestation._posture" in edges["attestation._reference"]
