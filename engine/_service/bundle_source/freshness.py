"""Freshness: how old the bundle in force is, and what a stale one may no longer allow.

A pulled bundle's age is the time since its source was last seen serving it (a
download, or a ``304``/same manifest digest: the source still says this is the newest).
Past ``max_bundle_staleness`` the bundle is *stale* (TUF's freeze attack: a replica cut
off from its source, or fed an old answer, must not go on trusting old policy forever).

Policy marks what needs fresh policy with the Cedar annotation ``@fresh_policy`` on a
``permit``::

    @id("wire-transfers")
    @fresh_policy("a revoked signer must stop being able to move money")
    permit (principal, action == Action::"transfer", resource) when { … };

While the bundle is stale, such a permit counts for nothing: a request that only
marked permits allow is denied, its decision's errors naming each and the bundle's age.
A request that an unmarked permit also allows is allowed as before; ``forbid``s always
count (a stale forbid still forbids). Everything else keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from engine._core.bundle import PolicyBundle
from engine._core.models import Decision, PolicyError

ANNOTATION = "fresh_policy"


class Freshness:
    """The age of the bundle in force (``confirmed_at``: when its source last served it,
    set by the watcher) against ``max_staleness`` seconds (None: never stale). ``what``
    and ``setting`` name what is aged in a stale decision's errors (the revocation list
    is aged the same way: :mod:`engine._service.revocation_source`)."""

    def __init__(
        self,
        max_staleness: float | None,
        *,
        what: str = "the bundle",
        setting: str = "max_bundle_staleness",
    ) -> None:
        self.max_staleness = max_staleness
        self.what, self.setting = what, setting
        self.confirmed_at: datetime | None = None
        self._marked: tuple[str | None, frozenset[str]] = (None, frozenset())

    def age(self, now: datetime) -> float | None:
        """Seconds since the source last served the bundle (None: not known)."""
        if self.confirmed_at is None:
            return None
        return max((now - self.confirmed_at).total_seconds(), 0.0)

    def stale(self, now: datetime) -> bool:
        """Past ``max_staleness`` (or never confirmed, when there is a maximum)."""
        if self.max_staleness is None:
            return False
        age = self.age(now)
        return age is None or age > self.max_staleness

    def marked(self, bundle: PolicyBundle) -> frozenset[str]:
        """The ids of the bundle's policies annotated ``@fresh_policy`` (remembered per
        version: a bundle is immutable)."""
        version, ids = self._marked
        if version != bundle.version:
            ids = frozenset(
                policy.id
                for policy in bundle.policies
                if ANNOTATION in (json.loads(policy.json).get("annotations") or {})
            )
            self._marked = (bundle.version, ids)
        return ids

    def vet(
        self, bundle: PolicyBundle | None, decisions: Sequence[Decision], now: datetime
    ) -> Sequence[Decision]:
        """``decisions`` with every allow that rests only on ``@fresh_policy`` permits
        turned into a deny while the bundle is stale."""
        if bundle is None or not self.stale(now):
            return decisions
        marked = self.marked(bundle)
        if not marked:
            return decisions
        return [self._vetted(decision, marked, now) for decision in decisions]

    def _vetted(self, decision: Decision, marked: frozenset[str], now: datetime) -> Decision:
        if not decision.allowed or not decision.reasons:
            return decision
        if not all(reason in marked for reason in decision.reasons):
            return decision
        age = self.age(now)
        known = "never confirmed" if age is None else f"last confirmed {age:.0f} s ago"
        message = (
            f"needs fresh policy (@{ANNOTATION}), but {self.what} is stale: {known}, past "
            f"{self.setting} of {self.max_staleness:g} s"
        )
        return decision.model_copy(
            update={
                "decision": "deny",
                "reasons": (),
                "errors": (
                    *decision.errors,
                    *(PolicyError(policy=policy, message=message) for policy in decision.reasons),
                ),
            }
        )
