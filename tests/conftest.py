"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest
from pki import PKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A test CA with a server certificate for 127.0.0.1/localhost (see tests/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
