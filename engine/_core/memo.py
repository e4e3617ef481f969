"""The decision memo: a request decided before under the same bundle is not evaluated again.

A decision is a pure function of the bundle and the request: the principal, action and
resource, the context (the device posture is in it: :mod:`engine._service.posture` puts
the verified claims there on every call, after checking the credential's validity window
and the revocation list at that call's ``now``) and the per-request entities. Nothing in
the engine reads the clock: ``now`` only stamps ``evaluated_at``, which a hit restamps.
So an entry stays right for as long as its bundle is in force, and a request whose inputs
changed (a posture that expired, a ``context.time`` an hour later) is another key.

The key is the request in :mod:`marshal` form (format 0: no back-references, no interning
flags), which is exact about types: ``1``, ``1.0``, ``True`` and an ``IntEnum`` member
differ (a subclass does not marshal at all, and such a request is simply not memoised).
Attribute order is part of the key, so the same fields sent in another order are a second
entry, never a wrong one. Entries belong to one bundle revision (its content hash):
:meth:`DecisionMemo.reset` empties the memo when the engine swaps bundles (entities come
with the bundle) and when its owner says the CA or the revocation list changed. The memo
is bounded in entries and in (approximate) bytes, least recently used out first.
"""

from __future__ import annotations

import marshal
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from engine._core.models import Decision, Request

MEMO_ENTRIES = 50_000
"""Decisions kept at most (0: no memo)."""
MEMO_BYTES = 32 * 1024 * 1024
"""Approximate bytes kept at most: keys, reasons and error messages, and a fixed
overhead per entry."""
_new = object.__new__
_set = object.__setattr__
_STAMPED = frozenset({"evaluated_at"})
ENTRY_OVERHEAD = 320
"""Bytes counted per entry besides its key and texts (dict slot, tuples, the Decision)."""


def memo_key(request: Request) -> bytes | None:
    """The request in exact form, or None when it holds a value that does not marshal
    (a subclass of a builtin type, an object of its own): then it is not memoised."""
    principal, action, resource = request.principal, request.action, request.resource
    try:
        return marshal.dumps(
            (
                principal.type,
                principal.id,
                action.type,
                action.id,
                resource.type,
                resource.id,
                request.context,
                request.entities,
            ),
            0,
        )
    except ValueError:  # unmarshallable, or nested deeper than marshal goes
        return None


@dataclass(frozen=True, slots=True, eq=False)
class Memoised:
    """A decision as first evaluated, and the bytes of per-request entities its request
    adds to a batch's total (the batch limit counts a remembered request too)."""

    decision: Decision
    entity_bytes: int

    def at(self, now: datetime) -> Decision:
        """The decision with ``evaluated_at`` set to this call's ``now``; the rest (reasons,
        errors, version, count) is the same objects as first evaluated. What
        ``model_copy(update={"evaluated_at": now})`` gives (the same fields, the same
        fields set), made without its generic copying: this runs for every hit."""
        decision = self.decision
        copied = _new(Decision)
        _set(copied, "__dict__", {**decision.__dict__, "evaluated_at": now})
        _set(copied, "__pydantic_fields_set__", decision.__pydantic_fields_set__ | _STAMPED)
        _set(copied, "__pydantic_extra__", None)
        _set(copied, "__pydantic_private__", None)
        return copied


@dataclass(frozen=True, slots=True)
class MemoStats:
    """Counters for metrics: lookups answered (hits) and not (misses) since the engine
    started, and what is kept now."""

    hits: int
    misses: int
    entries: int
    bytes: int


def _size(key: bytes, decision: Decision) -> int:
    texts = sum(len(reason) for reason in decision.reasons)
    texts += sum(len(error.message) + len(error.policy or "") for error in decision.errors)
    return ENTRY_OVERHEAD + len(key) + texts


class DecisionMemo:
    """A bounded LRU of decisions for the bundle revision in force. Thread-safe."""

    def __init__(self, max_entries: int = MEMO_ENTRIES, max_bytes: int = MEMO_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[Memoised, int]] = OrderedDict()
        self._bytes = 0
        self._revision: str | None = None
        self.epoch = 0
        """Grows with each :meth:`reset`: read it before a lookup and hand it to
        :meth:`store`, so that nothing evaluated before a reset is kept after it."""
        self._hits = 0
        self._misses = 0

    def reset(self, revision: str | None) -> None:
        """Forget every decision; from now on only ``revision``'s are kept."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._revision = revision
            self.epoch += 1

    def lookup(self, revision: str, keys: list[bytes | None]) -> list[Memoised | None]:
        """What is remembered for each key under ``revision`` (one lock for a batch);
        every key counts as a hit or a miss."""
        with self._lock:
            entries = self._entries
            current = revision == self._revision
            found: list[Memoised | None] = []
            for key in keys:
                entry = entries.get(key) if current and key is not None else None
                if entry is None:
                    found.append(None)
                    continue
                entries.move_to_end(key)  # type: ignore[arg-type]  # key is not None here
                found.append(entry[0])
            hits = sum(item is not None for item in found)
            self._hits += hits
            self._misses += len(found) - hits
        return found

    def store(self, epoch: int, items: list[tuple[bytes, Memoised]]) -> None:
        """Remember decisions evaluated since :attr:`epoch` was ``epoch``; dropped if the
        memo was reset since (a swap, a CA change during the evaluation), and one alone
        over a 64th of the byte bound is not kept."""
        if self.max_entries <= 0:
            return
        sized = [(key, item, _size(key, item.decision)) for key, item in items]
        with self._lock:
            if epoch != self.epoch:
                return
            entries = self._entries
            for key, item, size in sized:
                if size * 64 > self.max_bytes:
                    continue
                previous = entries.pop(key, None)
                if previous is not None:
                    self._bytes -= previous[1]
                entries[key] = (item, size)
                self._bytes += size
            while len(entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, size) = entries.popitem(last=False)
                self._bytes -= size

    def stats(self) -> MemoStats:
        """Hits and misses so far, entries and bytes kept."""
        with self._lock:
            return MemoStats(self._hits, self._misses, len(self._entries), self._bytes)
