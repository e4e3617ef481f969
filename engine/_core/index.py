"""The policy index: evaluate only the policies whose scope can match a request.

cedarpy evaluates every policy in the set it is given, so cost grows with the bundle.
The index files every policy, for every action its action scope admits, under a
*bucket* keyed by its principal and resource anchors:

    anchor  ::=  ANY            (principal / principal is T)
              |  ("=", uid)     (principal == uid)
              |  ("in", uid)    (principal in uid / principal is T in uid)

A request reaches the buckets keyed by ANY, by its own uid ("=") and by its uid and
each of its ancestors ("in"), for its action. Each bucket is a pre-parsed Cedar
policy set built at load; nothing is parsed while answering. Actions with few
policies keep a single bucket, because one evaluation call costs more than a few
dozen policies whose scope does not match.

When a request reaches one bucket it is one cedarpy call. When it reaches several,
each is evaluated and the results combined with Cedar's own rule (any satisfied
forbid denies; otherwise any satisfied permit allows), which gives the same
decision, determining policies and errors as evaluating the union. When the same
combination recurs, the union is built in a background thread (cedarpy releases the
GIL while parsing) and cached, so later requests that reach those buckets take one
call. The backlog of sets to build is bounded.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from engine._core.policies import Policy, Scope, build_policy_set

UID = tuple[str, str]
"""An entity uid as (fully qualified type, id)."""

Anchor = tuple[str, ...]
ANY: Anchor = ("*",)

FOLD_LIMIT = 48
"""An action with at most this many policies keeps them all in one bucket."""

MERGED_CACHE_SIZE = 4096
SEEN_SIZE = 4 * MERGED_CACHE_SIZE
"""How many bucket combinations seen once are remembered (merged on a second sight)."""
MAX_PENDING = 64
"""At most this many merged sets wait to be built."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A pre-parsed policy set: the policies of one (action, principal, resource) key."""

    number: int
    policies: tuple[Policy, ...]
    policy_set: cedarpy.PolicySet


def _uid(entity: Mapping[str, Any]) -> UID:
    return (str(entity["type"]), str(entity["id"]))


def _anchor(scope: Scope) -> Anchor:
    op = scope["op"]
    if op == "==":
        return ("=", *_uid(scope["entity"]))
    if op == "in":
        return ("in", *_uid(scope["entity"]))
    if op == "is" and "in" in scope:
        return ("in", *_uid(scope["in"]["entity"]))
    return ANY


def _actions_in_scope(scope: Scope, actions: Mapping[UID, frozenset[UID]]) -> Iterable[UID]:
    """The concrete actions (of the schema) that an action scope admits."""
    op = scope["op"]
    if op == "All":
        return actions.keys()
    if op == "==":
        return [_uid(scope["entity"])]
    targets = {_uid(e) for e in scope.get("entities", [])}
    if "entity" in scope:
        targets.add(_uid(scope["entity"]))
    return [a for a, ancestors in actions.items() if a in targets or targets & ancestors]


def request_anchors(uid: UID, ancestors: frozenset[UID]) -> list[Anchor]:
    """Every anchor a request's principal (or resource) can be filed under."""
    anchors = [ANY, ("=", *uid), ("in", *uid)]
    anchors.extend(("in", *ancestor) for ancestor in ancestors)
    return anchors


class _ActionIndex:
    __slots__ = ("by_principal", "folded")

    def __init__(self) -> None:
        self.folded: Bucket | None = None
        self.by_principal: dict[Anchor, dict[Anchor, Bucket]] = {}


