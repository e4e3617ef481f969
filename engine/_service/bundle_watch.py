"""Hot reload: watch a bundle directory and swap in each good new version.

With a :class:`~engine._service.bundle_revisions.RevisionGuard`, a new version must also pass the
anti-rollback rules before it is swapped in; its state file is watched too, so that an
operator's ``docket bundle pin`` takes effect at the next poll. Every refused bundle is
logged and passed to the ``on_refuse`` listeners (the server writes it to the audit log).

With a :class:`~engine._service.bundle_source.Puller` (``bundle_url``), a second thread
pulls the bundle from its source every pull interval (with jitter) into the file this
watcher watches; a new verified bundle is swapped in at once, and every refusal (a bad
signature, a lower revision, a truncated or too big download, and the first failure of
an outage of the source) goes to the ``on_refuse`` listeners too. The watcher keeps the
bundle's :class:`~engine._service.bundle_source.Freshness` up to date from what the pulls
record (whichever worker of the replica made them) and tells ``on_freshness`` listeners
the age each poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from audit.note import VerifierKey
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._errors import BundleError
from engine._service.bundle_revisions import Admission, RevisionGuard
from engine._service.bundle_source import Freshness, Pulled, Puller

log = structlog.get_logger("docket.bundle")

_Stamp = tuple[tuple[str, int, int], ...]
LONG_POLL_PAUSE = 0.5
PULL_JOIN_SECONDS = 1.0
"""How long :meth:`BundleWatcher.stop` waits for a pull under way."""
"""Seconds between a long poll's answer and the next long poll."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Reload:
    """What a reload did: the version in force, the one before, and whether it changed."""

    version: str
    previous: str | None
    changed: bool


def _stamp(path: Path) -> _Stamp:
    """A cheap fingerprint (name, size, mtime) of every file under ``path``."""
    if path.is_file():
        stat = path.stat()
        return ((path.name, stat.st_size, stat.st_mtime_ns),)
    entries = []
    for item in sorted(path.rglob("*")):
        try:
            if item.is_file():
                stat = item.stat()
                entries.append((item.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns))
        except OSError:
            continue  # removed while we looked; the next poll sees the settled state
    return tuple(entries)


