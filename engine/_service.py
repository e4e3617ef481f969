"""The decision service without a transport.

Adapters (gRPC Decisions, Envoy ext_authz, Kubernetes admission) turn their messages
into engine requests and call this: it reads the clock once per call, names every
decision with an id, counts it, and authorizes administrative calls by policy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from engine._engine import Engine
from engine._errors import LimitExceeded, NotAuthorized
from engine._metrics import Metrics
from engine._models import Decision, EntityUID, Request
from engine._placement import Placement, Workload
from engine._reload import BundleWatcher, Reload
from engine._wire import CALLER, MAX_BATCH

log = structlog.get_logger("docket.decisions")

ADMIN_RESOURCE = EntityUID(type="Service", id="docket")
"""What administrative calls act on: ``Service::"docket"``, action ``admin``."""


def decision_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort the way decisions were made."""
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10))
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision and the id it is known by in responses, headers and logs."""

    decision_id: str
    decision: Decision


class DecisionService:
    """Answers decision, placement and reload calls for every transport."""

    def __init__(
        self,
        engine: Engine,
        watcher: BundleWatcher,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self._watcher = watcher
        self.clock = clock
        bundle = engine.bundle
        metrics.bundle_loaded(bundle.version if bundle else None)
        watcher.on_swap(lambda b: metrics.bundle_loaded(b.version))

    @property
    def serving(self) -> bool:
        """True while a bundle is loaded (without one every request is denied)."""
        return self.engine.bundle is not None

    def authorize(self, requests: Sequence[Request], *, api: str) -> list[Decided]:
        """Decide requests in order. Raises :class:`~engine.RequestError`,
        :class:`~engine.LimitExceeded` over :data:`MAX_BATCH`."""
        if len(requests) > MAX_BATCH:
            raise LimitExceeded(
                f"requests: {len(requests)} requests in one batch; the limit is {MAX_BATCH}"
            )
        now = self.clock()
        decisions = self.engine.decide_batch(requests, now=now)
        decided = [Decided(decision_id(now), d) for d in decisions]
        for item in decided:
            self.metrics.decided(api, item.decision.decision)
            log.debug(
                "decision",
                api=api,
                decision_id=item.decision_id,
                decision=item.decision.decision,
                reasons=item.decision.reasons,
            )
        return decided

    def place(self, workload: Workload, sites: Sequence[str] | None) -> tuple[str, Placement]:
        """Place a workload; returns the decision id and the placement.
        Raises :class:`~engine.RequestError` (an unknown site, a context off schema)."""
        now = self.clock()
        placement = self.engine.place(workload, sites, now=now)
        self.metrics.decided("place", "allow" if placement.allowed else "deny")
        return decision_id(now), placement

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
