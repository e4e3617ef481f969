"""Callers on an event loop (the asynchronous server) wait for their commit without a
thread each: :meth:`~audit._writer.Writer.append_async` resolves when the writer
thread's commit is durable, and many such callers share one commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from unittest import mock

import pytest

from audit import AuditLog, Entry, Overloaded, Receipt, StoreError, verify_store
from tests.audit.test_log import write_lock

OpenLog = Callable[..., AuditLog]
EntryFactory = Callable[[int], Entry]


async def queued(log: AuditLog, count: int) -> None:
    while log.writer.queued < count:
        await asyncio.sleep(0.01)


def test_callers_on_a_loop_share_one_commit_and_get_their_receipts(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    commits: list[int] = []
    log.writer.observe_commits(commits.append)
    entries = [entry_factory(number) for number in range(40)]

    async def main() -> list[list[Receipt]]:
        with write_lock(log):
            # The writer takes what is queued when it wakes and waits for the lock;
            # whatever is submitted meanwhile queues up behind it for one commit.
            calls = [asyncio.ensure_future(log.writer.append_async([e])) for e in entries]
            await queued(log, len(entries))
        return await asyncio.gather(*calls)

    answered = asyncio.run(main())
    assert [receipt.index for (receipt,) in answered] == list(range(40))
    assert sum(commits) == 40
    assert len(commits) <= 2  # the one waiting for the lock, and all that queued meanwhile
    stored = {row.idx: row.payload for row in log.store.entries()}
    assert [stored[i] for i in range(40)] == [entry.canonical() for entry in entries]
    assert verify_store(log.store, log.verifiers()).log.size == 40


def test_a_failed_commit_fails_every_caller_waiting_on_it(
    open_log: OpenLog, entry_factory: EntryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    monkeypatch.setattr(log.store, "append", mock.Mock(side_effect=RuntimeError("driver bug")))

    async def main() -> list[BaseException | list[Receipt]]:
        calls = [log.writer.append_async([entry_factory(n)]) for n in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    for outcome in asyncio.run(main()):
        assert isinstance(outcome, StoreError)
        assert "driver bug" in str(outcome)
    assert not log.writable


def test_a_full_queue_refuses_a_caller_on_a_loop_at_once(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log(max_queue=3)

    async def main() -> list[list[Receipt]]:
        with write_lock(log):
            calls = [
                asyncio.ensure_future(log.writer.append_async([entry_factory(n)])) for n in range(3)
            ]
            await queued(log, 3)
            with pytest.raises(Overloaded):
                await log.writer.append_async([entry_factory(3)])
        return await asyncio.gather(*calls)

    assert [receipt.index for (receipt,) in asyncio.run(main())] == [0, 1, 2]
    assert log.store.count() == 3
