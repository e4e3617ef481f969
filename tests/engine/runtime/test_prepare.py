"""``engine/_runtime/prepare.py`` with a bundle source (issue 16): the start-up pull, and
the last good bundle when the source cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from bundle_servers import SIGNER, StaticServer, free_port, signed_archive

from engine._errors import BundleError, ServeError
from engine._runtime import prepare
from engine._runtime.prepare import (
    bundle_path,
    check_settings,
    load_bundle,
    pull_at_start,
)
from engine._runtime.settings import Settings


@pytest.fixture
def server() -> Iterator[StaticServer]:
    served = StaticServer({"/b.tar.gz": signed_archive(1)})
    yield served
    served.stop()


def pulling(tmp_path: Path, url: str) -> Settings:
    key = tmp_path / "bundle.pub"
    key.write_text(f"{SIGNER.verifier()}\n")
    return Settings.load().with_flags(
        data_dir=tmp_path / "data", bundle_url=url, bundle_public_key=key
    )


def test_a_source_needs_a_bundle_key(tmp_path: Path) -> None:
    settings = Settings.load().with_flags(bundle_url="https://example.test/b.tar.gz")
    with pytest.raises(ServeError, match="needs bundle_public_key"):
        check_settings(settings)


def test_the_start_pulls_and_loads_the_pulled_bundle(tmp_path: Path, server: StaticServer) -> None:
    settings = pulling(tmp_path, server.url("/b.tar.gz"))
    pull_at_start(settings)
    assert bundle_path(settings) == tmp_path / "data" / "bundle-pulled" / "bundle.tar.gz"
    assert load_bundle(settings).revision == 1


def test_an_unreachable_source_at_start_uses_the_last_good_bundle(
    tmp_path: Path, server: StaticServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull_at_start(pulling(tmp_path, server.url("/b.tar.gz")))
    server.go_away()
    settings = pulling(tmp_path, server.url("/b.tar.gz"))
    with structlog.testing.capture_logs() as logs:
        # A fresh logger: the module's may be cached with the processors an earlier
        # test's configure_logging set (cache_logger_on_first_use), past capture_logs.
        monkeypatch.setattr(prepare, "log", structlog.get_logger("docket.prepare"))
        pull_at_start(settings)
    assert load_bundle(settings).revision == 1
    events = {entry["event"]: entry for entry in logs}
    assert events["bundle.pull_unreachable"]["reason"] == "unreachable"
    last_good = events["bundle.last_good"]
    assert (last_good["revision"], last_good["path"]) == (1, str(bundle_path(settings)))
    assert last_good["age_seconds"] >= 0


def test_an_unreachable_source_without_a_last_good_bundle_stops_the_start(tmp_path: Path) -> None:
    settings = pulling(tmp_path, f"http://127.0.0.1:{free_port()}/b.tar.gz")
    with pytest.raises(BundleError, match=r"unreachable.*and no last good bundle in"):
        pull_at_start(settings)
