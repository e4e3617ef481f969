"""What an adapter made of an Authorize message, remembered by the message's bytes.

A client sends the same request again and again (a service checking the same principal
against the same resource, a device its same token). Reading the message into an engine
:class:`~engine.Request` (its context Struct, its uids) and attaching the device's
posture cost more than deciding it from the decision memo. :class:`RequestMemo` keeps,
for each recent message (its exact serialized bytes and the caller's mTLS identity, both
of which the parse depends on), the request read from it and the request with the
posture last attached to it and that posture's provenance.

What it keeps is never trusted on its own:

* the posture is read again on every call (a device token's expiry and revocation, the
  peer's certificate), and the attached request is reused only when that read gives the
  very same verified posture object (a token or certificate cache hit); any other
  posture attaches afresh;
* a message that does not parse is not remembered (its error is made again each time);
* what it holds is bounded: at most :data:`ENTRIES` messages of at most
  :data:`MAX_MESSAGE_BYTES` bytes each, least recently used out first; a larger message
  is read each time.

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

MAX_MESSAGE_BYTES = 4096
"""The largest serialized message remembered; a larger one is read every time."""


@dataclass(slots=True, eq=False)
class Attached:
    """A request with a posture attached, and the posture's provenance for the entry."""

    posture: Proven | None
    request: Request
    provenance: dict[str, Any]


@dataclass(slots=True, eq=False)
class Parsed:
    """A message's request as read (no posture), and the last posture attached to it."""

    request: Request
    attached: Attached | None = None

    def with_posture(self, posture: Proven | None) -> Attached | None:
        """What was attached last if ``posture`` is the same verified object, else None."""
        last = self.attached
        return last if last is not None and last.posture is posture else None


class RequestMemo:
    """Recent messages' :class:`Parsed` by (caller, serialized message); bounded. Used
    from one event loop's thread."""

    def __init__(self, entries: int = ENTRIES, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self._entries = entries
        self._max_bytes = max_message_bytes
        self._kept: OrderedDict[tuple[str | None, bytes], Parsed] = OrderedDict()

    def key(self, caller: str | None, message: bytes) -> tuple[str | None, bytes] | None:
        """The key of ``message`` from ``caller``, or None when it is not to be kept."""
        if self._entries <= 0 or len(message) > self._max_bytes:
            return None
        return (caller, message)

    def get(self, key: tuple[str | None, bytes]) -> Parsed | None:
        """What was kept under ``key``, now the most recently used, or None."""
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def put(self, key: tuple[str | None, bytes], parsed: Parsed) -> None:
        """Keep ``parsed`` under ``key``; the least recently used out past the bound."""
        self._kept[key] = parsed
        if len(self._kept) > self._entries:
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)
