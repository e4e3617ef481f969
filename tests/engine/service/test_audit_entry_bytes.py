"""A decision's audit entry is the same bytes, and so the same leaf hash, as the log has
always written: issue 15 made building and encoding it cheap, not different.

:func:`written` below states, from the documented rules alone and with the slow general
tools (pydantic's ``model_dump``, the ``rfc8785`` reference encoder), what the log stores
for a decision; it was held to the code before issue 15 (commit c35bb0f) on these same
cases. Every case of ``policies/tests`` and a hypothesis sweep over requests, decisions
and details (long, non-BMP, surrogate and non-JSON values included) must give the same
entry, the same canonical bytes and the same leaf hash through the service's path
(:func:`decision_entry`, then the writer's :func:`audit._log.pending`), or fail in the
same step with the same error.
"""

from __future__ import annotations

import gc
import hashlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import rfc8785
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from audit import Entry
from audit._log import pending
from audit.merkle import leaf_hash
from engine import Decision, Engine, PolicyBundle, Request
from engine._core.models import EntityUID, PolicyError
from engine._service.audit_entries import decision_entries, decision_entry

POLICIES = Path(__file__).resolve().parents[3] / "policies"
NOW = datetime(2026, 12, 4, 18, 5, 6, 789012, tzinfo=UTC)
SALT = "0123456789abcdef0123456789abcdef"
LIMIT = 1024


# --- what the log stores, from the rules ---------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A decision to record, with what its entry is built from."""

    request: Request
    decision: Decision
    bundle: PolicyBundle | None
    detail: Mapping[str, Any] | None


def _cap(text: str) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= LIMIT:
        return text
    kept = raw[:LIMIT].decode("utf-8", "ignore")
    return f"{kept}… [{len(raw) - len(kept.encode('utf-8'))} bytes cut]"


def _bound(value: Any) -> Any:
    if isinstance(value, str):
        return _cap(value)
    if isinstance(value, Mapping):
        return {_cap(str(k)): _bound(v) for k, v in value.items()}
    return [_bound(v) for v in value] if isinstance(value, list | tuple) else value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def written(case: Case) -> tuple[Entry, bytes]:
    """The entry of a decision and the bytes the log stores for it (raises where the
    log refuses the entry)."""
    request, decision, bundle = case.request, case.decision, case.bundle

    def name(uid: EntityUID) -> str:
        kind = uid.type if bundle is None else bundle.qualify(uid.type)
        return _cap(kind + "::" + json.dumps(uid.id, ensure_ascii=False))

    context = request.context
    device = context.get("device")
    device = device if isinstance(device, Mapping) else {}
    where = _str(context.get("jurisdiction")) or _str(device.get("jurisdiction"))
    labels = None
    if bundle is not None:
        labels = bundle.labels((bundle.qualify(request.resource.type), request.resource.id))
    facts = dict(case.detail or {})
    facts.update(decision_id="id-1", api="authorize")
    if decision.errors:
        facts["errors"] = [{"policy": e.policy, "message": e.message} for e in decision.errors]
    request_json = rfc8785.dumps(request.model_dump(mode="json"))
    values: dict[str, Any] = {
        "kind": "decision",
        "time": NOW,
        "salt": SALT,
        "decision": decision.decision,
        "policies": decision.reasons,
        "bundle_version": decision.bundle_version,
        "subject": name(request.principal),
        "action": name(request.action),
        "resource": name(request.resource),
        "caller": None if _str(context.get("caller")) is None else _cap(context["caller"]),
        "jurisdiction": None if where is None else _cap(where),
        "region": None if _str(device.get("region")) is None else _cap(device["region"]),
        "classification": labels.classification if labels else None,
        "residency": labels.residency if labels else (),
        "request_digest": hashlib.sha256(request_json).hexdigest(),
        "detail": _bound(facts),
    }
    entry = Entry(**values)
    document = {field: getattr(entry, field) for field in Entry.model_fields}
    document["time"] = NOW.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    document["residency"] = list(entry.residency)
    document["policies"] = list(entry.policies)
    return entry, rfc8785.dumps(document)


