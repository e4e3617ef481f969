"""What the service writes to the audit log for each decision, placement and bundle
load: :class:`audit.Entry` values built from engine values.

An entry names things the way policies do (``Docket::User::"alice"``), carries the
data's classification and residency from the bundle's catalog and says where the
request came from (``context.jurisdiction``, else the device posture's), so that the
residency report can be produced from the log alone.

An adapter may add its own facts to an entry's ``detail`` (``detail=``): the admission
webhook records the object's kind, namespace and name, the operation, the user and
whether the review was a dry run; the gRPC and ext_authz adapters record
``provenance``, where each trusted fact of the request came from (the caller's mTLS
identity, the credential that attested the device — X.509-SVID serial or JWT-SVID
``jti`` — or none, the trusted enforcement point that named the subject, and who
asserted the device inventory; see :func:`engine._service.posture.provenance`), so that an
auditor can tell an attested posture from an asserted one. The service's own keys
(``decision_id``, ``api``) win.

Nothing a caller sends makes an entry large: every string copied into an entry (ids,
refusal reasons, detail values, however deeply nested) is cut to :data:`MAX_TEXT`
UTF-8 bytes by :func:`capped`, which says how many bytes it cut; the entry's
``request_digest`` still covers the whole request.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, Literal, NotRequired, TypedDict, Unpack

from audit import Entry, Recorded, canonical_text, digest, digest_plain
from engine._core.bundle import DataLabels, PolicyBundle
from engine._core.models import Decision, EntityUID, Request
from engine._core.placement import Placement, Workload
from engine._service.constants import CALLER

MAX_TEXT = 1024
"""The most UTF-8 bytes of one string an audit entry keeps (refusal reasons, ids, any
string in ``detail``); the rest is cut and the cut is said."""


def capped(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` if it is at most ``limit`` UTF-8 bytes, else its first ``limit`` bytes
    (never half a character) and a marker saying how many bytes were cut."""
    if len(text) <= limit >> 2:  # a character is at most 4 bytes: no need to count
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", "ignore")
    cut = len(encoded) - len(kept.encode("utf-8"))
    return f"{kept}… [{cut} bytes cut]"


_AS_IS = frozenset({bool, int, float, type(None)})


