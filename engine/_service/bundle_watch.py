"""Hot reload: watch a bundle directory and swap in each good new version.

With a :class:`~engine._service.bundle_revisions.RevisionGuard`, a new version must also pass the
anti-rollback rules before it is swapped in; its state file is watched too, so that an
operator's ``docket bundle pin`` takes effect at the next poll. Every refused bundle is
logged and passed to the ``on_refuse`` listeners (the server writes it to the audit log).
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

log = structlog.get_logger("docket.bundle")

_Stamp = tuple[tuple[str, int, int], ...]


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

    A bundle that fails to load, or that ``guard`` refuses (an older revision), is
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
    ) -> None:
        self._engine = engine
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

    def _stamps(self) -> tuple[_Stamp, tuple[int, int] | None]:
        return _stamp(self._path), self._guard.stamp() if self._guard is not None else None

    def check(self) -> bool:
        """Reload if the files changed; True when a new version was swapped in.

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
            return self.reload().changed
        except BundleError:
            return False

    def reload(self) -> Reload:
        """Load the bundle now, whatever the files' stamps say, and swap it in if new.

        Raises :class:`~engine.BundleError` (also logged) when it does not load; the
        engine then keeps the version it had.
        """
        with self._lock:
            current = self._engine.bundle
            previous = current.version if current else None
            try:
                bundle = PolicyBundle.load(self._path, public_key=self._public_key)
                if previous == bundle.version:
                    return Reload(version=bundle.version, previous=previous, changed=False)
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

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="docket-bundle-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()
