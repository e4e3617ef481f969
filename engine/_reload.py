"""Hot reload: watch a bundle directory and swap in each good new version."""

from __future__ import annotations

import threading
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine._bundle import PolicyBundle
from engine._engine import Engine
from engine._errors import BundleError

log = structlog.get_logger("docket.bundle")

_Stamp = tuple[tuple[str, int, int], ...]


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

    def check(self) -> bool:
        """Reload if the files changed; True when a new version was swapped in."""
        try:
            stamp = _stamp(self._path)
        except OSError as exc:
            log.warning("bundle.unreadable", path=str(self._path), error=str(exc))
            return False
        if stamp == self._last:
            return False
        self._last = stamp
        current = self._engine.bundle
        try:
            bundle = PolicyBundle.load(self._path, public_key=self._public_key)
        except BundleError as exc:
            log.error(
                "bundle.rejected",
                path=str(self._path),
                problems=list(exc.problems),
                active_version=current.version if current else None,
            )
            return False
        if current is not None and current.version == bundle.version:
            return False
        self._engine.swap(bundle)
        log.info(
            "bundle.loaded",
            path=str(self._path),
            version=bundle.version,
            previous=current.version if current else None,
            policies=len(bundle.policies),
        )
        return True

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