def outcome(build: Any) -> tuple[Any, ...]:
    """What a path gives: its entry, bytes and leaf hash, or where it failed and how."""
    try:
        entry, payload = build()
    except Exception as exc:
        return ("failed", type(exc).__name__)
    return (entry, payload, leaf_hash(payload))


def served(case: Case) -> tuple[Entry, bytes]:
    """What the service builds and the writer encodes."""
    entry = decision_entry(
        case.request,
        case.decision,
        decision_id="id-1",
        api="authorize",
        bundle=case.bundle,
        now=NOW,
        detail=case.detail,
    ).model_copy(update={"salt": SALT})
    ready = pending(entry)
    assert (ready.kind, ready.time) == ("decision", "2026-12-04T18:05:06.789012Z")
    return entry, ready.payload


def same(case: Case) -> None:
    # A failure of the rules (a lone surrogate, a float JSON cannot hold) is a failure
    # of the service, in building or encoding: it never records something else.
    expected = outcome(lambda: written(case))
    got = outcome(lambda: served(case))
    event("refused" if expected[0] == "failed" else "stored")
    if expected[0] == "failed":
        assert got[0] == "failed"
    else:
        assert got == expected


# --- every case of the default bundle ------------------------------------------------------


def _cases() -> list[Any]:
    cases = []
    for path in sorted((POLICIES / "tests").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text())["cases"]:
            request = Request.model_validate(case["request"])
            cases.append(pytest.param(request, id=f"{path.stem}/{case['name']}"))
    return cases


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.load(POLICIES)


PROVENANCE = {
    "provenance": {
        "caller": "spiffe://docket.example/ns/finance/sa/billing-api",
        "posture": {"source": "x509-svid", "serial": "1f2e", "id": "spiffe://d/device/ab"},
        "pep": None,
        "subject": "request",
        "inventory": "caller",
    }
}


@pytest.mark.parametrize("request_", _cases())
@pytest.mark.parametrize("detail", [None, PROVENANCE], ids=["no-detail", "provenance"])
def test_every_policy_case_is_stored_as_before(
    bundle: PolicyBundle, request_: Request, detail: Mapping[str, Any] | None
) -> None:
    case = Case(request_, Engine(bundle).decide(request_, now=NOW), bundle, detail)
    assert served(case) == written(case)


def test_a_typical_entry_is_these_bytes(bundle: PolicyBundle) -> None:
    """One entry spelled out, so that a change to the rules shows here too."""
    request = Request.model_validate(
        {
            "principal": {"type": "User", "id": "bob"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "quarterly-forecast"},
            "context": {"mfa": True, "jurisdiction": "uk", "device": {"region": "uk-south"}},
        }
    )
    decision = Decision(
        decision="allow", reasons=("p1",), bundle_version="sha256:00", evaluated_at=NOW
    )
    _, payload = served(Case(request, decision, bundle, PROVENANCE))
    assert payload == (
        b'{"action":"Docket::Action::\\"read\\"","bundle_version":"sha256:00","caller":null,'
        b'"classification":"confidential","decision":"allow","detail":{"api":"authorize",'
        b'"decision_id":"id-1","provenance":{"caller":'
        b'"spiffe://docket.example/ns/finance/sa/billing-api","inventory":"caller","pep":null,'
        b'"posture":{"id":"spiffe://d/device/ab","serial":"1f2e","source":"x509-svid"},'
        b'"subject":"request"}},"jurisdiction":"uk","kind":"decision","policies":["p1"],'
        b'"region":"uk-south","request_digest":'
        b'"281e6589b0f4fa77b7b3f0d566ec6e2fd2f460e1f4986a2e0593fdc48de1d201",'
        b'"residency":["eu","uk","us"],"resource":"Docket::Data::\\"quarterly-forecast\\"",'
        b'"salt":"0123456789abcdef0123456789abcdef","subject":"Docket::User::\\"bob\\"",'
        b'"time":"2026-12-04T18:05:06.789012Z"}'
    )


