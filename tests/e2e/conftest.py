"""Fixtures of the e2e tests: a PostgreSQL server for the session (see postgres.py).

- ``postgres_binaries``: initdb and pg_ctl, or the skip (session);
- ``postgres_server``: the running server (session);
- ``postgres_url``: the SQLAlchemy URL of its ``docket`` database (session, shared);
- ``postgres_db``: the URL of a new, empty database of the test's own (per test);
- ``provisioned_tpm``: a swtpm state manufactured with an EK certificate by a private
  swtpm_localca, and that CA's root (session; copy the state per test, see swtpm.py);
- ``swtpm``: a swtpm running on a fresh copy of that state (per test, stopped by PID);
- ``tpm2_pytss``: the ``docket[tpm]`` extra imports (a skip only where it cannot be built);
- ``tpm_backend``: each of the agent's TPM drivers in turn, ``"tpm2-tools"`` and
  ``"tpm2-pytss"``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from e2e.postgres import Binaries, PostgresServer, find_binaries, start_postgres
from swtpm import PROVISION_TOOLS, TOOLS, ProvisionedState, SoftwareTpm, provision

AGENT_TOOLS = ("tpm2_getcap", "tpm2_nvread", "tpm2_pcrread", "tpm2_flushcontext")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def postgres_binaries() -> Binaries:
    """initdb and pg_ctl; a skip only where PostgreSQL cannot be installed (not root)."""
    binaries = find_binaries()
    if binaries is None:
        missing = "no PostgreSQL (initdb, pg_ctl under /usr/lib/postgresql/*/bin or on PATH)"
        _cannot_have(missing, "apt-get install postgresql")
    return binaries


@pytest.fixture(scope="session")
def postgres_server(postgres_binaries: Binaries) -> Iterator[PostgresServer]:
    """A PostgreSQL server for this session, stopped (and its files removed) at its end."""
    server = start_postgres(postgres_binaries)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://docket@127.0.0.1:<port>/docket``, shared by the session."""
    return postgres_server.url()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database ``test_<n>``, for this test alone."""
    return postgres_server.create_database()


@pytest.fixture
def tpm2_pytss() -> None:
    """tpm2-pytss imports (the ``docket[tpm]`` extra); a skip only where libtss2-dev cannot
    be installed (not root, no apt-get), and never in CI."""
    from sdk.agent._esapi import pytss_missing

    reason = pytss_missing()
    if reason is not None:
        _cannot_have(f"tpm2-pytss does not import ({reason})", "pip install 'docket[tpm]'")


@pytest.fixture(params=["tpm2-tools", "tpm2-pytss"])
def tpm_backend(request: pytest.FixtureRequest) -> str:
    """Each TPM driver of the agent in turn (tpm2-pytss as the ``tpm2_pytss`` fixture)."""
    backend = str(request.param)
    if backend == "tpm2-pytss":
        request.getfixturevalue("tpm2_pytss")
    return backend


def _cannot_have(missing: str, install: str) -> NoReturn:
    """Fail when ``make test`` could have installed what is missing, or in CI; else skip,
    saying why it cannot be installed here."""
    if os.geteuid() != 0:
        cannot = "not root"
    elif shutil.which("apt-get") is None:
        cannot = "no apt-get"
    else:
        pytest.fail(f"{missing}: `make test` installs it (.ci/install-test-deps)")
    if _in_ci():
        pytest.fail(f"{missing}, and it cannot be installed ({cannot}); CI must not skip")
    pytest.skip(f"{missing}, and it cannot be installed ({cannot}): {install}")


@pytest.fixture(scope="session")
def provisioned_tpm(tmp_path_factory: pytest.TempPathFactory) -> ProvisionedState:
    """A TPM state with an RSA EK certificate (NV 0x1c00002) signed by a private local CA,
    made once per session (1-3 s); ``root_cert`` is the root an EK verifier trusts."""
    needed = (*TOOLS, *PROVISION_TOOLS, *AGENT_TOOLS)
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        message = f"missing {', '.join(missing)}: apt-get install swtpm swtpm-tools tpm2-tools"
        if _in_ci():
            pytest.fail(f"{message}; CI must not skip")
        pytest.skip(message)
    return provision(tmp_path_factory.mktemp("provisioned-tpm"))


@pytest.fixture
def swtpm(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[SoftwareTpm]:
    """A swtpm on a fresh copy of the manufactured state, stopped by its PID."""
    running = SoftwareTpm.start(provisioned_tpm.copy_state(tmp_path / "swtpm-state"))
    try:
        yield running
    finally:
        running.stop()
