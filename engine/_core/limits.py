"""Bounds on what one request may ask of the engine, checked before the costly work.

Why: cedarpy computes the transitive closure of the entity hierarchy when per-request
entities are added (``Entities.with_added_json_str``), holding the GIL. Its cost grows
about with the cube of a chain's length, so one 37 KiB request (a chain of 1,200
groups) stalled every API of the process for 37-60 s. Measured on the 2-core machine
the limits were chosen on (default bundle, one ``Engine.decide``, best of 3):

    per-request entities                               time
    chain of 32 / 64 / 128 / 300 / 1,200             1.9 / 5.8 / 41 / 373 ms / ~40 s
    32 layers x 8 groups, 2 parents each (257)         158 ms
    16 layers x 16 groups, all parents (257)           361 ms
    1,000 groups as parents of one user (fan-out)      14 ms
    4,000 unrelated entities                           45 ms

The cost follows the number of (entity, ancestor) pairs, which the entity count bounds
(at most n(n-1)/2 pairs) and the depth and fan-out limits shape. Within the limits
below, the worst shapes measured (a user under L layers of W groups, each group a child
of every group of the layer above):

    31 layers x 3 (94 entities, 32 deep)    21.5 ms      12 x 8 (97)     17.5 ms
    24 x 4 (97)                             16.8 ms       6 x 16 (97)    19.5 ms

tests/e2e/test_attacks_evaluation.py floods ``docket serve`` (4 gRPC threads) from 4
clients with the 31 x 3 request for 5 s (~47 decided per second): gRPC health answered
in at most 68 ms (median 25 ms) and an ordinary Authorize in at most 136 ms (median
53 ms), where the 1,200-chain request had stalled both for 37-60 s. The limits alone
keep the process live: no separate executor for health is needed.

Context values cost far less (10,000 keys: 10 ms; a 1 MB string: 5 ms) but nest
without bound in the SDK and ``docket decide`` (a 500-deep value overflowed the stack),
so their depth, count and size are bounded too.

Over a limit is :class:`~engine.LimitExceeded` (gRPC RESOURCE_EXHAUSTED), naming the
limit and the value: ``entities: chain depth 1200 exceeds the limit of 32``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine._errors import LimitExceeded

UID = tuple[str, str]

MAX_REQUEST_ENTITIES = 100
"""Per-request entities in one request."""
MAX_PARENTS = 32
"""Parents of one per-request entity."""
MAX_CHAIN_DEPTH = 32
"""Entities on the longest ``in`` chain from a per-request entity, through per-request
and stored entities (``u0 in g1 in g2`` is 3)."""
MAX_ENTITY_BYTES = 64 * 1024
"""Size of a request's per-request entities as Cedar JSON."""
MAX_BATCH_ENTITIES = 1000
"""Per-request entities in all the requests of one batch: one for each of the largest
batch (MAX_BATCH). The worst batch within it is ten worst requests, ~0.2 s for its
caller; cedarpy takes the GIL for one request's entities at a time (~20 ms at worst),
so other callers run in between."""
MAX_BATCH_ENTITY_BYTES = 256 * 1024
"""Size of all the per-request entities of one batch as Cedar JSON."""
MAX_VALUE_DEPTH = 16
"""Nesting of records and sets in a context or in an entity's attributes."""
MAX_CONTEXT_VALUES = 4096
"""Values (record fields, set elements, scalars) in one context; the same bound applies
to all the attributes of a request's per-request entities together."""
MAX_CONTEXT_BYTES = 256 * 1024
"""Characters of strings and field names in one context (about its JSON size)."""


