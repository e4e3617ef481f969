"""Replay: re-decide recorded requests against a candidate bundle.

``record_requests`` keeps each decision's and placement's input beside its audit entry
(:mod:`audit._requests`). :func:`replay` reads those in a period, checks each against
its entry — the entry's payload must match its leaf hash, and the recorded request
its ``request_digest``, so a row that was swapped or altered is never replayed as if it
were the traffic — and decides it again with the candidate through the engine's own
path (:meth:`engine._core.evaluate.Engine.decide` / :meth:`~engine._core.evaluate.Engine.place`,
at the entry's own time), yielding the entry, what was decided then and what the
candidate decides.

Not reproduced: ``@fresh_policy`` staleness of a pulled bundle at the time (a property of
the serving replica, not of the request), and requests that were refused before they
were evaluated (their entries have no request to replay).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from audit import RequestKeys, Store, digest, read_recorded
from engine._core.evaluate import Engine
from engine._core.models import Request
from engine._core.placement import Workload
from engine._errors import EngineError

Outcome = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class Side:
    """One decision of a replayed request: allow/deny and its determining policies;
    for a placement the allowed sites, best first."""

    decision: Outcome
    policies: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """A recorded request decided again: its entry (index, time, kind), who asked for
    what (as the entry names them, and the principal's and resource's types), the
    decision recorded then and the candidate's. ``problem`` (then ``new`` is None) says
    why it could not be replayed: a row that does not open or does not match its entry."""

    index: int
    time: str
    kind: Literal["decision", "placement"]
    principal: str | None
    action: str | None
    resource: str | None
    principal_type: str
    resource_type: str
    recorded: Side | None
    new: Side | None
    problem: str | None = None

    @property
    def flipped(self) -> bool:
        """allow→deny or deny→allow."""
        return (
            self.recorded is not None
            and self.new is not None
            and self.recorded.decision != self.new.decision
        )

    @property
    def reranked(self) -> bool:
        """A placement whose allowed sites, or their order, changed."""
        return (
            self.kind == "placement"
            and self.recorded is not None
            and self.new is not None
            and self.recorded.sites != self.new.sites
        )


@dataclass(slots=True)
class Progress:
    """How far a replay got (for a progress line): rows read and replayed."""

    read: int = 0
    replayed: int = 0
    problems: int = 0
    total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _problem(index: int, time: str, kind: str, why: str) -> Replayed:
    return Replayed(
        index,
        time,
        "placement" if kind == "placement" else "decision",
        None,
        None,
        None,
        "?",
        "?",
        None,
        None,
        why,
    )


def replay(
    store: Store,
    keys: RequestKeys,
    candidate: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Iterator[Replayed]:
    """Every recorded request of the entries in ``[since, until)`` (all without them,
    selected with :meth:`audit.Store.index_range`) decided again by ``candidate``, in
    index order. A row that does not open, or does not match its entry, is yielded with
    its ``problem``; nothing is skipped silently. ``progress`` is called every 1,000
    rows. Raises :class:`audit.StoreError` when the database cannot be read."""
    if since is None and until is None:
        start, end = 0, store.extent()[2]
    else:
        start, end = store.index_range(since, until)
    state = Progress(total=end - start)
    entries = store.entries(start, end)
    pending_entry = next(entries, None)
    for row in read_recorded(store, keys, start, end):
        while pending_entry is not None and pending_entry.idx < row.index:
            pending_entry = next(entries, None)
        state.read += 1
        entry = (
            pending_entry if pending_entry is not None and pending_entry.idx == row.index else None
        )
        result = _one(row.index, row.time, row.request, row.error, entry, candidate)
        if result.problem is None:
            state.replayed += 1
        else:
            state.problems += 1
        if progress is not None and state.read % 1000 == 0:
            progress(state)
        yield result
    if progress is not None:
        progress(state)


def _one(
    index: int, time: str, recorded: Any, error: str | None, entry: Any, candidate: Engine
) -> Replayed:
    if error is not None:
        return _problem(index, time, "decision", error)
    kind = recorded.get("kind") if isinstance(recorded, dict) else None
    if entry is None or entry.payload is None:
        return _problem(index, time, str(kind), f"entry {index} has no payload to compare with")
    if hashlib.sha256(b"\x00" + entry.payload).digest() != entry.leaf:
        return _problem(index, time, str(kind), f"entry {index}'s payload does not match its leaf")
    document = json.loads(entry.payload)
    try:
        if kind == "decision":
            return _decision(index, time, recorded, document, candidate)
        if kind == "placement":
            return _placement(index, time, recorded, document, candidate)
    except (ValidationError, KeyError, TypeError) as exc:
        return _problem(index, time, str(kind), f"the recorded request is malformed: {exc}")
    return _problem(index, time, str(kind), f"unknown recorded kind {kind!r}")


def _qualified(candidate: Engine, entity_type: str) -> str:
    bundle = candidate.bundle
    return bundle.qualify(entity_type) if bundle is not None else entity_type


def _when(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(document["time"]).replace("Z", "+00:00"))


def _recorded_side(document: dict[str, Any]) -> Side:
    return Side(
        "allow" if document.get("decision") == "allow" else "deny",
        tuple(document.get("policies") or ()),
    )


def _decision(
    index: int, time: str, recorded: dict[str, Any], document: dict[str, Any], candidate: Engine
) -> Replayed:
    fields = recorded["request"]
    if digest(fields) != document.get("request_digest"):
        return _problem(
            index,
            time,
            "decision",
            f"the request recorded for entry {index} does not match the entry's request_digest",
        )
    request = Request.model_validate(fields)
    try:
        decided = candidate.decide(request, now=_when(document))
        new = Side(decided.decision, decided.reasons)
    except EngineError as exc:  # refused under the candidate: the server would deny
        new = Side("deny", (), error=str(exc))
    return Replayed(
        index,
        time,
        "decision",
        document.get("subject"),
        document.get("action"),
        document.get("resource"),
        _qualified(candidate, request.principal.type),
        _qualified(candidate, request.resource.type),
        _recorded_side(document),
        new,
    )


def _placement(
    index: int, time: str, recorded: dict[str, Any], document: dict[str, Any], candidate: Engine
) -> Replayed:
    if digest(recorded["workload"]) != document.get("request_digest"):
        return _problem(
            index,
            time,
            "placement",
            f"the request recorded for entry {index} does not match the entry's request_digest",
        )
    workload = Workload.model_validate(recorded["workload"])
    detail = document.get("detail") or {}
    before = _recorded_side(document)
    before = Side(
        before.decision, before.policies, tuple(site["site"] for site in detail.get("allowed", ()))
    )
    try:
        placed = candidate.place(workload, recorded.get("sites"), now=_when(document))
        best = placed.allowed[0] if placed.allowed else None
        new = Side(
            "allow" if best else "deny",
            best.reasons if best else tuple(sorted({r for d in placed.denied for r in d.reasons})),
            tuple(site.site for site in placed.allowed),
        )
    except EngineError as exc:
        new = Side("deny", (), error=str(exc))
    kind = "Data" if workload.kind == "dataset" else "Workload"
    return Replayed(
        index,
        time,
        "placement",
        document.get("subject"),
        document.get("action"),
        document.get("resource"),
        _qualified(candidate, kind),
        _qualified(candidate, "Site"),
        before,
        new,
    )
