"""Fixtures for the SDK tests: a fake Docket over plaintext and over mTLS.

The CA and server certificate come from the shared ``pki`` fixture (tests/pki.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import PKI, Pair, make_pki
from sdk_fakes import (
    CLIENT_SPIFFE_ID,
    FakeDecisions,
    Running,
    mtls_server_credentials,
    serve_docket,
)


@pytest.fixture(scope="session")
def client_pair(pki: PKI) -> Pair:
    """A client certificate whose one URI SAN is ``CLIENT_SPIFFE_ID``."""
    return pki.client("sdk-client", CLIENT_SPIFFE_ID)


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that signed nothing the tests' servers use."""
    return make_pki(tmp_path_factory.mktemp("other-pki")).ca


@pytest.fixture
def fake() -> FakeDecisions:
    return FakeDecisions()


@pytest.fixture
def docket(fake: FakeDecisions) -> Iterator[Running]:
    running = serve_docket(fake)
    yield running
    fake.release.set()
    running.stop()


@pytest.fixture
def mtls_docket(fake: FakeDecisions, pki: PKI) -> Iterator[Running]:
    running = serve_docket(fake, mtls_server_credentials(pki))
    yield running
    fake.release.set()
    running.stop()
