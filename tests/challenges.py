"""Challenges for the challenge-store tests (SQLite in tests/attestation, PostgreSQL in
tests/e2e): a PendingChallenge with distinct bytes in every field, and consumer
processes that race to consume the same challenges."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from attestation._verifier import PendingChallenge

NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[1]

# A consumer process: `python -c CONSUMER URL THREADS ID…`. Prints "ready", waits for a
# line on stdin (so that processes start racing together), then THREADS threads each try
# every ID; prints "OK <id>" per success and "ERR <id> <message>" per refusal.
CONSUMER = textwrap.dedent(
    """
    import sys, threading
    from datetime import datetime
    from attestation._store import ChallengeStore
    from attestation._errors import EvidenceError
    url, threads, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    store = ChallengeStore(url)
    now = datetime.fromisoformat("2025-06-01T12:00:00+00:00")
    lock, lines, barrier = threading.Lock(), [], threading.Barrier(int(sys.argv[2]))
    print("ready", flush=True)
    sys.stdin.readline()
    def run():
        barrier.wait()
        for cid in ids:
            try:
                store.consume(cid, now=now)
                line = f"OK {cid}"
            except EvidenceError as exc:
                line = f"ERR {cid} {exc}"
            with lock:
                lines.append(line)
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.close()
    print("\\n".join(lines), flush=True)
    """
)


def pending(
    challenge_id: str = "c-1",
    *,
    expires_at: datetime | None = None,
    tpm_manufacturer: str = "IBM",
) -> PendingChallenge:
    """A challenge with distinct bytes in every field."""
    return PendingChallenge(
        challenge_id=challenge_id,
        secret=b"secret-" + challenge_id.encode(),
        nonce=os.urandom(32),
        ak_public=b"\x00\x16ak-public-" + challenge_id.encode(),
        ek_hash=bytes(range(32)),
        expires_at=expires_at if expires_at is not None else NOW + timedelta(minutes=5),
        tpm_manufacturer=tpm_manufacturer,
    )


def race_in_processes(url: str, ids: list[str], processes: int, threads: int) -> list[str]:
    """Run consumer processes racing on ``ids``; return every output line but "ready"."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, url, str(threads), *ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        lines: list[str] = []
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            lines += out.splitlines()
        return lines
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
