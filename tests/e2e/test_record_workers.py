"""``docket serve --workers 2 --record-requests`` (issue 18): each worker's decisions
have their requests recorded, committed through the supervisor's one writer
(``--audit-writer supervisor``, audit/_relay.py) or by each worker itself, and
``docket policy diff`` replays them all: a removed permit flips exactly the decisions it
alone allowed, whichever worker made them.

Which worker decided is read from the entry's bundle version: the bundle is not polled
(``DOCKET_BUNDLE_POLL_SECONDS``), and one worker alone is sent SIGHUP after a policy
that decides nothing was added, so from then on it answers with another version than
its sibling."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.docket_process import DOCKET, ROOT, Docket, authorize, start_docket
from recorded_traffic import ASKED, REMOVED, without_removed

pytestmark = pytest.mark.e2e

MARKER = (
    '@id("decides-nothing")\n'
    'permit (principal, action == Docket::Action::"share", resource) when { false };\n'
)
WAIT = 30.0
ROUNDS = 40  # rounds of ASKED at most until both workers made a decision that flips


@dataclass(frozen=True)
class Answer:
    index: int
    decision: int
    reasons: tuple[str, ...]
    version: str


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's spawned children; not its
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == supervisor and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def asked(server: Docket, user: str, data: str) -> Answer:
    """One Authorize on a connection of its own (the kernel gives it to either worker)."""
    reply = authorize(server, user, data)
    return Answer(reply.receipt.index, reply.decision, tuple(reply.reasons), reply.bundle_version)


@contextmanager
def two_workers(
    root: Path, writer: str, answers: list[Answer]
) -> Iterator[tuple[Docket, str, str]]:
    """A 2-worker recording server whose workers answer with different bundle versions:
    (the server, the version of the worker left alone, the reloaded worker's). The
    answers that told them apart are added to ``answers``."""
    server = start_docket(
        root,
        *("--admission", "off", "--workers", "2", "--audit-writer", writer, "--record-requests"),
        env={"DOCKET_BUNDLE_POLL_SECONDS": "3600"},
    )
    try:
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2, workers
        answers.append(asked(server, "heidi", "public-website"))
        alone = answers[-1].version
        (root / "policies" / "marker.cedar").write_text(MARKER)
        os.kill(workers[0], signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while True:
            answers.append(asked(server, "heidi", "public-website"))
            if answers[-1].version != alone:
                break
            assert time.monotonic() < deadline, "the signalled worker never reloaded"
        yield server, alone, answers[-1].version
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("writer", ["supervisor", "per-worker"])
def test_requests_recorded_by_both_workers_replay_to_the_known_flips(
    writer: str, tmp_path: Path
) -> None:
    root = tmp_path / "serve"
    answers: list[Answer] = []
    with two_workers(root, writer, answers) as (server, alone, reloaded):
        for _ in range(ROUNDS):
            answers += [asked(server, user, data) for user, data in ASKED]
            flipping = {a.version for a in answers if a.reasons == (REMOVED,)}
            if flipping == {alone, reloaded}:
                break
        else:
            pytest.fail(f"in {ROUNDS} rounds, decisions that flip came from {flipping} only")
    expected = sorted(a.index for a in answers if a.reasons == (REMOVED,))
    assert len({a.index for a in answers}) == len(answers)
    # Every decision (the worker-identifying ones before too) has its request recorded.
    with closing(sqlite3.connect(server.data_dir / "docket.db")) as db:
        decisions = db.execute("SELECT count(*) FROM audit_entry WHERE kind = 'decision'")
        recorded = db.execute("SELECT count(*) FROM audit_request")
        (count,) = decisions.fetchone()
        assert recorded.fetchone()[0] == count == len(answers)

    candidate = without_removed(ROOT / "policies", tmp_path / "candidate")
    done = subprocess.run(
        [DOCKET, "policy", "diff", str(candidate), "--data-dir",
         str(server.data_dir), "--live", str(root / "policies"), "--format", "json",
         "--examples", str(len(expected) + 1)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == []
    assert report["replayed"] == {"decisions": len(answers), "placements": 0}
    assert report["flips"] == {"allow→deny": len(expected), "deny→allow": 0, "total": len(expected)}
    (group,) = report["by_policy"]
    assert group["key"] == REMOVED
    assert sorted(example["index"] for example in group["examples"]) == expected
    verified = subprocess.run(
        [DOCKET, "audit", "verify", "--data-dir", str(server.data_dir)], capture_output=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
