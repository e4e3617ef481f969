"""The revocation list pulled from a URL (``revocations_url``): a fleet's replicas learn a
revocation within one pull interval.

The issuing replica's HTTP listener serves its CA's signed revocation list at
``/.well-known/docket-revocations.json`` (any static server or object store holding that
document works as well). A replica whose CA directory holds the same CA pulls it every
``revocations_pull_seconds`` (give or take 10 %), with ``If-None-Match`` so that an
unchanged list costs no download, and:

- verifies its signature with the CA's root (a list of another CA, or forged, is refused);
- refuses a version lower than the one it holds (a rollback would un-revoke), and a
  document of the same version with other contents (a forked list);
- installs a newer one atomically as ``<ca_dir>/revocations.json``, where every process of
  the replica picks it up within ``revocation_poll_seconds`` (as after ``docket ca
  revoke``).

Every refusal is logged with its reason and the list in force stays. The time the source
last served the list in force (a download or a ``304``) is kept in
``<data_dir>/revocations-source.json``: past ``max_revocation_staleness`` the list is
stale (TUF's freeze attack: a replica cut off from its source must not trust an old list
forever) — health (``docket.revocations``) and metrics say so, and permits annotated
``@fresh_policy`` stop allowing, as with a stale bundle.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from attestation import REVOCATIONS_FILE, CAError, CertificateAuthority, load_revocations
from engine._errors import SourceError
from engine._service.bundle_source import HttpSource, Limits, Unchanged
from engine._service.bundle_source.pull import install

log = structlog.get_logger("docket.revocations")

STATE_NAME = "revocations-source.json"
MAX_BYTES = 4 * 1024 * 1024
"""A revocation list larger than this is refused (thousands of entries fit in far less)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one pull did: ``installed`` a newer version, found it ``unchanged`` (the
    source confirmed the list in force), or ``refused`` it (``reason`` says why)."""

    result: str
    version: int
    reason: str = ""


class RevocationPuller:
    """Pulls ``url`` into the CA directory ``ca_dir``; ``state`` keeps the ETag and when
    the source last served the list in force."""

    def __init__(
        self,
        url: str,
        ca_dir: Path,
        state: Path,
        *,
        interval: float,
        timeout: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = HttpSource(url)
        self.ca_dir = ca_dir
        self.state = state
        self.interval = interval
        self.limits = Limits(max_bytes=MAX_BYTES, timeout=timeout)
        self.clock = clock

    def pull(self) -> Outcome:
        """One pull. Raises :class:`~engine.SourceError` when the source cannot be
        reached or answers badly (nothing changes then)."""
        etag = read_state(self.state).get("etag")
        tag = etag if isinstance(etag, str) else None
        ca = CertificateAuthority.load(self.ca_dir)
        held, _ = load_revocations(self.ca_dir, ca)
        with tempfile.TemporaryDirectory(dir=self.ca_dir.parent) as scratch:
            into = Path(scratch) / "revocations.json"
            fetched = self.source.fetch(into, tag=tag, limits=self.limits)
            if isinstance(fetched, Unchanged):
                self._confirm(tag, held.version)
                return Outcome("unchanged", held.version)
            document = into.read_bytes()
            try:
                incoming = ca.verify_revocations(document)
            except CAError as exc:
                return self._refuse(held.version, f"it does not verify with this CA: {exc}")
            if incoming.version < held.version:
                return self._refuse(
                    held.version,
                    f"version {incoming.version} is older than version {held.version} in "
                    "force (a rollback would un-revoke)",
                )
            if incoming.version == held.version:
                # Compared as lists: an ECDSA signature of the same list differs each time.
                if incoming != held:
                    return self._refuse(
                        held.version,
                        f"version {incoming.version} has other contents than the list in "
                        "force of the same version",
                    )
                self._confirm(fetched.tag, held.version)
                return Outcome("unchanged", held.version)
            install(into, self.ca_dir / REVOCATIONS_FILE)
        self._confirm(fetched.tag, incoming.version)
        log.info(
            "revocations.installed",
            version=incoming.version,
            revoked=len(incoming.revoked),
            url=self.source.url,
        )
        return Outcome("installed", incoming.version)

    def _confirm(self, etag: str | None, version: int) -> None:
        body = {"etag": etag, "version": version, "confirmed_at": self.clock().isoformat()}
        temporary = self.state.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        install(temporary, self.state)

    def _refuse(self, version: int, reason: str) -> Outcome:
        log.error("revocations.refused", url=self.source.url, reason=reason)
        return Outcome("refused", version, reason)

    def run(self, stop: threading.Event) -> None:
        """Pull until ``stop`` is set: every ``interval`` (±10 %), and after a failure
        with backoff up to ten intervals. Failures are logged; the list in force stays."""
        failures = 0
        while True:
            try:
                self.pull()
            except (SourceError, CAError, OSError) as exc:
                failures += 1
                log.warning("revocations.pull_failed", url=self.source.url, error=str(exc))
            else:
                failures = 0
            # Jitter spreads replicas started together; it is not a secret.
            spread = random.uniform(0.9, 1.1)  # noqa: S311
            if stop.wait(self.interval * min(2**failures, 10) * spread):
                return


def read_state(path: Path) -> dict[str, object]:
    """The pull state (empty when there was none, or it is unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def confirmed_at(path: Path) -> datetime | None:
    """When the source last served the list in force (None: never, or no state)."""
    value = read_state(path).get("confirmed_at")
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def start(puller: RevocationPuller) -> Callable[[], None]:
    """Run ``puller`` on a thread of its own; returns what stops it."""
    stop = threading.Event()
    thread = threading.Thread(target=puller.run, args=(stop,), name="docket-revocations")
    thread.daemon = True
    thread.start()

    def stopping() -> None:
        stop.set()
        thread.join(5)

    return stopping
