"""One process writing to an audit log shared with others, for test_audit_postgres.py.

    python audit_writer_process.py URL KEYS TAG COUNT THREADS [--batch B] [--create] [--sign]

Prints ``ready`` and waits for a line on stdin, so that the test can start several
processes and release them together. Then opens the log at URL with the signing keys in
KEYS (creating the tables only with ``--create``), and THREADS threads record COUNT entries
between them, in ``record()`` calls of 1, 2, … B entries in turn (default: 1), every
entry's subject ``proc:TAG`` and its ``detail.n`` its number; with ``--sign`` another
thread signs checkpoints all along.
Each receipt is printed as soon as it is acknowledged: ``R <index> <leaf hex> <n>``.
Prints ``done`` after closing the log; exits 1, the errors on stderr, if anything failed.
Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import structlog

from audit import AuditError, AuditLog, Entry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("keys", type=Path)
    parser.add_argument("tag")
    parser.add_argument("count", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--sign", action="store_true")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    print("ready", flush=True)
    if sys.stdin.readline() != "go\n":
        return 2  # the test went away before releasing us
    log = AuditLog.open(
        args.url,
        keys=args.keys,
        create=args.create,
        checkpoint_every=100,
        checkpoint_interval=0.05,
    ).start()
    out = threading.Lock()
    errors: list[str] = []
    stop = threading.Event()

    def write(first: int) -> None:
        numbers = list(range(first, args.count, args.threads))
        sizes = itertools.cycle(range(1, args.batch + 1))
        try:
            while numbers:
                size = next(sizes)
                batch, numbers = numbers[:size], numbers[size:]
                entries = [
                    Entry(
                        kind="decision",
                        time=datetime.now(UTC),
                        subject=f"proc:{args.tag}",
                        decision="allow",
                        detail={"n": n},
                    )
                    for n in batch
                ]
                receipts = log.record(entries)
                indices = [receipt.index for receipt in receipts]
                if indices != list(range(indices[0], indices[0] + len(batch))):
                    errors.append(f"writer {first}: a batch got indices {indices}")
                with out:
                    for receipt, n in zip(receipts, batch, strict=True):
                        sys.stdout.write(f"R {receipt.index} {receipt.leaf_hash.hex()} {n}\n")
                    sys.stdout.flush()
        except AuditError as exc:
            errors.append(f"writer {first}: {exc!r}")

    def sign() -> None:
        while not stop.wait(0.005):
            try:
                log.checkpoint()
            except AuditError as exc:
                errors.append(f"checkpointer: {exc!r}")
                return

    writers = [threading.Thread(target=write, args=(i,)) for i in range(args.threads)]
    signer = threading.Thread(target=sign)
    for thread in writers:
        thread.start()
    if args.sign:
        signer.start()
    for thread in writers:
        thread.join()
    stop.set()
    if args.sign:
        signer.join()
    log.close()
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print("done", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