# --- a sweep over requests ------------------------------------------------------------------

TRICKY = ["\x00", "\x1f", '"', "\\", "é", "\u2028", "\ud7ff", "\ue000", "\U0001f600", "\ud800"]
"""Escapes, the characters where UTF-16 and code-point order part, and a lone surrogate
(which JSON cannot hold: both paths must refuse it)."""

characters = st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY))
short = st.text(characters, max_size=8)
texts = st.one_of(
    short,
    st.sampled_from(["bob", "frank", "read", "quarterly-forecast", "payroll-uk", "uk", "eu"]),
    # Past the cap, with a multi-byte character across the cut or not.
    st.builds(lambda n, tail: "a" * n + tail, st.integers(250, 1100), short),
    # Near the cap in characters of 2, 3 and 4 bytes.
    st.builds(lambda n, c: c * n, st.integers(250, 520), st.sampled_from(["é", "€", "😀"])),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.sampled_from([2**53, -(2**60), 0.5, 1e300, float("nan")]),  # not plain JSON
    texts,
)


class Tag(str):
    """A string subclass: JSON text, not a plain ``str``."""


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(texts, children, max_size=4),
        ),
        max_leaves=12,
    )


odd = st.sampled_from([NOW, Tag("tag"), MappingProxyType({"k": "v"}), {1: "int key"}, b"x"])
values = _json(st.one_of(scalars, odd))
device = st.fixed_dictionaries(
    {}, optional={"jurisdiction": st.one_of(texts, values), "region": st.one_of(texts, values)}
)
contexts = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries(
        {},
        optional={
            "jurisdiction": st.one_of(texts, values),
            "device": st.one_of(device, values),
            "caller": st.one_of(texts, values),
        },
    ),
    st.dictionaries(texts, values, max_size=3),
)
uids = st.builds(
    lambda kind, id_: EntityUID.model_construct(type=kind, id=id_),
    st.sampled_from(["User", "Action", "Data", "Docket::Data", "Workload", "X::Y"]),
    st.one_of(texts, st.just(Tag("bob"))),
)
entities = st.lists(
    st.fixed_dictionaries(
        {
            "uid": st.fixed_dictionaries({"type": st.just("User"), "id": texts}),
            "attrs": st.dictionaries(texts, values, max_size=3),
            "parents": st.just([]),
        }
    ),
    max_size=2,
).map(tuple)
requests = st.builds(
    lambda p, a, r, c, e: Request.model_construct(
        principal=p, action=a, resource=r, context=c, entities=e
    ),
    uids,
    uids,
    uids,
    contexts,
    entities,
)
decisions = st.builds(
    lambda allow, reasons, errors, version: Decision(
        decision="allow" if allow else "deny",
        reasons=tuple(reasons),
        errors=tuple(PolicyError(policy=p, message=m) for p, m in errors),
        bundle_version=version,
        evaluated_at=NOW.astimezone(timezone(timedelta(hours=2))),
    ),
    st.booleans(),
    st.lists(texts, max_size=3),
    st.lists(st.tuples(st.one_of(st.none(), texts), texts), max_size=2),
    st.one_of(st.none(), texts),
)
details = st.one_of(
    st.none(),
    st.just(PROVENANCE),
    st.dictionaries(texts, values, max_size=3),
    st.dictionaries(texts, values, max_size=2).map(MappingProxyType),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests, decision=decisions, detail=details, labelled=st.booleans())
def test_any_request_is_stored_as_before(
    bundle: PolicyBundle,
    request: Request,
    decision: Decision,
    detail: Mapping[str, Any] | None,
    labelled: bool,
) -> None:
    same(Case(request, decision, bundle if labelled else None, detail))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests, decision=decisions, labelled=st.booleans())
