"""RFC 8785 (JSON Canonicalization Scheme) bytes for audit entries.

``rfc8785`` is the reference implementation; it is pure Python and costs ~30 µs for a
typical entry. For values where ``json.dumps`` provably produces the same bytes (no
floats, integers within ±2^53, every key made of characters below U+D800 so that
code-point and UTF-16 key order agree), the standard library's C encoder is used; the
property test in ``tests/audit/test_canonical.py`` holds the two to the same output.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from audit._errors import FormatError

_MAX_SAFE = 2**53 - 1
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _plain(value: Any) -> bool:
    """True when ``json.dumps`` of ``value`` is already RFC 8785 canonical. String
    contents need no look: a lone surrogate fails the UTF-8 encoding below instead."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_MAX_SAFE <= value <= _MAX_SAFE
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not (key.isascii() or max(key) < "\ud800"):
                return False
            if not _plain(item):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_plain(item) for item in value)
    return False


def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 canonical JSON. Raises :class:`FormatError` for values JSON
    cannot hold (NaN, lone surrogates, integers beyond ±2^53, non-string keys)."""
    if _plain(value):
        try:
            return _encode(value).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 below says so in its own words
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"not canonical JSON: {exc}") from exc


def _number(text: str) -> int | float:
    value = int(text)
    # RFC 8785 writes a whole float beyond 2^53 (1.7e18) as plain digits; read back, it
    # must be the float again, or it cannot be canonicalized to the same bytes.
    return value if -_MAX_SAFE <= value <= _MAX_SAFE else float(value)


def loads_canonical(text: str | bytes) -> Any:
    """Parse JSON written by :func:`canonical_json` so that canonicalizing it again gives
    the same bytes. Raises ``ValueError`` for text that is not JSON."""
    return json.loads(text, parse_int=_number)