class PolicyIndex:
    """Buckets of pre-parsed policy sets, and the lookup from a request to them."""

    def __init__(
        self,
        policies: Sequence[Policy],
        actions: Mapping[UID, frozenset[UID]],
        *,
        fold_limit: int = FOLD_LIMIT,
    ) -> None:
        """Index ``policies``; ``actions`` maps each schema action to its ancestors."""
        grouped: dict[UID, dict[tuple[Anchor, Anchor], list[Policy]]] = {}
        for policy in policies:
            key = (_anchor(policy.principal), _anchor(policy.resource))
            for action in _actions_in_scope(policy.action, actions):
                grouped.setdefault(action, {}).setdefault(key, []).append(policy)
        self.buckets: list[Bucket] = []
        self._by_action: dict[UID, _ActionIndex] = {}
        for action, keyed in grouped.items():
            index = _ActionIndex()
            if sum(len(members) for members in keyed.values()) <= fold_limit:
                members = sorted((p for ps in keyed.values() for p in ps), key=_position)
                index.folded = self._bucket(members)
            else:
                for (p_anchor, r_anchor), members in keyed.items():
                    index.by_principal.setdefault(p_anchor, {})[r_anchor] = self._bucket(members)
            self._by_action[action] = index
        self.empty = cedarpy.PolicySet.from_str("")
        self._merged = _MergedSets(self.buckets)

    def _bucket(self, members: list[Policy]) -> Bucket:
        bucket = Bucket(len(self.buckets), tuple(members), build_policy_set(members))
        self.buckets.append(bucket)
        return bucket

    def lookup(
        self,
        action: UID,
        principal_anchors: Sequence[Anchor],
        resource_anchors: Sequence[Anchor],
    ) -> tuple[int, ...]:
        """The numbers of the buckets a request reaches, in ascending order."""
        index = self._by_action.get(action)
        if index is None:
            return ()
        if index.folded is not None:
            return (index.folded.number,)
        found: list[int] = []
        for p_anchor in principal_anchors:
            by_resource = index.by_principal.get(p_anchor)
            if by_resource is None:
                continue
            for r_anchor in resource_anchors:
                bucket = by_resource.get(r_anchor)
                if bucket is not None:
                    found.append(bucket.number)
        found.sort()
        return tuple(found)

    @property
    def actions(self) -> list[UID]:
        """Every action some policy applies to, sorted."""
        return sorted(self._by_action)

    def reaches_permit(
        self,
        action: UID,
        principal_anchors: Sequence[Anchor] | None,
        resource_anchors: Sequence[Anchor] | None,
    ) -> bool:
        """Whether a request for ``action`` whose principal and resource have these
        anchors (None: any principal, any resource) can reach a ``permit`` policy. When
        it cannot, every such request is denied (Cedar's default) without evaluating."""
        index = self._by_action.get(action)
        if index is None:
            return False
        buckets: list[Bucket] = [] if index.folded is None else [index.folded]
        for p_anchor, by_resource in index.by_principal.items():
            if principal_anchors is not None and p_anchor not in principal_anchors:
                continue
            buckets.extend(
                bucket
                for r_anchor, bucket in by_resource.items()
                if resource_anchors is None or r_anchor in resource_anchors
            )
        return any(policy.effect == "permit" for bucket in buckets for policy in bucket.policies)

    def merged(self, key: tuple[int, ...]) -> cedarpy.PolicySet | None:
        """The union of several buckets as one policy set, if built; else schedule it."""
        return self._merged.get(key)

    def policies_in(self, key: tuple[int, ...]) -> int:
        """How many policies the buckets ``key`` hold."""
        return sum(len(self.buckets[number].policies) for number in key)


def _position(policy: Policy) -> int:
    return policy.position


class _MergedSets:
    """An LRU of merged policy sets, filled by a background thread on demand."""

    def __init__(self, buckets: list[Bucket]) -> None:
        self._buckets = buckets
        self._sets: OrderedDict[tuple[int, ...], cedarpy.PolicySet] = OrderedDict()
        self._pending: set[tuple[int, ...]] = set()
        self._seen: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[int, ...]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def get(self, key: tuple[int, ...]) -> cedarpy.PolicySet | None:
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                return found
            if key in self._pending:
                return None
            # Merge a combination only when it recurs, and keep the backlog short:
            # past the cache's size, building sets that are evicted before reuse
            # costs the request threads GIL time and gains nothing.
            if key not in self._seen:
                self._seen[key] = None
                if len(self._seen) > SEEN_SIZE:
                    self._seen.popitem(last=False)
                return None
            if len(self._pending) >= MAX_PENDING:
                return None
            self._pending.add(key)
            self._queue.put(key)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._build, name="docket-policy-slices", daemon=True
                )
                self._worker.start()
        return None

    def _build(self) -> None:
        while True:
            try:
                key = self._queue.get(timeout=2.0)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            members = sorted(
                (p for number in key for p in self._buckets[number].policies), key=_position
            )
            policy_set = build_policy_set(members)
            with self._lock:
                self._pending.discard(key)
                self._sets[key] = policy_set
                while len(self._sets) > MERGED_CACHE_SIZE:
                    self._sets.popitem(last=False)
