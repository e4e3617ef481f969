"""Group commit: many callers' entries in one transaction and one fsync.

A caller that finds the log idle (no commit running, nothing queued) commits its own
entries on its own thread: no hand-off, which is most of the cost of a lone entry.
Otherwise it queues them and waits; one writer thread takes everything queued, appends
it in one transaction and answers every caller once the commit is durable. While a
commit is in flight the next batch gathers, so the number of fsyncs per second stays
flat as callers are added. With several processes on one log, a writer that took its
batch may wait its turn while another process commits; what is queued meanwhile joins
that commit once the log is its (:meth:`Writer._late`), rather than wait for a commit of
its own.

A caller on an event loop (the asynchronous server) awaits :meth:`Writer.append_async`
instead: it always queues, and the writer thread wakes each loop once per commit to
resolve every caller of that loop the commit answered, so hundreds of calls can wait on
one commit without a thread each.

The queue is bounded (in entries). When it is full :meth:`Writer.submit` raises
:class:`~audit._errors.Overloaded` at once: the caller pushes back (RESOURCE_EXHAUSTED,
HTTP 429); an entry is never dropped after it was accepted.

A failed commit (a full disk, a database that refuses) makes the writer unwritable
until a commit works again (:meth:`Writer.probe` tries one). A database that is no
longer the log (deleted, replaced, truncated or rolled back underneath the process:
:class:`~audit._store.LogIdentityError`) is fatal instead: every later append is refused
at once and no probe clears it; only a restart, which checks the log against the
checkpoint kept outside it (:mod:`audit._kept`), does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from audit._errors import AuditError, FormatError, LogIdentityError, Overloaded, StoreError
from audit._store import Appended, Pending, Receipt, SignedTree, Store

log = structlog.get_logger("docket.audit")

MAX_QUEUE = 50_000
"""Entries waiting for a commit before callers are pushed back."""
MAX_BATCH = 10_000
"""Entries in one transaction at most."""


class Ticket:
    """A caller's claim on a commit: :meth:`result` waits until its entries are durable.

    A bare lock (held until the writer releases it) is the cheapest thing a thread can
    wait on; a ``concurrent.futures.Future`` costs several times more per entry, which
    shows at tens of thousands of single-entry commits a second.
    """

    __slots__ = (
        "_done",
        "_error",
        "_future",
        "_receipts",
        "_waker",
        "checkpoints",
        "erase",
        "pending",
        "tree",
    )

    def __init__(
        self,
        pending: Sequence[Any],
        erase: Sequence[int],
        waker: _LoopWaker | None = None,
        checkpoints: Sequence[SignedTree] = (),
    ) -> None:
        self.pending: Sequence[Any] = pending
        self.erase = erase
        self.checkpoints = checkpoints
        self._receipts: list[Receipt] | None = None
        self._error: AuditError | None = None
        # The tree the commit left behind (size, root), set before the ticket resolves.
        self.tree: tuple[int, bytes] = (0, b"")
        self._done = threading.Lock()
        self._done.acquire()
        self._waker = waker
        self._future: asyncio.Future[None] | None = None
        if waker is not None:
            self._future = waker.loop.create_future()

    def _resolve(self, receipts: list[Receipt] | None, error: AuditError | None) -> None:
        self._receipts, self._error = receipts, error
        self._done.release()
        if self._waker is not None:
            self._waker.wake(self)

    def result(self, timeout: float | None = None) -> list[Receipt]:
        """The receipts, in order, once durable. Raises the commit's :class:`StoreError`,
        or :class:`StoreError` when ``timeout`` seconds pass first."""
        if not self._done.acquire(timeout=-1 if timeout is None else timeout):
            raise StoreError(f"the audit log did not commit within {timeout} s")
        self._done.release()  # let result() be asked again
        if self._error is not None:
            raise self._error
        assert self._receipts is not None
        return self._receipts


class _LoopWaker:
    """Resolves the futures of one event loop's tickets from the writer thread: the
    tickets a commit answers are gathered, and the loop is woken once for all of them
    (``call_soon_threadsafe`` writes to the loop's wake-up pipe; once per commit, not
    once per entry)."""

    __slots__ = ("_lock", "_ready", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[Ticket] = []

    def wake(self, ticket: Ticket) -> None:
        with self._lock:
            self._ready.append(ticket)
            first = len(self._ready) == 1
        if first:
            # A closed loop raises RuntimeError: nobody awaits these any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for ticket in ready:
            future = ticket._future
            if future is not None and not future.done():  # a cancelled call's is done
                future.set_result(None)


class Writer:
    """The one appender of a process. Start it, submit entries, close it.

    ``on_commit(size, root)`` runs on the writer thread after each commit (keep it
    cheap: the checkpointer only notes the new head there). ``commit`` replaces the
    store's own append (``Store.append``'s signature): a worker process that feeds
    another process's writer commits through it (:mod:`audit._relay`).
    """

    def __init__(
        self,
        store: Store,
        *,
        prepare: Callable[[Any], Pending] | None = None,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        on_commit: Callable[[int, bytes], None] | None = None,
        commit: Callable[..., Appended] | None = None,
    ) -> None:
        self.store = store
        self._relayed = commit
        self._prepare = prepare
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._on_commit = on_commit
        self._jobs: deque[Ticket] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._failure: str | None = None
        self._fatal: str | None = None
        # Held by whoever commits (the writer thread or a caller committing directly),
        # so that one process appends one transaction at a time.
        self._committing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="docket-audit-writer", daemon=True)
        self._started = False
        self._wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
            weakref.WeakKeyDictionary()
        )
        self._observers: list[Callable[[int], None]] = []

    def observe_commits(self, observer: Callable[[int], None]) -> None:
        """Call ``observer(entries)`` after each commit that appended entries (on the
        thread that committed; keep it cheap: a metric's observe)."""
        self._observers.append(observer)

    def start(self) -> Writer:
        """Start the writer thread (idempotent); returns self."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    @property
    def writable(self) -> bool:
        """True while the writer runs, its last commit (if any) succeeded and the
        database was never found to be no longer the log."""
        return (
            self._started
            and self._thread.is_alive()
            and self._failure is None
            and self._fatal is None
        )

    @property
    def failure(self) -> str | None:
        """Why the writer is unwritable: the fatal loss of the database (for good), else
        why the last commit failed (until one succeeds again)."""
        return self._fatal or self._failure

    @property
    def fatal(self) -> str | None:
        """Why the database is no longer the log (deleted, replaced, truncated or rolled
        back while serving), or None. Sticky until the process restarts."""
        return self._fatal

    def check_identity(self) -> None:
        """Check (one ``os.stat``) that the database is still the log this writer
        appends to; once it is not, the writer is unwritable for good. Raises
        :class:`LogIdentityError` (now and on every later call), :class:`StoreError`
        when the database file cannot be examined."""
        if self._fatal is not None:
            raise LogIdentityError(self._fatal)
        try:
            self.store.check_identity()
        except LogIdentityError as exc:
            self._failed(exc)
            raise

    def _failed(self, error: AuditError) -> None:
        """Note a failed commit: a lost database for good, a store error until a commit
        works again; a refused redaction (FormatError) is the caller's, the log works, and
        so does a log too busy to take more (Overloaded, from the writer a relay commits
        through: :mod:`audit._relay`)."""
        if isinstance(error, Overloaded):
            return
        if isinstance(error, LogIdentityError) and self._fatal is None:
            self._fatal = str(error)
            log.error("audit.log_lost", error=self._fatal)
        self._failure = str(error) if isinstance(error, StoreError) else None

    @property
    def queued(self) -> int:
        """Entries accepted and not yet committed."""
        return self._queued

    def submit(
        self,
        pending: Sequence[Any],
        *,
        erase: Sequence[int] = (),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Ticket:
        """Queue entries for the next commit; the ticket's result is their receipts.
        With a ``prepare`` function the items are what it turns into :class:`Pending`.
        With ``loop`` (the running one), the ticket's commit is also awaitable there
        (:meth:`append_async`).

        Raises :class:`Overloaded` when the queue cannot take them, :class:`StoreError`
        when the writer is closed.
        """
        job = Ticket(pending, erase, None if loop is None else self._waker(loop))
        if self._fatal is not None:
            raise LogIdentityError(self._fatal)
        with self._cond:
            if self._closing or not self._started:
                raise StoreError("the audit writer is not running")
            if self._queued and self._queued + len(pending) > self.max_queue:
                raise Overloaded(
                    f"audit log busy: {self._queued} entries waiting for a commit "
                    f"(limit {self.max_queue}); retry shortly"
                )
            self._jobs.append(job)
            self._queued += len(pending)
            self._cond.notify()
        return job

    def commit_checkpoint(self, signed: SignedTree, timeout: float | None = 30) -> bool:
        """Store a signed checkpoint in the next commit, with the entries it carries (no
        transaction, fsync and turn at the log's lock of its own), and return once it is
        durable. False, and nothing done, when this writer does not commit (not started,
        closing, or relayed: the owner stores the checkpoints); the caller then stores
        it itself. Raises the commit's :class:`StoreError`, :class:`LogIdentityError`."""
        if self._fatal is not None:
            raise LogIdentityError(self._fatal)
        with self._cond:
            if self._relayed is not None or self._closing or not self._started:
                return False
            job = Ticket((), (), None, (signed,))
            self._jobs.append(job)
            self._cond.notify()
        job.result(timeout)
        return True

    def append(
        self, pending: Sequence[Any], *, erase: Sequence[int] = (), timeout: float | None = 30
    ) -> list[Receipt]:
        """Append and return once durable: directly when the log is idle, else through
        the queue. Raises :class:`Overloaded`, :class:`StoreError`, :class:`FormatError`
        (an entry that cannot be canonicalized); :class:`LogIdentityError` once the
        database was found to be no longer the log."""
        if self._fatal is not None:
            raise LogIdentityError(self._fatal)
        if not erase and not self._queued and self._committing.acquire(blocking=False):
            try:
                if self._started and not self._closing and not self._queued:
                    return self._direct(pending)
            finally:
                self._committing.release()
        return self.submit(pending, erase=erase).result(timeout)

    async def append_async(
        self, pending: Sequence[Any], *, erase: Sequence[int] = ()
    ) -> list[Receipt]:
        """:meth:`append` for a caller on an event loop: always through the queue (a
        commit never runs on the loop), resolved once the commit is durable. Raises
        what :meth:`append` raises (:class:`Overloaded` at once when the queue is full)."""
        ticket = self.submit(pending, erase=erase, loop=asyncio.get_running_loop())
        assert ticket._future is not None
        await ticket._future
        return ticket.result(0)

    def _waker(self, loop: asyncio.AbstractEventLoop) -> _LoopWaker:
        waker = self._wakers.get(loop)
        if waker is None:
            waker = self._wakers.setdefault(loop, _LoopWaker(loop))
        return waker

    def probe(self) -> bool:
        """Check that the database is still the log (one ``os.stat``: a deletion is
        noticed without traffic), and after a failed commit try an empty one (it takes
        the write lock and moves nothing): the log is writable again when it succeeds.
        Health checks call this, because a server reported unhealthy gets no traffic
        whose commit could clear the failure. A lost database is never cleared.
        Returns :attr:`writable`."""
        try:
            self.check_identity()
        except LogIdentityError:
            return False
        except StoreError:
            pass  # the empty commit below says whether the log can be written
        if self._failure is None:
            return self.writable
        with self._committing:
            try:
                self._commit((), ())
            except Exception as exc:
                self._failed(_audit_error(exc, StoreError, "cannot write the audit log"))
            else:
                self._failure = None
        return self.writable

    def _direct(self, items: Sequence[Any]) -> list[Receipt]:
        try:
            pending = [self._prepare(item) for item in items] if self._prepare else items
        except AuditError:
            raise
        except Exception as exc:
            raise FormatError(f"cannot record the entry: {exc!r}") from exc
        try:
            appended = self._commit(pending, ())
        except Exception as exc:
            error = _audit_error(exc, StoreError, "cannot append to the audit log")
            self._failed(error)
            if error is exc:
                raise
            raise error from exc
        self._committed(appended, len(pending))
        return appended.receipts

    def _committed(self, appended: Appended, entries: int) -> None:
        self._failure = None
        for observer in self._observers if entries else ():  # not a checkpoint's alone
            observer(entries)
        if self._on_commit is not None:
            try:
                self._on_commit(appended.size, appended.root)
            except Exception:  # the commit is durable; a hook must not undo that
                log.exception("audit.on_commit_failed")

    def close(self, timeout: float = 30) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._started:
            self._thread.join(timeout)

    def _take(self) -> list[Ticket] | None:
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            jobs = [self._jobs.popleft()]
            # Redactions commit alone: their erase list is checked against one head.
            if not jobs[0].erase:
                jobs += self._more_queued(len(jobs[0].pending), past_checkpoints=True)
            return jobs

    def _more_queued(self, size: int, *, past_checkpoints: bool) -> list[Ticket]:
        """Take queued jobs, up to a redaction (it commits alone) and while the batch,
        ``size`` entries so far, stays within ``max_batch``; up to a checkpoint too
        unless ``past_checkpoints``. The caller holds ``_cond``."""
        taken = []
        while self._jobs and not self._jobs[0].erase:
            job = self._jobs[0]
            if (job.checkpoints and not past_checkpoints) or size + len(
                job.pending
            ) > self.max_batch:
                break
            self._jobs.popleft()
            size += len(job.pending)
            taken.append(job)
        return taken

    def _late(self, jobs: list[Ticket]) -> list[Ticket]:
        """The entries queued after ``jobs`` were taken, for the same commit: taken once
        the store holds the log, they are the ones that came while this process waited
        for its turn (another process committing), and would otherwise wait a whole
        commit more. Never with a redaction, nor past a checkpoint (its commit carries
        the checkpoints taken first); within ``max_batch``."""
        if not jobs or jobs[0].erase:
            return []
        size = sum(len(job.pending) for job in jobs)
        with self._cond:
            late = self._more_queued(size, past_checkpoints=False)
        return self._prepared(late)

    def _prepared(self, jobs: list[Ticket]) -> list[Ticket]:
        """Turn queued items into canonical entries here, on the writer thread: callers
        then hold the GIL only to queue and to wake, and the commit is not kept
        waiting for it by a crowd of callers canonicalizing."""
        if self._prepare is None:
            return jobs
        ready = []
        for job in jobs:
            try:
                job.pending = [self._prepare(item) for item in job.pending]
            except Exception as exc:
                # Whatever one caller's entries raise (a RecursionError from a deeply
                # nested detail, say) fails that caller only: the thread must live on.
                with self._cond:
                    self._queued -= len(job.pending)
                job._resolve(None, _audit_error(exc, FormatError, "cannot record the entry"))
            else:
                ready.append(job)
        return ready

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            self._commit_jobs(self._prepared(taken))

    def _commit_jobs(self, jobs: list[Ticket]) -> None:
        """Commit ``jobs`` and, once the store holds the log, what :meth:`_late` adds;
        answer every one of them."""
        pending = [item for job in jobs for item in job.pending]
        erase = [index for job in jobs for index in job.erase]
        checkpoints = [signed for job in jobs for signed in job.checkpoints]

        def more() -> list[Pending]:
            late = self._late(jobs)
            jobs.extend(late)
            added = [item for job in late for item in job.pending]
            pending.extend(added)
            return added

        try:
            with self._committing:
                appended = self._commit(list(pending), erase, checkpoints, more)
        except Exception as exc:
            error = _audit_error(exc, StoreError, "cannot append to the audit log")
            self._failed(error)
            log.error("audit.commit_failed", error=str(error), entries=len(pending))
            for job in jobs:
                job._resolve(None, error)
        else:
            position = 0
            tree = (appended.size, appended.root)
            for job in jobs:
                count = len(job.pending)
                job.tree = tree
                job._resolve(appended.receipts[position : position + count], None)
                position += count
            self._committed(appended, len(pending))
        finally:
            with self._cond:
                self._queued -= len(pending)

    def _commit(
        self,
        pending: Sequence[Pending],
        erase: Sequence[int],
        checkpoints: Sequence[SignedTree] = (),
        more: Callable[[], Sequence[Pending]] | None = None,
    ) -> Appended:
        # No retry here: a failed COMMIT may still have landed, and a retry would then
        # append the entries twice. SQLite's busy_timeout already waits out other writers.
        if self._relayed is not None:
            return self._relayed(pending, erase=erase)
        return self.store.append(pending, erase=erase, checkpoints=checkpoints, more=more)


def _audit_error(exc: Exception, kind: type[AuditError], what: str) -> AuditError:
    """``exc`` if it is the package's own, else wrapped in ``kind`` (callers see only
    :class:`AuditError`)."""
    if isinstance(exc, AuditError):
        return exc
    error = kind(f"{what}: {exc!r}")
    error.__cause__ = exc
    return error
