"""The decision engine: a bundle and a request give a decision. No I/O, no clock.

The per-call path, leanest first:

* a request decided before under the bundle in force is answered from the decision memo
  (:mod:`engine._core.memo`), restamped with this call's ``now``; nothing is evaluated;
* otherwise it is staged (names qualified, limits, the context checked) and evaluated
  through the policy index (:mod:`engine._core.index`). A context is checked once per
  shape (its paths and kinds, :func:`~engine._core.context_check.context_shape`, with
  the principal and resource types): the first request of a shape is evaluated with
  the schema, so Cedar validates it; once it has, later requests of that shape skip the
  context walk, and also Cedar's per-call schema validation when Cedar reads such a
  context the same without the schema
  (:func:`~engine._core.context_check.needs_no_schema`: no extension value, entity
  references written out, no enumerated type; ``tests/engine/core/test_context_check.py``
  holds Cedar to that). A principal or resource of an enumerated entity type keeps the
  schema too (an enum's ids are checked by it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cedarpy

from engine._core.bundle import PolicyBundle, qualify_entities
from engine._core.context_check import context_problem, context_shape, needs_no_schema
from engine._core.index import UID, request_anchors
from engine._core.limits import (
    MAX_BATCH_ENTITIES,
    MAX_BATCH_ENTITY_BYTES,
    MAX_ENTITY_BYTES,
    check_context,
    check_entities,
)
from engine._core.memo import MEMO_BYTES, MEMO_ENTRIES, DecisionMemo, Memoised, MemoStats, memo_key
from engine._core.models import Decision, EntityUID, PolicyError, Request
from engine._core.placement import DeniedSite, Placement, Workload, rank
from engine._core.schema_json import Type, schema_json
from engine._errors import LimitExceeded, RequestError

SPIFFE_SCHEME = "spiffe://"
_NO_BUNDLE = PolicyError(policy=None, message="no policy bundle loaded")
_POLICY_ERROR = re.compile(r"^error while evaluating policy `((?:[^`\\]|\\.)*)`: (.*)$", re.S)
MAX_SHAPES = 4096
"""Request shapes remembered per bundle (then forgotten all at once and learnt anew)."""

Shape = tuple[str, UID, str, Any]
"""(principal type, action, resource type, :func:`context_shape` of the context)."""


class _Live:
    """The bundle in force and what is learnt about it: its enumerated entity types, and
    the shapes of requests Cedar validated (with the schema), each mapped to whether
    Cedar reads requests of that shape the same without the schema."""

    __slots__ = ("bundle", "enums", "shapes")

    def __init__(self, bundle: PolicyBundle | None) -> None:
        self.bundle = bundle
        self.shapes: dict[Shape, bool] = {}
        described = schema_json(bundle.schema) if bundle is not None else None
        self.enums = frozenset(
            f"{namespace}::{name}" if namespace else name
            for namespace, body in (described or {}).items()
            for name, entity_type in body.get("entityTypes", {}).items()
            if "enum" in entity_type
        )

    def learn(self, shape: Shape, context_type: Type, context: dict[str, Any]) -> None:
        """Remember ``shape``, of which ``context`` is a request Cedar validated."""
        if len(self.shapes) >= MAX_SHAPES:
            self.shapes.clear()
        enums = self.enums
        self.shapes[shape] = (
            shape[0] not in enums
            and shape[2] not in enums
            and needs_no_schema(context_type, context, enums)
        )


@dataclass(slots=True)
class _Prepared:
    """A request translated for Cedar, with the buckets it reaches; whether its shape
    is validated (Cedar's schema check skipped), or the shape to learn if Cedar takes it."""

    cedar: dict[str, Any]
    entities: cedarpy.Entities
    buckets: tuple[int, ...]
    schema_free: bool = False
    shape: Shape | None = None


def _require_utc(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware UTC datetime")


class Engine:
    """Answers access and placement questions against the current bundle.

    The bundle can be replaced at any time (:meth:`swap`); each call uses the bundle
    that was current when it started. With no bundle every request is denied.
    Decisions are remembered (:mod:`engine._core.memo`; at most ``memo_entries``
    decisions and about ``memo_bytes`` bytes, 0 entries for none) until the bundle
    changes or :meth:`forget` is called.
    """

    def __init__(
        self,
        bundle: PolicyBundle | None = None,
        *,
        memo_entries: int = MEMO_ENTRIES,
        memo_bytes: int = MEMO_BYTES,
    ) -> None:
        self._live = _Live(bundle)
        self._memo = DecisionMemo(memo_entries, memo_bytes)
        self._memo.reset(bundle.version if bundle is not None else None)

    @property
    def bundle(self) -> PolicyBundle | None:
        """The bundle in force."""
        return self._live.bundle

    def swap(self, bundle: PolicyBundle) -> PolicyBundle | None:
        """Make ``bundle`` current (atomically), forget every remembered decision and
        shape; return the previous bundle."""
        previous = self._live.bundle
        self._live = _Live(bundle)
        self._memo.reset(bundle.version)
        return previous

    def forget(self) -> None:
        """Forget every remembered decision. The bundle's changes do this by themselves;
        a server calls it when what stands behind a request's posture changes (the CA,
        the revocation list), so that nothing decided before the change is served."""
        bundle = self._live.bundle
        self._memo.reset(bundle.version if bundle is not None else None)

    def memo_stats(self) -> MemoStats:
        """Decisions answered from the memo (hits) and evaluated (misses) since the
        engine was made, and what the memo holds now."""
        return self._memo.stats()

    def decide(self, request: Request, *, now: datetime) -> Decision:
        """Decide one request.

        Erroring policies are listed in ``errors``; an erroring ``forbid`` denies unless
        the bundle sets ``forbid_errors = "cedar"`` (see :mod:`engine._core.bundle`).
        Raises :class:`~engine.RequestError` when the request does not fit the schema
        (a context that does not names its first wrong field, ``context.mfa: expected a
        boolean``: :mod:`engine._core.context_check`),
        :class:`~engine._errors.LimitExceeded` when it is over a limit of
        :mod:`engine._core.limits` (both checked before any Cedar work).
        """
        return self.decide_batch((request,), now=now)[0]

    def decide_batch(self, requests: Sequence[Request], *, now: datetime) -> list[Decision]:
        """Decide many requests, in order. Raises :class:`~engine.RequestError` (in a
        batch of several, a wrong context field is named with its request:
        ``requests[3].context.mfa: …``), and :class:`~engine._errors.LimitExceeded` when
        one request or the batch's total of per-request entities is over a limit; nothing
        is evaluated then."""
        _require_utc(now)
        memo = self._memo
        epoch = memo.epoch  # before the bundle: a swap after this drops what is stored
        live = self._live
        bundle = live.bundle
        if bundle is None:
            return [
                Decision.model_construct(
                    decision="deny",
                    reasons=(),
                    errors=(_NO_BUNDLE,),
                    bundle_version=None,
                    policies_evaluated=0,
                    evaluated_at=now,
                )
                for _ in requests
            ]
        _check_batch(requests)
        keys: list[bytes | None] = [None] * len(requests)
        found: list[Memoised | None] = [None] * len(requests)
        if memo.max_entries > 0:
            keys = [memo_key(request) for request in requests]
            found = memo.lookup(bundle.version, keys)
            if all(item is not None for item in found):
                _check_batch_bytes(sum(item.entity_bytes for item in found if item is not None))
                return [item.at(now) for item in found if item is not None]
        single = len(requests) == 1
        staged = {
            i: _stage(bundle, request, "context" if single else f"requests[{i}].context", live)
            for i, request in enumerate(requests)
            if found[i] is None
        }
        _check_batch_bytes(
            sum(len(item.extra_json) for item in staged.values())
            + sum(item.entity_bytes for item in found if item is not None)
        )
        evaluated = _evaluate(bundle, [_build(bundle, item) for item in staged.values()], now, live)
        fresh = dict(zip(staged, evaluated, strict=True))
        if memo.max_entries > 0:
            memo.store(
                epoch,
                [
                    (key, Memoised(fresh[i], len(staged[i].extra_json)))
                    for i in staged
                    if (key := keys[i]) is not None
                ],
            )
        return [item.at(now) if item is not None else fresh[i] for i, item in enumerate(found)]

    def place(
        self, workload: Workload, sites: Iterable[str] | None = None, *, now: datetime
    ) -> Placement:
        """Evaluate ``place`` for each candidate site (all catalog sites by default).

        Returns allowed sites ranked (within the latency budget first, then cost) and
        denied sites with the policies that denied them. Raises
        :class:`~engine.RequestError` for an unknown site, a ``residency`` or
        ``users_in`` that is not a jurisdiction of the site catalog, or a context that
        does not fit the schema. With no bundle loaded, every site is denied.
        """
        _require_utc(now)
        bundle = self._live.bundle
        if bundle is None:
            names = list(sites or ())
            return Placement(
                workload=workload.id,
                allowed=(),
                denied=tuple(DeniedSite(site=n, reasons=(), errors=(_NO_BUNDLE,)) for n in names),
                bundle_version=None,
                evaluated_at=now,
            )
        bundle.check_jurisdictions("residency", workload.residency)
        if workload.users_in is not None:
            bundle.check_jurisdictions("users_in", (workload.users_in,))
        candidates = []
        for name in [s.name for s in bundle.sites] if sites is None else sites:
            site = bundle.site(name)
            if site is None:
                raise RequestError(f"unknown site {name!r}: not in the bundle's site catalog")
            candidates.append(site)
        principal_type = "Data" if workload.kind == "dataset" else "Workload"
        context = workload.cedar_context()
        requests = [
            Request.model_construct(
                principal=_uid_model(principal_type, workload.id),
                action=_uid_model("Action", "place"),
                resource=_uid_model("Site", site.name),
                context=context,
                entities=(),
            )
            for site in candidates
        ]
        decisions = _evaluate(bundle, [_prepare(bundle, r) for r in requests], now)
        allowed = [(s, d.reasons) for s, d in zip(candidates, decisions, strict=True) if d.allowed]
        denied = [
            DeniedSite(site=s.name, reasons=d.reasons, errors=d.errors)
            for s, d in zip(candidates, decisions, strict=True)
            if not d.allowed
        ]
        return Placement(
            workload=workload.id,
            allowed=tuple(rank(workload, allowed)),
            denied=tuple(denied),
            bundle_version=bundle.version,
            evaluated_at=now,
        )


def _uid_model(type_name: str, entity_id: str) -> EntityUID:
    return EntityUID.model_construct(type=type_name, id=entity_id)


def _check_batch_bytes(total: int) -> None:
    if total > MAX_BATCH_ENTITY_BYTES:
        raise LimitExceeded(
            f"entities: {total} bytes of per-request entities in one batch exceed the "
            f"limit of {MAX_BATCH_ENTITY_BYTES}"
        )


def _check_batch(requests: Sequence[Request]) -> None:
    """The batch-wide entity count, before any request is looked at more closely."""
    total = sum(len(request.entities) for request in requests)
    if total > MAX_BATCH_ENTITIES and len(requests) > 1:
        raise LimitExceeded(
            f"entities: {total} per-request entities in one batch exceed the limit of "
            f"{MAX_BATCH_ENTITIES}"
        )


@dataclass(slots=True)
class _Staged:
    """A request within the limits, its names qualified, before any Cedar work."""

    principal: UID
    action: UID
    resource: UID
    context: dict[str, Any]
    extra_json: str
    """The per-request entities as Cedar JSON ("" when there are none)."""
    parents: dict[UID, list[UID]]
    schema_free: bool = False
    shape: Shape | None = None


def _stage(
    bundle: PolicyBundle, request: Request, field: str = "context", live: _Live | None = None
) -> _Staged:
    """Qualify a request's names and check it against the limits, then its context
    against the action's context type (cheap: no Cedar), unless ``live`` knows its
    shape. Raises :class:`~engine.LimitExceeded`, and :class:`~engine.RequestError`
    naming the first wrong field of the context (``field`` is its path)."""
    namespace = bundle.namespace
    principal = (bundle.qualify(request.principal.type), request.principal.id)
    if principal[1].startswith(SPIFFE_SCHEME):
        principal = bundle.by_spiffe_id(*principal) or principal
    action = (bundle.qualify(request.action.type), request.action.id)
    resource = (bundle.qualify(request.resource.type), request.resource.id)
    context: dict[str, Any] = {}
    if request.context:
        context = check_context(request.context, namespace)
    context_type = bundle.context_types.get(action)
    shape: Shape | None = None
    schema_free = False
    if context_type is not None:
        known = None
        if live is not None:
            shape = (principal[0], action, resource[0], context_shape(context))
            known = live.shapes.get(shape)
        if known is None:
            problem = context_problem(context_type, context, action[1], field)
            if problem is not None:
                raise RequestError(problem)
        else:
            shape, schema_free = None, known
    extra_json = ""
    parents: dict[UID, list[UID]] = {}
    if request.entities:
        extra = qualify_entities(list(request.entities), namespace)
        parents = check_entities(extra, bundle.height)
        extra_json = json.dumps(extra)
        if len(extra_json) > MAX_ENTITY_BYTES:
            raise LimitExceeded(
                f"entities: {len(extra_json)} bytes of per-request entities exceed the "
                f"limit of {MAX_ENTITY_BYTES}"
            )
    return _Staged(principal, action, resource, context, extra_json, parents, schema_free, shape)


def _prepare(bundle: PolicyBundle, request: Request) -> _Prepared:
    """:func:`_stage` then :func:`_build` one request."""
    return _build(bundle, _stage(bundle, request))


def _build(bundle: PolicyBundle, staged: _Staged) -> _Prepared:
    """Add a staged request's entities to the store (the costly step the limits bound)
    and find the buckets it reaches. Raises :class:`~engine.RequestError`."""
    principal, action, resource = staged.principal, staged.action, staged.resource
    entities = bundle.entities
    if staged.extra_json:
        try:
            entities = bundle.entities.with_added_json_str(staged.extra_json, bundle.schema)
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"entities: {exc}") from exc
        p_ancestors = _ancestors_with(bundle, staged.parents, principal)
        r_ancestors = _ancestors_with(bundle, staged.parents, resource)
    else:
        p_ancestors = bundle.ancestors(principal)
        r_ancestors = bundle.ancestors(resource)
    buckets = bundle.index.lookup(
        action, request_anchors(principal, p_ancestors), request_anchors(resource, r_ancestors)
    )
    cedar = {
        "principal": {"type": principal[0], "id": principal[1]},
        "action": {"type": action[0], "id": action[1]},
        "resource": {"type": resource[0], "id": resource[1]},
        "context": staged.context,
    }
    return _Prepared(cedar, entities, buckets, staged.schema_free, staged.shape)


def _ancestors_with(
    bundle: PolicyBundle, extra: Mapping[UID, list[UID]], start: UID
) -> frozenset[UID]:
    """Ancestors of ``start`` through per-request entities and the stored hierarchy,
    in any interleaving (a stored user in a per-request group in a stored group)."""
    seen: set[UID] = set()
    stack = [*extra.get(start, ()), *bundle.ancestors(start)]
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen.add(uid)
        stack.extend(extra.get(uid, ()))
        stack.extend(bundle.ancestors(uid))
    seen.discard(start)
    return frozenset(seen)


def _evaluate(
    bundle: PolicyBundle, prepared: list[_Prepared], now: datetime, live: _Live | None = None
) -> list[Decision]:
    """Evaluate prepared requests, batching those that share buckets, entities and
    whether the schema is passed. Raises the :class:`~engine.RequestError` of the first
    request (in order) that Cedar could not evaluate; then learns, into ``live``, the
    shapes Cedar validated."""
    groups: dict[tuple[tuple[int, ...], int, bool], list[int]] = {}
    for position, item in enumerate(prepared):
        groups.setdefault((item.buckets, id(item.entities), item.schema_free), []).append(position)
    decisions: list[Decision | None] = [None] * len(prepared)
    failures: dict[int, RequestError] = {}
    index = bundle.index
    for (buckets, _, schema_free), positions in groups.items():
        requests = [prepared[p].cedar for p in positions]
        entities = prepared[positions[0]].entities
        if not buckets:
            policy_sets = [index.empty]
        elif len(buckets) == 1:
            policy_sets = [index.buckets[buckets[0]].policy_set]
        else:
            merged = index.merged(buckets)
            policy_sets = (
                [merged] if merged is not None else [index.buckets[n].policy_set for n in buckets]
            )
        schema = None if schema_free else bundle.schema
        results = [
            cedarpy.is_authorized_batch(requests, policy_set, entities, schema=schema)
            for policy_set in policy_sets
        ]
        evaluated = index.policies_in(buckets)
        for offset, position in enumerate(positions):
            try:
                decisions[position] = _combine(bundle, [r[offset] for r in results], evaluated, now)
            except RequestError as exc:
                failures[position] = exc
    if failures:
        raise failures[min(failures)]
    if live is not None:
        for item in prepared:
            if item.shape is not None:
                live.learn(item.shape, bundle.context_types[item.shape[1]], item.cedar["context"])
    return [d for d in decisions if d is not None]


def _combine(
    bundle: PolicyBundle, results: list[cedarpy.AuthzResult], evaluated: int, now: datetime
) -> Decision:
    """Cedar's rule over one or more disjoint policy sets' results, with the bundle's
    ``forbid_errors`` setting: under ``"deny"`` an erroring forbid denies."""
    forbids: set[str] = set()
    permits: set[str] = set()
    errors: dict[str, str] = {}
    for result in results:
        diagnostics = result.diagnostics
        if result.decision is cedarpy.Decision.NoDecision:
            message = "; ".join(diagnostics.errors) or "request could not be evaluated"
            raise RequestError(message.removeprefix("failed to build request: "))
        for policy_id in diagnostics.reasons:
            if bundle.policy(policy_id).effect == "forbid":
                forbids.add(policy_id)
            else:
                permits.add(policy_id)
        for message in diagnostics.errors:
            match = _POLICY_ERROR.match(message)
            if match is None:
                raise RequestError(message)
            errors.setdefault(match.group(1), match.group(2))
    if bundle.forbid_errors == "deny":
        # Cedar skips a policy that errors; a skipped forbid would turn its error into
        # an allow, so here it counts as satisfied (and is the deny's reason).
        forbids.update(i for i in errors if bundle.policy(i).effect == "forbid")
    reasons = forbids or permits
    return Decision.model_construct(
        decision="allow" if permits and not forbids else "deny",
        reasons=tuple(sorted(reasons, key=lambda i: bundle.policy(i).position)),
        errors=tuple(
            PolicyError.model_construct(policy=policy_id, message=errors[policy_id])
            for policy_id in sorted(errors, key=lambda i: bundle.policy(i).position)
        ),
        bundle_version=bundle.version,
        policies_evaluated=evaluated,
        evaluated_at=now,
    )
