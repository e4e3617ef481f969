"""Locating things in Cedar source text: statement boundaries and error lines.

Cedar reports parse errors without positions; a bundle author needs ``file:line``.
We split policy files at top-level semicolons (outside strings and comments), and
find the line of a parse error by re-parsing growing prefixes of the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statement:
    """One policy statement: its text (from its first token up to and including ``;``)
    and the line that text starts on."""

    text: str
    line: int


def split_statements(text: str) -> list[Statement]:
    """Split Cedar policy text into statements at top-level ``;``.

    Text after the last ``;`` that is not blank or comment is returned as a final
    statement, so that its parse error is reported rather than lost.
    """
    statements: list[Statement] = []
    start = 0
    start_line = 1
    line = 1
    i = 0
    n = len(text)
    in_string = False
    meaningful = False
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
            elif ch == "\n":
                line += 1
            i += 1
            continue
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "\n":
            line += 1
        elif ch == '"':
            in_string = True
            if not meaningful:
                meaningful, start, start_line = True, i, line
        elif ch == ";":
            if not meaningful:
                start, start_line = i, line
            statements.append(Statement(text[start : i + 1], start_line))
            meaningful = False
        elif not ch.isspace() and not meaningful:
            meaningful, start, start_line = True, i, line
        i += 1
    if meaningful:
        statements.append(Statement(text[start:], start_line))
    return statements


def error_line(text: str, parse: Callable[[str], object], message: str) -> int:
    """Return the 1-based line of ``text`` where ``parse`` first fails with ``message``.

    ``parse`` raises ``ValueError`` on bad input. The first prefix of whole lines
    that fails with the same message as the full text holds the offending token.
    Falls back to line 1 when no prefix reproduces the message.
    """
    lines = text.split("\n")
    for count in range(1, min(len(lines), 5000) + 1):
        try:
            parse("\n".join(lines[:count]))
        except ValueError as exc:
            if str(exc) == message:
                return count
    return 1
