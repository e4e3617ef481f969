"""The decision service without a transport.

Adapters (gRPC Decisions, Envoy ext_authz, Kubernetes admission) turn their messages
into engine requests and call this: it reads the clock once per call, names every
decision with an id, records it in the audit log, counts it, and authorizes
administrative calls by policy.

No acknowledged decision is unrecorded: a call returns only after its audit entries
are durable, and raises :class:`~audit.Overloaded` or :class:`~audit.StoreError` (the
caller then answers with an error, never with the decision) when they cannot be.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NotRequired, TypedDict, Unpack

import structlog

from audit import AuditError, AuditLog, Entry, Receipt, Recorded
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Decision, EntityUID, PolicyError, Request
from engine._core.placement import Placement, Workload
from engine._errors import LimitExceeded, NotAuthorized
from engine._service import tracing
from engine._service.audit_entries import (
    bundle_entry,
    decision_entries,
    placement_entry,
    recorded_decision,
    recorded_placement,
    refusal_entry,
    unevaluated_entry,
)
from engine._service.bundle_source import Freshness
from engine._service.bundle_watch import BundleWatcher, Reload
from engine._service.constants import CALLER, MAX_BATCH
from engine._service.metrics import Metrics
from engine._service.shadow import Shadow

log = structlog.get_logger("docket.decisions")

ADMIN_RESOURCE = EntityUID(type="Service", id="docket")
"""What administrative calls act on: ``Service::"docket"``, action ``admin``."""


LARGE_BATCH = 16
"""Requests in one call from which evaluation leaves the event loop (about 1.5 ms of
Cedar: more than a thread hand-off costs, less than a wait other callers notice)."""


def decision_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort the way decisions were made."""
    (id_,) = decision_ids(now, 1)
    return id_


def decision_ids(now: datetime, count: int) -> list[str]:
    """``count`` UUIDv7s (:func:`decision_id`) from one read of the system's random
    source (each read releases and takes back the GIL)."""
    millis = (int(now.timestamp() * 1000) & ((1 << 48) - 1)) << 80
    pool = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        rand = int.from_bytes(pool[start : start + 10])
        value = millis | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
        value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
        ids.append(str(uuid.UUID(int=value)))
    return ids


def _name(ids: Sequence[str]) -> None:
    """Put the ids of the decisions being made into every log line of this call that
    follows (structlog's context variables: a call runs in a context of its own)."""
    if len(ids) == 1:
        structlog.contextvars.bind_contextvars(decision_id=ids[0])
    else:
        structlog.contextvars.bind_contextvars(decision_ids=list(ids))


