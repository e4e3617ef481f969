"""RFC 8785 (JSON Canonicalization Scheme) bytes for audit entries.

``rfc8785`` is the reference implementation; it is pure Python and costs ~30 µs for a
typical entry. For values where ``json.dumps`` provably produces the same bytes (no
floats, integers within ±2^53, every key made of characters below U+D800 so that
code-point and UTF-16 key order agree), the standard library's C encoder is used; the
property test in ``tests/audit/test_canonical.py`` holds the two to the same output.

Most values the log sees are made only of exact ``dict``, ``list``, ``tuple``, ``str``,
``bool``, ``None`` and small ``int`` (:func:`plain_text`): for them, one walk over the
types (no call per string or number) and the C encoder, made once rather than per call.
Such a value is also what pydantic's json mode leaves unchanged, which lets a caller
skip ``model_dump`` (see :func:`audit.digest_plain`).
"""

from __future__ import annotations

import json

# CPython's C encoder, made once: json.JSONEncoder.encode builds one on every call.
from _json import make_encoder
from json.encoder import encode_basestring
from typing import Any

import rfc8785

from audit._errors import FormatError

_MAX_SAFE = 2**53 - 1
_LEAVES = frozenset({str, bool, type(None)})


def _unreachable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain JSON")


# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) without the
# cycle checks: a value reaches it only through _exact or _plain, which a cycle cannot
# pass (they recurse until RecursionError).
_encode = make_encoder(None, _unreachable, encode_basestring, None, ":", ",", True, False, False)


def _exact(value: Any) -> bool:
    """True for a value of exact ``dict`` (string keys below U+D800 or ASCII), ``list``,
    ``tuple``, ``str``, ``bool``, ``None`` and ``int`` within ±2^53. Implies :func:`_plain`."""
    kind = type(value)
    if kind is dict:
        try:
            keys = "".join(value)
        except TypeError:  # a key that is not a string
            return False
        if not keys.isascii() and max(keys) >= "\ud800":
            return False
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return kind in _LEAVES or (kind is int and -_MAX_SAFE <= value <= _MAX_SAFE)
    for item in items:  # leaves here, not in a call each: this runs for every entry
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE <= item <= _MAX_SAFE:
                continue
        elif (kind is dict or kind is list or kind is tuple) and _exact(item):
            continue
        return False
    return True


def plain_text(value: Any) -> str | None:
    """``value``'s RFC 8785 canonical JSON as text when :func:`_exact` holds for it, else
    None (the caller takes the general path). The text may hold a lone surrogate: its
    UTF-8 encoding then fails, and so must the caller's."""
    if not _exact(value):
        return None
    return "".join(_encode(value, 0))


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
    text = plain_text(value)
    if text is None and _plain(value):
        text = "".join(_encode(value, 0))
    if text is not None:
        try:
            return text.encode()
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
