"""A site's side of the collector: build the next push from the site's audit store
(:func:`next_push`), send it (:class:`CollectorClient`), and keep the checkpoint as
final once the configured witnesses cosigned it (:func:`finalize`,
:func:`final_checkpoint`).

A push ends at one of the site's own signed checkpoints: the largest within
:data:`~audit._collector.MAX_ENTRIES` of what the collector holds (a backlog after a
partition goes as several pushes, each verified on its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from audit._collector import MAX_BODY, MAX_ENTRIES, Push
from audit._cosignature import CosignedCheckpoint, open_cosigned_checkpoint, with_cosignatures
from audit._errors import CosignatureError, KeyFormatError, WitnessError
from audit._note import Checkpoint, VerifierKey, parse_note
from audit._store import Store
from audit._witness_client import WitnessClient, _cosign_one, http_request

__all__ = [
    "FINAL_META",
    "CollectorClient",
    "PushSource",
    "final_checkpoint",
    "finalize",
    "next_push",
]

FINAL_META = "final_checkpoint"
"""The audit store's meta key holding the latest final checkpoint (cosigned note)."""


class _Row(Protocol):
    @property
    def payload(self) -> bytes | None: ...
    @property
    def leaf(self) -> bytes: ...


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


class _Signed(_Sized, Protocol):
    @property
    def note(self) -> str: ...


class PushSource(Protocol):
    """What a push is built from: a site's audit :class:`~audit._store.Store`, or the
    simulation benchmark's in-memory log."""

    def checkpoints(self) -> Sequence[_Signed]: ...
    def entries(self, start: int, end: int) -> Iterable[_Row]: ...
    def consistency_proof(self, old_size: int, new_size: int) -> Sequence[bytes]: ...
    def head(self) -> _Sized: ...


def next_push(
    store: PushSource,
    site: str,
    old_size: int,
    *,
    limit: int = MAX_ENTRIES,
    heartbeat: bool = False,
) -> Push | None:
    """The push that takes the collector from ``old_size`` to the largest stored
    checkpoint at most ``limit`` entries further (else the next one), or None when
    there is no checkpoint past ``old_size``. With ``heartbeat``, when there is none,
    the checkpoint of ``old_size`` again, without entries (the collector cosigns it
    anew: the site is alive and has nothing new). What else the site reports (its
    bundle revision, its last pull) goes on with :func:`dataclasses.replace`."""
    checkpoints = store.checkpoints()
    later = [c for c in checkpoints if c.size > old_size]
    if not later and heartbeat:
        later = [c for c in checkpoints if c.size == old_size]
    if not later:
        return None
    within = [c for c in later if c.size - old_size <= limit]
    target = within[-1] if within else later[0]
    rows = store.entries(old_size, target.size)
    proof = store.consistency_proof(old_size, target.size) if old_size else []
    return Push(
        site=site,
        old_size=old_size,
        proof=tuple(proof),
        note=target.note,
        checkpoint=Checkpoint.parse_body(parse_note(target.note).text),
        entries=tuple((row.payload, row.leaf) for row in rows),
        head=store.head().size,
    )


@dataclass(frozen=True)
class CollectorClient:
    """The collector at ``url`` (http or https)."""

    url: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise KeyFormatError(f"a collector URL is http(s), not {self.url!r}")

    def _get(self, path: str, body: bytes | None = None) -> tuple[int, Any]:
        status, _, answer = http_request(
            f"collector {self.url}", self.url.rstrip("/") + path, body, self.timeout, MAX_BODY
        )
        try:
            return status, json.loads(answer)
        except ValueError:
            raise WitnessError(status, f"collector {self.url}: HTTP {status}, not JSON") from None

    def size(self, site: str) -> int:
        """The size the collector holds for ``site``. Raises
        :class:`~audit._errors.WitnessError` (404: the collector does not know it)."""
        status, answer = self._get(f"/sites/{site}")
        if status != 200:
            raise WitnessError(status, f"collector {self.url}: {answer.get('error')}")
        return int(answer["size"])

    def push(self, push: Push) -> str:
        """Send ``push``; the collector's cosignature lines. Raises
        :class:`~audit._errors.WitnessError` with the collector's status and reason
        (``size`` with a 409)."""
        from audit._collector import encode_push

        status, answer = self._get("/push", encode_push(push))
        if status != 200:
            size = answer.get("size") if isinstance(answer, dict) else None
            reason = answer.get("error") if isinstance(answer, dict) else answer
            raise WitnessError(status, f"collector {self.url}: {reason}", size=size)
        return str(answer["cosignatures"])

    def statuses(self) -> list[dict[str, Any]]:
        """Every site's status as the collector holds it."""
        status, answer = self._get("/sites")
        if status != 200 or not isinstance(answer, list):
            raise WitnessError(status, f"collector {self.url}: /sites: HTTP {status}")
        return answer


def finalize(
    store: Store,
    note: str,
    log_keys: Sequence[VerifierKey],
    witnesses: Sequence[WitnessClient],
    *,
    quorum: int | None = None,
) -> CosignedCheckpoint:
    """Gather the other witnesses' cosignatures of ``note`` (the collector's are in it
    already: a witness whose cosignature is there is not asked), verify the checkpoint
    as final (``quorum`` of ``witnesses``) and keep it in the store as
    :data:`FINAL_META`. Raises :class:`~audit._errors.CosignatureError` when it is
    not final."""
    checkpoint = Checkpoint.parse_body(parse_note(note).text)
    present = {(s.name, s.key_id) for s in parse_note(note).signatures}
    for client in witnesses:
        if (client.key.name, client.key.key_id) in present:
            continue
        try:
            cosignature = _cosign_one(client, note, checkpoint.size, store.consistency_proof)
        except (WitnessError, CosignatureError):
            continue
        note = with_cosignatures(note, [cosignature])
    cosigned = open_cosigned_checkpoint(
        note, log_keys, [client.key for client in witnesses], quorum=quorum
    )
    store.set_meta(FINAL_META, note)
    return cosigned


def final_checkpoint(store: Store) -> str | None:
    """The latest checkpoint the site took as final (with its cosignatures), or None."""
    return store.meta(FINAL_META)