class BundleWatcher:
    """Polls a bundle path and swaps each new valid version into an engine.

    A bundle that fails to load, that ``vet`` refuses (raising
    :class:`~engine.BundleError`), or that ``guard`` refuses (an older revision), is
    logged with every problem, passed to the ``on_refuse`` listeners, and the engine
    keeps the version it had. Polling (rather than inotify) works the same on every
    filesystem, including the ones container volumes are mounted from.
    """

    def __init__(
        self,
        engine: Engine,
        path: str | Path,
        *,
        interval: float = 1.0,
        public_key: VerifierKey | None = None,
        guard: RevisionGuard | None = None,
        clock: Callable[[], datetime] = _utcnow,
        puller: Puller | None = None,
        max_staleness: float | None = None,
        vet: Callable[[PolicyBundle], None] | None = None,
    ) -> None:
        self._engine = engine
        self._vet = vet
        self._puller = puller
        self.freshness = Freshness(max_staleness) if puller is not None else None
        """How old the bundle in force is (None without a source: a local bundle is
        never stale)."""
        self._source_stamp: _Stamp | None = None
        self._stale = False
        self._freshness_listeners: list[Callable[[float | None, bool], None]] = []
        self._pull_thread: threading.Thread | None = None
        self._guard = guard
        self._clock = clock
        self._path = Path(path)
        self._interval = interval
        self._public_key = public_key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = self._stamps() if self._path.exists() else None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[PolicyBundle], None]] = []
        self._refusal_listeners: list[Callable[[str, list[str]], None]] = []
        self._pin_listeners: list[Callable[[PolicyBundle, Admission], None]] = []
        self.observe_freshness()

    def _stamps(self) -> tuple[_Stamp, tuple[int, int] | None]:
        return _stamp(self._path), self._guard.stamp() if self._guard is not None else None

    def check(self, loaded: PolicyBundle | None = None) -> bool:
        """Reload if the files changed; True when a new version was swapped in.
        ``loaded``: the bundle now in the file, already read and verified (a pull's).

        A bundle that fails to load is logged and the engine keeps its version.
        """
        try:
            stamp = self._stamps()
        except OSError as exc:
            log.warning("bundle.unreadable", path=str(self._path), error=str(exc))
            return False
        if stamp == self._last:
            return False
        self._last = stamp
        try:
            changed = self.reload(loaded).changed
        except BundleError:
            return False
        if changed and self._guard is not None:
            # The swap recorded its revision (the guard's file): that write of our own is
            # no reason to read the bundle again at the next poll.
            self._last = (stamp[0], self._guard.stamp())
        return changed

    def reload(self, loaded: PolicyBundle | None = None) -> Reload:
        """Load the bundle now, whatever the files' stamps say, and swap it in if new
        (``loaded``: the file's bundle, already read and verified: not read again).

        Raises :class:`~engine.BundleError` (also logged) when it does not load; the
        engine then keeps the version it had.
        """
        with self._lock:
            current = self._engine.bundle
            previous = current.version if current else None
            try:
                bundle = loaded or PolicyBundle.load(self._path, public_key=self._public_key)
                if previous == bundle.version:
                    return Reload(version=bundle.version, previous=previous, changed=False)
                if self._vet is not None:  # e.g. a shadow bundle's policy tests
                    self._vet(bundle)
                admission = (
                    self._guard.admit(bundle, self._clock()) if self._guard is not None else None
                )
            except BundleError as exc:
                log.error(
                    "bundle.rejected",
                    path=str(self._path),
                    problems=list(exc.problems),
                    active_version=previous,
                )
                for refused in self._refusal_listeners:
                    refused(str(self._path), list(exc.problems))
                raise
            if admission is not None and admission.pin is not None:
                log.warning(
                    "bundle.pinned",
                    path=str(self._path),
                    name=bundle.name,
                    revision=bundle.revision,
                    highest_revision=admission.highest,
                )
                for pinned in self._pin_listeners:
                    pinned(bundle, admission)
            self._engine.swap(bundle)
            log.info(
                "bundle.loaded",
                path=str(self._path),
                version=bundle.version,
                previous=previous,
                policies=len(bundle.policies),
            )
            for listener in self._listeners:
                listener(bundle)
            return Reload(version=bundle.version, previous=previous, changed=True)

    def on_swap(self, listener: Callable[[PolicyBundle], None]) -> None:
        """Call ``listener`` with each bundle this watcher swaps in."""
        self._listeners.append(listener)

    def on_refuse(self, listener: Callable[[str, list[str]], None]) -> None:
        """Call ``listener`` with the path and problems of each bundle refused on reload."""
        self._refusal_listeners.append(listener)

    def on_pin(self, listener: Callable[[PolicyBundle, Admission], None]) -> None:
        """Call ``listener`` with each bundle let in by an operator's pin (before the swap)."""
        self._pin_listeners.append(listener)

    def on_freshness(self, listener: Callable[[float | None, bool], None]) -> None:
        """Call ``listener`` with the bundle's age in seconds (None: unknown) and whether
        it is stale, at each poll (only with a source)."""
        self._freshness_listeners.append(listener)

    @property
    def stale(self) -> bool:
        """Whether the bundle in force is past ``max_bundle_staleness`` (as of the last poll)."""
        return self._stale

    def observe_freshness(self) -> None:
        """Re-read when the source last served the bundle (if a pull recorded it since),
        log a change of staleness and tell the ``on_freshness`` listeners."""
        if self._puller is None or self.freshness is None:
            return
        try:
            stamp: _Stamp | None = _stamp(self._puller.state_path)
        except OSError:  # no pull recorded yet
            stamp = None
        if stamp != self._source_stamp:
            self._source_stamp = stamp
            self.freshness.confirmed_at = self._puller.read_state().checked_at
        now = self._clock()
        age, stale = self.freshness.age(now), self.freshness.stale(now)
        if stale != self._stale:
            self._stale = stale
            event = log.warning if stale else log.info
            event(
                "bundle.stale" if stale else "bundle.fresh",
                source=self._puller.source.url,
                age_seconds=None if age is None else round(age, 1),
                max_staleness_seconds=self.freshness.max_staleness,
            )
        for listener in self._freshness_listeners:
            listener(age, stale)

    def pull(self) -> Pulled | None:
        """Pull from the source now if a pull is due and no other worker of the replica
        is pulling; swap a new bundle in at once. Every refusal is logged and passed to
        the ``on_refuse`` listeners (an outage only when it starts)."""
        if self._puller is None:
            return None
        pulled = self._puller.pull(wait=False, only_if_due=True)
        url = self._puller.source.url
        if pulled.outcome == "new":
            log.info("bundle.pulled", source=url, version=pulled.version)
            self.check(pulled.bundle)
        elif pulled.outcome in ("refused", "unreachable"):
            event = log.warning if pulled.outcome == "unreachable" else log.error
            current = self._engine.bundle
            event(
                f"bundle.pull_{pulled.outcome}",
                source=url,
                reason=pulled.reason,
                problems=list(pulled.problems),
                active_version=current.version if current is not None else None,
                repeated=pulled.repeated,
            )
            if not pulled.repeated:
                for refused in self._refusal_listeners:
                    refused(url, [f"{pulled.outcome} ({pulled.reason})", *pulled.problems])
        self.observe_freshness()
        return pulled

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop` (and pull in another, given a source)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="docket-bundle-watch", daemon=True)
        self._thread.start()
        if self._puller is not None:
            self._pull_thread = threading.Thread(
                target=self._run_pulls, name="docket-bundle-pull", daemon=True
            )
            self._pull_thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the watch thread. A pull under way (a long poll may
        wait minutes) is left to end with the process: it installs files by renames, so
        a pull cut short leaves the last good bundle as it was."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pull_thread is not None:
            self._pull_thread.join(PULL_JOIN_SECONDS)
        self._thread = self._pull_thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()
            self.observe_freshness()

    def _run_pulls(self) -> None:
        assert self._puller is not None
        # The first pull is due at once if no process of this replica pulled lately.
        delay = 0.0
        while not self._stop.wait(delay):
            self.pull()
            # Long polls follow one another (a short pause bounds a server that answers
            # at once while claiming to have waited); otherwise the interval.
            long_polling = self._puller.long_polling()
            delay = LONG_POLL_PAUSE if long_polling else self._puller.next_delay()
