"""RFC 8785 canonical JSON: the fast path (``json.dumps`` where it provably agrees) gives
the reference implementation's bytes for every JSON value, refuses what JSON cannot hold
with the package's own error, and entries round-trip through their canonical bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import Entry, FormatError, digest
from audit._canonical import canonical_json
from audit._entry import EntryKind, digest_plain
from audit._log import pending
from audit._store import Pending

MAX_SAFE = 2**53 - 1
TRICKY = [
    "\x00",
    "\x08",
    "\x1f",
    "\x7f",
    '"',
    "\\",
    "/",
    "é",
    "\u2028",
    "\ud7ff",  # the last code point below the surrogates: still on the fast path
    "\ue000",  # above them: UTF-16 and code-point key order start to differ
    "\uffff",
    "\U0001f600",
    "\U0010ffff",
]
"""Characters where JSON encoders and key orders are known to disagree."""

characters = st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY))  # no surrogates
texts = st.text(characters, max_size=12)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)


def _json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-MAX_SAFE, MAX_SAFE),
        st.sampled_from([0, MAX_SAFE, -MAX_SAFE]),
        floats,
        texts,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)
        ),
        max_leaves=25,
    )


json_values = _json_values(finite_floats)


@settings(max_examples=400)
@given(json_values)
def test_canonical_json_is_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}', id="sorted-keys"),
        # RFC 8785 sorts keys by UTF-16 code units: U+1F600 (D83D DE00) before U+E000.
        pytest.param(
            {"\ue000": 1, "\U0001f600": 2},
            '{"\U0001f600":2,"\ue000":1}'.encode(),
            id="utf16-key-order",
        ),
        pytest.param("\x1f\n\u2028", b'"\\u001f\\n\xe2\x80\xa8"', id="string-escapes"),
        pytest.param([1.0, -0.0, 1e21, 5e-324], b"[1,0,1e+21,5e-324]", id="numbers"),
    ],
)
def test_canonical_json_known_answers(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
unrepresentable = st.one_of(
    st.integers(min_value=MAX_SAFE + 1),
    st.integers(max_value=-MAX_SAFE - 1),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    # in a string, and in a key
    st.builds(lambda a, s, b: a + s + b, texts, lone_surrogates, texts),
    st.builds(lambda a, s, value: {a + s: value}, texts, lone_surrogates, json_values),
)


def _bury(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``inner`` placed somewhere among valid siblings, in a list or under a key."""
    return st.one_of(
        st.builds(
            lambda items, bad, at: [*items[:at], bad, *items[at:]],
            st.lists(json_values, max_size=3),
            inner,
            st.integers(0, 3),
        ),
        st.builds(
            lambda mapping, key, bad: {**mapping, key: bad},
            st.dictionaries(texts, json_values, max_size=3),
            texts,
            inner,
        ),
    )


@settings(max_examples=200)
@given(st.recursive(unrepresentable, _bury, max_leaves=4))
def test_what_rfc8785_refuses_raises_format_error(value: Any) -> None:
    # rfc8785 refuses a lone surrogate in a key with the codec's UnicodeEncodeError.
    with pytest.raises((rfc8785.CanonicalizationError, UnicodeEncodeError)):
        rfc8785.dumps(value)
    with pytest.raises(FormatError):
        canonical_json(value)


KINDS: list[EntryKind] = [
    "decision",
    "placement",
    "admission",
    "attestation",
    "certificate",
    "bundle",
    "audit",
    "redaction",
]
optional_text = st.none() | texts
CLASSIFICATIONS = ["public", "internal", "confidential", "restricted"]
entries = st.builds(
    Entry,
    kind=st.sampled_from(KINDS),
    time=st.datetimes(
        min_value=datetime(1900, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC)
        | st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23))),
    ),
    caller=optional_text,
    subject=optional_text,
    action=optional_text,
    resource=optional_text,
    classification=st.none() | st.sampled_from(CLASSIFICATIONS),
    residency=st.lists(texts, max_size=3).map(tuple),
    jurisdiction=optional_text,
    region=optional_text,
    decision=st.none() | st.sampled_from(["allow", "deny"]),
    policies=st.lists(texts, max_size=3).map(tuple),
    bundle_version=optional_text,
    request_digest=optional_text,
    detail=st.dictionaries(texts, json_values, max_size=4),
)


@settings(max_examples=200)
@given(entries)
def test_an_entry_round_trips_through_its_canonical_bytes(entry: Entry) -> None:
    data = entry.canonical()
    again = Entry.from_canonical(data)
    assert again == entry
    assert again.canonical() == data
    assert again.time.tzinfo is UTC


def test_an_integral_float_beyond_two_to_the_53_round_trips() -> None:
    # RFC 8785 writes the double 1.7e18 as 1700000000000000000: read back it must be the
    # double again (loads_canonical), or it could not be canonicalized to the same bytes.
    entry = Entry(kind="audit", time=datetime(2025, 3, 1, tzinfo=UTC), detail={"ns": 1.7e18})
    data = entry.canonical()
    assert data.count(b'"ns":1700000000000000000') == 1
    assert Entry.from_canonical(data).canonical() == data


@settings(max_examples=300)
@given(entries)
def test_an_entry_is_the_rfc8785_bytes_of_every_field(entry: Entry) -> None:
    # Every field, found by name: a field added to Entry but not to its encoding fails.
    document = {name: getattr(entry, name) for name in Entry.model_fields}
    document.update(
        time=entry.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        residency=list(entry.residency),
        policies=list(entry.policies),
    )
    assert entry.canonical() == rfc8785.dumps(document)
    assert pending(entry) == Pending(entry.kind, document["time"], entry.canonical())


class Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 0.5}, id="float"),
        pytest.param({"a": MAX_SAFE + 1}, id="big-int"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({"a": Text("b")}, id="str-subclass"),
        pytest.param({"a": datetime(2026, 1, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({"\ue000": 1}, id="key-above-surrogates"),
        pytest.param([{"a": frozenset()}], id="set-in-list"),
    ],
)
def test_digest_plain_leaves_what_is_not_plain_json_to_the_general_path(value: Any) -> None:
    assert digest_plain(value) is None


plain_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-MAX_SAFE, MAX_SAFE), texts),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),  # a JSON array, as in pydantic's json mode
        # Keys above U+D7FF sort differently in UTF-16: the general path's (digest_plain: None).
        st.dictionaries(st.text(st.characters(max_codepoint=0xD7FF), max_size=6), children),
    ),
    max_leaves=25,
)


@settings(max_examples=300)
@given(plain_json)
def test_digest_plain_is_the_digest_of_plain_json(value: Any) -> None:
    assert digest_plain(value) == digest(value)