def utcnow() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision, the id it is known by in responses, headers and logs, and the
    receipt of its (durable) audit entry."""

    decision_id: str
    decision: Decision
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class Placed:
    """A placement, its decision id and the receipt of its audit entry."""

    decision_id: str
    placement: Placement
    receipt: Receipt


class Asked(TypedDict):
    """What :meth:`DecisionService.authorize` is asked besides the requests."""

    api: str
    detail: NotRequired[Mapping[str, Any] | None]
    provenance: NotRequired[Sequence[Mapping[str, Any]] | None]


class Refused(TypedDict):
    """What :meth:`DecisionService.refuse` is told besides the error."""

    api: str
    caller: str | None
    detail: NotRequired[Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class _Made:
    """Decisions made and their entries, not yet recorded."""

    ids: list[str]
    decisions: list[Decision]
    entries: Sequence[Entry | Recorded]


class DecisionService:
    """Answers decision, placement and reload calls for every transport."""

    def __init__(
        self,
        engine: Engine,
        watcher: BundleWatcher,
        metrics: Metrics,
        audit: AuditLog,
        *,
        clock: Callable[[], datetime] = utcnow,
        announce: bool = True,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.audit = audit
        # record_requests: each decision's input goes beside its entry (audit._requests).
        self._recording = audit.records_requests
        self._watcher = watcher
        self.clock = clock
        # The pulled revocation list's age (revocations_url), set by the worker.
        self.revocations: Freshness | None = None
        # A candidate bundle decided beside the live one (shadow_bundle), set by the worker.
        self.shadow: Shadow | None = None
        bundle = engine.bundle
        self._version = bundle.version if bundle else None
        metrics.bundle_loaded(self._version)
        if announce:
            self.announce()
        watcher.on_swap(self._swapped)

    def announce(self) -> None:
        """Record the bundle in force as loaded. A server calls this once it listens
        (``announce=False`` at construction), so a start that fails to bind writes
        nothing to the log. Raises :class:`~audit.AuditError`."""
        bundle = self.engine.bundle
        if bundle is not None:
            self._record([self._bundle_entry(bundle.version, None, bundle.source)])

    @property
    def serving(self) -> bool:
        """True while a bundle is loaded and the audit log is writable (without either,
        every request is denied or refused)."""
        return self.engine.bundle is not None and self.audit.writable

    def _record(self, entries: Sequence[Entry | Recorded]) -> list[Receipt]:
        with tracing.child_span(tracing.AUDIT_COMMIT):
            return self.audit.record(entries)

    def _swapped(self, bundle: PolicyBundle) -> None:
        self.metrics.bundle_loaded(bundle.version)
        previous, self._version = self._version, bundle.version
        try:
            self._record([self._bundle_entry(bundle.version, previous, bundle.source)])
        except AuditError as exc:  # the swap happened; say loudly that it went unrecorded
            log.error("audit.bundle_unrecorded", version=bundle.version, error=str(exc))

    def _bundle_entry(self, version: str, previous: str | None, source: str) -> Entry:
        return bundle_entry(
            version, previous=previous, source=source, caller=None, now=self.clock()
        )

    async def _record_async(self, entries: Sequence[Entry | Recorded]) -> list[Receipt]:
        # Never commits on the loop: the writer thread commits whatever is waiting.
        with tracing.child_span(tracing.AUDIT_COMMIT):
            return await self.audit.writer.append_async(entries)

    def authorize(self, requests: Sequence[Request], **asked: Unpack[Asked]) -> list[Decided]:
        """Decide requests in order (``api`` names the API; ``detail`` goes into each
        audit entry's detail, and ``provenance``, one per request: where its trusted
        facts came from, see :func:`engine._service.posture.provenance`, into its
        ``detail.provenance``). Returns once their entries are durable. Raises
        :class:`~engine.RequestError`, :class:`~engine.LimitExceeded` over
        :data:`MAX_BATCH`, the audit log's errors."""
        made = self._decide(requests, **asked)
        _name(made.ids)
        return self._decided(asked["api"], made, self._record(made.entries))

    async def authorize_async(
        self, requests: Sequence[Request], **asked: Unpack[Asked]
    ) -> list[Decided]:
        """:meth:`authorize` for a caller on an event loop, awaited until the writer
        thread's commit has made the entries durable. Up to :data:`LARGE_BATCH` requests
        are evaluated on the loop (a thread hand-off would cost more than they do); a
        larger batch on a thread of the loop's executor, so that it cannot hold every
        other call of this process until it is decided."""
        if len(requests) < LARGE_BATCH:
            made = self._decide(requests, **asked)
        else:
            loop = asyncio.get_running_loop()
            # In this call's context: its span and log fields follow it into the thread.
            decide = partial(self._decide, requests, **asked)
            made = await loop.run_in_executor(None, contextvars.copy_context().run, decide)
        _name(made.ids)
        return self._decided(asked["api"], made, await self._record_async(made.entries))

    def _decide(
        self,
        requests: Sequence[Request],
        *,
        api: str,
        detail: Mapping[str, Any] | None = None,
        provenance: Sequence[Mapping[str, Any]] | None = None,
    ) -> _Made:
        if len(requests) > MAX_BATCH:
            raise LimitExceeded(
                f"requests: {len(requests)} requests in one batch; the limit is {MAX_BATCH}"
            )
        if provenance is not None and len(provenance) != len(requests):
            raise ValueError("one provenance per request")
        details: list[Mapping[str, Any] | None] = [detail] * len(requests)
        if provenance is not None:
            # One detail object per distinct provenance object: a batch's entries then
            # cap and encode it once (decision_entries).
            made: dict[int, Mapping[str, Any]] = {}
            for i, p in enumerate(provenance):
                found = made.get(id(p))
                if found is None:
                    found = made[id(p)] = {**(detail or {}), "provenance": dict(p)}
                details[i] = found
        now = self.clock()
        bundle = self.engine.bundle
        with tracing.child_span(tracing.EVALUATE):
            decisions = self.engine.decide_batch(requests, now=now)
        if self.shadow is not None:  # the candidate's disagreements, annotated; never the answer
            details = self.shadow.annotate(requests, decisions, details, now)
        decisions = self._vetted(bundle, decisions, now)
        ids = decision_ids(now, len(decisions))
        entries = decision_entries(
            requests, decisions, decision_ids=ids, api=api, bundle=bundle, now=now, details=details
        )
        if self._recording:
            recorded = [
                recorded_decision(entry, request, api=api, detail=item_detail)
                for entry, request, item_detail in zip(entries, requests, details, strict=True)
            ]
            return _Made(ids, decisions, recorded)
        return _Made(ids, decisions, entries)

    def _vetted(
        self, bundle: PolicyBundle | None, decisions: list[Decision], now: datetime
    ) -> list[Decision]:
        if self._watcher.freshness is not None:  # a stale pulled bundle: @fresh_policy
            decisions = list(self._watcher.freshness.vet(bundle, decisions, now))
        if self.revocations is not None:  # a stale pulled revocation list: likewise
            decisions = list(self.revocations.vet(bundle, decisions, now))
        return decisions

    def _judge(self, requests: Sequence[Request]) -> list[Decision]:
        now = self.clock()
        bundle = self.engine.bundle
        with tracing.child_span(tracing.EVALUATE):
            decisions = self.engine.decide_batch(requests, now=now)
        return self._vetted(bundle, decisions, now)

    async def judge_async(self, requests: Sequence[Request]) -> list[Decision]:
        """Decide ``requests`` as :meth:`authorize_async` does (the same evaluation, and
        the same vetting by a stale bundle or revocation list) but record nothing: a
        search records one entry for all it decided (:meth:`record_async`). Raises
        :class:`~engine.RequestError`, :class:`~engine.LimitExceeded`."""
        if len(requests) > MAX_BATCH:
            raise LimitExceeded(
                f"requests: {len(requests)} requests in one batch; the limit is {MAX_BATCH}"
            )
        if len(requests) < LARGE_BATCH:
            return self._judge(requests)
        loop = asyncio.get_running_loop()
        judge = partial(self._judge, requests)
        return await loop.run_in_executor(None, contextvars.copy_context().run, judge)

    async def record_async(self, entry: Entry) -> Receipt:
        """Record one entry made elsewhere (a search's), awaited until durable. Raises
        the audit log's errors."""
        (receipt,) = await self._record_async([entry])
        return receipt

    def _decided(self, api: str, made: _Made, receipts: list[Receipt]) -> list[Decided]:
        decided = [Decided(*item) for item in zip(made.ids, made.decisions, receipts, strict=True)]
        tracing.decisions(api, decided)
        if len(decided) != 1:  # each line below names its own
            structlog.contextvars.unbind_contextvars("decision_ids")
        allowed = sum(1 for item in decided if item.decision.decision == "allow")
        if allowed:
            self.metrics.decided(api, "allow", allowed)
        if len(decided) > allowed:
            self.metrics.decided(api, "deny", len(decided) - allowed)
        if log.is_enabled_for(logging.DEBUG):  # a line per decision: not built otherwise
            for item in decided:
                log.debug(
                    "decision",
                    api=api,
                    decision_id=item.decision_id,
                    decision=item.decision.decision,
                    reasons=item.decision.reasons,
                )
        return decided

    def refuse(self, error: str, **refused: Unpack[Refused]) -> Decided:
        """Deny a request that could not be decided (its input did not map onto the
        schema: ``error``) and record the denial; ``api`` names the API, ``caller`` the
        mTLS caller, ``detail`` goes into the entry's detail. Raises the audit errors of
        :meth:`authorize`."""
        made = self._refusal(error, **refused)
        (decided,) = self._decided(refused["api"], made, self._record(made.entries))
        return decided

    async def refuse_async(self, error: str, **refused: Unpack[Refused]) -> Decided:
        """:meth:`refuse` for a caller on an event loop (see :meth:`authorize_async`)."""
        made = self._refusal(error, **refused)
        (decided,) = self._decided(refused["api"], made, await self._record_async(made.entries))
        return decided

    def _refusal(
        self, error: str, *, api: str, caller: str | None, detail: Mapping[str, Any] | None = None
    ) -> _Made:
        now = self.clock()
        id_ = decision_id(now)
        _name([id_])
        entry = refusal_entry(
            error, api=api, caller=caller, decision_id=id_, now=now, detail=detail
        )
        decision = Decision(
            decision="deny", errors=(PolicyError(policy=None, message=error),), evaluated_at=now
        )
        return _Made([id_], [decision], [entry])

    def allow_unevaluated(
        self,
        note: str,
        *,
        api: str,
        caller: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> Decided:
        """Allow, without evaluating any policy, a request that is outside what Docket
        decides (the admission webhook: a DELETE, a kind it does not inspect), and
        record that it did so and why (``note``). Raises the audit errors of
        :meth:`authorize`: nothing is allowed unrecorded."""
        now = self.clock()
        id_ = decision_id(now)
        _name([id_])
        (receipt,) = self._record(
            [
                unevaluated_entry(
                    note, api=api, caller=caller, decision_id=id_, now=now, detail=detail
                )
            ]
        )
        self.metrics.decided(api, "allow")
        bundle = self.engine.bundle
        decision = Decision(
            decision="allow",
            bundle_version=bundle.version if bundle is not None else None,
            evaluated_at=now,
        )
        decided = Decided(id_, decision, receipt)
        tracing.decisions(api, [decided])
        return decided

    def place(
        self,
        workload: Workload,
        sites: Sequence[str] | None,
        *,
        detail: Mapping[str, Any] | None = None,
    ) -> Placed:
        """Place a workload and record it; ``detail`` goes into the entry's detail.
        Raises :class:`~engine.RequestError` (an unknown site, a context off schema),
        the audit errors of :meth:`authorize`."""
        now = self.clock()
        placement = self.engine.place(workload, sites, now=now)
        id_ = decision_id(now)
        _name([id_])
        caller = workload.context.get(CALLER)
        entry = placement_entry(
            workload,
            placement,
            decision_id=id_,
            caller=caller if isinstance(caller, str) else None,
            now=now,
            detail=detail,
        )
        (receipt,) = self._record(
            [recorded_placement(entry, workload, sites) if self._recording else entry]
        )
        self.metrics.decided("place", "allow" if placement.allowed else "deny")
        return Placed(id_, placement, receipt)

    def permitted(self, caller: str | None, action: str, *, api: str) -> Decided | None:
        """Decide (and record) whether policy lets ``caller`` (an mTLS SPIFFE ID) take
        ``Action::<action>`` on ``Service::"docket"``; None without an mTLS identity
        (nothing to decide). Raises the audit errors of :meth:`authorize`."""
        if caller is None:
            return None
        request = Request.model_construct(
            principal=EntityUID.model_construct(type="Workload", id=caller),
            action=EntityUID.model_construct(type="Action", id=action),
            resource=ADMIN_RESOURCE,
            context={CALLER: caller},
            entities=(),
        )
        (decided,) = self.authorize([request], api=api)
        return decided

    def require(self, caller: str | None, action: str, *, api: str, what: str) -> None:
        """Raise :class:`~engine.NotAuthorized` (naming ``what`` and ``action``) unless
        policy lets ``caller`` take ``action`` on ``Service::"docket"``; always without
        an mTLS identity. Raises the audit errors of :meth:`authorize`."""
        decided = self.permitted(caller, action, api=api)
        if decided is None:
            raise NotAuthorized(f"{what} needs a client certificate (mTLS)")
        if not decided.decision.allowed:
            reasons = ", ".join(decided.decision.reasons) or "no policy permits it"
            raise NotAuthorized(
                f'{caller} may not {what}: Action::"{action}" on Service::"docket" is not'
                f" permitted ({reasons}; decision {decided.decision_id})"
            )

    def reload(self, caller: str | None) -> Reload:
        """Reload the bundle if policy lets ``caller`` (an mTLS SPIFFE ID) administer Docket.

        Raises :class:`~engine.NotAuthorized` when it may not (always without an mTLS
        identity), :class:`~engine.BundleError` when the bundle on disk does not load.
        """
        if caller is None:
            raise NotAuthorized("reloading the bundle needs a client certificate (mTLS)")
        request = Request.model_construct(
            principal=EntityUID.model_construct(type="Workload", id=caller),
            action=EntityUID.model_construct(type="Action", id="admin"),
            resource=ADMIN_RESOURCE,
            context={CALLER: caller},
            entities=(),
        )
        (decided,) = self.authorize([request], api="admin")
        if not decided.decision.allowed:
            reasons = ", ".join(decided.decision.reasons) or "no policy permits it"
            raise NotAuthorized(
                f"{caller} may not administer Docket ({reasons}; decision {decided.decision_id})"
            )
        result = self._watcher.reload()
        log.info("bundle.reload_requested", caller=caller, changed=result.changed)
        return result