def check_value(value: Any, what: str, *, max_values: int, max_bytes: int) -> int:
    """Check one JSON-shaped value against the depth, count and size limits; return how
    many values it holds. Raises :class:`LimitExceeded` naming ``what``. A container
    longer than the values left is refused before it is walked, so a huge value costs
    no more than the limit; strings are measured with ``len``, not walked."""
    try:
        count, size = _walk(value, 1, max_values)
    except _Over as over:
        if over.deep:
            raise LimitExceeded(
                f"{what}: nesting deeper than the limit of {MAX_VALUE_DEPTH} levels"
            ) from None
        raise LimitExceeded(f"{what}: more than the limit of {max_values} values") from None
    if size > max_bytes:
        raise LimitExceeded(f"{what}: more than the limit of {max_bytes} bytes of strings")
    return count


class _Over(Exception):
    def __init__(self, deep: bool) -> None:
        self.deep = deep


_CONTAINERS = (dict, list, tuple)


def _walk(value: Any, depth: int, left: int) -> tuple[int, int]:
    """(values, characters of strings and keys) in ``value``; raises :class:`_Over`.
    Recursive, the depth checked first (a third of an explicit stack's cost)."""
    kind = type(value)
    if kind is str:
        return 1, len(value)
    if not isinstance(value, _CONTAINERS):
        return 1, 8
    if depth > MAX_VALUE_DEPTH:
        raise _Over(deep=True)
    if len(value) >= left:
        raise _Over(deep=False)
    count = 1
    size = 0
    if isinstance(value, dict):
        for key in value:
            size += len(key)
        value = value.values()
    for member in value:
        if type(member) is str:
            count += 1
            size += len(member)
        elif isinstance(member, _CONTAINERS):
            used, more = _walk(member, depth + 1, left - count)
            count += used
            size += more
        else:
            count += 1
            size += 8
    if count > left:
        raise _Over(deep=False)
    return count, size


