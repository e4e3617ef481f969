"""Recording's cost on the serve path: ``docket serve`` without against with
``record_requests``.

Two servers of this tree side by side (one worker each, durable audit on SQLite, the
default bundle), one of them with ``DOCKET_RECORD_REQUESTS=true``: each decision's
input (principal, action, resource, context with the verified posture, entities,
provenance) is serialized on the audit writer's thread, sealed with AES-256-GCM and
inserted beside its entry in the entry's own transaction. h2load alternates between
them in rounds (:func:`benchmarks.bench_compare.setting_compared`: ``compare`` (b)'s mix
and checks, as ``shadow`` runs them). Reported: Authorize calls/s and server CPU µs per
call of each (medians over the rounds), and their ratios; then, from each server's
database, that the recording one holds a request for every decision and the other none.
The storage a recorded request takes, and replay's speed, are ``replay``'s figures.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from benchmarks._load import h2load_version, workdir
from benchmarks.bench_compare import setting_compared


def _counts(database: Path) -> tuple[int, int]:
    """(decision entries, recorded requests) in a server's SQLite log."""
    with closing(sqlite3.connect(database)) as db:
        decisions = db.execute("SELECT count(*) FROM audit_entry WHERE kind = 'decision'")
        recorded = db.execute("SELECT count(*) FROM audit_request")
        return int(decisions.fetchone()[0]), int(recorded.fetchone()[0])


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its table, return its figures."""
    if h2load_version() is None:
        print("  SKIPPED (h2load not found: apt-get install nghttp2-client)")
        return {"skipped": "no h2load"}
    with workdir("docket-bench-record-") as tmp:
        figures = setting_compared(
            tmp,
            {"DOCKET_RECORD_REQUESTS": "true"},
            quick=quick,
            names=("plain", "recording"),
            labels=("without", "record_requests"),
        )
        plain = _counts(tmp / "base" / "docket.db")
        recording = _counts(tmp / "this" / "docket.db")
    if plain[1] != 0 or recording[1] != recording[0] or not recording[0]:
        raise AssertionError(
            f"recorded requests: {plain[1]} of {plain[0]} decisions without recording, "
            f"{recording[1]} of {recording[0]} with it"
        )
    print(f"  recorded: {recording[1]:,} requests for {recording[0]:,} decisions; none without")
    figures["recorded_requests"] = recording[1]
    return figures
