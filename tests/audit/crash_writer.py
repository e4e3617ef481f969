"""A process that records audit entries from several threads until it is killed.

Run by ``test_crash.py``: ``python crash_writer.py DB_URL KEYS_DIR THREADS CHECKPOINT_EVERY
[--stall-signing]``. After each ``record()`` returns it prints ``INDEX LEAF_HEX`` for every
receipt (an acknowledged, supposedly durable entry) and flushes. With ``--stall-signing``
each checkpoint signature takes a while and is announced with a ``signing SIZE`` line, so
the test can kill the process while a checkpoint is being signed.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

import audit._log
from audit import AuditLog, Entry

_print_lock = threading.Lock()


def _say(text: str) -> None:
    with _print_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def _stall_signing() -> None:
    sign = audit._log.sign_checkpoint

    def slow_sign(body: Any, signers: Any) -> str:
        _say(f"signing {body.size}\n")
        time.sleep(0.5)
        return sign(body, signers)

    audit._log.sign_checkpoint = slow_sign  # type: ignore[assignment]


def _record_forever(log: AuditLog, worker: int) -> None:
    for n in itertools.count():
        batch = [
            Entry(
                kind="decision",
                time=datetime.now(UTC),
                subject=f'Docket::User::"w{worker}"',
                action='Docket::Action::"read"',
                resource=f'Docket::Data::"d{n}"',
                decision="allow" if n % 3 else "deny",
                detail={"worker": worker, "n": n, "part": part},
            )
            for part in range(1 + n % 3)  # batches of 1, 2 and 3 entries
        ]
        receipts = log.record(batch)
        _say("".join(f"{r.index} {r.leaf_hash.hex()}\n" for r in receipts))


def main() -> None:
    # stdout carries only acknowledgements; the log's own messages go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    url, keys, threads, every = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if "--stall-signing" in sys.argv[5:]:
        _stall_signing()
    log = AuditLog.open(url, keys=keys, checkpoint_every=every, checkpoint_interval=0.05)
    log.start()
    workers = [
        threading.Thread(target=_record_forever, args=(log, worker), daemon=True)
        for worker in range(threads)
    ]
    for worker in workers:
        worker.start()
    _say("started\n")
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