def bounded(value: Any) -> Any:
    """``value`` (JSON-like: mappings, lists, tuples, scalars) with every string in it,
    keys included, :func:`capped`."""
    kind = type(value)  # the usual exact types first: isinstance(…, Mapping) is slow
    if kind is str:
        return capped(value)
    if kind in _AS_IS:
        return value
    if kind is dict:
        return {capped(str(key)): bounded(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [bounded(item) for item in value]
    if isinstance(value, str):
        return capped(value)
    if isinstance(value, Mapping):
        return {capped(str(key)): bounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(item) for item in value]
    return value


def _detail(fields: Mapping[str, Any]) -> dict[str, Any]:
    bounded_fields: dict[str, Any] = bounded(fields)
    return bounded_fields


def _capped(text: str | None) -> str | None:
    return None if text is None else capped(text)


def _uid(uid: EntityUID, bundle: PolicyBundle | None) -> str:
    kind = bundle.qualify(uid.type) if bundle is not None else uid.type
    # encode_basestring is what json.dumps(ensure_ascii=False) calls for a string.
    quoted = (
        encode_basestring(uid.id)
        if isinstance(uid.id, str)
        else json.dumps(uid.id, ensure_ascii=False)
    )
    return capped(f"{kind}::{quoted}")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _kind(api: str) -> Literal["admission", "decision"]:
    return "admission" if api == "admission" else "decision"


def _where(context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(jurisdiction, region) the request was made from."""
    device = context.get("device")
    device = device if isinstance(device, Mapping) else {}
    jurisdiction = _text(context.get("jurisdiction")) or _text(device.get("jurisdiction"))
    return jurisdiction, _text(device.get("region"))


def _labels(request: Request, bundle: PolicyBundle | None) -> DataLabels | None:
    if bundle is None:
        return None
    return bundle.labels((bundle.qualify(request.resource.type), request.resource.id))


def _fields(request: Request) -> dict[str, Any] | None:
    """The request's fields as the JSON values pydantic's json mode would give, without
    the dump, when the request is made of exact models (as the adapters make it); else
    None."""
    uids = (request.principal, request.action, request.resource)
    if type(request) is Request and all(type(uid) is EntityUID for uid in uids):
        principal, action, resource = ({"type": uid.type, "id": uid.id} for uid in uids)
        return {
            "principal": principal,
            "action": action,
            "resource": resource,
            "context": request.context,
            "entities": request.entities,
        }
    return None


def _request_digest(request: Request) -> str:
    """``digest(request.model_dump(mode="json"))``; without the dump when the request is
    plain JSON already (as the adapters make it), which pydantic's json mode would leave
    as it is."""
    fields = _fields(request)
    plain = None if fields is None else digest_plain(fields)
    return plain if plain is not None else digest(request.model_dump(mode="json"))


def _uid_text(uid: EntityUID) -> str | None:
    """A uid's canonical JSON (``{"id":…,"type":…}``) when both are exact strings."""
    if type(uid.id) is str and type(uid.type) is str:
        return f'{{"id":{encode_basestring(uid.id)},"type":{encode_basestring(uid.type)}}}'
    return None


_DIGESTS: dict[int, tuple[weakref.ref[Request], str]] = {}
"""Recent requests' digests by the request object's id, with a weak reference to the
request (so that the id is believed only while that very object lives, and the cache
keeps no request alive): an adapter that remembers what it read from a message
(:mod:`engine._adapters.request_memo`) hands out the same request object again. Only
requests of at most :data:`_DIGESTED_TEXT` characters of canonical JSON are kept, at
most :data:`_DIGESTS_KEPT` of them (emptied when full); a request is never edited in
place, so its digest cannot change."""

_DIGESTS_KEPT = 4096
_DIGESTED_TEXT = 8192


def _shared_digest(request: Request, contexts: dict[int, str | None]) -> str:
    """:func:`_request_digest`, the canonical text of a context that several requests of
    a batch share (the same object, ``contexts`` by its id) written once: the members of
    :func:`_fields` in RFC 8785's key order, each piece as :func:`~audit.canonical_text` gives
    it, which is what it gives for the whole. Anything not plain takes
    :func:`_request_digest`'s path, and so its bytes or its error. The digest of the same
    request object seen recently is not made again (:data:`_DIGESTS`)."""
    known = _DIGESTS.get(id(request))
    if known is not None and known[0]() is request:
        return known[1]
    context = request.context
    key = id(context)
    if key in contexts:
        context_text = contexts[key]
    else:
        context_text = contexts[key] = canonical_text(context)
    if type(request) is Request and context_text is not None:
        pieces = (
            _uid_text(request.action),
            context_text,
            canonical_text(request.entities),
            _uid_text(request.principal),
            _uid_text(request.resource),
        )
        if None not in pieces and type(request.action) is EntityUID:
            action, context_text, entities, principal, resource = pieces
            text = (
                f'{{"action":{action},"context":{context_text},"entities":{entities},'
                f'"principal":{principal},"resource":{resource}}}'
            )
            if type(request.principal) is EntityUID and type(request.resource) is EntityUID:
                try:
                    found = hashlib.sha256(text.encode()).hexdigest()
                except UnicodeEncodeError:
                    pass  # a lone surrogate: the path below raises in its own words
                else:
                    if len(text) <= _DIGESTED_TEXT:
                        if len(_DIGESTS) >= _DIGESTS_KEPT:
                            _DIGESTS.clear()
                        _DIGESTS[id(request)] = (weakref.ref(request), found)
                    return found
    return _request_digest(request)


def recorded_decision(
    entry: Entry, request: Request, *, api: str, detail: Mapping[str, Any] | None
) -> Recorded:
    """``entry`` with the request it was decided on, for ``record_requests``: the
    request as evaluated (its context holds the verified posture), the API and the
    adapter's detail (the provenance). Serialized later, on the audit writer's thread."""
    fields = _fields(request)
    if fields is None:
        fields = request.model_dump(mode="json")
    return Recorded(
        entry, {"kind": "decision", "api": api, "request": fields, "detail": detail or {}}
    )


def recorded_placement(entry: Entry, workload: Workload, sites: Sequence[str] | None) -> Recorded:
    """``entry`` with the workload and candidate sites it was placed with."""
    return Recorded(
        entry,
        {
            "kind": "placement",
            "workload": workload.model_dump(mode="json"),
            "sites": None if sites is None else list(sites),
        },
    )


def decision_entry(
    request: Request,
    decision: Decision,
    *,
    decision_id: str,
    api: str,
    bundle: PolicyBundle | None,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> Entry:
    """The audit entry of one access decision."""
    (entry,) = decision_entries(
        [request],
        [decision],
        decision_ids=[decision_id],
        api=api,
        bundle=bundle,
        now=now,
        details=[detail],
    )
    return entry


def _salts(count: int) -> list[str]:
    """``count`` fresh random salts (as :func:`audit.Entry`'s own), from one read of the
    system's random source: each read releases and takes back the GIL."""
    pool = os.urandom(16 * count).hex()
    return [pool[32 * i : 32 * (i + 1)] for i in range(count)]


def decision_entries(
    requests: Sequence[Request],
    decisions: Sequence[Decision],
    *,
    decision_ids: Sequence[str],
    api: str,
    bundle: PolicyBundle | None,
    now: datetime,
    details: Sequence[Mapping[str, Any] | None],
) -> list[Entry]:
    """The audit entries of a batch of access decisions, one per request (``details``:
    one per request). Each is the entry :func:`decision_entry` makes of its request
    alone; what requests share (the same context object, the same detail object, the
    same names) is capped and encoded once. Raises what :func:`decision_entry` raises."""
    kind = _kind(api)
    capped_api = capped(api)
    contexts: dict[int, str | None] = {}
    bounded_details: dict[int, dict[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}

    def name(uid: EntityUID) -> str:
        if type(uid.type) is not str or type(uid.id) is not str:
            return _uid(uid, bundle)
        key = (uid.type, uid.id)
        found = names.get(key)
        if found is None:
            found = names[key] = _uid(uid, bundle)
        return found

    entries = []
    salts = _salts(len(requests))
    for request, decision, decision_id, detail, salt in zip(
        requests, decisions, decision_ids, details, salts, strict=True
    ):
        shared = bounded_details.get(id(detail))
        if shared is None:
            shared = bounded_details[id(detail)] = _detail(detail or {})
        fields = {**shared, "decision_id": capped(decision_id), "api": capped_api}
        if decision.errors:
            fields["errors"] = bounded(
                [{"policy": error.policy, "message": error.message} for error in decision.errors]
            )
        labels = _labels(request, bundle)
        jurisdiction, region = _where(request.context)
        entries.append(
            Entry(
                kind=kind,
                time=now,
                caller=_capped(_text(request.context.get(CALLER))),
                subject=name(request.principal),
                action=name(request.action),
                resource=name(request.resource),
                classification=labels.classification if labels else None,
                residency=labels.residency if labels else (),
                jurisdiction=_capped(jurisdiction),
                region=_capped(region),
                decision=decision.decision,
                policies=decision.reasons,
                bundle_version=decision.bundle_version,
                request_digest=_shared_digest(request, contexts),
                detail=fields,
                salt=salt,
            )
        )
    return entries


def search_entry(
    uids: Mapping[str, EntityUID | None],
    bundle: PolicyBundle | None,
    query_digest: str,
    *,
    now: datetime,
    detail: Mapping[str, Any],
) -> Entry:
    """The one audit entry of a search call (an AuthZEN search page): the pinned parts
    (``uids``: subject, action, resource; None for the one searched), the bundle, the
    digest of the query; ``detail`` says what was searched and counts the candidates
    evaluated and the ``results`` found (``allow`` when it found any). Bounded whatever
    the query: strings are capped."""
    parts = {name: None if uid is None else _uid(uid, bundle) for name, uid in uids.items()}
    return Entry(
        kind="decision",
        time=now,
        subject=parts.get("subject"),
        action=parts.get("action"),
        resource=parts.get("resource"),
        decision="allow" if detail.get("results") else "deny",
        bundle_version=bundle.version if bundle is not None else None,
        request_digest=query_digest,
        detail=_detail(detail),
    )


class Undecided(TypedDict):
    """Where an entry of a request that no policy decided comes from (the keywords of
    :func:`refusal_entry` and :func:`unevaluated_entry`)."""

    api: str
    caller: str | None
    decision_id: str
    now: datetime
    detail: NotRequired[Mapping[str, Any] | None]


def refusal_entry(error: str, **where: Unpack[Undecided]) -> Entry:
    """The audit entry of a request denied because it could not be decided at all."""
    return _undecided("deny", "error", error, where)


def unevaluated_entry(note: str, **where: Unpack[Undecided]) -> Entry:
    """The audit entry of a request allowed without evaluating any policy (an admission
    review of something Docket does not inspect); ``note`` says why."""
    return _undecided("allow", "unevaluated", note, where)


def _undecided(decision: Literal["allow", "deny"], key: str, why: str, where: Undecided) -> Entry:
    api = where["api"]
    return Entry(
        kind=_kind(api),
        time=where["now"],
        caller=_capped(where["caller"]),
        decision=decision,
        detail=_detail(
            {
                **(where.get("detail") or {}),
                "decision_id": where["decision_id"],
                "api": api,
                key: why,
            }
        ),
    )


def placement_entry(
    workload: Workload,
    placement: Placement,
    *,
    decision_id: str,
    caller: str | None,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> Entry:
    """The audit entry of one placement: where the best site is, and every allowed
    site's jurisdiction so that the report can check each against the residency."""
    best = placement.allowed[0] if placement.allowed else None
    kind = "Data" if workload.kind == "dataset" else "Workload"
    return Entry(
        kind="placement",
        time=now,
        caller=_capped(caller),
        subject=capped(f"{kind}::{json.dumps(workload.id, ensure_ascii=False)}"),
        action='Action::"place"',
        resource=None if best is None else f"Site::{json.dumps(best.site)}",
        classification=workload.classification,
        residency=tuple(workload.residency),
        jurisdiction=best.jurisdiction if best else None,
        region=best.region if best else None,
        decision="allow" if best else "deny",
        policies=best.reasons
        if best
        else tuple(sorted({r for d in placement.denied for r in d.reasons})),
        bundle_version=placement.bundle_version,
        request_digest=digest(workload.model_dump(mode="json")),
        detail=_detail(
            {
                **(detail or {}),
                "decision_id": decision_id,
                "allowed": [
                    {"site": site.site, "jurisdiction": site.jurisdiction, "region": site.region}
                    for site in placement.allowed
                ],
                "denied": [site.site for site in placement.denied],
            }
        ),
    )


def shadow_entry(candidate: PolicyBundle, *, live: str | None, now: datetime) -> Entry:
    """The audit entry of a shadow (candidate) bundle coming into use beside the live
    bundle ``live``: the decisions that follow it are made again by the candidate, and
    a disagreement is annotated on its decision's entry (``detail.shadow``)."""
    loaded = bundle_entry(
        candidate.version, previous=None, source=candidate.source, caller=None, now=now
    )
    detail = {"name": candidate.name, "revision": candidate.revision, "live_version": live}
    return loaded.model_copy(update={"action": "shadow", "detail": detail})


def bundle_entry(
    version: str, *, previous: str | None, source: str, caller: str | None, now: datetime
) -> Entry:
    """The audit entry of a bundle coming into force (at start or on reload)."""
    return Entry(
        kind="bundle",
        time=now,
        caller=caller,
        action="load" if previous is None else "reload",
        resource=source,
        decision="allow",
        bundle_version=version,
        detail={"previous_version": previous},
    )
