"""A bundle's Cedar schema in Cedar's JSON schema form, and each action's context type.

cedarpy gives no structured view of a schema, only its text (``str(schema)``, Cedar's
own canonical rendering). :func:`schema_json` reads that rendering into the JSON schema
form (``{"Docket": {"commonTypes": …, "entityTypes": …, "actions": …}}``) and checks
itself: cedarpy must render the JSON form back to the very same text, or the result is
``None`` (then nothing here is used and Cedar's own messages stand).
:func:`context_types` resolves each action's context to a type with every name resolved
and every common type inlined, as :mod:`engine._core.context_check` walks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import cedarpy

UID = tuple[str, str]
Type = dict[str, Any]
"""A type in Cedar's JSON schema form (``{"type": "Set", "element": …}``)."""

_TOKEN = re.compile(
    r'\s+|//[^\n]*|(?P<string>"(?:[^"\\]|\\.)*")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>::|[{}\[\]<>,;:=?@()])',
    re.S,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)", re.S)
_PRIMITIVES: dict[str, Type] = {
    "String": {"type": "String"},
    "Long": {"type": "Long"},
    "Bool": {"type": "Boolean"},
    "Boolean": {"type": "Boolean"},
}
_EXTENSIONS = ("ipaddr", "decimal", "datetime", "duration")
_MAX_NESTING = 64


class _Unreadable(Exception):
    """The rendering holds something this reader does not know."""


