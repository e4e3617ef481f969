"""Locating Cedar source: statement boundaries and the line of a parse error."""

from __future__ import annotations

import json

import cedarpy
import pytest

from engine._core.cedar_source import error_line, split_statements

P = "permit (principal, action, resource)"
F = "forbid (principal, action, resource)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", [], id="empty"),
        pytest.param("\n  \n// nothing here;\n", [], id="only-blank-and-comment"),
        pytest.param(
            f"{P};\n{F};\n",
            [(1, f"{P};"), (2, f"{F};")],
            id="two-statements",
        ),
        pytest.param(
            f'{P} when {{ context.s == "a;b" }};\n{F};',
            [(1, f'{P} when {{ context.s == "a;b" }};'), (2, f"{F};")],
            id="semicolon-in-string",
        ),
        pytest.param(
            f'{P} when {{ context.s == "x // y;" }};\n{F};',
            [(1, f'{P} when {{ context.s == "x // y;" }};'), (2, f"{F};")],
            id="comment-marker-in-string",
        ),
        pytest.param(
            f'{P} when {{ context.s == "q\\";" }};\n{F};',
            [(1, f'{P} when {{ context.s == "q\\";" }};'), (2, f"{F};")],
            id="escaped-quote-then-semicolon-in-string",
        ),
        pytest.param(
            f'{P} when {{ context.s == "ends in backslash \\\\" }};\n{F};',
            [(1, f'{P} when {{ context.s == "ends in backslash \\\\" }};'), (2, f"{F};")],
            id="escaped-backslash-closes-string",
        ),
        pytest.param(
            f"// a; b; c\n{P}; // trailing; comment\n\n// end;\n{F};\n",
            [(2, f"{P};"), (5, f"{F};")],
            id="semicolons-in-comments",
        ),
        pytest.param(
            f'@id("a;b")\n{P};',
            [(1, f'@id("a;b")\n{P};')],
            id="annotation-with-semicolon",
        ),
        pytest.param(
            f'{P} when {{ "two\nlines;" == context.s }};\n\n{F};',
            [(1, f'{P} when {{ "two\nlines;" == context.s }};'), (4, f"{F};")],
            id="newline-in-string-counts-lines",
        ),
        pytest.param(
            f"{P};\n\n  {F}\n",
            [(1, f"{P};"), (3, f"{F}\n")],
            id="trailing-text-without-semicolon",
        ),
        pytest.param(
            f"{P};\n;\n",
            [(1, f"{P};"), (2, ";")],
            id="stray-semicolon-is-a-statement",
        ),
    ],
)
def test_split_statements(text: str, expected: list[tuple[int, str]]) -> None:
    assert [(s.line, s.text) for s in split_statements(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f'{P} when {{ context.s == "a;b" }};\n{F};', id="semicolon-in-string"),
        pytest.param(f'{P} when {{ context.s == "q\\";" }};\n{F};', id="escaped-quote"),
        pytest.param(f"// x;\n{P}; // y;\n{F};", id="comments"),
        pytest.param(f'@id("a;b")\n{P};\n@id("c")\n{F};', id="annotations"),
    ],
)
def test_split_statements_agrees_with_cedar(text: str) -> None:
    parsed = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    statements = split_statements(text)
    assert len(statements) == len(parsed)
    for statement in statements:
        assert len(json.loads(cedarpy.policies_to_json_str(statement.text))["staticPolicies"]) == 1


def parse(text: str) -> object:
    return cedarpy.policies_to_json_str(text)


def cedar_message(text: str) -> str:
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"cedar parsed {text!r}")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(f"{P};\n{F}\n  when {{ principal.x = }};\n", 3, id="third-line"),
        pytest.param(f"{P};\n\n\npermit (principal, action, resource) when {{ ( }};", 4, id="last"),
        pytest.param(f"{P} when {{ 1 + }};\n{F};", 1, id="first-line"),
        pytest.param(f"{P};\n{F};\npermit (principal, action,", 3, id="unexpected-end"),
    ],
)
def test_error_line_finds_the_failing_line(text: str, line: int) -> None:
    assert error_line(text, parse, cedar_message(text)) == line


def test_error_line_falls_back_to_line_one_for_an_unknown_message() -> None:
    assert error_line(f"{P};\n{F} oops;\n", parse, "a message cedar never gives") == 1
