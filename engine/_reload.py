"""Hot reload: watch a bundle directory and swap in each good new version."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine._bundle import PolicyBundle
from engine._engine import Engine
from engine._errors import BundleError

log = structlog.get_logger("docket.bundle")

_Stamp = tuple[tuple[str, int, int], ...]


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

    A bundle that fails to load is logged with every problem and the engine keeps
    the version it had. Polling (rather than inotify) works the same on every
    filesystem, including the ones container volumes are mounted from.
    """

    def __init__(
        self,
        engine: Engine,
        path: str | Path,
        *,
        interval: float = 1.0,
        public_key: Ed25519PublicKey | None = None,
    ) -> None:
        self._engine = engine
        self._path = Path(path)
        self._interval = interval
        self._public_key = public_key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = _stamp(self._path) if self._path.exists() else ()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[PolicyBundle], None]] = []

    def check(self) -> bool:
        """Reload if the files changed; True when a new version was swapped in.

        A bundle that fails to load is logged and the engine keeps its version.
        """
        try:
            stamp = _stamp(self._path)
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
            except BundleError as exc:
                log.error(
                    "bundle.rejected",
                    path=str(self._path),
                    problems=list(exc.problems),
                    active_version=previous,
                )
                raise
            if previous == bundle.version:
                return Reload(version=bundle.version, previous=previous, changed=False)
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