def _unescape(literal: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        if code not in _ESCAPES:
            raise _Unreadable(f"escape \\{code}")
        return _ESCAPES[code]

    return _ESCAPE.sub(one, literal[1:-1])


class _Reader:
    """Recursive descent over Cedar schema syntax, building the JSON form."""

    def __init__(self, text: str) -> None:
        self._tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise _Unreadable(f"character {text[position]!r}")
            position = match.end()
            if match.lastgroup is not None:
                self._tokens.append((match.lastgroup, match.group(match.lastgroup)))
        self._at = 0

    def _peek(self, value: str | None = None) -> bool:
        if self._at >= len(self._tokens):
            return False
        kind, text = self._tokens[self._at]
        return value is None or (text == value and kind != "string")

    def _take(self, value: str | None = None, kind: str | None = None) -> str:
        if self._at >= len(self._tokens):
            raise _Unreadable("unexpected end")
        found_kind, text = self._tokens[self._at]
        if (value is not None and (text != value or found_kind == "string")) or (
            kind is not None and found_kind != kind
        ):
            raise _Unreadable(f"expected {value or kind}, found {text!r}")
        self._at += 1
        return _unescape(text) if found_kind == "string" else text

    def _skip(self, value: str) -> bool:
        if self._peek(value):
            self._at += 1
            return True
        return False

    def schema(self) -> dict[str, Any]:
        namespaces: dict[str, Any] = {}
        while self._at < len(self._tokens):
            annotations = self._annotations()
            if self._skip("namespace"):
                name = self._path()
                space = namespaces.setdefault(name, _namespace())
                if annotations:
                    space["annotations"] = annotations
                self._take("{")
                while not self._skip("}"):
                    self._declaration(space, self._annotations())
            else:
                self._declaration(namespaces.setdefault("", _namespace()), annotations)
        return namespaces

    def _annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = {}
        while self._skip("@"):
            name = self._take(kind="name")
            value = ""
            if self._skip("("):
                value = self._take(kind="string")
                self._take(")")
            annotations[name] = value
        return annotations

    def _path(self) -> str:
        parts = [self._take(kind="name")]
        while self._peek("::") and self._tokens[self._at + 1][0] == "name":
            self._take("::")
            parts.append(self._take(kind="name"))
        return "::".join(parts)

    def _names(self, kinds: tuple[str, ...]) -> list[str]:
        names = [self._name(kinds)]
        while self._skip(","):
            names.append(self._name(kinds))
        return names

    def _name(self, kinds: tuple[str, ...]) -> str:
        kind = self._tokens[self._at][0] if self._at < len(self._tokens) else ""
        if kind not in kinds:
            raise _Unreadable("expected a name")
        return self._take(kind=kind)

    def _declaration(self, space: dict[str, Any], annotations: dict[str, str]) -> None:
        keyword = self._take(kind="name")
        if keyword == "type":
            name = self._take(kind="name")
            self._take("=")
            declared = self._type(0)
            space["commonTypes"][name] = _annotated(declared, annotations)
        elif keyword == "entity":
            names = self._names(("name",))
            entity: dict[str, Any] = {}
            if self._skip("enum"):
                self._take("[")
                entity["enum"] = self._names(("string",))
                self._take("]")
            else:
                if self._skip("in"):
                    entity["memberOfTypes"] = self._list(self._path)
                self._skip("=")
                if self._peek("{"):
                    entity["shape"] = self._record(0)
                if self._skip("tags"):
                    entity["tags"] = self._type(0)
            for name in names:
                space["entityTypes"][name] = _annotated(dict(entity), annotations)
        elif keyword == "action":
            names = self._names(("name", "string"))
            action: dict[str, Any] = {}
            if self._skip("in"):
                action["memberOf"] = self._list(self._action_ref)
            if self._skip("appliesTo"):
                action["appliesTo"] = self._applies_to()
            for name in names:
                space["actions"][name] = _annotated(dict(action), annotations)
        else:
            raise _Unreadable(f"declaration {keyword!r}")
        self._take(";")

    def _list(self, item: Any) -> list[Any]:
        if not self._skip("["):
            return [item()]
        items: list[Any] = []
        while not self._skip("]"):
            items.append(item())
            if not self._skip(","):
                self._take("]")
                break
        return items

    def _action_ref(self) -> dict[str, str]:
        if self._peek() and self._tokens[self._at][0] == "string":
            return {"id": self._take(kind="string")}
        parts = [self._take(kind="name")]
        while self._skip("::"):
            if self._tokens[self._at][0] == "string":
                return {"type": "::".join(parts), "id": self._take(kind="string")}
            parts.append(self._take(kind="name"))
        # `in [read]`: an action named by an identifier alone.
        if len(parts) != 1:
            raise _Unreadable("action reference")
        return {"id": parts[0]}

    def _applies_to(self) -> dict[str, Any]:
        applies: dict[str, Any] = {}
        self._take("{")
        while not self._skip("}"):
            part = self._take(kind="name")
            self._take(":")
            if part in ("principal", "resource"):
                applies[f"{part}Types"] = self._list(self._path)
            elif part == "context":
                applies["context"] = self._type(0)
            else:
                raise _Unreadable(f"appliesTo {part!r}")
            if not self._skip(","):
                self._take("}")
                break
        return applies

    def _type(self, depth: int) -> Type:
        if depth > _MAX_NESTING:
            raise _Unreadable("nesting")
        if self._peek("{"):
            return self._record(depth)
        name = self._path()
        if name == "Set" and self._skip("<"):
            element = self._type(depth + 1)
            self._take(">")
            return {"type": "Set", "element": element}
        return {"type": "EntityOrCommon", "name": name}

    def _record(self, depth: int) -> Type:
        attributes: dict[str, Any] = {}
        self._take("{")
        while not self._skip("}"):
            annotations = self._annotations()
            name = self._name(("name", "string"))
            required = not self._skip("?")
            self._take(":")
            attribute = self._type(depth + 1)
            if not required:
                attribute["required"] = False
            attributes[name] = _annotated(attribute, annotations)
            if not self._skip(","):
                self._take("}")
                break
        return {"type": "Record", "attributes": attributes}


def _namespace() -> dict[str, Any]:
    return {"commonTypes": {}, "entityTypes": {}, "actions": {}}


def _annotated(value: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    if annotations:
        value["annotations"] = annotations
    return value


def schema_json(schema: cedarpy.Schema) -> dict[str, Any] | None:
    """``schema`` in Cedar's JSON schema form, or ``None`` when cedarpy does not render
    the form read from its text back to that same text (a construct this reader does
    not know: the caller then goes without it)."""
    text = str(schema)
    try:
        converted = _Reader(text).schema()
        again = cedarpy.Schema.from_json_str(json.dumps(converted))
    except (_Unreadable, ValueError, IndexError):
        return None
    return converted if str(again) == text else None


class _Resolver:
    """Names in a JSON schema resolved as Cedar resolves them: in the namespace of the
    declaration first (a common type, then an entity type), then the empty namespace,
    then the built-in types."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._common: dict[str, tuple[str, Type]] = {}
        self._entities: set[str] = set()
        for space, body in schema.items():
            for name, declared in body.get("commonTypes", {}).items():
                self._common[_qualify(space, name)] = (space, declared)
            self._entities.update(_qualify(space, name) for name in body.get("entityTypes", {}))

    def type(self, declared: Mapping[str, Any], space: str, depth: int = 0) -> Type:
        if depth > _MAX_NESTING:
            raise _Unreadable("nesting")
        kind = declared["type"]
        if kind == "Record":
            attributes = {}
            for name, attribute in declared["attributes"].items():
                resolved = self.type(attribute, space, depth + 1)
                resolved["required"] = attribute.get("required", True)
                attributes[name] = resolved
            return {"type": "Record", "attributes": attributes}
        if kind == "Set":
            return {"type": "Set", "element": self.type(declared["element"], space, depth + 1)}
        if kind == "EntityOrCommon":
            return self._name(declared["name"], space, depth)
        raise _Unreadable(f"type {kind!r}")

    def entity(self, name: str, space: str) -> str:
        """The qualified name of the entity type ``name`` declared in ``space`` names."""
        if "::" not in name and _qualify(space, name) in self._entities:
            return _qualify(space, name)
        return name

    def _name(self, name: str, space: str, depth: int) -> Type:
        if name.startswith("__cedar::"):
            return _builtin(name.removeprefix("__cedar::"))
        candidates = [name] if "::" in name else [_qualify(space, name), name]
        for candidate in candidates:
            common = self._common.get(candidate)
            if common is not None:
                return self.type(common[1], common[0], depth + 1)
            if candidate in self._entities:
                return {"type": "Entity", "name": candidate}
        return _builtin(name)


def _qualify(space: str, name: str) -> str:
    return f"{space}::{name}" if space else name


def _builtin(name: str) -> Type:
    if name in _PRIMITIVES:
        return dict(_PRIMITIVES[name])
    if name in _EXTENSIONS:
        return {"type": "Extension", "name": name}
    raise _Unreadable(f"type {name!r}")


def context_types(schema: Mapping[str, Any]) -> dict[UID, Type] | None:
    """Each action's context type (a Record), keyed by the action's uid (``("Docket::Action",
    "read")``), every name resolved and common type inlined: ``{"type": "Entity", "name":
    "Docket::Classification"}``, ``{"type": "Extension", "name": "ipaddr"}``. Actions that
    apply to nothing are left out. ``None`` if a name does not resolve."""
    resolver = _Resolver(schema)
    types: dict[UID, Type] = {}
    try:
        for space, body in schema.items():
            for name, action in body.get("actions", {}).items():
                applies = action.get("appliesTo")
                if applies is None:
                    continue
                declared = applies.get("context", {"type": "Record", "attributes": {}})
                resolved = resolver.type(declared, space)
                if resolved["type"] != "Record":
                    return None
                types[(_qualify(space, "Action"), name)] = resolved
    except (_Unreadable, KeyError):
        return None
    return types


def action_targets(
    schema: Mapping[str, Any],
) -> dict[UID, tuple[frozenset[str], frozenset[str]]]:
    """The principal and resource types (qualified, resolved as Cedar resolves them) of
    each action that applies to something, keyed by the action's uid."""
    resolver = _Resolver(schema)
    targets: dict[UID, tuple[frozenset[str], frozenset[str]]] = {}
    for space, body in schema.items():
        for name, action in body.get("actions", {}).items():
            applies = action.get("appliesTo")
            if applies is None:
                continue
            principals, resources = (
                frozenset(resolver.entity(kind, space) for kind in applies.get(key, []))
                for key in ("principalTypes", "resourceTypes")
            )
            targets[(_qualify(space, "Action"), name)] = (principals, resources)
    return targets


def entity_types(schema: Mapping[str, Any]) -> dict[str, Type] | None:
    """Each entity type's attributes as a resolved Record type, keyed by the type's
    qualified name (``"Docket::User"``); a type declared without attributes has an
    empty Record, an enumerated type none (its entities cannot be made by a request).
    ``None`` if a name does not resolve."""
    resolver = _Resolver(schema)
    types: dict[str, Type] = {}
    try:
        for space, body in schema.items():
            for name, entity in body.get("entityTypes", {}).items():
                if "enum" in entity:
                    continue
                declared = entity.get("shape", {"type": "Record", "attributes": {}})
                resolved = resolver.type(declared, space)
                if resolved["type"] != "Record":
                    return None
                types[_qualify(space, name)] = resolved
    except (_Unreadable, KeyError):
        return None
    return types