def check_context(context: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Check a request's context against the depth, count and size limits and return it
    with the types of its entity references qualified with ``namespace`` (as
    :func:`engine._core.bundle.qualify_refs` does) — one walk for both, as this runs on every
    request. Raises :class:`LimitExceeded`."""
    counter = [0, 0]
    try:
        qualified: dict[str, Any] = _qualify(context, 1, counter, namespace)
    except _Over as over:
        if over.deep:
            raise LimitExceeded(
                f"context: nesting deeper than the limit of {MAX_VALUE_DEPTH} levels"
            ) from None
        raise LimitExceeded(
            f"context: more than the limit of {MAX_CONTEXT_VALUES} values"
        ) from None
    if counter[1] > MAX_CONTEXT_BYTES:
        raise LimitExceeded(f"context: more than the limit of {MAX_CONTEXT_BYTES} bytes of strings")
    return qualified


def _qualify(value: Any, depth: int, counter: list[int], namespace: str | None) -> Any:
    """A copy of a dict or list with entity reference types qualified; ``counter`` adds
    up [values, characters]. Raises :class:`_Over`; a container longer than the values
    left is refused before it is walked. About 1 µs on a typical context, and it
    replaces the walk that qualifying alone used to take."""
    if depth > MAX_VALUE_DEPTH:
        raise _Over(deep=True)
    counter[0] += len(value) + 1
    if counter[0] > MAX_CONTEXT_VALUES:
        raise _Over(deep=False)
    if isinstance(value, dict):
        ref = value.get("__entity")
        if len(value) == 1 and isinstance(ref, dict) and isinstance(ref.get("type"), str):
            counter[1] += 16 + sum(len(v) for v in ref.values() if isinstance(v, str))
            type_name = ref["type"]
            if namespace is not None and "::" not in type_name:
                return {"__entity": {**ref, "type": f"{namespace}::{type_name}"}}
            return value
        out: dict[str, Any] = {}
        for key, member in value.items():
            counter[1] += len(key)
            out[key] = _member(member, depth, counter, namespace)
        return out
    return [_member(member, depth, counter, namespace) for member in value]


def _member(member: Any, depth: int, counter: list[int], namespace: str | None) -> Any:
    """One member of a container at ``depth``: counted, and qualified if a container."""
    if type(member) is str:
        counter[1] += len(member)
        return member
    if isinstance(member, _CONTAINERS):
        return _qualify(member, depth + 1, counter, namespace)
    counter[1] += 8
    return member


def _uid(value: Any) -> UID | None:
    if isinstance(value, Mapping):
        type_name, entity_id = value.get("type"), value.get("id")
        if isinstance(type_name, str) and isinstance(entity_id, str):
            return (type_name, entity_id)
    return None


def check_entities(
    entities: Sequence[Any],
    stored_height: Callable[[UID], int],
) -> dict[UID, list[UID]]:
    """Check a request's per-request entities (already namespace-qualified) against the
    count, fan-out, attribute and chain-depth limits, before Cedar sees them. Return
    uid → direct parents. ``stored_height`` gives the longest chain above a stored
    entity (1 for one without parents or not stored). Raises :class:`LimitExceeded`;
    leaves malformed entities to Cedar, which refuses them."""
    if len(entities) > MAX_REQUEST_ENTITIES:
        raise LimitExceeded(
            f"entities: {len(entities)} per-request entities exceed the limit of "
            f"{MAX_REQUEST_ENTITIES}"
        )
    parents: dict[UID, list[UID]] = {}
    values = 0
    for position, entity in enumerate(entities):
        if not isinstance(entity, Mapping):
            continue
        uid = _uid(entity.get("uid"))
        listed = entity.get("parents", ())
        if isinstance(listed, list | tuple):
            if len(listed) > MAX_PARENTS:
                name = f'{uid[0]}::"{uid[1]}"' if uid else f"entities[{position}]"
                raise LimitExceeded(
                    f"entities: {name} has {len(listed)} parents; the limit is {MAX_PARENTS}"
                )
            if uid is not None:
                parents[uid] = [p for p in map(_uid, listed) if p is not None]
        for field in ("attrs", "tags"):
            if field in entity:
                values += check_value(
                    entity[field],
                    f"entities[{position}].{field}",
                    max_values=MAX_CONTEXT_VALUES,
                    max_bytes=MAX_ENTITY_BYTES,
                )
        if values > MAX_CONTEXT_VALUES:
            raise LimitExceeded(
                f"entities: more than the limit of {MAX_CONTEXT_VALUES} attribute values"
            )
    depth = chain_depth(parents, stored_height)
    if depth > MAX_CHAIN_DEPTH:
        raise LimitExceeded(f"entities: chain depth {depth} exceeds the limit of {MAX_CHAIN_DEPTH}")
    return parents


def heights(parents: Mapping[UID, Sequence[UID]], outside: Callable[[UID], int]) -> dict[UID, int]:
    """For each entity of ``parents``, the number of entities on the longest chain from it
    up through its parents; ``outside`` gives it for a parent not in ``parents``. A cycle
    is cut where it closes. Linear in the number of parent links, and iterative: a
    100,000-long chain does not touch the stack."""
    height: dict[UID, int] = {}
    on_path: set[UID] = set()
    for start in parents:
        if start in height:
            continue
        stack: list[tuple[UID, int]] = [(start, 0)]
        on_path.add(start)
        while stack:
            uid, next_parent = stack[-1]
            above = parents[uid]
            if next_parent < len(above):
                stack[-1] = (uid, next_parent + 1)
                parent = above[next_parent]
                if parent in parents and parent not in height and parent not in on_path:
                    on_path.add(parent)
                    stack.append((parent, 0))
                continue
            best = 0
            for parent in above:
                best = max(best, height.get(parent, 0) if parent in parents else outside(parent))
            height[uid] = best + 1
            on_path.discard(uid)
            stack.pop()
    return height


def chain_depth(parents: Mapping[UID, Sequence[UID]], outside: Callable[[UID], int]) -> int:
    """The longest chain (in entities) from any entity of ``parents``; see :func:`heights`."""
    return max(heights(parents, outside).values(), default=0)
