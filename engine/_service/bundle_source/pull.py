"""Pulling a replica's bundle from its source, and keeping the last good one on disk.

Everything lives in ``<data_dir>/bundle-pulled/``: ``bundle.tar.gz`` is the last good
bundle (the file every worker process watches and loads), ``source.json`` what is known
of the source (the ETag or manifest digest of that bundle, when it was pulled, when the
source was last seen serving it, the last refused download, since when the source fails),
``.lock`` serializes pulls across the replica's processes.

One pull (:meth:`Puller.pull`), under the lock:

1. download to a temporary file beside ``bundle.tar.gz``, with ``If-None-Match`` (or the
   manifest digest) of the bundle held: an unchanged source costs no download and
   confirms the bundle (freshness);
2. refuse a truncated archive, one past the size bound, one whose signature does not
   verify with ``bundle_public_key``, one that does not load, and one the anti-rollback
   state refuses (:class:`~engine._service.bundle_revisions.RevisionGuard`, checked, not
   recorded: each worker records what it swaps in);
3. only then rename it over ``bundle.tar.gz`` (atomic): every worker's watcher sees the
   new file at its next poll and loads that same file, so all workers activate one
   verified bundle, and a crash leaves the old one or the new one, never half.

A refusal keeps ``bundle.tar.gz`` as it was. Pulls are due every ``interval`` seconds
with up to ``jitter`` of it added or taken away, so replicas started together spread
out; workers of one replica share the due time in ``source.json``, so only one pulls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from audit.note import VerifierKey
from engine._core.bundle import PolicyBundle, read_bundle_files
from engine._errors import BundleError, SourceError
from engine._service.bundle_revisions import RevisionGuard
from engine._service.bundle_source.transfer import check_complete
from engine._service.bundle_source.types import Limits, Source, Unchanged

log = structlog.get_logger("docket.bundle")

DIRECTORY = "bundle-pulled"
ARCHIVE = "bundle.tar.gz"
STATE = "source.json"

Outcome = Literal["new", "unchanged", "refused", "unreachable", "busy"]


class PullState(BaseModel):
    """What ``source.json`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: StrictStr
    tag: StrictStr | None = None
    """The ETag (HTTP) or manifest digest (OCI) the source served for the bundle held."""
    digest: StrictStr | None = None
    """sha256 of ``bundle.tar.gz``."""
    version: StrictStr | None = None
    name: StrictStr | None = None
    revision: StrictInt | None = None
    pulled_at: datetime | None = None
    """When the bundle held was downloaded."""
    checked_at: datetime | None = None
    """When the source was last seen serving it (a download or a 304): its freshness."""
    attempted_at: datetime | None = None
    """When a pull last started (the next is due ``interval`` later)."""
    long_poll: bool | None = None
    """Whether the source honoured the last long poll asked of it (None: none asked yet).
    While it does (or is not known not to), the next pull follows at once."""
    refused: StrictStr | None = None
    """The digest of the last download refused (not audited again while it is served)."""
    failing_since: datetime | None = None
    """Since when the source has been unreachable (None: it answered last time)."""


@dataclass(frozen=True, slots=True)
class Pulled:
    """What one pull did; ``problems`` say why a bundle was refused or the source failed,
    ``repeated`` that the same refusal or outage was already reported; a ``new`` one
    carries the ``bundle`` it verified and installed (so that it is not parsed again)."""

    outcome: Outcome
    problems: tuple[str, ...] = ()
    reason: str = ""
    version: str | None = None
    repeated: bool = False
    long_polled: bool = False
    bundle: PolicyBundle | None = field(default=None, compare=False, repr=False)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Puller:
    """Pulls ``source`` into ``directory`` (see the module docstring): a bundle must
    verify with ``public_key`` and pass ``guard``; downloads within ``limits``; a pull
    due every ``interval`` seconds, give or take ``jitter`` of it."""

    source: Source
    directory: Path
    public_key: VerifierKey | None
    guard: RevisionGuard
    limits: Limits
    interval: float
    jitter: float = 0.1
    clock: Callable[[], datetime] = _utcnow

    @property
    def archive(self) -> Path:
        """The last good bundle, which every worker loads."""
        return self.directory / ARCHIVE

    @property
    def state_path(self) -> Path:
        """``source.json``."""
        return self.directory / STATE

    def read_state(self) -> PullState:
        """``source.json`` (empty for another URL, or none yet)."""
        try:
            state = PullState.model_validate_json(self.state_path.read_bytes())
        except (OSError, ValidationError):
            return PullState(url=self.source.url)
        return state if state.url == self.source.url else PullState(url=self.source.url)

    def age(self, now: datetime) -> float | None:
        """Seconds since the source was last seen serving the bundle held (None: never)."""
        checked = self.read_state().checked_at
        return None if checked is None else max((now - checked).total_seconds(), 0.0)

    def next_delay(self) -> float:
        """Seconds to wait before the next pull: ``interval``, give or take ``jitter``."""
        return self.interval * (1 + self.jitter * (2 * random.random() - 1))  # noqa: S311

    def long_polling(self, state: PullState | None = None) -> bool:
        """Whether pulls follow one another at once: long polls are configured and the
        source is not known to ignore them (an outage or a refusal falls back to the
        interval until a long poll is honoured again)."""
        if self.limits.long_poll is None:
            return False
        return (state or self.read_state()).long_poll is not False

    def due(self, now: datetime) -> bool:
        """Whether no process of this replica started a pull in the last interval (less
        the jitter, so that the first to wake after it takes it)."""
        state = self.read_state()
        if self.long_polling(state):
            return True
        attempted = state.attempted_at
        spacing = timedelta(seconds=self.interval * (1 - self.jitter))
        return attempted is None or now - attempted >= spacing or now < attempted

    def pull(self, *, wait: bool = True, only_if_due: bool = False, report: bool = True) -> Pulled:
        """Pull once (see the module docstring). With ``wait=False`` a pull under way in
        another process is left to it (``busy``); with ``only_if_due`` so is one not yet
        due. ``report=False`` (at start, before the audit log is open) leaves a refusal or
        an outage unmarked, so that the next pull reports it again. Never raises for the
        source or the bundle: the outcome says."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return Pulled("unreachable", (f"{self.directory}: {exc.strerror}",), "unwritable")
        with self._locked(wait) as locked:
            if not locked or (only_if_due and not self.due(self.clock())):
                return Pulled("busy")
            return self._pull(report)

    def _pull(self, report: bool) -> Pulled:
        for left in self.directory.glob(".incoming-*"):  # from a process that ended mid-pull
            left.unlink(missing_ok=True)
        now = self.clock()
        state = self.read_state()
        held = state.tag if self.archive.exists() else None
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        os.close(fd)
        incoming = Path(name)
        try:
            self._write(state.model_copy(update={"attempted_at": now}))
            try:
                fetched = self.source.fetch(incoming, tag=held, limits=self.limits)
            except SourceError as exc:
                return self._failed(state if report else None, now, exc)
            answered = state.model_copy(
                update={
                    "attempted_at": now,
                    "failing_since": None,
                    # A pull that asked no long poll (at start) says nothing about them.
                    "long_poll": fetched.long_polled
                    if self.limits.long_poll is not None
                    else state.long_poll,
                }
            )
            if isinstance(fetched, Unchanged):
                self._write(answered.model_copy(update={"checked_at": self.clock()}))
                return Pulled("unchanged", version=state.version, long_polled=fetched.long_polled)
            if fetched.digest == state.digest and self.archive.exists():
                self._write(answered.model_copy(update={"checked_at": now, "tag": fetched.tag}))
                return Pulled("unchanged", version=state.version, long_polled=fetched.long_polled)
            try:
                check_complete(incoming, self.source.url)
                # Named by where it is installed: the audit's bundle entry says so.
                files = read_bundle_files(incoming)
                bundle = PolicyBundle.from_files(
                    files, source=str(self.archive), public_key=self.public_key
                )
                self.guard.check(bundle)
            except BundleError as exc:
                repeated = state.refused == fetched.digest
                if report:
                    # Back to the interval: a long poll would get this bundle again at once.
                    refused = {"refused": fetched.digest, "long_poll": False}
                    self._write(answered.model_copy(update=refused))
                reason = exc.reason if isinstance(exc, SourceError) else type(exc).__name__
                return Pulled(
                    "refused",
                    exc.problems,
                    reason,
                    repeated=repeated,
                    long_polled=fetched.long_polled,
                )
            if bundle.version == state.version and self.archive.exists():
                self._write(answered.model_copy(update={"checked_at": now, "tag": fetched.tag}))
                return Pulled("unchanged", version=state.version, long_polled=fetched.long_polled)
            install(incoming, self.archive)
            self._write(
                answered.model_copy(
                    update={
                        "tag": fetched.tag,
                        "digest": fetched.digest,
                        "version": bundle.version,
                        "name": bundle.name,
                        "revision": bundle.revision,
                        "pulled_at": now,
                        "checked_at": now,
                        "refused": None,
                    }
                )
            )
            return Pulled(
                "new", version=bundle.version, long_polled=fetched.long_polled, bundle=bundle
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                incoming.unlink()

    def _failed(self, state: PullState | None, now: datetime, exc: SourceError) -> Pulled:
        if state is None:  # not reported now: the next pull reports it
            return Pulled(
                "refused" if exc.reason != "unreachable" else "unreachable",
                exc.problems,
                exc.reason,
            )
        if exc.reason != "unreachable":
            # The source answered, with something that is not a bundle it may serve.
            seen = exc.problems[0]
            self._write(
                state.model_copy(
                    update={
                        "attempted_at": now,
                        "failing_since": None,
                        "refused": seen,
                        "long_poll": False,
                    }
                )
            )
            return Pulled("refused", exc.problems, exc.reason, repeated=state.refused == seen)
        repeated = state.failing_since is not None
        since = state.failing_since or now
        self._write(
            state.model_copy(
                update={"attempted_at": now, "failing_since": since, "long_poll": False}
            )
        )
        return Pulled("unreachable", exc.problems, exc.reason, repeated=repeated)

    @contextlib.contextmanager
    def _locked(self, wait: bool) -> Iterator[bool]:
        with (self.directory / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    def _write(self, state: PullState) -> None:
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=".source.")
        with os.fdopen(fd, "w") as out:
            out.write(state.model_dump_json(indent=2) + "\n")
        install(Path(name), self.state_path)


def install(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` over ``target`` so that a power cut leaves one or the other
    whole: its bytes reach the disk first, then the rename (the folder's entry)."""
    with temporary.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
