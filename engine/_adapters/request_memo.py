"""What an adapter made of an Authorize or BatchAuthorize message, remembered by the
message's bytes.

A client sends the same request again and again (a service checking the same principal
against the same resource, a page checking the same list of resources, a device its same
token). Reading the message into engine :class:`~engine.Request` values (their context
Structs, their uids) and attaching the device's posture cost more than deciding them
from the decision memo. :class:`RequestMemo` keeps, for each recent message (its type,
the caller's mTLS identity and its exact serialized bytes, all of which the parse
depends on), the requests read from it, and the requests with the postures last
attached to them and those postures' provenance.

What it keeps is never trusted on its own:

* every posture is read again on every call (a device token's expiry and revocation, the
  peer's certificate), and the attached requests are reused only when each read gives
  the very same verified posture object as last time (a token or certificate cache
  hit); any other posture attaches afresh;
* a message that does not parse is not remembered (its error is made again each time);
* what it holds is bounded: at most :data:`ENTRIES` messages, :data:`MAX_BYTES` bytes of
  messages in all, none over :data:`MAX_MESSAGE_BYTES`; the least recently used goes
  first, and a larger message is read each time.

The requests it hands out are shared between calls: a request and its context are
never edited in place (they are replaced), which the engine and the audit entries
already rely on for a batch's shared context.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine._core.models import Request
from engine._service.posture import Proven

ENTRIES = 4096
"""The most messages remembered."""

MAX_MESSAGE_BYTES = 128 * 1024
"""The largest serialized message remembered; a larger one is read every time (a batch
of 100 requests, each with a device token, is ~90 KB)."""

MAX_BYTES = 4 * 1024 * 1024
"""The most bytes of messages remembered in all. What a message is read into takes more
memory than its bytes: 3.7 times for a context of numbers, 11 times for many small objects
(measured with ``tracemalloc``), so this bounds the memo at about 45 MiB per worker in
the worst case."""

Key = tuple[str, str | None, bytes]
"""A message's type, its caller's SPIFFE ID (None: no mTLS) and its bytes."""

PostureKey = tuple[int, str]
"""Which requests of a message share one posture: their context object's id and their
device token (see ``DecisionsServicer._with_posture``)."""


@dataclass(slots=True, eq=False)
class Attached:
    """The requests with their postures attached, each one's provenance for its entry,
    and the postures they were attached with."""

    postures: dict[PostureKey, Proven | None]
    requests: list[Request]
    provenances: list[dict[str, Any]]


@dataclass(slots=True, eq=False)
class Parsed:
    """A message's requests as read (no posture), and the postures last attached."""

    requests: list[Request]
    attached: Attached | None = None

    def with_postures(self, postures: dict[PostureKey, Proven | None]) -> Attached | None:
        """What was attached last if every posture is the same verified object, else
        None."""
        last = self.attached
        if last is None or last.postures.keys() != postures.keys():
            return None
        for key, posture in postures.items():
            if last.postures[key] is not posture:
                return None
        return last


class RequestMemo:
    """Recent messages' :class:`Parsed` by :data:`Key`; bounded. Used from one event
    loop's thread."""

    def __init__(
        self,
        entries: int = ENTRIES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._entries = entries
        self._max_message = min(max_message_bytes, max_bytes)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._kept: OrderedDict[Key, Parsed] = OrderedDict()

    def key(self, kind: str, caller: str | None, message: bytes) -> Key | None:
        """The key of a ``kind`` message from ``caller``, or None when it is not kept."""
        if self._entries <= 0 or len(message) > self._max_message:
            return None
        return (kind, caller, message)

    def get(self, key: Key) -> Parsed | None:
        """What was kept under ``key``, now the most recently used, or None."""
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def put(self, key: Key, parsed: Parsed) -> None:
        """Keep ``parsed`` under ``key``; the least recently used out past the bounds."""
        if key in self._kept:
            return
        self._kept[key] = parsed
        self._bytes += len(key[2])
        while len(self._kept) > self._entries or self._bytes > self._max_bytes:
            (_, _, message), _ = self._kept.popitem(last=False)
            self._bytes -= len(message)

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def bytes(self) -> int:
        """Bytes of messages kept now."""
        return self._bytes
