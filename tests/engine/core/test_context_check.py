"""A context that does not fit its action's context type is refused naming the field,
and the check refuses only what Cedar refuses (held to cedarpy by a property test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, PolicyBundle, Request, RequestError
from engine._core.context_check import (
    context_fits,
    context_problem,
    context_shape,
    needs_no_schema,
)
from engine._core.schema_json import context_types, schema_json

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
POLICIES = Path(__file__).resolve().parents[3] / "policies"
POSTURE = {"attested": True, "secure_boot": True}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(PolicyBundle.load(POLICIES))


PARTIES = {"read": ("User", "alice", "Data", "payroll"), "place": ("Workload", "api", "Site", "x")}


def read(context: dict[str, Any], action: str = "read") -> Request:
    principal_type, principal, resource_type, resource = PARTIES[action]
    return Request.model_validate(
        {
            "principal": {"type": principal_type, "id": principal},
            "action": {"type": "Action", "id": action},
            "resource": {"type": resource_type, "id": resource},
            "context": context,
        }
    )


INTERNAL = {"classification": {"__entity": {"type": "Classification", "id": "internal"}}}
ALICE = {"__entity": {"type": "User", "id": "alice"}}
AGE = "context.device.patch_age_days: expected a long"
WHOLE = f"{AGE} (a whole number) (got a"
CLASSIFICATION = "context.classification: expected an entity reference to a Docket::Classification"
OFF = 'not in the schema for action "read"'
# (action, context, the message's start); the ids are the messages.
WRONG = [
    ("read", {"device": {"attested": True}}, "context.device.secure_boot: required"),
    ("read", {"mfa": "yes"}, "context.mfa: expected a boolean (got a string)"),
    ("read", {"mfa": 1}, "context.mfa: expected a boolean (got a whole number)"),
    ("read", {"device": {**POSTURE, "patch_age_days": "3"}}, f"{WHOLE} string)"),
    ("read", {"device": {**POSTURE, "patch_age_days": True}}, f"{WHOLE} boolean)"),
    ("read", {"device": {**POSTURE, "patch_age_days": 1.5}}, f"{WHOLE} number with a fraction"),
    ("read", {"device": {**POSTURE, "patch_age_days": 2**63}}, f"{AGE}, from -2^63 to 2^63-1"),
    ("read", {"jurisdiction": 7}, "context.jurisdiction: expected a string (got a whole number)"),
    ("read", {"http": "GET /"}, "context.http: expected a record (a JSON object) (got a string)"),
    ("read", {"http": {"method": "GET"}}, "context.http.path: required"),
    ("read", {"jurisdiction": None}, "context.jurisdiction: expected a string (got null"),
    ("read", {"foo": 1}, f"context.foo: {OFF}"),
    ("read", {"device": {**POSTURE, "colour": "red"}}, f"context.device.colour: {OFF}"),
    ("read", {"a b": 1}, f'context["a b"]: {OFF}'),
    ("place", {}, "context.classification: required"),
    ("place", {"classification": "internal"}, f"{CLASSIFICATION} ({{\"__entity\""),
    ("place", {"classification": ALICE}, f"{CLASSIFICATION} (got a Docket::User)"),
    ("place", {**INTERNAL, "residency": "eu"}, "context.residency: expected a set (a JSON array)"),
    ("place", {**INTERNAL, "residency": ["eu", 1]}, "context.residency[1]: expected a string"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "context", "message"), WRONG, ids=[w[2] for w in WRONG])
def test_a_wrong_field_is_named(
    engine: Engine, action: str, context: dict[str, Any], message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        engine.decide(read(context, action), now=NOW)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_the_first_wrong_field_in_name_order_whatever_the_key_order(engine: Engine) -> None:
    for context in ({"mfa": "x", "foo": 1}, {"foo": 1, "mfa": "x"}):
        with pytest.raises(RequestError, match=r"^context\.foo: not in the schema"):
            engine.decide(read(context), now=NOW)


def test_a_batch_names_the_request(engine: Engine) -> None:
    good = read({"mfa": True})
    with pytest.raises(RequestError, match=r"^requests\[1\]\.context\.mfa: expected a boolean"):
        engine.decide_batch([good, read({"mfa": "no"})], now=NOW)


def test_a_valid_context_is_decided(engine: Engine) -> None:
    full = {
        "mfa": True,
        "device": {**POSTURE, "patch_age_days": -(2**63), "trust_tier": "high"},
        "http": {"method": "GET", "path": "/"},
        "time": {"hour": 9, "weekday": "mon"},
    }
    assert engine.decide(read(full), now=NOW).decision in ("allow", "deny")


# The property: on any context, over a schema with every kind of type, the check
# refuses only what cedarpy refuses, and names a field whenever cedarpy refuses a
# context made of plain JSON values.

PROPERTY_SCHEMA = """
namespace N {
  entity C in [C];
  entity U;
  type T = { a: Long, b?: Bool };
  type Ctx = {
    c?: C, l?: Long, s?: String, b?: Bool, set?: Set<Long>, r?: T, need: String,
    ip?: ipaddr, nested?: Set<Set<String>>, "odd name"?: String,
  };
  action read appliesTo { principal: [U], resource: [U], context: Ctx };
}
"""
_SCHEMA = cedarpy.Schema.from_str(PROPERTY_SCHEMA)
_TYPES = context_types(schema_json(_SCHEMA) or {})
_ENTITIES = cedarpy.Entities.from_json_str("[]", _SCHEMA)
_PERMIT = cedarpy.PolicySet.from_str("permit(principal, action, resource);")

_names = st.sampled_from(
    ["c", "l", "s", "b", "set", "r", "need", "ip", "nested", "odd name", "a", "zz"]
)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(["", "x", "1.2.3.4", "N::C"]),
    st.none(),
    st.just(1.5),
)
_refs = st.builds(
    lambda form, type_name, entity_id: (
        {"__entity": {"type": type_name, "id": entity_id}}
        if form
        else {"type": type_name, "id": entity_id}
    ),
    st.booleans(),
    st.sampled_from(["N::C", "N::U", "C"]),
    st.one_of(st.just("x"), st.just(3)),
)
_extensions = st.builds(
    lambda fn, arg: {"__extn": {"fn": fn, "arg": arg}},
    st.sampled_from(["ip", "decimal"]),
    st.sampled_from(["1.2.3.4", "1.5", "nope"]),
)
_values = st.recursive(
    st.one_of(_scalars, _refs, _extensions),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_names, inner, max_size=3)
    ),
    max_leaves=8,
)
_contexts = st.dictionaries(_names, _values, max_size=4)


def _reads(namespace: str, context: dict[str, Any]) -> dict[str, Any]:
    """U::"a" reads U::"b" in ``namespace``, as a Cedar request."""
    return {
        "principal": {"type": f"{namespace}::U", "id": "a"},
        "action": {"type": f"{namespace}::Action", "id": "read"},
        "resource": {"type": f"{namespace}::U", "id": "b"},
        "context": context,
    }


def _cedar_refuses(context: dict[str, Any]) -> bool:
    request = _reads("N", context)
    (result,) = cedarpy.is_authorized_batch([request], _PERMIT, _ENTITIES, schema=_SCHEMA)
    return result.decision is cedarpy.Decision.NoDecision


def _plain(value: Any) -> bool:
    """Made of scalars, arrays and objects only: no entity or extension escapes."""
    if isinstance(value, dict):
        if "__entity" in value or "__extn" in value or {"type", "id"} <= set(value):
            return False
        return all(_plain(v) for v in value.values())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_contexts)
def test_refuses_only_what_cedar_refuses(context: dict[str, Any]) -> None:
    assert _TYPES is not None
    context_type = _TYPES[("N::Action", "read")]
    problem = context_problem(context_type, context, "read")
    assert context_fits(context_type, context) is (problem is None)
    refused = _cedar_refuses(context)
    if problem is not None:
        assert refused, f"{json.dumps(context)}: the check says {problem!r}, Cedar accepts it"
    elif refused:
        # What an ipaddr holds is Cedar's to judge; anything else plain is named.
        judged_by_cedar = isinstance(context.get("ip"), str | dict)
        assert judged_by_cedar or not _plain(context), (
            f"{json.dumps(context)}: Cedar refuses, the check names nothing"
        )


# The shape: the paths and kinds of a context and the types its references name, which is
# all the check looks at; the engine validates each shape once with Cedar.

PLAIN_SCHEMA = """
namespace P {
  entity U;
  type T = { a: Long, b?: Bool };
  type Ctx = {
    l?: Long, s?: String, b?: Bool, set?: Set<Long>, r?: T, need: String,
    rs?: Set<T>, nested?: Set<Set<String>>, "odd name"?: String,
  };
  action read appliesTo { principal: [U], resource: [U], context: Ctx };
}
"""
_PLAIN = cedarpy.Schema.from_str(PLAIN_SCHEMA)
_PLAIN_TYPE = (context_types(schema_json(_PLAIN) or {}) or {})[("P::Action", "read")]
_PLAIN_ENTITIES = cedarpy.Entities.from_json_str("[]", _PLAIN)
_READING = cedarpy.PolicySet.from_str(
    """
    @id("long") permit(principal, action, resource) when { context has l && context.l > 2 };
    @id("set") forbid(principal, action, resource)
      when { context has set && context.set.contains(7) };
    @id("record") permit(principal, action, resource) when { context has r && context.r.a == 1 };
    @id("strings") permit(principal, action, resource) when { context.need like "x*" };
    @id("records") forbid(principal, action, resource)
      when { context has rs && context.rs.contains({a: 1, b: true}) };
    """
)
_plain_names = st.sampled_from(
    ["l", "s", "b", "set", "r", "need", "rs", "nested", "odd name", "a", "zz"]
)
_plain_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**64), max_value=2**64),
        st.sampled_from(["", "x", "xy"]),
        st.none(),
        st.just(1.5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_plain_names, inner, max_size=3)
    ),
    max_leaves=8,
)
_plain_contexts = st.dictionaries(_plain_names, _plain_values, max_size=5)


def _same_shape(value: Any, flip: bool) -> Any:
    """Another value of ``value``'s shape: other strings (but the ``type`` of an object),
    booleans and longs in range, keys in reverse order."""
    if isinstance(value, dict):
        return {k: v if k == "type" else _same_shape(v, flip) for k, v in reversed(value.items())}
    if isinstance(value, list):
        return [_same_shape(v, flip) for v in reversed(value)]
    if isinstance(value, bool):
        return value != flip
    if type(value) is int and -(2**63) <= value < 2**63:
        return value // 2 if flip else -value // 3
    if isinstance(value, str):
        return value + "y" if flip else ""
    return value


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ({"a": 1, "b": "x"}, {"b": "y", "a": -4}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": 1}, {"a": 2**63}, False),
        ({"a": 1}, {"a": 1.0}, False),
        ({"a": [1, 2]}, {"a": [5]}, True),
        ({"a": []}, {"a": [1]}, False),
        ({"a": [{"b": True}, {"c": 1}]}, {"a": [{"b": True, "c": 1}]}, False),
        ({"a": {"b": "x"}}, {"a": {"c": "x"}}, False),
        ({"a": "x"}, {"a": None}, False),
        (
            {"a": {"__entity": {"type": "T", "id": "x"}}},
            {"a": {"__entity": {"id": "y", "type": "T"}}},
            True,
        ),
        (
            {"a": {"__entity": {"type": "T", "id": "x"}}},
            {"a": {"__entity": {"type": "U", "id": "x"}}},
            False,
        ),
        ({"a": {"type": "T", "id": "x"}}, {"a": {"type": "U", "id": "x"}}, False),
    ],
)
def test_the_shape_is_the_paths_and_kinds(one: Any, other: Any, same: bool) -> None:
    assert (context_shape(one) == context_shape(other)) is same


_NEEDS_NO_SCHEMA = [
    ({"need": "x", "l": 1, "r": {"a": 1}, "set": [1]}, True),
    ({"need": "x", "c": {"__entity": {"type": "N::C", "id": "x"}}}, True),
    ({"need": "x", "c": {"type": "N::C", "id": "x"}}, False),
    ({"need": "x", "ip": "1.2.3.4"}, False),
    ({"need": "x", "ip": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}}}, False),
]


@pytest.mark.parametrize(("context", "free"), _NEEDS_NO_SCHEMA)
def test_cedar_needs_no_schema_without_extensions_and_bare_references(
    context: dict[str, Any], free: bool
) -> None:
    assert _TYPES is not None
    context_type = _TYPES[("N::Action", "read")]
    assert context_fits(context_type, context)
    assert needs_no_schema(context_type, context) is free


def test_an_enumerated_type_needs_the_schema() -> None:
    assert _TYPES is not None
    context = {"need": "x", "c": {"__entity": {"type": "N::C", "id": "x"}}}
    assert not needs_no_schema(_TYPES[("N::Action", "read")], context, frozenset({"N::C"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_plain_contexts, st.booleans())
def test_a_plain_shape_decides_whether_the_context_fits(
    context: dict[str, Any], flip: bool
) -> None:
    other = _same_shape(context, flip)
    assert context_shape(other) == context_shape(context)
    assert context_fits(_PLAIN_TYPE, other) is context_fits(_PLAIN_TYPE, context)


# Contexts that mostly fit the N schema's context type, references of both forms.
_fitting = st.fixed_dictionaries(
    {"need": st.sampled_from(["x", ""])},
    optional={
        "c": _refs,
        "l": st.integers(min_value=-3, max_value=3),
        "r": st.fixed_dictionaries({"a": st.integers(0, 2)}, optional={"b": st.booleans()}),
        "set": st.lists(st.integers(-2, 2), max_size=3),
        "ip": st.one_of(_extensions, st.just("1.2.3.4")),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_fitting, _contexts), st.booleans())
def test_a_shape_decides_whether_the_context_fits_and_needs_the_schema(
    context: dict[str, Any], flip: bool
) -> None:
    """Entities and extensions too: the shape names the types references name."""
    assert _TYPES is not None
    context_type = _TYPES[("N::Action", "read")]
    other = _same_shape(context, flip)
    assert context_shape(other) == context_shape(context)
    fits = context_fits(context_type, context)
    assert context_fits(context_type, other) is fits
    if fits:
        assert needs_no_schema(context_type, other) is needs_no_schema(context_type, context)


_READING_N = cedarpy.PolicySet.from_str(
    """
    @id("entity") permit(principal, action, resource)
      when { context has c && context.c == N::C::"x" };
    @id("long") forbid(principal, action, resource) when { context has l && context.l < 0 };
    @id("record") permit(principal, action, resource) when { context has r && context.r.a == 1 };
    """
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_fitting, _contexts))
def test_a_context_that_needs_no_schema_is_read_the_same_without_it(
    context: dict[str, Any],
) -> None:
    assert _TYPES is not None
    context_type = _TYPES[("N::Action", "read")]
    if not (context_fits(context_type, context) and needs_no_schema(context_type, context)):
        return
    _read_alike(_reads("N", context), _READING_N, _ENTITIES, _SCHEMA)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_plain_contexts)
def test_a_context_that_fits_a_plain_type_needs_no_schema_at_cedar(context: dict[str, Any]) -> None:
    """What lets the engine skip Cedar's per-call schema check for a validated shape."""
    if not context_fits(_PLAIN_TYPE, context):
        return
    _read_alike(_reads("P", context), _READING, _PLAIN_ENTITIES, _PLAIN)


def _read_alike(
    request: dict[str, Any],
    policies: cedarpy.PolicySet,
    entities: cedarpy.Entities,
    schema: cedarpy.Schema,
) -> None:
    """Cedar takes ``request`` with ``schema``, and decides it the same without."""
    (checked,) = cedarpy.is_authorized_batch([request], policies, entities, schema=schema)
    (unchecked,) = cedarpy.is_authorized_batch([request], policies, entities)
    assert checked.decision is not cedarpy.Decision.NoDecision, checked.diagnostics.errors
    assert unchecked.decision is checked.decision
    assert sorted(unchecked.diagnostics.reasons) == sorted(checked.diagnostics.reasons)
    assert unchecked.diagnostics.errors == checked.diagnostics.errors


def test_an_entitys_attributes_are_named_by_their_owner() -> None:
    record = {"type": "Record", "attributes": {"email": {"type": "String", "required": True}}}
    assert (
        context_problem(
            record, {"email": "a", "team": "x"}, "read", "subject.properties", owner="App::User"
        )
        == "subject.properties.team: not an attribute of App::User"
    )
    assert (
        context_problem(record, {"email": 1}, "read", "subject.properties", owner="App::User")
        == "subject.properties.email: expected a string (got a whole number)"
    )