def test_a_request_stored_again_is_stored_as_before(
    bundle: PolicyBundle, request: Request, decision: Decision, labelled: bool
) -> None:
    """The same request object again, as Authorize hands out for a message it remembers
    (engine._adapters.request_memo): its digest is then remembered too, and the entry is
    the same bytes as the first time and as the rules say."""
    case = Case(request, decision, bundle if labelled else None, PROVENANCE)
    first = outcome(lambda: served(case))
    again = outcome(lambda: served(case))
    expected = outcome(lambda: written(case))
    if expected[0] == "failed":
        assert (first[0], again[0]) == ("failed", "failed")
    else:
        assert first == again == expected


# --- a batch: pieces shared between its requests are encoded once ---------------------------


def served_batch(cases: list[Case]) -> list[tuple[Entry, bytes]]:
    """What the service builds for a batch (one call for all its decisions, sharing what
    they share) and the writer encodes, entry by entry."""
    entries = decision_entries(
        [case.request for case in cases],
        [case.decision for case in cases],
        decision_ids=["id-1"] * len(cases),
        api="authorize",
        bundle=cases[0].bundle,
        now=NOW,
        details=[case.detail for case in cases],
    )
    ready = [entry.model_copy(update={"salt": SALT}) for entry in entries]
    return [(entry, pending(entry).payload) for entry in ready]


def _batch(
    context: dict[str, Any], pairs: list[tuple[Request, Decision]], detail: Any
) -> list[tuple[Request, Decision, Any]]:
    """The requests of a batch as BatchAuthorize makes them: one context object (and one
    detail) shared by several requests, as one principal asking about many resources."""
    shared = [
        Request.model_construct(
            principal=request.principal,
            action=request.action,
            resource=request.resource,
            context=context,
            entities=request.entities,
        )
        for request, _ in pairs
    ]
    return [
        (request, decision, detail) for request, (_, decision) in zip(shared, pairs, strict=True)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    context=contexts,
    pairs=st.lists(st.tuples(requests, decisions), min_size=1, max_size=4),
    others=st.lists(st.tuples(requests, decisions), max_size=2),
    detail=details,
    labelled=st.booleans(),
)
def test_a_batch_is_stored_as_its_requests_one_by_one(
    bundle: PolicyBundle,
    context: dict[str, Any],
    pairs: list[tuple[Request, Decision]],
    others: list[tuple[Request, Decision]],
    detail: Mapping[str, Any] | None,
    labelled: bool,
) -> None:
    """Each entry of a batch whose requests share their context and detail objects
    (mixed with requests of their own) is the entry of its request alone, byte for
    byte; a batch with one request the log refuses is refused whole."""
    items = _batch(context, pairs, detail) + [(r, d, None) for r, d in others]
    cases = [Case(r, d, bundle if labelled else None, x) for r, d, x in items]
    expected = [outcome(lambda case=case: written(case)) for case in cases]
    if any(item[0] == "failed" for item in expected):
        with pytest.raises(Exception):  # noqa: B017, PT011 (as the one-by-one path fails)
            served_batch(cases)
        return
    got = served_batch(cases)
    assert [(entry, payload, leaf_hash(payload)) for entry, payload in got] == expected


def test_a_batch_of_policy_cases_is_stored_as_before(bundle: PolicyBundle) -> None:
    """Every policy case as one batch, all sharing one detail object."""
    engine = Engine(bundle)
    cases = [
        Case(request, engine.decide(request, now=NOW), bundle, PROVENANCE)
        for request in (param.values[0] for param in _cases())
    ]
    assert served_batch(cases) == [written(case) for case in cases]


def test_the_digest_cache_keeps_no_request_alive(bundle: PolicyBundle) -> None:
    """The digests of requests seen again are kept by a weak reference to the request:
    a request nothing else holds is gone, whatever its size."""
    request = Request.model_validate(
        {
            "principal": {"type": "User", "id": "alice"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "payroll-uk"},
            "context": {"jurisdiction": "x" * 4000},
        }
    )
    decision = Decision(decision="deny", evaluated_at=NOW)
    case = Case(request, decision, bundle, PROVENANCE)
    first = served(case)
    assert served(case) == first
    gone = weakref.ref(request)
    del request, case
    gc.collect()
    assert gone() is None
