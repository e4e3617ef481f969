"""A request's context checked against its action's context type: the first wrong field.

Cedar refuses a context that does not fit the schema with a message that names only the
action (``context `{mfa: "yes"}` is not valid for `Docket::Action::"read"```). This
walks the context against the type :func:`engine._core.schema_json.context_types`
resolved and names the path of the first wrong field, in one line::

    context.device.secure_boot: required
    context.mfa: expected a boolean (got a string)
    context.foo: not in the schema for action "read"

It refuses only what Cedar refuses (a property test holds it to cedarpy); what it
cannot judge alone (an extension value's text, an entity id outside an enum) it leaves
to Cedar. Attributes are visited in sorted order, so the answer depends on the context's
shape (its paths, each value's JSON kind, entity types, whether a long fits) and not on
key order: a pure function of (context type, action, context), cacheable per shape.

Whether a context fits depends only on its :func:`context_shape` (its paths, the kinds of
its values and the types its entity references name), so the engine walks each shape
once per bundle and remembers the verdict; :func:`needs_no_schema` says whether Cedar
reads a context of that shape the same without the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Mapping
from typing import Any

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int to Python, never a long to Cedar
    (int, "a whole number"),
    (float, "a number with a fraction; Cedar has only whole numbers"),
    (str, "a string"),
    (list, "a JSON array"),
    (dict, "a JSON object"),
)
_EXPECTED = {
    "Boolean": "a boolean",
    "Long": "a long (a whole number)",
    "String": "a string",
    "Set": "a set (a JSON array)",
    "Record": "a record (a JSON object)",
}


def context_problem(
    context_type: Mapping[str, Any],
    context: Mapping[str, Any],
    action: str,
    field: str = "context",
    *,
    owner: str | None = None,
) -> str | None:
    """The first field of ``context`` that does not fit ``context_type`` (a resolved
    Record type), as ``field.path: what is wrong``; ``None`` when Cedar has nothing this
    check can name. ``action`` is the action's id, for an attribute not in the schema
    (``not in the schema for action "read"``); ``owner`` instead names the entity type
    whose attributes these are (``not an attribute of Docket::User``)."""
    if context_fits(context_type, context):
        return None
    unknown = (
        f"not in the schema for action {json.dumps(action)}"
        if owner is None
        else f"not an attribute of {owner}"
    )
    return _problem(context_type, context, field, unknown)


def context_fits(expected: Mapping[str, Any], value: Any) -> bool:
    """True exactly when :func:`context_problem` has nothing to say: the same walk in no
    particular order and without messages (about 3 µs on a typical context, a quarter
    of the ordered walk), so that a context that fits pays only this."""
    kind = expected["type"]
    if kind == "Record":
        if not isinstance(value, dict):
            return False
        attributes = expected["attributes"]
        for name, item in value.items():
            attribute = attributes.get(name)
            if attribute is None or not context_fits(attribute, item):
                return False
        # Every key named an attribute: as many keys as attributes means all are there.
        return len(value) == len(attributes) or all(
            name in value for name, attribute in attributes.items() if attribute["required"]
        )
    if kind == "String":
        return isinstance(value, str)
    if kind == "Boolean":
        return isinstance(value, bool)
    if kind == "Long":
        return type(value) is int and _LONG_MIN <= value <= _LONG_MAX
    if kind == "Set":
        element = expected["element"]
        return isinstance(value, list) and all(context_fits(element, item) for item in value)
    if kind == "Entity":
        return _entity_problem(expected["name"], value, "") is None
    return isinstance(value, str | dict)  # an extension value: its text is Cedar's to judge


def needs_no_schema(
    expected: Mapping[str, Any], value: Any, enumerated: frozenset[str] = frozenset()
) -> bool:
    """Whether Cedar reads ``value``, a context that fits ``expected``, the same without
    the schema: no extension value (its text is parsed by the type the schema gives it),
    and every entity reference written out as ``{"__entity": {"type": …, "id": …}}`` (a
    bare ``{"type": …, "id": …}`` is a reference only through the schema) to a type that
    is not ``enumerated`` (whose ids only the schema checks). A function of the context's
    shape."""
    kind: str = expected["type"]
    if kind == "Record":
        attributes = expected["attributes"]
        return all(
            needs_no_schema(attributes[name], item, enumerated) for name, item in value.items()
        )
    if kind == "Set":
        element = expected["element"]
        return all(needs_no_schema(element, item, enumerated) for item in value)
    if kind == "Entity":
        ref = value.get("__entity") if len(value) == 1 else None
        return isinstance(ref, dict) and len(ref) == 2 and expected["name"] not in enumerated
    return kind != "Extension"


def context_shape(value: Any) -> Hashable:
    """The paths and kinds of a context's values, whatever their order, and the type named
    by each object's ``type`` string (an entity reference's): everything
    :func:`context_fits` and :func:`needs_no_schema` look at. An object is the set of its
    (name, shape) pairs, an array the set of its elements' shapes; a whole number out of
    Cedar's range, a fraction, null and any other Python type are kinds of their own (a
    ``type`` that is a subclass of ``str`` makes a shape equal to no other)."""
    kind = type(value)
    if kind is str:
        return "s"
    if kind is bool:
        return "b"
    if kind is int:
        return "l" if _LONG_MIN <= value <= _LONG_MAX else "L"
    if kind is dict:
        pairs: list[Hashable] = [(name, context_shape(item)) for name, item in value.items()]
        named = value.get("type")
        if isinstance(named, str):
            if type(named) is not str:
                return object()
            pairs.append((None, "type", named))
        return frozenset(pairs)
    if kind is list:
        return ("[]", frozenset([context_shape(item) for item in value]))
    return ("?", kind)


def _problem(expected: Mapping[str, Any], value: Any, path: str, unknown: str) -> str | None:
    """The first problem under ``path``; ``unknown`` says what an attribute not in the
    schema is."""
    kind = expected["type"]
    if value is None:
        return f"{path}: expected {_describe(expected)} (got null; leave the attribute out)"
    if kind == "Record":
        if not isinstance(value, dict):
            return _mismatch(expected, value, path)
        attributes = expected["attributes"]
        for name in sorted(set(attributes) | set(value)):
            where = _join(path, name)
            attribute = attributes.get(name)
            if attribute is None:
                return f"{where}: {unknown}"
            if name not in value:
                if attribute["required"]:
                    return f"{where}: required"
                continue
            problem = _problem(attribute, value[name], where, unknown)
            if problem is not None:
                return problem
        return None
    if kind == "Set":
        if not isinstance(value, list):
            return _mismatch(expected, value, path)
        for position, item in enumerate(value):
            problem = _problem(expected["element"], item, f"{path}[{position}]", unknown)
            if problem is not None:
                return problem
        return None
    if kind == "Entity":
        return _entity_problem(expected["name"], value, path)
    if kind == "Extension":
        # Its text (ip("…"), decimal("…")) is Cedar's to judge; only a JSON kind that
        # can never be one is named here.
        return None if isinstance(value, str | dict) else _mismatch(expected, value, path)
    if kind == "Boolean":
        fits = isinstance(value, bool)
    elif kind == "Long":
        fits = type(value) is int and _LONG_MIN <= value <= _LONG_MAX
        if type(value) is int and not fits:
            return f"{path}: expected a long, from -2^63 to 2^63-1 (got {value})"
    else:
        fits = isinstance(value, str)
    return None if fits else _mismatch(expected, value, path)


def _entity_problem(type_name: str, value: Any, path: str) -> str | None:
    ref = value.get("__entity", value) if isinstance(value, dict) else None
    if not (
        isinstance(ref, dict)
        and isinstance(ref.get("type"), str)
        and isinstance(ref.get("id"), str)
    ):
        return (
            f"{path}: expected an entity reference to a {type_name} "
            f'({{"__entity": {{"type": …, "id": …}}}}; got {_kind(value)})'
        )
    if ref["type"] != type_name:
        return f"{path}: expected an entity reference to a {type_name} (got a {ref['type']})"
    return None


def _describe(expected: Mapping[str, Any]) -> str:
    kind = expected["type"]
    if kind == "Entity":
        return f"an entity reference to a {expected['name']}"
    if kind == "Extension":
        return f"an {expected['name']} value"
    return _EXPECTED[kind]


def _mismatch(expected: Mapping[str, Any], value: Any, path: str) -> str:
    return f"{path}: expected {_describe(expected)} (got {_kind(value)})"


def _kind(value: Any) -> str:
    for kind, described in _KINDS:
        if isinstance(value, kind):
            return described
    return "null" if value is None else type(value).__name__


def _join(path: str, name: str) -> str:
    if _IDENTIFIER.fullmatch(name):
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name)}]"
