"""An edge site's pusher: a thread in the process that owns the audit log (the single
process, or the supervisor) that sends the log's new entries and checkpoints to the
collector (``collector_url``) and keeps a checkpoint as final once the configured
``witnesses`` cosigned it.

It pushes whenever a checkpoint newer than what the collector holds is stored (checked
every ``site_push_seconds``), and the held one again after :data:`HEARTBEAT_SECONDS`
with nothing new; a backlog goes as consecutive pushes of at most 10,000
entries. While the collector cannot be reached or refuses, it waits twice as long each
time, up to :data:`MAX_BACKOFF` seconds. Decisions never wait for it: they are recorded
in the site's own log, whatever the collector does. After a restart it asks the
collector where it holds the site, and resumes there. A log the collector refuses as
forked (422) is not sent again: the pusher stops (``site.refused``, an error) until the
process restarts.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import structlog

from audit import (
    AuditError,
    AuditLog,
    CollectorClient,
    CosignatureError,
    KeyFormatError,
    WitnessClient,
    WitnessError,
    finalize,
    next_push,
)
from engine._errors import BundleError, ServeError
from engine._runtime.prepare import bundle_puller, revision_guard
from engine._runtime.settings import Settings

log = structlog.get_logger("docket.site")

MAX_BACKOFF = 60.0
"""The longest wait between attempts while the collector is unreachable."""
HEARTBEAT_SECONDS = 30.0
"""With nothing new for this long, the checkpoint the collector holds is pushed again
(no entries): its fresh cosignature tells ``docket fleet status`` the site is alive."""


class SitePusher:
    """Pushes ``audit``'s log to the collector as ``settings`` say (a thread)."""

    def __init__(self, settings: Settings, audit: AuditLog) -> None:
        assert settings.site_name is not None
        assert settings.collector_url is not None
        self.settings = settings
        self.site = settings.site_name
        self.audit = audit
        self.client = CollectorClient(settings.collector_url)
        self.witnesses = [WitnessClient.parse(text) for text in settings.witnesses]
        self.quorum = settings.witness_quorum
        self.interval = settings.site_push_seconds
        self.size: int | None = None
        """The size the collector holds (None: to be asked)."""
        self._pushed = 0.0  # when the collector last took a push (monotonic)
        self._stop = threading.Event()
        self.refused = threading.Event()
        """Set when the collector refused the site's log as forked (422): the pusher
        then stops (the same log sent again would only add incidents) until a restart."""
        self._thread = threading.Thread(target=self._run, name="docket-site-push", daemon=True)

    def start(self) -> SitePusher:
        """Start pushing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pushing (a push under way finishes or times out first)."""
        self._stop.set()
        self._thread.join(35)

    def _run(self) -> None:
        failures = 0
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                more = self.push_once()
            except AuditError as exc:
                status = getattr(exc, "status", None)
                if status == 422:
                    log.error("site.refused", status=status, problem=str(exc), pushing="stopped")
                    self.refused.set()
                    return
                failures += 1
                delay = min(MAX_BACKOFF, self.interval * 2**failures)
                log.warning("site.push_failed", status=status, problem=str(exc), retry_in=delay)
                if status is None:
                    self.size = None  # unreachable: ask where to resume once it answers
                continue
            failures = 0
            delay = 0.0 if more else self.interval

    def push_once(self) -> bool:
        """Push the next chunk, if there is one; True when there may be more. Raises
        :class:`~audit.AuditError` (a :class:`~audit.WitnessError` with the
        collector's status, None when unreachable)."""
        if self.size is None:
            self.size = self.client.size(self.site)
        idle = time.monotonic() - self._pushed >= HEARTBEAT_SECONDS
        push = next_push(self.audit.store, self.site, self.size, heartbeat=idle)
        if push is None:
            return False
        revision, pulled = bundle_report(self.settings)
        push = dataclasses.replace(push, bundle_revision=revision, bundle_pulled=pulled)
        try:
            lines = self.client.push(push)
        except WitnessError as exc:
            if exc.status == 409 and exc.size is not None:
                self.size = exc.size
                return True
            raise
        self.size = push.checkpoint.size
        self._pushed = time.monotonic()
        if not push.entries:
            return False  # a heartbeat: the final checkpoint is already kept
        log.info("site.pushed", size=self.size, entries=len(push.entries), head=push.head)
        if self.witnesses:
            try:
                final = finalize(
                    self.audit.store,
                    push.note + lines,
                    self.audit.verifiers(),
                    self.witnesses,
                    quorum=self.quorum,
                )
            except CosignatureError as exc:
                log.warning("site.not_final", size=self.size, problem=str(exc))
            else:
                log.info("site.final", size=final.checkpoint.size)
        return True


def bundle_report(settings: Settings) -> tuple[str | None, str | None]:
    """What a site tells the collector of its bundle: the revision in force (``NAME
    rN``, from the revisions this replica accepted) and, with ``bundle_url``, when its
    source last served it (RFC 3339). What it cannot read is None."""
    revision = None
    try:
        state = revision_guard(settings).read()
    except BundleError:
        state = None
    if state is not None and state.current is not None:
        accepted = state.bundles.get(state.current)
        revision = state.current if accepted is None else f"{state.current} r{accepted.revision}"
    pulled = None
    try:
        puller = bundle_puller(settings)
        checked = puller.read_state().checked_at if puller is not None else None
    except (BundleError, OSError):
        checked = None
    if checked is not None:
        pulled = checked.isoformat()
    return revision, pulled


def start_site_push(settings: Settings, audit: AuditLog) -> SitePusher | None:
    """The pusher of ``audit``'s log, started, when ``site_name`` and ``collector_url``
    are set; else None. Raises :class:`~engine._errors.ServeError` for a malformed
    witness."""
    if settings.site_name is None or settings.collector_url is None:
        return None
    try:
        return SitePusher(settings, audit).start()
    except KeyFormatError as exc:
        raise ServeError(f"witnesses: {exc}") from exc
