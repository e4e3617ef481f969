"""The site's pusher against a stand-in collector (a real HTTP server on loopback that
answers as told): a refusal of the site's log as a fork (422) stops the pushing until
an operator restarts the site — sending the same log again would only add incidents —
while the log itself keeps recording. (The pusher against a real collector and real
sites: tests/e2e/test_fleet.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from audit import AuditLog
from engine._runtime.settings import Settings
from engine._runtime.site_push import SitePusher
from tests.audit.conftest import QUIET, sample_entry


class _Collector(BaseHTTPRequestHandler):
    pushes: list[bytes]
    answer: tuple[int, dict[str, object]]

    def do_GET(self) -> None:
        self._json(200, {"site": "eu-1", "size": 0})

    def do_POST(self) -> None:
        self.pushes.append(self.rfile.read(int(self.headers["Content-Length"])))
        self._json(*self.answer)

    def _json(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        for header in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
            self.send_header(*header)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    pushes: list[bytes] = []
    handler = type("Handler", (_Collector,), {"pushes": pushes})
    handler.answer = (422, {"error": "the entries do not extend what is held", "fork": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pushes
    server.shutdown()
    server.server_close()


def test_a_log_refused_as_a_fork_is_not_pushed_again(
    tmp_path: Path, collector: tuple[str, list[bytes]]
) -> None:
    url, pushes = collector
    log = AuditLog.open(f"sqlite:///{tmp_path / 'site.db'}", keys=tmp_path / "keys", **QUIET)
    log.start()
    try:
        log.record([sample_entry(n) for n in range(3)])
        log.checkpoint()
        settings = Settings.load().with_flags(
            site_name="eu-1", collector_url=url, site_push_seconds=0.01
        )
        pusher = SitePusher(settings, log).start()
        pusher.refused.wait(30)
        assert pusher.refused.is_set()
        log.record([sample_entry(3)])  # the site keeps recording
        log.checkpoint()
        pusher.stop()
        assert len(pushes) == 1
    finally:
        log.close()


def test_a_site_reports_its_bundle_revision_and_when_its_source_served_it(
    tmp_path: Path,
) -> None:
    """Issue 16: the collector's BUNDLE and PULLED columns come from what the replica
    accepted (bundle-state.json) and its pull state."""
    from datetime import UTC, datetime

    from bundle_servers import SIGNER, signed_files

    from engine._core.bundle import PolicyBundle
    from engine._runtime.prepare import bundle_puller, revision_guard
    from engine._runtime.site_push import bundle_report

    key = tmp_path / "bundle.pub"
    key.write_text(str(SIGNER.verifier()))
    settings = Settings(
        data_dir=tmp_path / "data",
        bundle_url="http://127.0.0.1:9/bundle.tar.gz",
        bundle_public_key=key,
    )
    settings.data_dir.mkdir()
    assert bundle_report(settings) == (None, None)
    now = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    revision_guard(settings).admit(PolicyBundle.from_files(signed_files(3)), now)
    puller = bundle_puller(settings)
    assert puller is not None
    puller.directory.mkdir(parents=True)
    puller._write(puller.read_state().model_copy(update={"checked_at": now}))
    assert bundle_report(settings) == ("acme r3", now.isoformat())
