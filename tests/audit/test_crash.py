"""Crash safety: an entry whose ``record()`` returned survives a SIGKILL of the writer,
and the log verifies (and takes more entries) after the restart.

A separate process (``crash_writer.py``) records from several threads and prints every
receipt once ``record()`` returns; the test kills it with SIGKILL at different moments,
then checks the database as the next process to open it would see it.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit import AuditLog, Entry, Store, verify_store
from audit._keys import KeyRing

WRITER = Path(__file__).with_name("crash_writer.py")
THREADS = 8


class Writer:
    """The writer process and the receipts it acknowledged, read as they come."""

    def __init__(self, url: str, keys: Path, checkpoint_every: int, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, WRITER, url, keys, str(THREADS), str(checkpoint_every), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.acked: dict[int, str] = {}
        self.signing: list[int] = []
        self.last = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as stream:
            for line in stream:
                self._lines.put(line)
        self._lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr as stream:
            self._stderr.extend(stream)

    def _take(self, line: str) -> None:
        if not line.endswith("\n"):
            return  # cut off by the kill: never acknowledged as a whole
        self.last = line
        words = line.split()
        if not words:
            return
        if words[0] == "signing":
            self.signing.append(int(words[1]))
        elif len(words) == 2 and words[0].isdigit():
            index, leaf = int(words[0]), words[1]
            assert index not in self.acked, f"index {index} acknowledged twice"
            self.acked[index] = leaf

    def read_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read lines until ``done()`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                raise AssertionError(
                    f"writer stalled at {len(self.acked)} acks; stderr: {self._stderr}"
                ) from None
            if line is None:
                raise AssertionError(f"writer exited early: {''.join(self._stderr)}")
            self._take(line)

    def kill(self) -> None:
        """SIGKILL by PID, then take in what it had printed before dying."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=10)
        while (line := self._lines.get_nowait()) is not None:
            self._take(line)


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, Path]:
    return f"sqlite:///{tmp_path / 'docket.db'}", tmp_path / "keys"


def assert_survived(url: str, keys: Path, acked: dict[int, str]) -> int:
    """Every acknowledged entry is there with its leaf hash, and the log verifies.
    Returns the size of the log."""
    verifiers = KeyRing(keys).verifiers()
    store = Store(url, create=False)
    try:
        missing = [i for i in acked if store.entry(i) is None]
        assert not missing, f"{len(missing)} acknowledged entries lost, first {min(missing)}"
        wrong = [i for i, leaf in acked.items() if store.entry(i).leaf.hex() != leaf]  # type: ignore[union-attr]
        assert not wrong, f"entries {wrong[:5]} do not have the leaf hash that was acknowledged"
        verdict = verify_store(store, verifiers)
        assert verdict.log.size > max(acked)
        return verdict.log.size
    finally:
        store.close()


def append_after_restart(url: str, keys: Path, size_before: int) -> None:
    """A new process-lifetime of the log opens it, appends, signs, and it still verifies."""
    log = AuditLog.open(url, keys=keys, create=False).start()
    try:
        receipts = log.record(
            [
                Entry(kind="audit", time=datetime.now(UTC), action="restart", detail={"n": n})
                for n in range(3)
            ]
        )
    finally:
        log.close()
    assert [r.index for r in receipts] == [size_before, size_before + 1, size_before + 2]
    store = Store(url, create=False)
    try:
        verdict = verify_store(store, KeyRing(keys).verifiers())
        assert verdict.log.size == size_before + 3
        assert verdict.anchor is not None
        assert verdict.anchor.size == size_before + 3  # close() signed a last checkpoint
    finally:
        store.close()


@pytest.mark.parametrize("acks", [200, 2_000, 5_000])
def test_acknowledged_entries_survive_sigkill(acks: int, paths: tuple[str, Path]) -> None:
    url, keys = paths
    writer = Writer(url, keys, 100)
    try:
        writer.read_until(lambda: len(writer.acked) >= acks, timeout=20)
    finally:
        writer.kill()
    assert len(writer.acked) >= acks
    size = assert_survived(url, keys, writer.acked)
    append_after_restart(url, keys, size)


def test_sigkill_while_a_checkpoint_is_being_signed(paths: tuple[str, Path]) -> None:
    url, keys = paths
    writer = Writer(url, keys, 50, "--stall-signing")
    try:
        # Let a first checkpoint land, then kill in the middle of the next signature,
        # with the writer threads still appending.
        writer.read_until(
            lambda: len(writer.signing) >= 2 and writer.last.startswith("signing"), timeout=20
        )
    finally:
        writer.kill()
    store = Store(url, create=False)
    try:
        signed = [c.size for c in store.checkpoints()]
    finally:
        store.close()
    assert signed, "no checkpoint was stored before the kill"
    assert writer.signing[-1] not in signed  # the kill interrupted that one
    size = assert_survived(url, keys, writer.acked)
    append_after_restart(url, keys, size)
